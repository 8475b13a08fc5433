"""The HTTP API function: API Gateway (HTTP API, payload 2.0) ─► Mangum ─► the ASGI app.

``handler`` translates the event for the app in :mod:`heron.functions.asgi` and runs it on the
container's one event loop; the request id becomes the logs' correlation id.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from mangum import Mangum

from heron.functions import _lambda
from heron.functions._observe import logger, publish_metrics
from heron.functions.asgi import app

__all__ = ["app", "handler"]

_mangum: Mangum | None = None


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
)
@publish_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _mangum
    loop = _lambda.event_loop()  # Mangum runs the app on the thread's current loop: this one
    if _mangum is None:
        _mangum = Mangum(app, lifespan="off")
    response: dict[str, Any] = _mangum(event, context)
    loop.run_until_complete(_lambda.settle())
    return response
