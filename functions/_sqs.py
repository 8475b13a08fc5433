"""The SQS dispatcher: how the deployed stack hands due runs to the resume function.

Each run id goes to the resume queue as ``{"run_id": ...}``; a delay is ``DelaySeconds``, so a
run suspending with a wake less than 15 minutes away is woken on time (a precise timer), and
the sweep wakes everything later or lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from heron.runtime import DispatchError

__all__ = ["SQS_BATCH", "SQS_MAX_DELAY", "SQSDispatcher"]

#: SQS limits: at most 10 messages a ``SendMessageBatch``, a delay of at most 15 minutes.
SQS_BATCH = 10
SQS_MAX_DELAY = 900
_REGION_IN_URL = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com", re.IGNORECASE)


class SQSDispatcher:
    """Sends each run id to the resume queue as ``{"run_id": ...}``; a delay is ``DelaySeconds``.

    The aioboto3 client is made on the first dispatch, inside the running event loop (never at
    import), and reused after that: a Lambda container keeps one loop for its whole life.
    ``client`` is a ready SQS client to use instead (never closed here). ``region`` defaults to
    the one in a standard queue URL, else the SDK's own configuration.

    A delay is rounded up to whole seconds and capped at 15 minutes, the SQS maximum; a run that
    is due later is woken by the sweep. A failed send raises (``DispatchError`` for messages SQS
    refused, the SDK's error otherwise): the run stays due, so the caller can log it and the
    sweep dispatches it again.
    """

    def __init__(
        self,
        queue_url: str,
        *,
        client: Any = None,
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        if not queue_url:
            raise ValueError("SQSDispatcher needs a queue URL")
        self.queue_url = queue_url
        self.region = region or _region_of(queue_url)
        self.endpoint_url = endpoint_url
        self._client = client
        self._stack: contextlib.AsyncExitStack | None = None
        self._opening: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"SQSDispatcher({self.queue_url!r})"

    async def _sqs(self) -> Any:
        if self._client is not None:
            return self._client
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._client is None:
                import aioboto3  # only now: the SDK is heavy, and the store may not need it

                stack = contextlib.AsyncExitStack()
                client = aioboto3.Session().client(
                    "sqs", region_name=self.region, endpoint_url=self.endpoint_url
                )
                self._client = await stack.enter_async_context(client)
                self._stack = stack
        return self._client

    async def dispatch(self, run_ids: Sequence[str], *, delay: float = 0.0) -> None:
        if not run_ids:
            return
        sqs = await self._sqs()
        seconds = min(SQS_MAX_DELAY, max(0, math.ceil(delay)))
        refused: list[str] = []
        reasons: set[str] = set()
        for start in range(0, len(run_ids), SQS_BATCH):
            chunk = run_ids[start : start + SQS_BATCH]
            entries = []
            for i, run_id in enumerate(chunk):
                entry: dict[str, Any] = {
                    "Id": str(i),
                    "MessageBody": json.dumps({"run_id": run_id}),
                }
                if seconds:
                    entry["DelaySeconds"] = seconds
                entries.append(entry)
            reply = await sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            for failure in reply.get("Failed") or ():
                refused.append(chunk[int(failure["Id"])])
                reasons.add(str(failure.get("Code") or failure.get("Message") or "refused"))
        if refused:
            raise DispatchError(
                f"SQS refused {len(refused)} of {len(run_ids)} dispatch(es) to "
                f"{self.queue_url} ({', '.join(sorted(reasons))}): runs {refused[:10]!r}",
                refused,
            )

    async def drain(self) -> None:
        """Nothing to wait for: the resume function does the work."""
        return None

    async def close(self) -> None:
        """Close the client made here (a client passed in is the caller's to close)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            self._client = None
            await stack.aclose()


def _region_of(queue_url: str) -> str | None:
    match = _REGION_IN_URL.match(queue_url)
    return match.group(1) if match else None
