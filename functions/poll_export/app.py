"""PollExport: look once at the export's status (Arazzo step pollExport; the state machine loops)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import soracom_client, stack_accounts, stack_coverages
from soracharge.logic.export import poll_export, request_account
from soracharge.models.export_flow import ExportProgress
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    progress = parse_input(event, ExportProgress)
    account = request_account(
        progress.coverage, progress.operator, stack_coverages(), stack_accounts(), "PollExport's input"
    )
    progress = progress.model_copy(update={"coverage": account.coverage})
    polled = poll_export(progress, soracom=soracom_client(account.coverage, account.operator))
    return polled.to_event()
