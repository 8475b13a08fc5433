"""Injected store faults: a write fails, then a fresh executor finishes the run.

A ``FaultyStore`` (``conftest.py``) raises on the ``k``-th call of one write operation
(``create``, ``append``, ``save``, ``signal``, ``acquire``, ``release``):

* ``before`` the write reaches the store (nothing written) or ``after`` it (written, but the
  caller sees an error, as when a connection drops before the answer arrives);
* ``once`` (the store is back at the next call) or ``down`` (every later write fails too).

The faulty executor drives the run until the first error reaches it. Then a fresh executor,
on the same data without the fault, finishes it. Whatever the fault:

* the run completes with the right output (a store fault is an infrastructure failure: it may
  cost a retry, never the run);
* a step never runs after its checkpoint was committed, and no step runs more than twice;
* each run has exactly the checkpoints its code produces.

``test_torn_sqlite_*`` interrupt SQLite itself in the middle of a statement or transaction, at
every point, and check that each write is all or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from heron.runtime import Context, NoopDispatcher, RetryPolicy, Runtime, StoreError, step_key
from heron.runtime.testing import FakeClock
from heron.stores.contract import Checkpoint, Loaded, Run, RunQuery, Signal, WorkflowStore
from heron.stores.sqlite import SqliteStore
from tests.reliability.conftest import FaultyStore, ProxyStore, wait_until

LEASE = 30.0
# Two attempts: a fault that takes the whole store down looks, from outside, like an executor
# that died mid-attempt, and such an attempt counts against the step's policy. It may cost an
# attempt, never the run.
NO_RETRY = RetryPolicy(max_attempts=2, initial_delay=0)
Event = tuple[str, str, int]  # ("exec" | "commit", run_id, seq)


def build(store: WorkflowStore, clock: Any, events: list[Event], lease: float = LEASE) -> Runtime:
    rt = Runtime(store, lease_ttl=lease, dispatcher=NoopDispatcher(), clock=clock)

    def executed() -> None:
        key = step_key()
        events.append(("exec", key.run_id, key.seq))

    @rt.step(name="work", retry=NO_RETRY)
    async def work(i: int) -> int:
        executed()
        await asyncio.sleep(0)
        return i * 3

    @rt.step(name="echo", retry=NO_RETRY)
    async def echo(value: Any) -> Any:
        executed()
        return {"echo": value}

    @rt.workflow("steps")
    async def steps(ctx: Context, n: int) -> list[int]:
        return [await ctx.step(work, i) for i in range(n)]

    @rt.workflow("waiter")
    async def waiter(ctx: Context, _: Any) -> Any:
        a = await ctx.step(work, 1)
        payload = await ctx.wait_for_signal("go")
        return await ctx.step(echo, [a, payload])

    @rt.workflow("kid")
    async def kid(ctx: Context, x: int) -> int:
        return await ctx.step(work, x)

    @rt.workflow("parent")
    async def parent(ctx: Context, x: int) -> Any:
        a = await ctx.step(work, x)
        k = await ctx.child("kid", x + 1)
        return await ctx.step(echo, [a, k])

    return rt


# workflow -> (input, expected output, {run id suffix: checkpoint kinds by seq})
WORKFLOWS: dict[str, tuple[Any, Any, dict[str, list[str]]]] = {
    "steps": (5, [0, 3, 6, 9, 12], {"": ["step"] * 5}),
    "waiter": (None, {"echo": [3, {"v": 1}]}, {"": ["step", "signal", "step"]}),
    "parent": (1, {"echo": [3, 6]}, {"": ["step", "child", "step"], "child": ["step"]}),
}

# The writes each workflow makes, in order, and so where a fault can land:
#   steps:  acquire1 append1..5 save1 release1
#   waiter: acquire1 append1 (step) save1 (waiting) release1 | signal1 (client) |
#           acquire2 append2 (signal consumed) append3 (step) save2 release2
#   parent: acquire1 append1 create1 (child) save1 release1 | child: acquire2 append2 save2
#           signal1 (tell the parent) save3 release2 | parent: acquire3 append3 (child) append4
#           save4 release3
POINTS = {
    "steps": [("acquire", 1), ("append", 1), ("append", 3), ("append", 5), ("save", 1)]
    + [("release", 1)],
    "waiter": [("append", 1), ("save", 1), ("release", 1), ("signal", 1), ("acquire", 2)]
    + [("append", 2), ("append", 3), ("save", 2)],
    "parent": [("create", 1), ("save", 1), ("append", 2), ("save", 2), ("signal", 1)]
    + [("save", 3), ("append", 3)],
}
CASES = [
    pytest.param(wf, op, k, when, persist, id=f"{wf}-{op}{k}-{when}-{persist}")
    for wf, points in POINTS.items()
    for op, k in points
    for when in ("before", "after")
    for persist in ("once", "down")
]


async def run_of(store: WorkflowStore, run_id: str, which: str) -> Loaded | None:
    """The run itself (``""``) or its child (``"child"``: its id holds a secret nonce)."""
    if not which:
        return await store.load(run_id)
    children = (await store.list_runs(RunQuery(parent_id=run_id))).runs
    return await store.load(children[0].id) if children else None


def check_timeline(events: list[Event]) -> None:
    """No step runs after its checkpoint was committed; none runs more than twice."""
    committed: set[tuple[str, int]] = set()
    runs: Counter[tuple[str, int]] = Counter()
    for kind, run_id, seq in events:
        if kind == "commit":
            committed.add((run_id, seq))
            continue
        assert (run_id, seq) not in committed, f"{run_id} seq {seq} ran again after its commit"
        runs[(run_id, seq)] += 1
    assert all(n <= 2 for n in runs.values()), runs


async def faulty_turn(rt: Runtime, run_id: str, workflow: str) -> None:
    """The faulty executor (and its client) at work, until the first error reaches them."""
    with contextlib.suppress(Exception):
        if workflow == "waiter":
            await rt.resume(run_id)  # one step, then it waits for "go"
            await rt.signal(run_id, "go", {"v": 1}, signal_id="go-1")
        await rt.wait(run_id, timeout=5)


@pytest.mark.parametrize(("workflow", "op", "k", "when", "persist"), CASES)
async def test_store_fault_then_fresh_resume_completes(
    store: WorkflowStore, workflow: str, op: str, k: int, when: str, persist: str
) -> None:
    events: list[Event] = []

    async def committed(o: str, args: tuple[Any, ...]) -> None:
        if o == "append":
            events.append(("commit", args[0], args[1].seq))

    data = ProxyStore(store, after=committed)
    faulty = FaultyStore(data, op=op, k=k, when=when, persist=persist)
    clock = FakeClock()
    clean = build(data, clock, events)
    arg, expected, layout = WORKFLOWS[workflow]
    run_id = await clean.start(workflow, arg, run_id=f"{workflow}-1")

    await faulty_turn(build(faulty, clock, events), run_id, workflow)
    assert faulty.fired, f"the fault at {op} #{k} was never reached"

    # Right after the fault: the run is not poisoned, and its history has no holes.
    for which in layout:
        loaded = await run_of(store, run_id, which)
        if loaded is None:
            continue  # the child was never created
        assert loaded.run.status != "failed", (
            f"a transient store fault ({op} #{k}, {when}, {persist}) failed run "
            f"{loaded.run.id!r} for good: {loaded.run.error}"
        )
        seqs = [cp.seq for cp in loaded.checkpoints]
        assert seqs == list(range(len(seqs))), f"holes in the history: {seqs}"

    # A fresh executor finishes the run (its client re-sends a signal the fault swallowed).
    if workflow == "waiter":
        loaded = await store.load(run_id)
        assert loaded is not None
        if not any(s.id == "go-1" for s in loaded.signals):
            await clean.signal(run_id, "go", {"v": 1}, signal_id="go-1")
    clock.advance(LEASE + 1)
    assert await clean.wait(run_id, timeout=5) == expected

    check_timeline(events)
    for which, kinds in layout.items():
        final = await run_of(store, run_id, which)
        assert final is not None
        assert final.run.status == "completed" and final.run.wake_at is None
        assert [(cp.seq, cp.kind) for cp in final.checkpoints] == list(enumerate(kinds))
    if workflow == "waiter":  # the signal was consumed exactly once, by its checkpoint
        final = await store.load(run_id)
        assert final is not None
        assert final.signals == []
        consumed = [cp.value["id"] for cp in final.checkpoints if cp.kind == "signal"]
        assert consumed == ["go-1"]


@pytest.mark.parametrize("error", [ConnectionResetError, TimeoutError, sqlite3.OperationalError])
@pytest.mark.parametrize("op", ["append", "save"])
async def test_store_fault_of_another_type_then_fresh_resume_completes(
    store: WorkflowStore, op: str, error: type[Exception]
) -> None:
    """A backend may leak a driver's own error (a dropped connection, a timeout)."""
    events: list[Event] = []
    clock = FakeClock()
    clean = build(store, clock, events)
    faulty = FaultyStore(store, op=op, k=2 if op == "append" else 1, error=error)
    run_id = await clean.start("steps", 5, run_id="steps-1")
    try:
        await build(faulty, clock, events).resume(run_id)
    except error:
        pass
    assert faulty.fired == 1
    loaded = await store.load(run_id)
    assert loaded is not None
    assert loaded.run.status != "failed", (
        f"a transient {error.__name__} from {op} failed the run for good: {loaded.run.error}"
    )
    clock.advance(LEASE + 1)
    assert await clean.wait(run_id, timeout=5) == [0, 3, 6, 9, 12]
    check_timeline(events)


