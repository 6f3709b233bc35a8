"""Alert: an execution that ended badly (EventBridge) or an import that failed three times (Lambda's
on-failure destination) becomes a message on the alerts topic: what failed, and what to do."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import notifier
from soracharge.logic import alerts
from soracharge.models.alerts import ExecutionStatusChange, FailedInvocation
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer
from soracharge.settings import AlertSettings, load_settings


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    settings = load_settings(AlertSettings)
    alert: alerts.Alert | None
    if isinstance(event, dict) and "detail-type" in event:
        change = parse_input(event, ExecutionStatusChange).detail
        alert = alerts.for_execution(
            change,
            export_state_machine_arn=settings.soracharge_export_state_machine_arn,
            soracom_secret=settings.soracom_auth_secret_id,
            coverages=settings.coverages,
        )
    else:
        record = parse_input(event, FailedInvocation)
        alert = alerts.for_failed_import(record, cloudblue_secret=settings.aps_credentials_secret_id)
    if alert is None:
        logger.info("Nothing to alert")
        return {"published": False}
    alerts.publish(notifier(settings.soracharge_alerts_topic_arn), alert)
    return {"published": True, "subject": alert.subject}
