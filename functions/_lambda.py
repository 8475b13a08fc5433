"""One Lambda container: its event loop and its ``Runtime``, made on first use, kept while warm.

A container runs one invocation at a time and lives for many. Every handler runs its work with
:func:`run` on the same event loop (never ``asyncio.run`` per invocation), so the store's
clients, connection pools and TLS sessions, which belong to the loop they were made on, are
built once and reused by every warm invocation. Nothing here touches a loop at import time::

    cold start:  import handler ─► first invocation: new loop ─► load_runtime(HERON_APP)
    warm:        invocation ─► loop.run_until_complete(work) ─► same loop, same runtime, ...

The time budget: :func:`deadline` is the runtime clock's "now" plus the invocation's remaining
time, less a safety margin (``HERON_SAFETY_MARGIN`` seconds; by default a tenth of the
remaining time, at most 5 s) for the step in flight and the header save.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from heron.functions._app import load_runtime, resolve_spec
from heron.functions._config import Config, configure
from heron.runtime import Runtime

__all__ = ["LambdaContext", "deadline", "event_loop", "get_runtime", "reset", "run", "settle"]

T = TypeVar("T")

#: The default safety margin: this share of the remaining time, at most ``MAX_MARGIN`` seconds.
MARGIN_SHARE = 0.1
MAX_MARGIN = 5.0

_loop: asyncio.AbstractEventLoop | None = None
_runtime: Runtime | None = None


class LambdaContext(Protocol):
    """What the handlers use of Lambda's context object."""

    aws_request_id: str

    def get_remaining_time_in_millis(self) -> int: ...


def event_loop() -> asyncio.AbstractEventLoop:
    """The container's loop, made on first use and set as the thread's current loop (Mangum
    and Powertools ask ``asyncio.get_event_loop()`` for theirs)."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    return _loop


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run one invocation's ``work`` to completion on the container's loop."""
    return event_loop().run_until_complete(work)


def get_runtime() -> Runtime:
    """The user's ``Runtime`` (``HERON_APP``), loaded once per container, given the store
    (``HERON_STORE``) and dispatcher (``HERON_QUEUE_URL``) the environment names, and
    instrumented with Powertools logging and metrics."""
    global _runtime
    if _runtime is None:
        from heron.functions._observe import instrument

        _runtime = instrument(configure(load_runtime(), Config.from_env()))
    return _runtime


def safety_margin(remaining: float) -> float:
    configured = os.environ.get("HERON_SAFETY_MARGIN")
    if configured:
        try:
            margin = float(configured)
        except ValueError:
            raise ValueError(
                f"HERON_SAFETY_MARGIN must be a number of seconds, got {configured!r}"
            ) from None
        return max(0.0, margin)
    return min(MAX_MARGIN, remaining * MARGIN_SHARE)


def deadline(rt: Runtime, context: LambdaContext | None) -> float | None:
    """When to stop starting new steps, in ``rt``'s clock time (``None``: no context, no limit)."""
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if remaining_ms is None:
        return None
    remaining = max(0.0, float(remaining_ms()) / 1000)
    return rt.clock.now() + max(0.0, remaining - safety_margin(remaining))


async def settle(rt: Runtime | None = None) -> None:
    """With the in-process dispatcher (``sam local``, no queue), finish the resumes it started
    before the invocation returns: a frozen container runs nothing in the background.

    ``rt`` defaults to the container's runtime, if it has been loaded."""
    rt = rt or _runtime
    if rt is not None:
        await rt.dispatcher.drain()


def reset() -> None:
    """Forget the container's runtime and loop, as a new container would (tests).

    Closes the runtime (its store and dispatcher) on the loop it used, closes the loop, and
    forgets the ``HERON_APP`` module so the next invocation imports it afresh.
    """
    global _loop, _runtime
    rt, loop = _runtime, _loop
    _runtime = _loop = None
    try:
        if loop is not None and not loop.is_closed():
            if rt is not None:
                loop.run_until_complete(rt.close())
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    finally:
        asyncio.set_event_loop(None)
        # A new container imports the app afresh: module state (its Runtime, the store and
        # dispatcher the last configuration gave it) goes with the old one.
        module = resolve_spec().partition(":")[0]
        if module:
            sys.modules.pop(module, None)
