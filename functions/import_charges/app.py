"""ImportCharges: an S3 upload of a billing CSV (exports/ or uploads/) becomes charges in CloudBlue."""

from typing import Any

from aws_lambda_powertools.utilities.parser.models import S3Model
from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import import_dependencies
from soracharge.logic.imports import import_object
from soracharge.models.imports import ObjectRef
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    notification = parse_input(event, S3Model)
    dependencies = import_dependencies(remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000)
    reports = [
        import_object(ObjectRef.from_s3_record(record), dependencies).to_event() for record in notification.Records
    ]
    return {"reports": reports}
