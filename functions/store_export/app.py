"""StoreExport: download the exported CSV and store it under exports/<yyyyMM>/ (a folder per coverage if two)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import object_store, soracom_client, stack_coverages
from soracharge.logic.export import request_coverage, store_export
from soracharge.models.export_flow import StoreExportRequest
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = parse_input(event, StoreExportRequest)
    coverages = stack_coverages()
    coverage = request_coverage(request.coverage, coverages, "StoreExport's input")
    request = request.model_copy(update={"coverage": coverage})
    stored = store_export(request, soracom=soracom_client(coverage), store=object_store(), coverages=coverages)
    return stored.to_event()
