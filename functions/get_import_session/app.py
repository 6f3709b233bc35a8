"""GetImportSession: look once at a closed import session's status (the follow state machine loops)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import cloudblue_client
from soracharge.logic.sessions import poll_session
from soracharge.models.imports import SessionProgress
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    progress = parse_input(event, SessionProgress)
    return poll_session(progress, cloudblue_client()).to_event()
