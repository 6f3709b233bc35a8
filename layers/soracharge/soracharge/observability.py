"""The one Logger, Tracer and Metrics of every function.

Service name, log level and metrics namespace come from ``POWERTOOLS_*`` variables set in the
template's Globals (and by the local engine), so nothing here is configured in code.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
