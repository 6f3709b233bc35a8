"""The one Logger, Tracer and Metrics of every function.

Service name, log level and metrics namespace come from ``POWERTOOLS_*`` variables set in the
template's Globals (and by the local engine), so nothing here is configured in code.
"""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger, Metrics, Tracer

# httpx logs every request's full URL at INFO: for the export's download that is a pre-signed URL
# whose query carries temporary credentials, so httpx's own logs stay at warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)

logger = Logger()
tracer = Tracer()
metrics = Metrics()
