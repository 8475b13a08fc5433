"""Failure modes that users reported against other durable-execution engines, replayed on
Heron's public API (issue 9): each class of fault keeps the input that found it as a test, and
runs on every store in the registry.

The numbering follows the issue: 1 timers in gathered helpers, 3 values that can never be
stored, 4 retries after a lost lease or a cancel, 5 cancelling from asyncio, 6 retry after a
fix, 7 numbers, 8 type fidelity, 9 misuse, 10 long-lived loops, 11 a failure parked behind a
sibling wait, 12 a registry that grows. (2, attempts that kill the executor, needs processes:
``tests/reliability/test_lost_attempts.py``.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
from collections import Counter
from typing import Any

import pytest

from heron import (
    Context,
    FatalError,
    PayloadTooLarge,
    RetryPolicy,
    Runtime,
    SerializationError,
    StepFailed,
    WorkflowFailed,
)
from heron.runtime._serde import MAX_DEPTH
from heron.stores.contract import WorkflowStore
from heron.testing import CountingStore, FakeClock, test_runtime
from tests.unit.helpers import status, timeline

QUICK = RetryPolicy(max_attempts=3, initial_delay=0.0)


async def idle(rt: Runtime, run_id: str) -> None:
    """Resume the run until it has nothing to do now (the clock does not move)."""
    for _ in range(20):
        if await rt.resume(run_id) is None:
            return


# -- 1. timers inside gathered helper coroutines ---------------------------------------------------


async def test_naps_in_gathered_helpers_end_at_the_latest_not_the_sum(
    rt: Runtime, clock: FakeClock
) -> None:
    async def nap(ctx: Context, seconds: float) -> float:
        await ctx.sleep(seconds)
        return seconds

    @rt.workflow("naps")
    async def naps(ctx: Context, _: Any) -> list[float]:
        return list(await asyncio.gather(nap(ctx, 10), nap(ctx, 20)))

    t0 = clock.now()
    run_id = await rt.start("naps")
    await idle(rt, run_id)
    assert (await rt.get(run_id)).wake_at == t0 + 10  # both timers are known from the start

    assert await rt.wait(run_id, timeout=10) == [10, 20]
    info = await rt.get(run_id)
    assert [cp.value for cp in info.steps] == [t0 + 10, t0 + 20]
    assert info.updated_at == t0 + 20  # not t0 + 30


async def test_a_timed_wait_in_one_branch_wakes_the_run_beside_an_untimed_one(
    rt: Runtime, clock: FakeClock
) -> None:
    async def wait_for(ctx: Context, name: str, timeout: float | None) -> Any:
        try:
            return await ctx.wait_for_signal(name, timeout=timeout)
        except TimeoutError:
            return f"{name} timed out"

    @rt.workflow("two-waits")
    async def two_waits(ctx: Context, _: Any) -> list[Any]:
        return list(await asyncio.gather(wait_for(ctx, "a", None), wait_for(ctx, "b", 10)))

    t0 = clock.now()
    run_id = await rt.start("two-waits")
    await idle(rt, run_id)
    info = await rt.get(run_id)
    assert (info.status, info.wake_at) == ("waiting", t0 + 10)  # not None: b's timeout counts

    clock.advance(10)
    await idle(rt, run_id)
    await rt.signal(run_id, "a", "here")
    assert await rt.wait(run_id, timeout=10) == ["here", "b timed out"]


async def test_nested_helpers_wake_at_the_earliest_deadline_whatever_the_order(
    rt: Runtime, clock: FakeClock
) -> None:
    async def deep(ctx: Context, level: int, seconds: float) -> float:
        if level:
            return await deep(ctx, level - 1, seconds)
        await ctx.sleep(seconds)
        return seconds

    @rt.workflow("deep")
    async def deep_flow(ctx: Context, _: Any) -> list[float]:
        inner = asyncio.gather(deep(ctx, 3, 30), deep(ctx, 1, 5))
        return list(await asyncio.gather(deep(ctx, 2, 50), inner))

    t0 = clock.now()
    run_id = await rt.start("deep")
    await idle(rt, run_id)
    assert (await rt.get(run_id)).wake_at == t0 + 5
    await rt.wait(run_id, timeout=10)
    assert (await rt.get(run_id)).updated_at == t0 + 50


# -- 3. a value that can never be stored fails once ------------------------------------------------


async def test_a_huge_exception_message_is_recorded_cut_and_the_step_fails_once(
    rt: Runtime,
) -> None:
    calls = Counter[str]()

    @rt.step(retry=RetryPolicy(max_attempts=1))
    async def explode() -> None:
        calls["explode"] += 1
        raise ValueError("x" * 405_000)

    @rt.workflow("huge-error")
    async def huge_error(ctx: Context, _: Any) -> str:
        try:
            await ctx.step(explode)
        except StepFailed as failed:
            return f"{failed.error_type}: {len(failed.error_message)}"
        return "no"

    run_id = await rt.start("huge-error")
    assert await rt.wait(run_id, timeout=10) == "ValueError: 2000"
    assert calls["explode"] == 1
    step = (await rt.get(run_id)).steps[0]
    assert step.error is not None and len(step.error["message"]) == 2000


async def test_input_and_output_over_what_a_header_holds_fail_the_run_once(rt: Runtime) -> None:
    calls = Counter[str]()
    big = "y" * (206 * 1024)

    @rt.workflow("echo-big")
    async def echo_big(ctx: Context, text: str) -> str:
        calls["body"] += 1
        return text + "!"

    run_id = await rt.start("echo-big", big)
    with pytest.raises(WorkflowFailed) as failed:
        await rt.wait(run_id, timeout=10)
    assert failed.value.error is not None
    assert failed.value.error["type"] == "PayloadTooLarge"
    assert run_id in failed.value.error["message"]
    assert calls["body"] == 1
    assert await rt.store.due(math.inf, 10) == []  # nothing left to loop on


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(10**4400, "cannot be stored as JSON", id="int-of-4400-digits"),
        pytest.param({"text": os.fsdecode(b"\xff")}, "not valid Unicode", id="lone-surrogate"),
        pytest.param(float("nan"), "NaN", id="nan"),
    ],
)
async def test_a_step_result_that_cannot_be_stored_fails_the_run_once(
    rt: Runtime, value: Any, error: str
) -> None:
    calls = Counter[str]()

    @rt.step(name="produce")
    async def produce() -> Any:
        calls["produce"] += 1
        return value

    @rt.workflow("produce")
    async def producing(ctx: Context, _: Any) -> Any:
        return await ctx.step(produce)

    run_id = await rt.start("produce", run_id="p-1")
    with pytest.raises(WorkflowFailed) as failed:
        await rt.wait(run_id, timeout=10)
    record = failed.value.error or {}
    assert record["type"] == "SerializationError"
    assert "step 'produce' (run 'p-1', seq 0)" in record["message"]
    assert error in record["message"]
    assert calls["produce"] == 1
    assert await rt.store.due(math.inf, 10) == []


async def test_a_workflow_output_with_a_lone_surrogate_fails_the_run_once(rt: Runtime) -> None:
    @rt.workflow("bad-output")
    async def bad_output(ctx: Context, _: Any) -> str:
        return os.fsdecode(b"\xff")

    run_id = await rt.start("bad-output")
    with pytest.raises(WorkflowFailed) as failed:
        await rt.wait(run_id, timeout=10)
    assert (failed.value.error or {})["type"] == "SerializationError"
    assert await rt.store.due(math.inf, 10) == []


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception raises")


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(BrokenStr(), id="str-raises"),
        pytest.param(ValueError(os.fsdecode(b"bad \xff byte")), id="surrogate-in-message"),
    ],
)
async def test_an_exception_that_cannot_be_printed_is_still_recorded_as_step_failed(
    rt: Runtime, exc: Exception
) -> None:
    calls = Counter[str]()

    @rt.step(retry=RetryPolicy(max_attempts=1))
    async def fails() -> None:
        calls["fails"] += 1
        raise exc

    @rt.workflow("weird-error")
    async def weird_error(ctx: Context, _: Any) -> str:
        try:
            await ctx.step(fails)
        except StepFailed as failed:
            return failed.error_type
        return "no"

    run_id = await rt.start("weird-error")
    assert await rt.wait(run_id, timeout=10) == type(exc).__name__
    assert calls["fails"] == 1
    message = (await rt.get(run_id)).steps[0].error["message"]  # type: ignore[index]
    message.encode("utf-8")  # storable text, whatever the exception made of it


async def test_input_nested_deeper_than_the_limit_is_refused_before_anything_is_stored(
    rt: Runtime,
) -> None:
    @rt.workflow("anything")
    async def anything(ctx: Context, value: Any) -> Any:
        return value

    nested: Any = "bottom"
    for _ in range(947):
        nested = [nested]
    with pytest.raises(SerializationError, match=f"nested more than {MAX_DEPTH} levels"):
        await rt.start("anything", nested, run_id="deep")
    assert await rt.store.load("deep") is None
    ok: Any = "bottom"
    for _ in range(MAX_DEPTH):
        ok = [ok]
    assert await rt.wait(await rt.start("anything", ok), timeout=10) == ok


# -- 4. retries ignore neither a lost lease nor a cancel -------------------------------------------


async def test_an_inline_retry_after_another_executor_took_the_run_does_not_run_again(
    store: WorkflowStore,
) -> None:
    clock = FakeClock()
    calls: list[str] = []
    first_failed = asyncio.Event()
    taken = asyncio.Event()

    def build(name: str) -> Runtime:
        rt, _ = test_runtime(store, lease_ttl=30.0)
        rt.clock = clock

        @rt.step(name="flaky", retry=RetryPolicy(max_attempts=3, initial_delay=1.0))
        async def flaky() -> str:
            calls.append(name)
            if name == "A":
                first_failed.set()
                await taken.wait()  # A's back-off outlives its lease
                raise ConnectionError("A's attempt failed")
            return "B's result"

        @rt.workflow("retry")
        async def retrying(ctx: Context, _: Any) -> str:
            return await ctx.step(flaky)

        return rt

    a, b = build("A"), build("B")
    run_id = await a.start("retry")
    executor_a = asyncio.create_task(a.resume(run_id))
    await first_failed.wait()
    clock.advance(31)  # A's lease lapses: A never got to renew it
    assert await b.wait(run_id, timeout=10) == "B's result"
    taken.set()
    await executor_a

    assert calls == ["A", "B"]  # A did not retry after B took the run over
    assert (await b.get(run_id)).output == "B's result"


async def test_no_attempt_starts_after_a_cancel(rt: Runtime, clock: FakeClock) -> None:
    calls = Counter[str]()
    failed_once = asyncio.Event()
    go_on = asyncio.Event()

    @rt.step(retry=RetryPolicy(max_attempts=5, initial_delay=1.0))
    async def flaky() -> None:
        calls["flaky"] += 1
        failed_once.set()
        await go_on.wait()
        raise ConnectionError("down")

    @rt.workflow("cancelled")
    async def cancelled(ctx: Context, _: Any) -> None:
        await ctx.step(flaky)

    run_id = await rt.start("cancelled")
    executor = asyncio.create_task(rt.resume(run_id))
    await failed_once.wait()
    await rt.cancel(run_id)
    go_on.set()
    await executor

    info = await rt.get(run_id)
    assert info.status == "cancelled"
    assert calls["flaky"] == 1  # no retry once cancelled
    assert info.steps == []  # and nothing appended to the cancelled run


# -- 5. cancelling a durable operation from asyncio ------------------------------------------------


async def test_a_signal_beats_a_long_sleep_raced_with_asyncio_wait(
    rt: Runtime, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    @rt.workflow("race")
    async def race(ctx: Context, _: Any) -> str:
        sleep = asyncio.ensure_future(ctx.sleep(3600))
        signal = asyncio.ensure_future(ctx.wait_for_signal("go"))
        done, pending = await asyncio.wait({sleep, signal}, return_when=asyncio.FIRST_COMPLETED)
        for loser in pending:
            loser.cancel()
        return "signal" if signal in done else "sleep"

    t0 = clock.now()
    run_id = await rt.start("race")
    await idle(rt, run_id)
    assert (await rt.get(run_id)).wake_at == t0 + 3600
    clock.advance(10)
    await rt.signal(run_id, "go")
    await idle(rt, run_id)

    info = await rt.get(run_id)
    assert (info.status, info.output) == ("completed", "signal")
    assert info.updated_at == t0 + 10  # not t0 + 3600
    assert "never retrieved" not in caplog.text


async def test_a_cancelled_sleep_replays_as_cancelled_even_once_it_is_due(
    rt: Runtime, clock: FakeClock
) -> None:
    calls = Counter[str]()

    @rt.step(name="after")
    async def after(which: str) -> str:
        calls[which] += 1
        return which

    @rt.workflow("race-then-wait")
    async def race_then_wait(ctx: Context, _: Any) -> list[str]:
        sleep = asyncio.ensure_future(ctx.sleep(100))
        signal = asyncio.ensure_future(ctx.wait_for_signal("go"))
        done, pending = await asyncio.wait({sleep, signal}, return_when=asyncio.FIRST_COMPLETED)
        for loser in pending:
            loser.cancel()
        first = await ctx.step(after, "signal" if signal in done else "sleep")
        await ctx.wait_for_signal("finish")  # a later replay happens after the sleep is due
        return [first]

    run_id = await rt.start("race-then-wait")
    await idle(rt, run_id)
    await rt.signal(run_id, "go")
    await idle(rt, run_id)
    clock.advance(1000)  # the cancelled sleep would be due now: it must not fire on replay
    await rt.signal(run_id, "finish")
    assert await rt.wait(run_id, timeout=10) == ["signal"]
    assert calls == Counter({"signal": 1})


async def test_a_step_cancelled_by_asyncio_wait_for_fails_the_run_with_a_clear_error(
    rt: Runtime,
) -> None:
    @rt.step
    async def slow() -> str:
        await asyncio.sleep(5)
        return "slow"

    @rt.workflow("timed")
    async def timed(ctx: Context, _: Any) -> str:
        try:
            return await asyncio.wait_for(ctx.step(slow), 0.05)
        except TimeoutError:
            return "timed out"

    run_id = await rt.start("timed")
    with pytest.raises(WorkflowFailed) as failed:
        await rt.wait(run_id, timeout=10)
    message = (failed.value.error or {})["message"]
    assert "cancelled from asyncio" in message and "timeout=" in message


async def test_a_per_attempt_step_timeout_makes_a_slow_attempt_a_failed_one(
    rt: Runtime,
) -> None:
    attempts: list[int] = []

    @rt.step(timeout=0.05, retry=RetryPolicy(max_attempts=3, initial_delay=0.0))
    async def sometimes_slow() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            await asyncio.sleep(5)
        return "fast at last"

    @rt.workflow("timeouts")
    async def timeouts(ctx: Context, _: Any) -> str:
        return await ctx.step(sometimes_slow)

    run_id = await rt.start("timeouts")
    assert await rt.wait(run_id, timeout=10) == "fast at last"
    assert attempts == [1, 2, 3]
    assert (await rt.get(run_id)).steps[0].attempts == 3


async def test_wait_for_any_signal_takes_the_first_and_leaves_the_rest(
    rt: Runtime, clock: FakeClock
) -> None:
    @rt.workflow("either")
    async def either(ctx: Context, _: Any) -> list[Any]:
        first = await ctx.wait_for_any_signal("approved", "rejected", timeout=60)
        later = await ctx.wait_for_signal("approved")
        return [list(first), later]

    run_id = await rt.start("either")
    await idle(rt, run_id)
    await rt.signal(run_id, "rejected", {"by": "qa"})
    await rt.signal(run_id, "approved", {"by": "ops"})
    assert await rt.wait(run_id, timeout=10) == [["rejected", {"by": "qa"}], {"by": "ops"}]

    @rt.workflow("either-times-out")
    async def times_out(ctx: Context, _: Any) -> str:
        try:
            await ctx.wait_for_any_signal("x", "y", timeout=60)
        except TimeoutError:
            return "timed out"
        return "no"

    other = await rt.start("either-times-out")
    assert await rt.wait(other, timeout=10) == "timed out"


# -- 6. retry after a fix runs the failed step again -----------------------------------------------


async def test_retry_after_a_fix_runs_the_failed_step_again_and_keeps_the_rest(
    rt: Runtime,
) -> None:
    calls = Counter[str]()
    fixed = False

    @rt.step(name="prepare")
    async def prepare() -> str:
        calls["prepare"] += 1
        return "prepared"

    @rt.step(name="charge", retry=RetryPolicy(max_attempts=2, initial_delay=0.0))
    async def charge() -> str:
        calls["charge"] += 1
        if not fixed:
            raise FatalError("card processor misconfigured")
        return "charged"

    @rt.workflow("pay")
    async def pay(ctx: Context, _: Any) -> list[str]:
        return [await ctx.step(prepare), await ctx.step(charge)]

    run_id = await rt.start("pay")
    with pytest.raises(WorkflowFailed):
        await rt.wait(run_id, timeout=10)
    assert calls == Counter({"prepare": 1, "charge": 1})

    fixed = True
    await rt.retry(run_id)
    assert await rt.wait(run_id, timeout=10) == ["prepared", "charged"]
    assert calls == Counter({"prepare": 1, "charge": 2})  # prepare kept, charge run again
    assert await timeline(rt, run_id) == [(0, "step", "prepare"), (1, "step", "charge")]


async def test_retry_from_a_seq_reruns_from_there_and_restores_its_signals(rt: Runtime) -> None:
    calls = Counter[str]()

    @rt.step(name="use")
    async def use(payload: Any) -> Any:
        calls["use"] += 1
        if calls["use"] == 1:
            raise FatalError("first time unlucky")
        return payload

    @rt.workflow("signal-then-step")
    async def signal_then_step(ctx: Context, _: Any) -> Any:
        payload = await ctx.wait_for_signal("go")
        return await ctx.step(use, payload)

    run_id = await rt.start("signal-then-step")
    await rt.signal(run_id, "go", {"n": 1})
    with pytest.raises(WorkflowFailed):
        await rt.wait(run_id, timeout=10)

    await rt.retry(run_id, from_seq=0)  # the signal consumed at seq 0 is pending again
    assert await rt.wait(run_id, timeout=10) == {"n": 1}
    assert await timeline(rt, run_id) == [(0, "signal", "go"), (1, "step", "use")]


# -- 7. numbers ------------------------------------------------------------------------------------


def test_retry_delays_never_overflow() -> None:
    policy = RetryPolicy(max_attempts=1200, initial_delay=0.001, max_delay=0.001)
    assert policy.delay(1025) == 0.001
    assert RetryPolicy(initial_delay=1, backoff=10, max_delay=60).delay(10**6) == 60


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_durations_must_be_finite_and_not_negative(value: float) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(initial_delay=value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -1])
async def test_sleep_and_signal_timeouts_refuse_non_finite_numbers(rt: Runtime, bad: float) -> None:
    @rt.workflow("bad-sleep")
    async def bad_sleep(ctx: Context, _: Any) -> None:
        await ctx.sleep(bad)

    @rt.workflow("bad-timeout")
    async def bad_timeout(ctx: Context, _: Any) -> None:
        await ctx.wait_for_signal("x", timeout=bad)

    for name in ("bad-sleep", "bad-timeout"):
        run_id = await rt.start(name)
        with pytest.raises(WorkflowFailed, match="ValueError"):
            await rt.wait(run_id, timeout=10)


async def test_a_step_that_fails_1100_times_then_succeeds_completes() -> None:
    rt, _ = test_runtime()  # about arithmetic, not storage: the memory store is enough
    attempts = Counter[str]()

    @rt.step(retry=RetryPolicy(max_attempts=1200, initial_delay=0.0, max_delay=0.0))
    async def stubborn() -> int:
        attempts["n"] += 1
        if attempts["n"] <= 1100:
            raise ConnectionError("not yet")
        return attempts["n"]

    @rt.workflow("stubborn")
    async def stubborn_flow(ctx: Context, _: Any) -> int:
        return await ctx.step(stubborn)

    assert await rt.wait(await rt.start("stubborn"), timeout=60) == 1101


def test_the_fake_clock_refuses_infinity() -> None:
    with pytest.raises(ValueError):
        FakeClock().advance(float("inf"))


# -- 8. type fidelity ------------------------------------------------------------------------------


async def test_a_dict_with_int_keys_comes_back_with_int_keys_live_and_on_replay(
    rt: Runtime,
) -> None:
    seen: list[Any] = []

    @rt.step
    async def numbered() -> dict[int, str]:
        return {1: "a", 2: "b"}

    @rt.workflow("numbered")
    async def numbered_flow(ctx: Context, _: Any) -> None:
        seen.append(await ctx.step(numbered))
        await ctx.sleep(5)

    await rt.wait(await rt.start("numbered"), timeout=10)
    assert seen == [{1: "a", 2: "b"}, {1: "a", 2: "b"}]  # live, then replayed
    assert all(type(k) is int for value in seen for k in value)


class Opaque:
    """Neither JSON nor a dataclass or model: nothing can rebuild it from JSON."""


def test_an_annotation_that_cannot_be_rebuilt_is_refused_at_registration(rt: Runtime) -> None:
    def opaque() -> Opaque:
        return Opaque()

    with pytest.raises(TypeError, match="step 'test_an_annotation.*cannot be rebuilt from JSON"):
        rt.step(opaque)


# -- 9. misuse -------------------------------------------------------------------------------------


async def test_a_durable_operation_inside_a_step_fails_at_once(rt: Runtime) -> None:
    holder: dict[str, Context] = {}

    @rt.step
    async def inner() -> str:
        return "inner"

    @rt.step
    async def outer() -> str:
        return str(await holder["ctx"].step(inner))

    @rt.workflow("nested")
    async def nested(ctx: Context, _: Any) -> str:
        holder["ctx"] = ctx
        try:
            return await ctx.step(outer)
        except StepFailed as failed:
            return failed.error_message

    message = await rt.wait(await rt.start("nested"), timeout=10)
    assert "ctx.step() called inside step" in message and "outer" in message


async def test_wait_gives_up_at_its_timeout_while_a_step_still_runs(rt: Runtime) -> None:
    release = asyncio.Event()

    @rt.step
    async def forever() -> None:
        await release.wait()

    @rt.workflow("long-step")
    async def long_step(ctx: Context, _: Any) -> None:
        await ctx.step(forever)

    run_id = await rt.start("long-step")
    with pytest.raises(TimeoutError, match="after 0.2s"):
        await rt.wait(run_id, timeout=0.2)
    assert not release.is_set()  # the step had not finished: wait did not wait for it


# -- 10. long-lived loops: continue_as_new ---------------------------------------------------------


async def test_continue_as_new_keeps_replay_short_and_loses_no_signal(
    store: WorkflowStore,
) -> None:
    rt, _ = test_runtime(store)
    replayed: list[int] = []

    @rt.workflow("counter")
    async def counter(ctx: Context, state: dict[str, int]) -> int:
        total, seen = state["total"], 0
        while total < 60:
            total += await ctx.wait_for_signal("add")
            seen += 1
            if seen == 10:  # a fresh history every ten signals
                ctx.continue_as_new({"total": total})
        replayed.append(total)
        return total

    run_id = await rt.start("counter", {"total": 0}, run_id="counter")
    for _ in range(60):  # buffered faster than consumed: many cross each switch
        await rt.signal(run_id, "add", 1)
    assert await rt.wait(run_id, timeout=30) == 60
    info = await rt.get(run_id)
    assert len(info.steps) == 0 or len(info.steps) <= 10  # the last history only
    assert info.input == {"total": 60}
    assert info.signals == []


# -- 11. a failure parked behind a sibling wait ----------------------------------------------------


@pytest.mark.parametrize("sibling", ["signal", "sleep"])
async def test_a_failed_step_beside_a_waiting_sibling_fails_the_run_now(
    rt: Runtime, clock: FakeClock, sibling: str
) -> None:
    @rt.step(retry=RetryPolicy(max_attempts=1))
    async def charge() -> None:
        raise FatalError("card declined")

    @rt.workflow("parked")
    async def parked(ctx: Context, _: Any) -> None:
        other = ctx.wait_for_signal("approved") if sibling == "signal" else ctx.sleep(3600)
        await asyncio.gather(ctx.step(charge), other)

    t0 = clock.now()
    run_id = await rt.start("parked")
    await rt.resume(run_id)
    info = await rt.get(run_id)
    assert info.status == "failed"
    assert info.error is not None and "card declined" in info.error["message"]
    assert info.updated_at == t0  # now, not when the sibling would have woken


async def test_the_workflows_own_raise_beside_a_waiting_task_fails_the_run(rt: Runtime) -> None:
    @rt.workflow("raises")
    async def raises(ctx: Context, _: Any) -> None:
        waiting = asyncio.ensure_future(ctx.wait_for_signal("never"))
        await asyncio.sleep(0)
        del waiting
        raise LookupError("nothing to do")

    run_id = await rt.start("raises")
    await rt.resume(run_id)
    assert await status(rt, run_id) == "failed"


async def test_a_swallowed_suspension_is_not_a_failure(rt: Runtime) -> None:
    @rt.workflow("swallow")
    async def swallow(ctx: Context, _: Any) -> Any:
        results = await asyncio.gather(ctx.sleep(60), return_exceptions=True)
        return results[0]["nope"]  # type: ignore[index]  # would fail on the Suspend object

    run_id = await rt.start("swallow")
    await rt.resume(run_id)
    assert await status(rt, run_id) == "sleeping"


# -- 12. a registry that grows with every run ------------------------------------------------------


async def test_closures_passed_as_steps_do_not_leak() -> None:
    rt, _ = test_runtime()  # about the registry, not storage: the memory store is enough

    @rt.workflow("closures")
    async def closures(ctx: Context, n: int) -> int:
        async def add_one() -> int:  # a new function object on every execution
            return n + 1

        return await ctx.step(add_one)

    for i in range(200):
        assert await rt.wait(await rt.start("closures", i), timeout=10) == i + 1
    gc.collect()
    assert len(rt.registry._derived) < 10
    logging.getLogger("heron").debug("registry holds %d derived specs", len(rt.registry._derived))


async def test_an_unstorable_step_result_is_payload_too_large_identically(rt: Runtime) -> None:
    @rt.step(name="blob")
    async def blob() -> str:
        return "z" * (rt.max_payload + 1)

    @rt.workflow("blob")
    async def blob_flow(ctx: Context, _: Any) -> str:
        return await ctx.step(blob)

    run_id = await rt.start("blob", run_id="b-1")
    with pytest.raises(WorkflowFailed) as failed:
        await rt.wait(run_id, timeout=10)
    record = failed.value.error or {}
    assert record["type"] == PayloadTooLarge.__name__
    assert "step 'blob' (run 'b-1', seq 0)" in record["message"]


# -- the ordered hand-back, when writes finish in another order than they started ------------------


class OutOfOrderAppends(CountingStore):
    """Holds each append back a little longer than the one after it: the second write to start
    finishes first (what a networked store does now and then)."""

    def __init__(self, inner: WorkflowStore) -> None:
        super().__init__(inner)
        self.delays = [0.02, 0.0]

    async def _call(self, op: str, call: Any, *args: Any) -> Any:
        if op == "append" and self.delays:
            await asyncio.sleep(self.delays.pop(0))
        return await super()._call(op, call, *args)


async def test_outcomes_go_back_in_commit_order_when_writes_finish_out_of_order(
    store: WorkflowStore,
) -> None:
    proxy = OutOfOrderAppends(store)
    rt, clock = test_runtime(proxy)

    @rt.step(name="fetch")
    async def fetch(i: int) -> int:
        for _ in range(10 - 5 * i):
            await asyncio.sleep(0)
        return i

    @rt.step(name="save")
    async def save(i: int) -> int:
        return i * 10

    async def process(ctx: Context, i: int) -> int:
        return await ctx.step(save, await ctx.step(fetch, i))

    @rt.workflow("fan")
    async def fan(ctx: Context, _: Any) -> list[int]:
        results = await asyncio.gather(*(process(ctx, i) for i in range(2)))
        await ctx.sleep(10)
        return list(results)

    run_id = await rt.start("fan")
    await rt.resume(run_id)
    clock.advance(10)
    await rt.resume(run_id)  # a replay: each branch must get its own values back
    info = await rt.get(run_id)
    assert (info.status, info.output) == ("completed", [0, 10])
