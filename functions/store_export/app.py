"""StoreExport: download the exported CSV and store it at exports/<yyyyMM>/<exportedFileId>.csv."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import object_store, soracom_client
from soracharge.logic.export import store_export
from soracharge.models.export_flow import StoreExportRequest
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = parse_input(event, StoreExportRequest)
    stored = store_export(request, soracom=soracom_client(), store=object_store())
    return stored.to_event()
