"""The resume function: one invocation's worth of work on each run it is handed.

Two ways in:

* an SQS batch from the resume queue, each message ``{"run_id": ...}``: the runs are resumed
  concurrently on the container's loop, and a message whose resume raised is reported back as
  a partial batch failure (Powertools batch processing) so SQS retries only that one;
* a direct invoke ``{"run_id": ...}``, which returns the run's status.

Each resume stops starting new steps when the invocation nears its deadline
(``context.get_remaining_time_in_millis()`` less a safety margin) and suspends the run to be
continued at once. A run that suspends with a wake less than 15 minutes away is sent back to the
queue with ``DelaySeconds`` (the runtime's SQS dispatcher does it), so timers fire on time; the
sweep wakes everything else.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from heron.functions import _lambda
from heron.functions._observe import log_context, logger, metrics, publish_metrics
from heron.runtime import RunNotFound, Runtime
from heron.stores.contract import Run

__all__ = ["handler", "processor"]


class ContainerLoopBatchProcessor(AsyncBatchProcessor):
    """Powertools' async batch processor, run on the container's one event loop (outside a
    Lambda it would run each batch with ``asyncio.run``, on a new loop every time)."""

    def async_process(self) -> list[tuple[Any, ...]]:
        async def process_all() -> list[tuple[Any, ...]]:
            results = await asyncio.gather(*(self._async_process_record(r) for r in self.records))
            await _lambda.settle()
            return list(results)

        return _lambda.run(process_all())


#: Every record's outcome is reported; a batch where all failed is reported too, not raised.
processor = ContainerLoopBatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@publish_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    rt = _lambda.get_runtime()
    deadline = _lambda.deadline(rt, context)
    if "Records" not in event:
        return _lambda.run(_invoke(rt, _run_id(event), deadline))

    async def record_handler(record: SQSRecord) -> str | None:
        run = await _resume(rt, _run_id(_body(record)), deadline)
        return None if run is None else run.status

    response = async_process_partial_response(event, record_handler, processor, context)
    return dict(response)


async def _invoke(rt: Runtime, run_id: str, deadline: float | None) -> dict[str, Any]:
    run = await _resume(rt, run_id, deadline)
    await _lambda.settle(rt)
    if run is None:
        return {"run_id": run_id, "resumed": False}
    return {"run_id": run_id, "resumed": True, "status": run.status, "wake_at": run.wake_at}


async def _resume(rt: Runtime, run_id: str, deadline: float | None) -> Run | None:
    log_context(run_id=run_id)
    metrics.add_metric(name="Resumes", unit=MetricUnit.Count, value=1)
    try:
        run = await rt.resume(run_id, deadline=deadline)
    except RunNotFound:  # deleted since it was dispatched: nothing to do, drop the message
        logger.warning("run not found; nothing to resume", extra={"run_id": run_id})
        return None
    if run is None:
        logger.info("run not due or leased elsewhere; nothing to do", extra={"run_id": run_id})
    else:
        logger.info(
            "run resumed",
            extra={
                "run_id": run.id,
                "workflow": run.workflow,
                "status": run.status,
                "wake_at": run.wake_at,
            },
        )
    return run


def _body(record: SQSRecord) -> Any:
    try:
        return json.loads(record.body)
    except (TypeError, ValueError):
        raise ValueError(
            f'SQS message {record.message_id!r} is not JSON; expected {{"run_id": ...}}'
        ) from None


def _run_id(message: Any) -> str:
    run_id = message.get("run_id") if isinstance(message, dict) else None
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f'expected {{"run_id": "<id>"}}, got a {type(message).__name__}')
    return run_id
