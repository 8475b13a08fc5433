"""Dispatchers: how a run that is due gets an executor.

Deployed, the SQS dispatcher sends run ids to the resume queue (a delayed message is a precise
timer). Locally and in tests the in-process dispatcher resumes runs as asyncio tasks. Losing a
dispatch is never fatal: the sweep finds every run whose ``wake_at`` has passed.
:func:`dispatcher_from_env` picks one: ``HERON_QUEUE_URL`` set means SQS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from heron.stores.contract import HeronError

__all__ = [
    "DispatchError",
    "Dispatcher",
    "InProcessDispatcher",
    "NoopDispatcher",
    "SQSDispatcher",
    "dispatcher_from_env",
]

log = logging.getLogger("heron.dispatch")


class Dispatcher(Protocol):
    async def dispatch(self, run_ids: Sequence[str], *, delay: float = 0.0) -> None:
        """Have each run resumed, after ``delay`` seconds (best effort; the sweep is the net)."""
        ...


class NoopDispatcher:
    """Dispatches nothing: runs are driven by ``Runtime.wait``/``resume``/``sweep`` by hand."""

    async def dispatch(self, run_ids: Sequence[str], *, delay: float = 0.0) -> None:
        return None


class InProcessDispatcher:
    """Resumes runs as background tasks on the running event loop (``heron dev``, tests)."""

    def __init__(self, resume: Callable[[str], Awaitable[Any]] | None = None) -> None:
        self._resume = resume
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()

    def bind(self, resume: Callable[[str], Awaitable[Any]]) -> None:
        if self._resume is None:
            self._resume = resume

    async def dispatch(self, run_ids: Sequence[str], *, delay: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        for run_id in run_ids:
            if delay > 0:
                self._later(loop, delay, run_id)
            else:
                self._spawn(run_id)

    def _later(self, loop: asyncio.AbstractEventLoop, delay: float, run_id: str) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            self._spawn(run_id)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _spawn(self, run_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run(run_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, run_id: str) -> None:
        if self._resume is None:
            return
        try:
            await self._resume(run_id)
        except Exception:  # the sweep will try again; a background task must not die loudly
            log.exception("resume of run %r failed", run_id)

    async def drain(self) -> None:
        """Wait for every resume started so far (timers still pending are left alone)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


class DispatchError(HeronError):
    """A dispatcher could not hand some runs to an executor (they stay due: the sweep retries)."""

    def __init__(self, message: str, run_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.run_ids = list(run_ids)


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

    async def close(self) -> None:
        """Close the client made here (a client passed in is the caller's to close)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            self._client = None
            await stack.aclose()


def _region_of(queue_url: str) -> str | None:
    match = _REGION_IN_URL.match(queue_url)
    return match.group(1) if match else None


def dispatcher_from_env(environ: Mapping[str, str] | None = None) -> Dispatcher:
    """The dispatcher the configuration asks for.

    ``HERON_QUEUE_URL`` set: an :class:`SQSDispatcher` on that queue, through
    ``HERON_SQS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_SQS`` when set (a local SQS, moto).
    Otherwise an :class:`InProcessDispatcher`.
    """
    env = os.environ if environ is None else environ
    queue_url = env.get("HERON_QUEUE_URL")
    if queue_url:
        endpoint = env.get("HERON_SQS_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_SQS") or None
        return SQSDispatcher(queue_url, endpoint_url=endpoint)
    return InProcessDispatcher()
