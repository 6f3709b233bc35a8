"""FindStoredExport: was the month exported (and imported) before? A re-run ends here, saying so."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import object_store, stack_accounts, stack_coverages
from soracharge.logic.export import find_stored_export
from soracharge.models.export_flow import ExportRequest
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = parse_input(event, ExportRequest)
    lookup = find_stored_export(request, store=object_store(), coverages=stack_coverages(), accounts=stack_accounts())
    return lookup.to_event()
