"""Signals racing suspension: a signal is never lost, and is consumed exactly once.

The dangerous window is between an executor's load of the run (no signal yet) and the save
of its suspension (``waiting``, nothing due): a signal stored in between must make that save
fail (``Conflict``: the signal bumped the revision) so the executor reloads and consumes it,
instead of putting the run to sleep forever.

* In process, one signal per iteration is sent concurrently with a resume, after 0, 1, 2, ...
  event-loop turns, through a store that yields around every call, so over the iterations the
  signal lands at every boundary of the resume: before its load, inside the window, after its
  save.
* Across processes on SQLite, two executor processes drive 30 runs while a third process sends
  their signals.
* A signal sent while another executor holds the lease (alive, or stalled past its lease).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from heron.runtime import Context, NoopDispatcher, RetryPolicy, Runtime, step_key
from heron.runtime.testing import FakeClock
from heron.stores.contract import Conflict, WorkflowStore
from tests.reliability.conftest import ProxyStore, Workers
from tests.reliability.worker import build_runtime, read_lines

# Two attempts: an attempt that outlives its lease (a stalled executor) looks, from outside, like
# one whose executor died, and counts against the step's policy; the successor's is the second.
NO_RETRY = RetryPolicy(max_attempts=2, initial_delay=0)


def build(
    store: WorkflowStore, clock: Any, log: list[tuple[str, int]], gate: asyncio.Event | None = None
) -> Runtime:
    rt = Runtime(store, lease_ttl=30.0, dispatcher=NoopDispatcher(), clock=clock)

    @rt.step(name="before", retry=NO_RETRY)
    async def before() -> str:
        key = step_key()
        log.append((key.run_id, key.seq))
        await asyncio.sleep(0)
        if gate is not None:
            await gate.wait()
        return "before"

    @rt.step(name="after", retry=NO_RETRY)
    async def after(payload: Any) -> Any:
        key = step_key()
        log.append((key.run_id, key.seq))
        return {"got": payload}

    @rt.workflow("one")
    async def one(ctx: Context, _: Any) -> Any:
        await ctx.step(before)
        payload = await ctx.wait_for_signal("go")
        return await ctx.step(after, payload)

    @rt.workflow("many")
    async def many(ctx: Context, n: int) -> list[Any]:
        await ctx.step(before)
        return [await ctx.wait_for_signal("go") for _ in range(n)]

    return rt


async def test_signal_racing_suspension_is_never_lost(store: WorkflowStore) -> None:
    proxy = ProxyStore(store, yield_around=True)
    log: list[tuple[str, int]] = []
    rt = build(proxy, FakeClock(), log)
    landed: dict[str, int] = {"before load": 0, "in the window": 0, "after save": 0}
    # How long one resume takes on this store: the signal is sent ever later across it (loop
    # passes on an in-process store, real time on one across the network).
    await rt.start("one", None, run_id="calibrate")
    began = time.perf_counter()
    await rt.resume("calibrate")
    span = time.perf_counter() - began
    for turns in range(45):
        run_id = await rt.start("one", None, run_id=f"one-{turns}")
        first = len(proxy.outcomes)

        async def send(run_id: str = run_id, turns: int = turns) -> None:
            if span < 0.002:
                for _ in range(turns):
                    await asyncio.sleep(0)
            else:
                await asyncio.sleep(span * turns / 40)
            await rt.signal(run_id, "go", {"turns": turns}, signal_id=f"go-{turns}")

        if turns == 0:  # at least once, plainly before the executor
            await send()
            await rt.resume(run_id)
        else:
            await asyncio.gather(send(), rt.resume(run_id))
        ops = [(op, result) for op, _, result in proxy.outcomes[first:]]
        at = next(i for i, (op, _) in enumerate(ops) if op == "signal")
        load = next(i for i, (op, _) in enumerate(ops) if op == "load")
        # the suspension's save: the last before the release (the first counts the step's
        # attempt before it runs)
        saves = [i for i, (op, _) in enumerate(ops) if op == "save"][-1:]
        if at < load:
            landed["before load"] += 1
        elif saves and at > saves[0] and not isinstance(ops[saves[0]][1], Conflict):
            landed["after save"] += 1
        else:
            landed["in the window"] += 1

        assert await rt.wait(run_id, timeout=5) == {"got": {"turns": turns}}
        loaded = await store.load(run_id)
        assert loaded is not None
        consumed = [cp.value["id"] for cp in loaded.checkpoints if cp.kind == "signal"]
        assert consumed == [f"go-{turns}"]
        assert log.count((run_id, 0)) == 1 and log.count((run_id, 2)) == 1
    assert all(landed.values()), f"the signal never landed somewhere: {landed}"
    conflicts = [r for op, _, r in proxy.outcomes if op == "save" and isinstance(r, Conflict)]
    assert conflicts, "no suspension save ever lost to a signal: the window was never hit"


async def test_burst_of_signals_each_consumed_once(store: WorkflowStore) -> None:
    proxy = ProxyStore(store, yield_around=True)
    log: list[tuple[str, int]] = []
    rt = build(proxy, FakeClock(), log)
    for spacing in range(6):
        run_id = await rt.start("many", 5, run_id=f"many-{spacing}")

        async def send(run_id: str = run_id, spacing: int = spacing) -> None:
            for i in range(5):
                for _ in range(spacing):
                    await asyncio.sleep(0)
                await rt.signal(run_id, "go", i, signal_id=f"s{i}")

        await asyncio.gather(rt.resume(run_id), send())
        assert sorted(await rt.wait(run_id, timeout=5)) == [0, 1, 2, 3, 4]
        loaded = await store.load(run_id)
        assert loaded is not None
        consumed = [cp.value["id"] for cp in loaded.checkpoints if cp.kind == "signal"]
        assert sorted(consumed) == [f"s{i}" for i in range(5)]


async def test_signals_from_another_process_race_two_executor_processes(
    workers: Workers, sqlite_store: WorkflowStore, db_path: str, tmp_path: Path
) -> None:
    log = str(tmp_path / "effects.log")
    rt = build_runtime(sqlite_store, lease_ttl=30.0)
    run_ids = [
        await rt.start("signaled", {"log": log}, run_id=f"sig-run-{i:02d}") for i in range(30)
    ]
    runs = ",".join(run_ids)
    procs = [workers.spawn("race", db_path, "--runs", runs, "--lease", "30") for _ in range(2)]
    procs.append(workers.spawn("signal", db_path, "--runs", runs, "--seed", "7"))
    for proc in procs:
        workers.wait_ready(proc)
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        rc, err = workers.finish(proc)
        assert rc == 0, f"{proc.args[3]} worker failed (rc={rc}):\n{err}"

    executed = {tuple(line.split()) for line in read_lines(log)}
    for run_id in run_ids:
        loaded = await sqlite_store.load(run_id)
        assert loaded is not None
        assert loaded.run.status == "completed", (run_id, loaded.run.status, loaded.run.error)
        assert loaded.run.output == {"got": {"run": run_id}}
        kinds = [(cp.seq, cp.kind) for cp in loaded.checkpoints]
        assert kinds == [(0, "step"), (1, "signal"), (2, "step")]
        assert loaded.checkpoints[1].value == {"id": f"sig-{run_id}", "payload": {"run": run_id}}
        assert loaded.signals == []  # consumed, by the checkpoint above, exactly once
        assert {(run_id, "0"), (run_id, "2")} <= executed


async def test_signal_while_another_executor_holds_the_lease(store: WorkflowStore) -> None:
    """A holds the lease, inside its step. The signal is stored and makes the run due; B finds
    the lease taken and does nothing; A, suspending on its older header, must not put the run
    to sleep over the signal: it consumes it and completes."""
    log: list[tuple[str, int]] = []
    clock = FakeClock()
    gate = asyncio.Event()
    rt_a = build(store, clock, log, gate)
    rt_b = build(store, clock, log)
    run_id = await rt_a.start("one", None, run_id="held")
    task_a = asyncio.create_task(rt_a.resume(run_id))
    while not log:
        await asyncio.sleep(0)
    await rt_b.signal(run_id, "go", "payload", signal_id="go-held")
    assert run_id in await store.due(clock.now(), 10)
    assert await rt_b.resume(run_id) is None, "B ran under A's live lease"
    gate.set()
    header = await task_a
    assert header is not None and header.status == "completed"
    assert header.output == {"got": "payload"}
    assert log == [(run_id, 0), (run_id, 2)]


async def test_signal_while_a_stalled_executor_holds_a_lapsed_lease(store: WorkflowStore) -> None:
    """A stalls in its step past its lease; the signal arrives; B takes over after the lease
    lapses, runs the uncommitted step again, consumes the signal and completes. When A wakes
    up, its commit loses and it changes nothing."""
    log: list[tuple[str, int]] = []
    clock = FakeClock()
    gate = asyncio.Event()
    rt_a = build(store, clock, log, gate)
    rt_b = build(store, clock, log)
    run_id = await rt_a.start("one", None, run_id="stalled")
    task_a = asyncio.create_task(rt_a.resume(run_id))
    while not log:
        await asyncio.sleep(0)
    await rt_b.signal(run_id, "go", "payload", signal_id="go-stalled")
    clock.advance(31.0)  # A's lease (30 s) lapses; A never renewed it
    assert await rt_b.wait(run_id, timeout=5) == {"got": "payload"}
    gate.set()
    await task_a
    info = await rt_b.get(run_id)
    assert info.status == "completed" and info.output == {"got": "payload"}
    assert [(cp.seq, cp.kind) for cp in info.steps] == [(0, "step"), (1, "signal"), (2, "step")]
    assert sorted(log) == [(run_id, 0), (run_id, 0), (run_id, 2)]  # A's step 0, then B's
