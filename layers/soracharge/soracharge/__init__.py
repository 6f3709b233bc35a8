"""soracharge: the code every Lambda function shares (shipped as the SharedLayer).

Layout, one guess per behaviour:
- ``models/``    pydantic contracts at every boundary (Soracom bodies, state machine payloads)
- ``adapters/``  the only modules that touch the network or AWS (httpx, boto3)
- ``logic/``     use cases: take and return models, talk to adapters through Protocols
- ``settings``   one validated settings model per concern, read at call time
- ``errors``     the typed errors the state machine's Retry/Catch match by name
- ``observability`` the one Logger, Tracer and Metrics
"""
