"""Dispatchers: how a run that is due gets an executor.

Locally and in tests the in-process dispatcher resumes runs as asyncio tasks; deployed, the
edges pass their own (``heron.functions``: the SQS dispatcher, whose delayed messages are
precise timers; Cloudflare Queues on Workers). Losing a dispatch is never fatal: the sweep
finds every run whose ``wake_at`` has passed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from heron.stores.contract import HeronError

__all__ = ["DispatchError", "Dispatcher", "InProcessDispatcher", "NoopDispatcher"]

log = logging.getLogger("heron.dispatch")


class Dispatcher(Protocol):
    """How due runs reach an executor."""

    async def dispatch(self, run_ids: Sequence[str], *, delay: float = 0.0) -> None:
        """Have each run resumed, after ``delay`` seconds (best effort; the sweep is the net).
        May raise: the caller logs it, and the runs stay due."""
        ...

    async def drain(self) -> None:
        """Wait for the work this dispatcher does itself (in-process resumes) to finish; a
        dispatcher that hands runs to something else returns at once."""
        ...

    async def close(self) -> None:
        """Stop: pending timers are dropped (the sweep wakes those runs), clients closed."""
        ...


class NoopDispatcher:
    """Dispatches nothing: runs are driven by ``Runtime.wait``/``resume``/``sweep`` by hand."""

    async def dispatch(self, run_ids: Sequence[str], *, delay: float = 0.0) -> None:
        return None

    async def drain(self) -> None:
        return None

    async def close(self) -> None:
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
