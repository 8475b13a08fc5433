"""Racing executors: several OS processes resume the same runs on one SQLite file.

Each worker process (``worker.py race``) resumes every unfinished run, in random order, over and
over, until all of them are finished. Every step execution logs a line with a fresh nonce, and
the step returns that nonce, so the checkpoint tells which execution's value was committed.

* With a sane lease, runs hop between executors all the time (each resume has a deadline of a
  few milliseconds, so it does a step or two and suspends): every step runs exactly once.
* With a lease far too short for the steps (a step blocks its event loop longer than the lease,
  so the lease lapses and another executor takes the run over while the first is still in its
  step), executors overlap on purpose: steps may run more than once, but each commits once, and
  every run still completes with an output made of exactly the committed values.

In-process tests pin down, deterministically, the two interleavings the process races can hit:
an executor whose lease lapsed and was taken over, and an executor that loaded a run before
another executor's whole invocation.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from heron.runtime import Context, NoopDispatcher, Runtime
from heron.runtime.testing import FakeClock
from heron.stores.contract import WorkflowStore
from heron.stores.memory import MemoryStore
from tests.reliability.conftest import ProxyStore, ShiftedClock, Workers, wait_until
from tests.reliability.worker import build_runtime, racy_input, read_lines


async def start_runs(store: WorkflowStore, count: int, args: dict[str, Any]) -> list[str]:
    rt = build_runtime(store, lease_ttl=30.0)
    return [await rt.start("racy", args, run_id=f"race-{i:02d}") for i in range(count)]


def race(workers: Workers, db: str, run_ids: list[str], *options: str, processes: int) -> None:
    procs = [
        workers.spawn("race", db, "--runs", ",".join(run_ids), *options) for _ in range(processes)
    ]
    for proc in procs:
        workers.wait_ready(proc)
    for proc in procs:  # the start gun
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        rc, err = workers.finish(proc)
        assert rc == 0, f"worker failed (rc={rc}):\n{err}"


async def check_runs(
    store: WorkflowStore, db: str, run_ids: list[str], n: int, log: str, *, exactly_once: bool
) -> None:
    executed: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for line in read_lines(log):
        entry = json.loads(line)
        executed[(entry["run"], entry["seq"])].append(entry)
    problems: list[str] = []
    for run_id in run_ids:
        loaded = await store.load(run_id)
        assert loaded is not None
        run = loaded.run
        if run.status != "completed":
            problems.append(f"{run_id}: {run.status} {run.error}")
            continue
        seqs = [cp.seq for cp in loaded.checkpoints]
        values = [cp.value for cp in loaded.checkpoints]
        expected_output = {"values": values, "total": sum(range(n))}
        if seqs != list(range(n)):
            problems.append(f"{run_id}: checkpoints {seqs}")
        if run.output != expected_output:
            problems.append(f"{run_id}: output {run.output!r} is not made of its checkpoints")
        if run.wake_at is not None:
            problems.append(f"{run_id}: finished but still due at {run.wake_at}")
        for cp in loaded.checkpoints:
            runs_of_step = executed[(run_id, cp.seq)]
            if cp.kind != "step" or cp.error is not None or cp.value["seq"] != cp.seq:
                problems.append(f"{run_id}: bad checkpoint {cp}")
            elif not any(e["nonce"] == cp.value["nonce"] for e in runs_of_step):
                problems.append(f"{run_id} seq {cp.seq}: committed value from no execution")
            if exactly_once and len(runs_of_step) != 1:
                pids = [e["pid"] for e in runs_of_step]
                problems.append(f"{run_id} seq {cp.seq}: ran {len(runs_of_step)} times ({pids})")
    assert not problems, "\n".join(problems)
    expected = {(r, s) for r in run_ids for s in range(n)}
    assert set(executed) <= expected, sorted(set(executed) - expected)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT run_id, seq FROM checkpoints").fetchall()
    conn.close()
    assert len(rows) == len(set(rows)) == len(expected) and set(rows) == expected


async def test_racing_executors_each_step_runs_once(
    workers: Workers, sqlite_store: WorkflowStore, db_path: str, tmp_path: Path
) -> None:
    """4 processes x 20 runs x 20 steps, each resume doing a few ms of work."""
    log = str(tmp_path / "effects.log")
    n = 20
    run_ids = await start_runs(sqlite_store, 20, racy_input(log, n, pause=0.0005))
    race(workers, db_path, run_ids, "--lease", "10", "--budget", "0.003", processes=4)
    await check_runs(sqlite_store, db_path, run_ids, n, log, exactly_once=True)


async def test_racing_executors_with_too_short_leases(
    workers: Workers, sqlite_store: WorkflowStore, db_path: str, tmp_path: Path
) -> None:
    """The lease (50 ms) lapses under every step (which blocks its loop for 60 ms, then awaits a
    little): idle executors take runs over while their holders are still in a step."""
    log = str(tmp_path / "effects.log")
    n = 8
    run_ids = await start_runs(sqlite_store, 3, racy_input(log, n, block=0.06, pause=0.002))
    race(workers, db_path, run_ids, "--lease", "0.05", processes=4)
    await check_runs(sqlite_store, db_path, run_ids, n, log, exactly_once=False)


# -- the same interleavings, in process and deterministic ------------------------------------

_executor: contextvars.ContextVar[str] = contextvars.ContextVar("executor", default="?")


def two_executor_runtime(
    store: WorkflowStore, clock: Any, lease_ttl: float, gates: dict[str, asyncio.Event]
) -> tuple[Runtime, list[tuple[str, int]]]:
    """A 4-step workflow; step 1 of executor X waits for ``gates[X + "-go"]``."""
    rt = Runtime(store, lease_ttl=lease_ttl, dispatcher=NoopDispatcher(), clock=clock)
    log: list[tuple[str, int]] = []

    async def step(i: int) -> int:
        who = _executor.get()
        log.append((who, i))
        if i == 1 and f"{who}-go" in gates:
            gates[f"{who}-in"].set()
            await gates[f"{who}-go"].wait()
        return i * 10

    @rt.workflow("four")
    async def four(ctx: Context, n: int) -> list[int]:
        return [await ctx.step(step, i) for i in range(n)]

    return rt, log


async def as_executor(name: str, rt: Runtime, run_id: str) -> Any:
    _executor.set(name)
    return await rt.resume(run_id)


async def test_executor_whose_lease_was_taken_over_does_not_finish_the_run(
    store: WorkflowStore,
) -> None:
    """Executor A stalls in step 1 past its lease; B takes the run over and is in step 1 too.

    A's renewal fails, so A must start no new step, and must not write the run's end either:
    the run belongs to B now. B finishes it with every step's value.
    """
    gates = {name: asyncio.Event() for name in ("A-in", "A-go", "B-in", "B-go")}
    proxy = ProxyStore(store)
    rt_a, log = two_executor_runtime(proxy, None, 0.3, gates)
    # B's clock is ahead: for B, A's lease has lapsed (as if A's process had stalled).
    rt_b, log_b = two_executor_runtime(store, ShiftedClock(10.0), 0.3, gates)
    run_id = await rt_a.start("four", 4, run_id="taken-over")

    task_a = asyncio.create_task(as_executor("A", rt_a, run_id))
    await gates["A-in"].wait()
    task_b = asyncio.create_task(as_executor("B", rt_b, run_id))
    await gates["B-in"].wait()
    # Wait until A's background renewal has been refused (B holds the lease now).
    await wait_until(lambda: False in proxy.results("acquire"), what="A's renewal to fail")

    gates["A-go"].set()
    await task_a
    after_a = await store.load(run_id)
    assert after_a is not None
    assert not after_a.run.terminal, (
        f"executor A, whose lease was taken over, ended the run: status={after_a.run.status} "
        f"output={after_a.run.output!r} with checkpoints {[cp.seq for cp in after_a.checkpoints]}"
    )
    assert ("A", 2) not in log, "A started a new step after losing its lease"

    gates["B-go"].set()
    await task_b
    info = await rt_b.get(run_id)
    assert info.status == "completed"
    assert info.output == [0, 10, 20, 30]
    assert [cp.seq for cp in info.steps] == [0, 1, 2, 3]
    assert log_b.count(("B", 2)) == 1 and log_b.count(("B", 3)) == 1


class PausingStore(MemoryStore):
    """Once ``hold`` is set to an event, holds the next ``acquire`` (and sets ``held``) until
    that event is set."""

    def __init__(self) -> None:
        super().__init__()
        self.hold: asyncio.Event | None = None
        self.held = asyncio.Event()

    async def acquire(
        self, run_id: str, token: str, ttl: float, *, now: float | None = None, **options: Any
    ) -> bool:
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.held.set()
            await hold.wait()
        return await super().acquire(run_id, token, ttl, now=now, **options)


@pytest.mark.parametrize("suspend", ["deadline", "sleep"])
async def test_executor_that_loaded_before_another_invocation_runs_no_committed_step(
    suspend: str,
) -> None:
    """B loads the run (due), then A's whole invocation happens (it commits steps 0-2 and
    suspends, releasing the lease), then B acquires the lease.

    B must work from the history as it is once B holds the lease: no step A committed may run
    again. (A store that is slow to answer, or a process descheduled between the read and the
    acquire, produces exactly this interleaving.)
    """
    store = PausingStore()
    clock = FakeClock()
    rt = Runtime(store, lease_ttl=30.0, dispatcher=NoopDispatcher(), clock=clock)
    log: list[int] = []

    async def step(i: int) -> int:
        log.append(i)
        clock.advance(1.0)
        return i

    @rt.workflow("six")
    async def six(ctx: Context, n: int) -> list[int]:
        out = [await ctx.step(step, i) for i in range(3)]
        if suspend == "sleep":
            await ctx.sleep(5.0)
        return out + [await ctx.step(step, i) for i in range(3, n)]

    run_id = await rt.start("six", 6, run_id="stale")
    hold = store.hold = asyncio.Event()
    task_b = asyncio.create_task(rt.resume(run_id))
    await store.held.wait()  # B has loaded the run and is about to acquire the lease

    deadline = clock.now() + 2.5 if suspend == "deadline" else None
    header = await rt.resume(run_id, deadline=deadline)  # A: steps 0, 1, 2, then suspends
    assert header is not None and header.status in ("pending", "sleeping")
    assert log == [0, 1, 2]

    hold.set()
    await task_b
    output = await rt.wait(run_id, timeout=5)
    assert output == [0, 1, 2, 3, 4, 5]
    assert sorted(log) == [0, 1, 2, 3, 4, 5], f"committed steps ran again: executions {log}"
