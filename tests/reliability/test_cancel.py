"""Cancellation while a step runs.

``Runtime.cancel`` marks the run terminal and bumps its revision. The executor, busy in a long
step, learns of it at its next store round trip that can see the header: here the background
lease renewal (the step runs longer than a third of the lease), which the store refuses for a
terminal run. The step in flight may finish and commit (or not); no further step may start,
and the run ends ``cancelled``: the executor's own end of the run never overwrites the cancel.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from heron.runtime import Context, NoopDispatcher, RetryPolicy, Runtime, WorkflowFailed, step_key
from heron.stores.contract import WorkflowStore
from tests.reliability.conftest import ProxyStore, wait_until

NO_RETRY = RetryPolicy(max_attempts=1)
PARALLEL = 3


class Harness:
    """A workflow ``s0 -> long step(s) -> s_after x2``; long steps wait for ``finish``."""

    def __init__(self, store: WorkflowStore, kind: str, lease_ttl: float) -> None:
        self.rt = Runtime(store, lease_ttl=lease_ttl, dispatcher=NoopDispatcher())
        self.log: list[tuple[str, int]] = []
        self.started = 0
        self.finish_async = asyncio.Event()
        self.finish_thread = threading.Event()
        rt, log = self.rt, self.log

        @rt.step(name="quick", retry=NO_RETRY)
        async def quick(i: int) -> int:
            log.append(("start", step_key().seq))
            return i

        @rt.step(name="long", retry=NO_RETRY)
        async def long(i: int) -> int:
            seq = step_key().seq
            log.append(("start", seq))
            self.started += 1
            await self.finish_async.wait()
            log.append(("end", seq))
            return i

        @rt.step(name="long_sync", retry=NO_RETRY)
        def long_sync(i: int) -> int:  # runs in a worker thread
            seq = step_key().seq
            log.append(("start", seq))
            self.started += 1
            self.finish_thread.wait(timeout=20)
            log.append(("end", seq))
            return i

        @rt.workflow("cancellable")
        async def cancellable(ctx: Context, _: Any) -> list[Any]:
            out: list[Any] = [await ctx.step(quick, 0)]
            if kind == "async":
                out.append(await ctx.step(long, 1))
            elif kind == "thread":
                out.append(await ctx.step(long_sync, 1))
            else:
                out.append(await asyncio.gather(*(ctx.step(long, i) for i in range(PARALLEL))))
            out.append(await ctx.step(quick, 2))
            out.append(await ctx.step(quick, 3))
            return out

        self.long_seqs = [1] if kind != "gather" else list(range(1, 1 + PARALLEL))
        self.expected_started = len(self.long_seqs)

    def finish(self) -> None:
        self.finish_async.set()
        self.finish_thread.set()


@pytest.mark.parametrize("kind", ["async", "thread", "gather"])
async def test_cancel_during_a_long_step_starts_no_further_step(
    store: WorkflowStore, kind: str
) -> None:
    proxy = ProxyStore(store)
    h = Harness(proxy, kind, lease_ttl=0.3)
    client = Runtime(store, dispatcher=NoopDispatcher())
    run_id = await h.rt.start("cancellable", None, run_id="cancel-me")
    task = asyncio.create_task(h.rt.resume(run_id))
    try:
        await wait_until(lambda: h.started == h.expected_started, what="the long step(s)")
        await client.cancel(run_id, "operator said stop")
        # The executor learns of the cancel when the store refuses its lease renewal.
        await wait_until(lambda: False in proxy.results("acquire"), what="a refused renewal")
    finally:
        h.finish()
    header = await task

    assert header is not None and header.status == "cancelled"
    info = await client.get(run_id)
    assert info.status == "cancelled" and info.output is None
    assert info.error == {"type": "Cancelled", "message": "operator said stop"}
    started = [seq for what, seq in h.log if what == "start"]
    assert started == [0, *h.long_seqs], f"a step started after the cancel: {h.log}"
    assert {cp.seq for cp in info.steps} <= {0, *h.long_seqs}
    assert run_id not in await store.due(float("inf"), 10)
    with pytest.raises(WorkflowFailed) as failed:
        await client.wait(run_id, timeout=5)
    assert failed.value.status == "cancelled"
    # Nothing more happens to a cancelled run.
    again = await h.rt.resume(run_id)
    assert again is not None and again.status == "cancelled"
    assert [seq for what, seq in h.log if what == "start"] == started


@pytest.mark.parametrize("kind", ["async", "gather"])
async def test_cancel_is_never_overwritten_by_the_executor_finishing(
    store: WorkflowStore, kind: str
) -> None:
    """With a long lease no renewal happens before the step ends, so the executor may go on
    (the stores here do not check the header on ``append``); its completion save must lose."""
    h = Harness(store, kind, lease_ttl=30.0)
    client = Runtime(store, dispatcher=NoopDispatcher())
    run_id = await h.rt.start("cancellable", None, run_id="cancel-me-late")
    task = asyncio.create_task(h.rt.resume(run_id))
    try:
        await wait_until(lambda: h.started == h.expected_started, what="the long step(s)")
        await client.cancel(run_id)
    finally:
        h.finish()
    header = await task
    assert header is not None and header.status == "cancelled"
    info = await client.get(run_id)
    assert info.status == "cancelled" and info.output is None
    with pytest.raises(WorkflowFailed):
        await client.wait(run_id, timeout=5)
