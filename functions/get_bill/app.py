"""GetBill: read the month's bill and insist it is closed (Arazzo step getBill)."""

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import soracom_client, stack_coverages
from soracharge.logic.export import read_closed_bill, request_coverage
from soracharge.models.export_flow import ExportRequest
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = parse_input(event, ExportRequest)
    coverage = request_coverage(request.coverage, stack_coverages(), "GetBill's input")
    today = datetime.now(UTC).date()
    bill = read_closed_bill(request, soracom=soracom_client(coverage), today=today, coverage=coverage)
    return bill.to_event()
