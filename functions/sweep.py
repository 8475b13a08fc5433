"""The sweep function, run by an EventBridge schedule (every minute): dispatch every run due.

Pages through ``due(now)`` until nothing is left or the invocation nears its deadline; the
resume queue gets the ids, ten to a message batch.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from heron.functions import _lambda
from heron.functions._observe import logger, metrics, publish_metrics

__all__ = ["handler"]

#: Runs per ``due`` page (``HERON_SWEEP_PAGE``).
PAGE = int(os.environ.get("HERON_SWEEP_PAGE") or 100)


@logger.inject_lambda_context(clear_state=True)
@publish_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    rt = _lambda.get_runtime()

    async def sweep() -> int:
        count = await rt.sweep(PAGE, deadline=_lambda.deadline(rt, context))
        await _lambda.settle(rt)
        return count

    dispatched = _lambda.run(sweep())
    metrics.add_metric(name="RunsDispatched", unit=MetricUnit.Count, value=dispatched)
    logger.info("sweep done", extra={"dispatched": dispatched})
    return {"dispatched": dispatched}
