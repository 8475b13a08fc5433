"""The reaper function, on the runs table's DynamoDB stream: delete what TTL leaves of a run.

DynamoDB's TTL deletes only the items that carry the TTL attribute, a finished run's header;
the stream hands each such removal here, and ``store.delete(run_id)`` removes the run's
checkpoints, signals and payload objects. The event source's filter passes only TTL deletions;
:func:`heron.stores.dynamodb.expired_run_ids` checks again, so any other record is skipped. A record
whose delete raised is reported as a partial batch failure (its ``SequenceNumber``), so Lambda
retries the batch from there; deleting a run twice is harmless.
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
    from heron.stores.dynamodb import expired_run_ids  # pure; imported with the store on first use

    rt = _lambda.get_runtime()
    expired = [
        (record["dynamodb"]["SequenceNumber"], run_id)
        for record in event.get("Records", [])
        for run_id in expired_run_ids({"Records": [record]})
    ]

    async def reap() -> list[BaseException | None]:
        return await asyncio.gather(
            *(rt.delete(run_id) for _, run_id in expired), return_exceptions=True
        )

    failures = []
    for (sequence, run_id), outcome in zip(expired, _lambda.run(reap()), strict=True):
        if isinstance(outcome, BaseException):
            logger.error("run delete failed", extra={"run_id": run_id, "error": repr(outcome)})
            failures.append({"itemIdentifier": sequence})
    metrics.add_metric(name="RunsReaped", unit=MetricUnit.Count, value=len(expired) - len(failures))
    logger.info(
        "reap done", extra={"reaped": len(expired) - len(failures), "failed": len(failures)}
    )
    return {"batchItemFailures": failures}
