"""FinishImport: record how CloudBlue's rating of a session ended; alert on FAILED_PROCESSED or no end."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import follow_dependencies
from soracharge.logic.sessions import finish_import
from soracharge.models.imports import FollowSessionRequest
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = parse_input(event, FollowSessionRequest)
    store, ledger, notifier, follow_arn = follow_dependencies()
    return finish_import(request, store, ledger, notifier, follow_state_machine_arn=follow_arn).to_event()
