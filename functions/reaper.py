"""The reaper function, on the runs table's DynamoDB stream: delete what a run left behind.

DynamoDB's TTL removes a finished run's header once its retention is over, and the reap request
(``X#<inc>``) that ``delete`` writes for a deleted run; the stream hands each such removal here,
and ``store.reap(run_id)`` deletes the run's checkpoints, signals, tag items and payload
objects. This is the one function whose role may delete items (``DeleteItem``,
``BatchWriteItem``): the API and resume functions only ever retire them (see
:mod:`heron.stores.dynamodb`). The event source's filter passes only those TTL removals;
:func:`heron.stores.dynamodb.expired_run_ids` checks again, so any other record is skipped. A
record whose reap raised is reported as a partial batch failure (its ``SequenceNumber``), so
Lambda retries the batch from there; reaping a run twice is harmless.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from heron.functions import _lambda
from heron.functions._observe import logger, metrics, publish_metrics

__all__ = ["handler"]


@logger.inject_lambda_context(clear_state=True)
@publish_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Pure, and imported with the store on first use.
    from heron.stores.dynamodb import DynamoDBStore, expired_run_ids

    rt = _lambda.get_runtime()
    expired = [
        (record["dynamodb"]["SequenceNumber"], run_id)
        for record in event.get("Records", [])
        for run_id in expired_run_ids({"Records": [record]})
    ]
    store = rt.store
    if expired and not isinstance(store, DynamoDBStore):
        raise TypeError(
            f"the reaper removes runs from the DynamoDB table whose stream feeds it, but the "
            f"runtime's store is {store!r}"
        )

    async def reap() -> list[BaseException | None]:
        assert isinstance(store, DynamoDBStore)
        return await asyncio.gather(
            *(store.reap(run_id) for _, run_id in expired), return_exceptions=True
        )

    failures = []
    outcomes = _lambda.run(reap()) if expired else []
    for (sequence, run_id), outcome in zip(expired, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            logger.error("run reap failed", extra={"run_id": run_id, "error": repr(outcome)})
            failures.append({"itemIdentifier": sequence})
    metrics.add_metric(name="RunsReaped", unit=MetricUnit.Count, value=len(expired) - len(failures))
    logger.info(
        "reap done", extra={"reaped": len(expired) - len(failures), "failed": len(failures)}
    )
    return {"batchItemFailures": failures}
