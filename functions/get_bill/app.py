"""GetBill: read the month's bill and insist it is closed (Arazzo step getBill)."""

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import soracom_client, stack_accounts, stack_coverages
from soracharge.logic.export import read_closed_bill, request_account
from soracharge.models.export_flow import ExportRequest
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = parse_input(event, ExportRequest)
    account = request_account(
        request.coverage, request.operator, stack_coverages(), stack_accounts(), "GetBill's input"
    )
    today = datetime.now(UTC).date()
    soracom = soracom_client(account.coverage, account.operator)
    bill = read_closed_bill(request, soracom=soracom, today=today, coverage=account.coverage, operator=account.operator)
    return bill.to_event()