def register_three(rt: Runtime, events: list[Event], started: Any, finish: Any) -> None:
    """``three``: three steps; step 1 signals ``started`` and waits for ``finish``."""

    @rt.step(name="long", retry=NO_RETRY)
    async def long(i: int) -> int:
        key = step_key()
        events.append(("exec", key.run_id, key.seq))
        if i == 1:
            started.set()
            await finish.wait()
        return i

    @rt.workflow("three")
    async def three(ctx: Context, _: Any) -> list[int]:
        return [await ctx.step(long, i) for i in range(3)]


async def test_failed_lease_renewal_does_not_stop_renewing(store: WorkflowStore) -> None:
    """One renewal fails (a blip); the executor must keep its lease while its step runs on."""
    events: list[Event] = []
    faulty = FaultyStore(store, op="acquire", k=2)  # the first renewal fails
    rt = Runtime(faulty, lease_ttl=0.3, dispatcher=NoopDispatcher())
    other = Runtime(store, lease_ttl=0.3, dispatcher=NoopDispatcher())
    started, finish = asyncio.Event(), asyncio.Event()
    register_three(rt, events, started, finish)
    register_three(other, events, started, finish)

    run_id = await rt.start("three", None, run_id="renew")
    task = asyncio.create_task(rt.resume(run_id))
    try:
        await started.wait()
        await wait_until(lambda: faulty.fired == 1, timeout=5, what="the failing renewal")
        try:
            await wait_until(
                lambda: faulty.calls["acquire"] >= 4,
                timeout=3,
                what="renewals after a failed one",
            )
        except AssertionError:
            raise AssertionError(
                "after one failed renewal the executor never renewed its lease again "
                f"(acquire calls: {faulty.calls['acquire']}); the lease lapses under a live step"
            ) from None
        assert await other.resume(run_id) is None, "another executor took a live lease over"
    finally:
        finish.set()
        await task
    assert await rt.wait(run_id, timeout=5) == [0, 1, 2]
    assert Counter(seq for _, _, seq in events) == {0: 1, 1: 1, 2: 1}


