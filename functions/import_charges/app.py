"""ImportCharges: an S3 upload of a billing CSV (exports/ or uploads/) becomes charges in CloudBlue.

It also takes a person's decision on an import held for approval (the alert's command):
``{"review": {"objectId": "<bucket>/<key>#<version>", "plan": "<the preview's plan>",
"decision": "approve" | "reject", "by": "<who>"}}``.
"""

from typing import Any

from aws_lambda_powertools.utilities.parser.models import S3Model
from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import import_dependencies
from soracharge.logic.imports import import_object, review_object
from soracharge.models.imports import ObjectRef, ReviewRequest
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    dependencies = import_dependencies(
        remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000,
        function_name=context.function_name,
    )
    if isinstance(event, dict) and "review" in event:
        request = parse_input(event["review"], ReviewRequest)
        return {"reports": [review_object(request, dependencies).to_event()]}
    notification = parse_input(event, S3Model)
    reports = [
        import_object(ObjectRef.from_s3_record(record), dependencies).to_event() for record in notification.Records
    ]
    return {"reports": reports}
