"""GetBill: read the month's bill and insist it is closed (Arazzo step getBill)."""

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import soracom_client
from soracharge.logic.export import read_closed_bill
from soracharge.models.export_flow import ExportRequest
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = parse_input(event, ExportRequest)
    bill = read_closed_bill(request, soracom=soracom_client(), today=datetime.now(UTC).date())
    return bill.to_event()