# -- SQLite interrupted mid-statement --------------------------------------------------------


class TearingSqlite(SqliteStore):
    """Interrupts SQLite after ``tear_at`` more VM instructions (``sqlite3`` progress handler),
    inside whichever statement (or COMMIT) is running then."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.tear_at: int | None = None
        self._hooked: Any = None

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        if self._hooked is not conn:
            conn.set_progress_handler(self._progress, 1)
            self._hooked = conn
        return conn

    def _progress(self) -> int:
        if self.tear_at is None:
            return 0
        self.tear_at -= 1
        if self.tear_at > 0:
            return 0
        self.tear_at = None
        return 1  # abort the running statement


#: Tear at every one of the first instructions, then more sparsely (past the end: no tear).
TEAR_POINTS = [*range(1, 60), 80, 120, 200, 400, 1000, 3000]


async def torn(store: TearingSqlite, at: int, call: Any) -> bool:
    """Run ``call`` with SQLite interrupted after ``at`` instructions; True if it went through."""
    store.tear_at = at
    try:
        await call()
    except StoreError as exc:
        assert "interrupt" in str(exc).lower(), exc
        return False
    finally:
        store.tear_at = None
    return True


async def observe(observer: WorkflowStore, op: str, run_id: str) -> Any:
    """What another connection sees of run ``run_id``: the parts ``op`` writes."""
    loaded = await observer.load(run_id)
    if op == "create":
        tagged = {r.id for r in (await observer.list_runs(RunQuery(tag="t2"))).runs}
        return None if loaded is None else (loaded.run.id, run_id in tagged)
    assert loaded is not None
    run = loaded.run
    if op == "append":
        return [cp.seq for cp in loaded.checkpoints], [cp.value for cp in loaded.checkpoints]
    if op == "save":
        tagged = {r.id for r in (await observer.list_runs(RunQuery(tag="t3"))).runs}
        return run.status, run.output, run.revision, run.tags, run_id in tagged
    if op == "signal":
        return [s.id for s in loaded.signals], run.wake_at, run.revision
    return run.lease_token, run.lease_expires_at, run.wake_at


@pytest.mark.parametrize("op", ["create", "append", "save", "signal", "acquire"])
async def test_torn_sqlite_write_is_all_or_nothing(tmp_path: Path, op: str) -> None:
    """Interrupt each write after 1, 2, 3, ... SQLite instructions (inside BEGIN, a statement
    or COMMIT). Another connection must see the write whole or not at all; the store that saw
    the error must stay usable and must not keep the database locked."""
    path = str(tmp_path / "heron.db")
    store = TearingSqlite(path)
    observer = SqliteStore(path, busy_timeout=2.0)
    big = "x" * 3000
    outcomes: list[bool] = []
    try:
        for i, at in enumerate(TEAR_POINTS):
            run_id = f"r{i}"
            base = Run(id=run_id, workflow="w", tags=["t1", "t2"], created_at=1.0 + i, wake_at=50.0)
            if op != "create":
                assert await observer.create(base)
                await observer.append(run_id, Checkpoint(seq=0, kind="step", name="s", value=0))
            old = await observe(observer, op, run_id)
            if op == "create":
                new: Any = (run_id, True)
                call: Any = partial(store.create, base)
            elif op == "append":
                new = ([0, 1], [0, {"big": big}])
                cp = Checkpoint(seq=1, kind="step", name="s", value={"big": big})
                call = partial(store.append, run_id, cp)
            elif op == "save":
                loaded = await observer.load(run_id)
                assert loaded is not None
                header = loaded.run.copy()
                header.status, header.output, header.wake_at = "completed", {"o": big}, None
                header.tags = ["t3"]
                new = ("completed", {"o": big}, 1, ["t3"], True)
                call = partial(store.save, header)
            elif op == "signal":
                new = (["s1"], 10.0, 1)
                sig = Signal(id="s1", name="go", payload={"p": big}, at=10.0)
                call = partial(store.signal, run_id, sig)
            else:
                new = ("tok", 25.0, 25.0)
                call = partial(store.acquire, run_id, "tok", 5.0, now=20.0)
            ok = await torn(store, at, call)
            outcomes.append(ok)
            seen = await observe(observer, op, run_id)
            where = f"{op} torn after {at} instructions (ok={ok})"
            assert seen in ((new,) if ok else (old, new)), f"{where}: half-written: {seen}"
            # The store that saw the error is still usable, and holds no lock over the file.
            try:
                await store.load(run_id)
                assert await observer.create(Run(id=f"probe-{i}", workflow="w", created_at=0.0))
            except StoreError as exc:
                raise AssertionError(f"{where}: the store is left broken: {exc}") from None
        assert False in outcomes and True in outcomes, f"tears never landed: {outcomes}"
    finally:
        await store.close()
        await observer.close()


async def test_sqlite_write_after_a_failed_begin_is_durable_and_unblocking(tmp_path: Path) -> None:
    """A transaction's BEGIN fails (interrupted here; an I/O error does the same). Whatever
    the store does next must be committed for everyone to see, and must not leave the database
    locked against other connections (executors in other processes)."""
    path = str(tmp_path / "heron.db")
    store = TearingSqlite(path)
    observer = SqliteStore(path, busy_timeout=1.0)
    try:
        assert await observer.create(Run(id="r", workflow="w"))
        for seq, at in enumerate(range(1, 12)):
            ok = await torn(store, at, partial(store.create, Run(id=f"new-{at}", workflow="w")))
            # The store answered; now an autocommit write through it returns normally ...
            await store.append("r", Checkpoint(seq=seq, kind="step", name="s", value=at))
            loaded = await observer.load("r")
            assert loaded is not None
            # ... so every other connection must see it.
            assert [cp.seq for cp in loaded.checkpoints] == list(range(seq + 1)), (
                f"create torn after {at} instructions (ok={ok}): a later append returned "
                "normally but is not committed (it runs inside a transaction left open)"
            )
            try:
                await observer.create(Run(id=f"probe-{at}", workflow="w"))
            except StoreError as exc:
                raise AssertionError(
                    f"create torn after {at} instructions: the database stays locked: {exc}"
                ) from None
    finally:
        await store.close()
        await observer.close()
