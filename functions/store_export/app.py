"""StoreExport: download the exported CSV and store it under exports/<yyyyMM>/ (a folder per coverage if two)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from soracharge.factories import object_store, soracom_client, stack_accounts, stack_coverages
from soracharge.logic.export import request_account, store_export
from soracharge.models.export_flow import StoreExportRequest
from soracharge.models.parsing import parse_input
from soracharge.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    request = parse_input(event, StoreExportRequest)
    coverages, accounts = stack_coverages(), stack_accounts()
    account = request_account(request.coverage, request.operator, coverages, accounts, "StoreExport's input")
    request = request.model_copy(update={"coverage": account.coverage})
    soracom = soracom_client(account.coverage, account.operator)
    stored = store_export(request, soracom=soracom, store=object_store(), coverages=coverages, accounts=accounts)
    return stored.to_event()
