"""StartExport: start Soracom's asynchronous detailed-billing CSV export (Arazzo step startExport)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import soracom_client, stack_accounts, stack_coverages
from soracharge.logic.export import request_account, start_export
from soracharge.models.export_flow import StartExportRequest
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = parse_input(event, StartExportRequest)
    account = request_account(
        request.coverage, request.operator, stack_coverages(), stack_accounts(), "StartExport's input"
    )
    soracom = soracom_client(account.coverage, account.operator)
    progress = start_export(request.month, soracom=soracom, coverage=account.coverage, operator=account.operator)
    return progress.to_event()
