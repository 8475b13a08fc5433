"""A run's life: idempotent start, get, cancel, retry, failures, ``wait``, resume rules (not due,
lease held, time budget), deterministic helpers, and bad input refused before anything is
stored."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from typing import Any

import pytest

from heron.runtime import (
    Conflict,
    Context,
    NoopDispatcher,
    PayloadTooLarge,
    RunNotFound,
    Runtime,
    SerializationError,
    WorkflowFailed,
    WorkflowNotFound,
)
from heron.runtime.testing import FakeClock, test_runtime
from heron.stores.memory import MemoryStore
from tests.unit.helpers import status, timeline


def register_echo(rt: Runtime) -> None:
    @rt.workflow("echo")
    async def echo(ctx: Context, value: Any) -> Any:
        return value

    @rt.workflow("other")
    async def other(ctx: Context, value: Any) -> Any:
        return value


# -- start ---------------------------------------------------------------------------------------


async def test_start_is_idempotent_on_run_id(rt: Runtime, store: MemoryStore) -> None:
    register_echo(rt)

    first = await rt.start("echo", {"a": 1}, run_id="r-1")
    second = await rt.start("echo", {"a": 1}, run_id="r-1")

    assert first == second == "r-1"
    runs, _ = await rt.list_runs()
    assert [r.id for r in runs] == ["r-1"]


async def test_start_again_after_completion_returns_the_same_run(rt: Runtime) -> None:
    register_echo(rt)
    run_id = await rt.start("echo", 5, run_id="r-1")
    await rt.wait(run_id, timeout=10)

    assert await rt.start("echo", 5, run_id="r-1") == run_id
    info = await rt.get(run_id)
    assert info.status == "completed"
    assert info.output == 5


async def test_start_is_idempotent_whatever_the_key_order(rt: Runtime) -> None:
    # an HTTP client retrying a start may serialize the same object with its keys reordered
    register_echo(rt)
    first = await rt.start("echo", {"a": 1, "b": {"x": 1, "y": 2}}, run_id="r-1")

    second = await rt.start("echo", {"b": {"y": 2, "x": 1}, "a": 1}, run_id="r-1")

    assert first == second == "r-1"


async def test_start_with_another_input_conflicts(rt: Runtime) -> None:
    register_echo(rt)
    await rt.start("echo", {"a": 1}, run_id="r-1")

    with pytest.raises(Conflict):
        await rt.start("echo", {"a": 2}, run_id="r-1")
    assert (await rt.get("r-1")).input == {"a": 1}


async def test_start_with_another_workflow_conflicts(rt: Runtime) -> None:
    register_echo(rt)
    await rt.start("echo", {"a": 1}, run_id="r-1")

    with pytest.raises(Conflict):
        await rt.start("other", {"a": 1}, run_id="r-1")
    assert (await rt.get("r-1")).workflow == "echo"


async def test_start_generates_distinct_ids(rt: Runtime) -> None:
    register_echo(rt)

    ids = {await rt.start("echo", i) for i in range(5)}

    assert len(ids) == 5


async def test_start_of_an_unknown_workflow(rt: Runtime) -> None:
    register_echo(rt)

    with pytest.raises(WorkflowNotFound, match="nope"):
        await rt.start("nope", {})
    runs, _ = await rt.list_runs()
    assert runs == []


@pytest.mark.parametrize("bad_id", ["", "a/b", "a?b", "a#b", "tab\there", "x" * 201])
async def test_start_refuses_bad_run_ids(rt: Runtime, bad_id: str) -> None:
    register_echo(rt)

    with pytest.raises(ValueError):
        await rt.start("echo", 1, run_id=bad_id)


async def test_start_records_tags_and_version(rt: Runtime) -> None:
    register_echo(rt)

    run_id = await rt.start("echo", 1, tags=["vip", "eu"])

    info = await rt.get(run_id)
    assert info.tags == ["vip", "eu"]
    assert info.version == "1"
    assert info.status == "pending"
    assert info.parent_id is None


# -- get, wait and failures ----------------------------------------------------------------------


async def test_get_of_an_unknown_run(rt: Runtime) -> None:
    with pytest.raises(RunNotFound) as caught:
        await rt.get("missing")
    assert caught.value.run_id == "missing"


async def test_a_workflow_that_raises_fails_the_run(rt: Runtime) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        raise ValueError("bad")

    run_id = await rt.start("w")

    with pytest.raises(WorkflowFailed) as caught:
        await rt.wait(run_id, timeout=10)

    assert caught.value.run_id == run_id
    assert caught.value.status == "failed"
    assert caught.value.error == {"type": "ValueError", "message": "bad"}
    info = await rt.get(run_id)
    assert info.status == "failed"
    assert info.error == {"type": "ValueError", "message": "bad"}
    assert info.wake_at is None


async def test_wait_returns_the_output_of_a_completed_run(rt: Runtime) -> None:
    register_echo(rt)
    run_id = await rt.start("echo", {"x": [1, 2]})

    assert await rt.wait(run_id, timeout=10) == {"x": [1, 2]}
    assert await rt.wait(run_id, timeout=10) == {"x": [1, 2]}  # and again, once finished


async def test_wait_for_an_unknown_run(rt: Runtime) -> None:
    with pytest.raises(RunNotFound):
        await rt.wait("missing", timeout=10)


async def test_a_workflow_no_longer_registered_fails_on_resume(store: MemoryStore) -> None:
    rt, _ = test_runtime(store)
    register_echo(rt)
    run_id = await rt.start("echo", 1)

    fresh, _ = test_runtime(store)  # a deployment without that workflow
    await fresh.resume(run_id)

    info = await fresh.get(run_id)
    assert info.status == "failed"
    assert info.error is not None and info.error["type"] == "WorkflowNotFound"


# -- cancel --------------------------------------------------------------------------------------


async def test_cancel_a_sleeping_run(rt: Runtime, clock: FakeClock) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.sleep(3600)

    run_id = await rt.start("w")
    await rt.resume(run_id)
    assert await status(rt, run_id) == "sleeping"

    await rt.cancel(run_id)

    info = await rt.get(run_id)
    assert info.status == "cancelled"
    assert info.wake_at is None
    with pytest.raises(WorkflowFailed) as caught:
        await rt.wait(run_id, timeout=10)
    assert caught.value.status == "cancelled"
    clock.advance(3600)
    assert (await rt.resume(run_id)) is not None  # a stale wake finds it terminal ...
    assert await status(rt, run_id) == "cancelled"  # ... and leaves it so


async def test_cancel_is_idempotent_and_leaves_finished_runs_alone(rt: Runtime) -> None:
    register_echo(rt)
    done = await rt.start("echo", 1)
    await rt.wait(done, timeout=10)

    await rt.cancel(done)

    assert await status(rt, done) == "completed"
    with pytest.raises(RunNotFound):
        await rt.cancel("missing")


async def test_cancel_during_a_step_wins_over_completion(rt: Runtime) -> None:
    # the run is cancelled while its step runs; the executor's final save must not undo that
    @rt.step
    async def cancel_myself() -> str:
        from heron.runtime import step_key

        await rt.cancel(step_key().run_id, "stop")
        return "step done"

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        return await ctx.step(cancel_myself)

    run_id = await rt.start("w")
    await rt.resume(run_id)

    info = await rt.get(run_id)
    assert info.status == "cancelled"
    assert info.output is None


# -- retry ---------------------------------------------------------------------------------------


async def test_retry_resumes_a_failed_run_from_its_last_good_checkpoint(rt: Runtime) -> None:
    # given a run that failed after two good steps, because of a bug in the workflow body
    calls = Counter[str]()
    fixed = False

    @rt.step(name="one")
    async def one() -> int:
        calls["one"] += 1
        return 1

    @rt.step(name="two")
    async def two() -> int:
        calls["two"] += 1
        return 2

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> int:
        total = await ctx.step(one) + await ctx.step(two)
        if not fixed:
            raise ZeroDivisionError("bug")
        return total

    run_id = await rt.start("w")
    with pytest.raises(WorkflowFailed):
        await rt.wait(run_id, timeout=10)

    # when the code is fixed and the run retried
    fixed = True
    await rt.retry(run_id)
    assert await status(rt, run_id) == "pending"

    # then it completes without running the finished steps again
    assert await rt.wait(run_id, timeout=10) == 3
    assert calls == Counter({"one": 1, "two": 1})
    info = await rt.get(run_id)
    assert info.error is None
    assert await timeline(rt, run_id) == [(0, "step", "one"), (1, "step", "two")]


async def test_retry_of_an_active_run_conflicts(rt: Runtime) -> None:
    register_echo(rt)
    run_id = await rt.start("echo", 1)

    with pytest.raises(Conflict):
        await rt.retry(run_id)


async def test_retry_of_a_cancelled_run(rt: Runtime, clock: FakeClock) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        await ctx.sleep(10)
        return "finally"

    run_id = await rt.start("w")
    await rt.resume(run_id)
    await rt.cancel(run_id)

    await rt.retry(run_id)

    assert await rt.wait(run_id, timeout=10) == "finally"


# -- resume rules --------------------------------------------------------------------------------


async def test_resume_of_a_run_that_is_not_due_does_nothing(
    rt: Runtime, clock: FakeClock, store: MemoryStore
) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.sleep(100)

    run_id = await rt.start("w")
    await rt.resume(run_id)
    before = await store.load(run_id)

    assert await rt.resume(run_id) is None

    assert await store.load(run_id) == before


async def test_resume_while_another_executor_holds_the_lease(
    rt: Runtime, clock: FakeClock, store: MemoryStore
) -> None:
    calls = Counter[str]()

    @rt.step
    async def work() -> None:
        calls["work"] += 1

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.step(work)

    run_id = await rt.start("w")
    assert await store.acquire(run_id, "someone-else", 30, now=clock.now())
    await rt.signal(run_id, "poke")  # makes the run due while the lease is still held
    assert (await rt.get(run_id)).status == "running"

    assert await rt.resume(run_id) is None
    assert calls["work"] == 0
    assert (await store.load(run_id)).checkpoints == []  # type: ignore[union-attr]

    clock.advance(31)  # the other executor's lease lapses: the run is recovered
    saved = await rt.resume(run_id)
    assert saved is not None and saved.status == "completed"
    assert calls["work"] == 1


async def test_resume_of_an_unknown_run(rt: Runtime) -> None:
    with pytest.raises(RunNotFound):
        await rt.resume("missing")


async def test_resume_stops_at_its_deadline_and_continues_later(
    rt: Runtime, clock: FakeClock
) -> None:
    calls = Counter[int]()

    @rt.step(name="slow")
    async def slow(i: int) -> int:
        calls[i] += 1
        clock.advance(10)  # each step takes 10 s of the invocation's budget
        return i

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> list[int]:
        return [await ctx.step(slow, i) for i in range(3)]

    run_id = await rt.start("w")

    # when a resume with 5 s left runs the first step
    saved = await rt.resume(run_id, deadline=clock.now() + 5)

    # then it suspends before the second, due at once
    assert saved is not None
    assert saved.status == "pending"
    assert saved.wake_at == clock.now()
    assert dict(calls) == {0: 1}
    assert await timeline(rt, run_id) == [(0, "step", "slow")]

    # and the next resume carries on without running the first step again
    saved = await rt.resume(run_id)
    assert saved is not None and saved.status == "completed"
    assert saved.output == [0, 1, 2]
    assert calls == Counter({0: 1, 1: 1, 2: 1})


async def test_resume_with_a_deadline_already_passed_starts_nothing(
    rt: Runtime, clock: FakeClock
) -> None:
    calls = Counter[str]()

    @rt.step
    async def work() -> None:
        calls["work"] += 1

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.step(work)

    run_id = await rt.start("w")
    saved = await rt.resume(run_id, deadline=clock.now() - 1)

    assert saved is not None and saved.status == "pending"
    assert calls["work"] == 0
    await rt.wait(run_id, timeout=10)
    assert calls["work"] == 1


# -- deterministic helpers -----------------------------------------------------------------------


async def test_now_uuid_random_and_side_effect_replay_to_the_same_values(
    rt: Runtime, clock: FakeClock
) -> None:
    seen: list[tuple[Any, ...]] = []
    effects = Counter[str]()

    def roll() -> float:
        effects["roll"] += 1
        return random.random()

    @rt.step
    async def tick() -> None:
        clock.advance(3)

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> list[str]:
        await ctx.step(tick)
        values = (
            ctx.now(),
            ctx.uuid(),
            ctx.uuid(),
            ctx.random(),
            await ctx.side_effect(roll),
        )
        seen.append(values)
        await ctx.sleep(60)
        return [str(v) for v in values]

    run_id = await rt.start("w")
    await rt.resume(run_id)
    clock.advance(60)
    output = await rt.wait(run_id, timeout=10)

    assert len(seen) == 2
    assert seen[0] == seen[1]
    now, first_uuid, second_uuid, rnd, effect = seen[0]
    assert first_uuid != second_uuid
    assert isinstance(first_uuid, uuid.UUID)
    assert 0 <= rnd < 1
    assert effects["roll"] == 1
    assert now.timestamp() == (await rt.get(run_id)).steps[0].at
    assert output == [str(v) for v in seen[0]]


async def test_uuid_differs_between_runs(rt: Runtime) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        return str(ctx.uuid())

    a = await rt.wait(await rt.start("w", run_id="a"), timeout=10)
    b = await rt.wait(await rt.start("w", run_id="b"), timeout=10)

    assert a != b


async def test_now_before_any_checkpoint_is_the_start_time(rt: Runtime, clock: FakeClock) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> float:
        return ctx.now().timestamp()

    started = clock.now()
    run_id = await rt.start("w")
    clock.advance(5)

    assert await rt.wait(run_id, timeout=10) == started


# -- bad input -----------------------------------------------------------------------------------


async def test_non_json_input_is_refused_before_a_run_exists(rt: Runtime) -> None:
    register_echo(rt)

    with pytest.raises(SerializationError, match="echo"):
        await rt.start("echo", object(), run_id="r-1")

    with pytest.raises(RunNotFound):
        await rt.get("r-1")


async def test_input_over_the_payload_limit_is_refused(store: MemoryStore) -> None:
    rt = Runtime(store, max_payload=1000, clock=FakeClock(), dispatcher=_noop())
    register_echo(rt)

    with pytest.raises(PayloadTooLarge, match="echo"):
        await rt.start("echo", "x" * 2000, run_id="r-1")

    runs, _ = await rt.list_runs()
    assert runs == []


async def test_the_payload_limit_counts_the_stored_json_bytes(store: MemoryStore) -> None:
    # 600 quote characters are 1202 bytes of JSON ("\"" each), over a 1000-byte limit
    rt = Runtime(store, max_payload=1000, clock=FakeClock(), dispatcher=_noop())
    register_echo(rt)

    with pytest.raises(PayloadTooLarge):
        await rt.start("echo", '"' * 600, run_id="r-1")


async def test_a_step_returning_a_non_json_value_fails_the_run(rt: Runtime) -> None:
    @rt.step(name="weird")
    async def weird() -> Any:
        return object()

    @rt.step(name="fine")
    async def fine() -> int:
        return 1

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.step(fine)
        await ctx.step(weird)

    run_id = await rt.start("w")
    with pytest.raises(WorkflowFailed):
        await rt.wait(run_id, timeout=10)

    info = await rt.get(run_id)
    assert info.status == "failed"
    assert info.error is not None
    assert info.error["type"] == "SerializationError"
    assert "'weird'" in info.error["message"]
    assert "seq 1" in info.error["message"]
    assert [cp.seq for cp in info.steps] == [0]  # nothing written for seq 1


async def test_a_step_result_over_the_payload_limit_fails_the_run(store: MemoryStore) -> None:
    rt = Runtime(store, max_payload=1000, clock=FakeClock(), dispatcher=_noop())

    @rt.step(name="huge")
    async def huge() -> str:
        return "x" * 5000

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        return await ctx.step(huge)

    run_id = await rt.start("w")
    with pytest.raises(WorkflowFailed):
        await rt.wait(run_id, timeout=10)

    info = await rt.get(run_id)
    assert info.error is not None
    assert info.error["type"] == "PayloadTooLarge"
    assert "'huge'" in info.error["message"]
    assert "seq 0" in info.error["message"]
    assert info.steps == []


async def test_a_workflow_output_over_the_limit_fails_the_run(store: MemoryStore) -> None:
    rt = Runtime(store, max_payload=1000, clock=FakeClock(), dispatcher=_noop())

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        return "x" * 5000

    run_id = await rt.start("w")
    with pytest.raises(WorkflowFailed) as caught:
        await rt.wait(run_id, timeout=10)
    assert caught.value.error is not None
    assert caught.value.error["type"] == "PayloadTooLarge"


async def test_a_non_json_workflow_output_fails_the_run(rt: Runtime) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> Any:
        return {1, object()}

    run_id = await rt.start("w")
    with pytest.raises(WorkflowFailed) as caught:
        await rt.wait(run_id, timeout=10)
    assert caught.value.error is not None
    assert caught.value.error["type"] == "SerializationError"


def test_runtime_refuses_a_bad_lease_ttl() -> None:
    with pytest.raises(ValueError):
        Runtime(MemoryStore(), lease_ttl=0)


def _noop() -> Any:
    from heron.runtime import NoopDispatcher

    return NoopDispatcher()


# -- the sweep -----------------------------------------------------------------------------------


class RecordingDispatcher(NoopDispatcher):
    def __init__(self) -> None:
        self.sent: list[tuple[str, float]] = []

    async def dispatch(self, run_ids: Any, *, delay: float = 0.0) -> None:
        self.sent.extend((run_id, delay) for run_id in run_ids)


async def test_start_and_signal_dispatch_and_the_sweep_finds_what_is_due(
    store: MemoryStore,
) -> None:
    dispatcher = RecordingDispatcher()
    clock = FakeClock()
    rt = Runtime(store, clock=clock, dispatcher=dispatcher)

    @rt.workflow("w")
    async def w(ctx: Context, seconds: float) -> None:
        await ctx.sleep(seconds)

    ids = [await rt.start("w", s, run_id=f"r{s}") for s in (10, 20, 30, 1000)]
    assert [run_id for run_id, _ in dispatcher.sent] == ids
    for run_id in ids:
        await rt.resume(run_id)
    # a wake within 15 minutes gets a precise, delayed dispatch; a later one waits for the sweep
    assert dispatcher.sent[4:] == [("r10", 10.0), ("r20", 20.0), ("r30", 30.0)]

    dispatcher.sent.clear()
    clock.advance(25)
    assert await rt.sweep(limit=1) == 2
    assert sorted(run_id for run_id, _ in dispatcher.sent) == ["r10", "r20"]

    dispatcher.sent.clear()
    await rt.signal("r1000", "poke")
    assert dispatcher.sent == [("r1000", 0.0)]


# -- every store, end to end ---------------------------------------------------------------------


async def test_a_full_journey_on_every_store(store: Any) -> None:
    rt, clock = test_runtime(store)
    calls = Counter[str]()

    @rt.step(name="charge")
    def charge(cents: int) -> dict[str, int]:
        calls["charge"] += 1
        return {"cents": cents}

    @rt.workflow("child")
    async def child(ctx: Context, n: int) -> int:
        await ctx.sleep(30)
        return n + 1

    @rt.workflow("journey")
    async def journey(ctx: Context, order: dict[str, Any]) -> dict[str, Any]:
        payment = await ctx.step(charge, order["cents"])
        await ctx.sleep(3600)
        approval = await ctx.wait_for_signal("approved", timeout=86400)
        kid = await ctx.child("child", 41)
        return {"payment": payment, "approval": approval, "child": kid}

    run_id = await rt.start("journey", {"cents": 500}, run_id="j-1")
    await rt.resume(run_id)
    assert await status(rt, run_id) == "sleeping"
    clock.advance(3600)
    await rt.resume(run_id)
    assert await status(rt, run_id) == "waiting"
    await rt.signal(run_id, "approved", {"by": "ops"})

    output = await rt.wait(run_id, timeout=10)

    assert output == {"payment": {"cents": 500}, "approval": {"by": "ops"}, "child": 42}
    assert calls["charge"] == 1
    assert await timeline(rt, run_id) == [
        (0, "step", "charge"),
        (1, "sleep", "sleep"),
        (2, "signal", "approved"),
        (3, "child", "child"),
    ]
    assert await store.due(clock.now() + 10**9, 10) == []  # nothing left due


# -- leases --------------------------------------------------------------------------------------


async def test_a_run_reports_running_while_its_step_runs(rt: Runtime) -> None:
    seen: list[str] = []

    @rt.step
    async def look() -> None:
        from heron.runtime import step_key

        seen.append((await rt.get(step_key().run_id)).status)

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.step(look)

    await rt.wait(await rt.start("w"), timeout=10)

    assert seen == ["running"]


async def test_a_cancel_seen_by_the_lease_renewal_starts_no_further_step(
    store: MemoryStore,
) -> None:
    # a short lease renews every 10 ms; the first step cancels the run and then runs for
    # longer than that, so the renewal fails (the run is terminal) before the step returns
    rt, _ = test_runtime(store, lease_ttl=0.03)
    calls = Counter[str]()

    @rt.step
    async def first() -> None:
        from heron.runtime import step_key

        calls["first"] += 1
        await rt.cancel(step_key().run_id)
        await asyncio.sleep(0.05)

    @rt.step
    async def second() -> None:
        calls["second"] += 1

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.step(first)
        await ctx.step(second)

    run_id = await rt.start("w")
    await rt.resume(run_id)

    assert calls == Counter({"first": 1})
    assert await status(rt, run_id) == "cancelled"


async def test_a_crashed_executor_is_recovered_once_its_lease_lapses(
    rt: Runtime, clock: FakeClock
) -> None:
    # given an executor that dies (its task is cancelled) in the middle of a step
    calls = Counter[str]()
    entered = asyncio.Event()
    crash = True

    @rt.step
    async def work() -> str:
        calls["work"] += 1
        if crash:
            entered.set()
            await asyncio.Event().wait()  # hangs until the executor dies
        return "done"

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        return await ctx.step(work)

    run_id = await rt.start("w")
    executor = asyncio.ensure_future(rt.resume(run_id))
    await entered.wait()
    executor.cancel()
    with pytest.raises(asyncio.CancelledError):
        await executor
    crash = False

    # then the run is not lost: it is due again once the lease has lapsed
    info = await rt.get(run_id)
    assert info.steps == []
    assert info.wake_at == clock.now() + rt.lease_ttl
    assert await rt.resume(run_id) is None
    clock.advance(rt.lease_ttl)
    saved = await rt.resume(run_id)
    assert saved is not None and saved.output == "done"
    assert calls["work"] == 2  # at least once: the interrupted attempt ran again
