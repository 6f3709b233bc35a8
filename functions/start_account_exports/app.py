"""StartAccountExports: the monthly schedule of the operators SoracomAccounts lists, one export each."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import stack_accounts, workflows
from soracharge.logic.export import start_account_exports
from soracharge.models.export_flow import ExportRequest
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer
from soracharge.settings import ExportStarterSettings, load_settings


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = parse_input(event, ExportRequest)
    arn = load_settings(ExportStarterSettings).soracharge_export_state_machine_arn
    started = start_account_exports(request, stack_accounts(), workflows(), arn)
    return {"month": request.billing_month(), "started": started}
