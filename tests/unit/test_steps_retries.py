"""Steps: registration, sync and async functions, retries (inline and suspended), fatal errors,
``StepFailed`` into the workflow, ``heron.runtime.step_key()``, ``RetryPolicy`` and fan-out with
``asyncio.gather``."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from typing import Any

import pytest

from heron import runtime
from heron.runtime import (
    Context,
    FatalError,
    RetryPolicy,
    Runtime,
    StepFailed,
    StepKey,
    WorkflowFailed,
)
from heron.runtime._retry import DEFAULT_RETRY
from heron.runtime.testing import FakeClock
from tests.unit.helpers import status, timeline

# -- registration --------------------------------------------------------------------------------


async def test_bare_decorators_register_under_the_function_name(rt: Runtime) -> None:
    @rt.step
    async def double(x: int) -> int:
        return 2 * x

    @rt.workflow
    async def doubler(ctx: Context, x: int) -> int:
        return await ctx.step(double, x)

    assert rt.workflows == ["doubler"]
    assert await double(4) == 8  # the decorated function is returned unchanged
    run_id = await rt.start("doubler", 21)
    assert await rt.wait(run_id, timeout=10) == 42
    assert (await rt.get(run_id)).steps[0].name.endswith("double")


async def test_decorators_with_arguments(rt: Runtime) -> None:
    @rt.step(name="triple", retry=RetryPolicy(max_attempts=1))
    async def times_three(x: int) -> int:
        return 3 * x

    @rt.workflow("math", version="2")
    async def math_workflow(ctx: Context, x: int) -> int:
        return await ctx.step(times_three, x)

    run_id = await rt.start("math", 5)

    assert await rt.wait(run_id, timeout=10) == 15
    info = await rt.get(run_id)
    assert info.workflow == "math"
    assert info.version == "2"
    assert await timeline(rt, run_id) == [(0, "step", "triple")]


def test_a_workflow_must_be_async(rt: Runtime) -> None:
    with pytest.raises(TypeError, match="async"):

        @rt.workflow("sync")
        def not_async(ctx: Context, x: int) -> int:
            return x


async def test_sync_steps_run_off_the_event_loop(rt: Runtime) -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    @rt.step
    def blocking(x: int) -> str:
        threads.append(threading.get_ident())
        return f"box-{x}"

    @rt.workflow("packer")
    async def packer(ctx: Context, n: int) -> list[str]:
        return [await ctx.step(blocking, i) for i in range(n)]

    run_id = await rt.start("packer", 3)

    assert await rt.wait(run_id, timeout=10) == ["box-0", "box-1", "box-2"]
    assert len(threads) == 3
    assert loop_thread not in threads


async def test_unregistered_functions_run_as_steps_with_the_default_policy(rt: Runtime) -> None:
    async def helper() -> str:
        return "ok"

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        return await ctx.step(helper)

    assert await rt.wait(await rt.start("w"), timeout=10) == "ok"
    assert DEFAULT_RETRY.max_attempts == 3


# -- retries ---------------------------------------------------------------------------------------


async def test_short_backoff_retries_inline(rt: Runtime, clock: FakeClock) -> None:
    # given a step that fails twice, then succeeds, with back-offs under the inline limit
    attempts: list[int] = []

    @rt.step(retry=RetryPolicy(max_attempts=3, initial_delay=0.5, backoff=2.0))
    async def flaky() -> str:
        attempts.append(runtime.step_key().attempt)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        return await ctx.step(flaky)

    run_id = await rt.start("w")
    started = clock.now()

    # when one resume runs it
    saved = await rt.resume(run_id)

    # then it retried inside that resume and recorded three attempts
    assert saved is not None and saved.status == "completed"
    assert saved.output == "ok"
    assert attempts == [1, 2, 3]
    (cp,) = (await rt.get(run_id)).steps
    assert cp.attempts == 3
    assert clock.now() == started + 0.5 + 1.0  # it slept the back-offs (on the fake clock)


async def test_long_backoff_suspends_the_run(rt: Runtime, clock: FakeClock) -> None:
    attempts: list[int] = []

    @rt.step(retry=RetryPolicy(max_attempts=3, initial_delay=60))
    async def flaky() -> str:
        attempts.append(runtime.step_key().attempt)
        if len(attempts) < 2:
            raise ConnectionError("service unavailable")
        return "ok"

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        return await ctx.step(flaky)

    run_id = await rt.start("w")
    now = clock.now()

    # first resume: one attempt, then the run sleeps until the retry is due
    await rt.resume(run_id)
    info = await rt.get(run_id)
    assert info.status == "sleeping"
    assert info.wake_at == now + 60
    assert info.steps == []
    assert attempts == [1]

    # a resume before the retry is due does nothing
    clock.advance(59)
    assert await rt.resume(run_id) is None
    assert attempts == [1]

    # once due, attempt 2 runs and succeeds
    clock.advance(1)
    saved = await rt.resume(run_id)
    assert saved is not None and saved.status == "completed"
    assert attempts == [1, 2]
    (cp,) = (await rt.get(run_id)).steps
    assert cp.attempts == 2


async def test_fatal_error_fails_the_step_at_once(rt: Runtime) -> None:
    attempts = Counter[str]()

    @rt.step(retry=RetryPolicy(max_attempts=5, initial_delay=0))
    async def charge(cents: int) -> str:
        attempts["charge"] += 1
        raise FatalError("card declined")

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> dict[str, Any]:
        try:
            await ctx.step(charge, 100)
        except StepFailed as exc:
            return {
                "type": exc.error_type,
                "message": exc.error_message,
                "attempts": exc.attempts,
                "seq": exc.seq,
            }
        return {}

    run_id = await rt.start("w")

    output = await rt.wait(run_id, timeout=10)
    assert output == {"type": "FatalError", "message": "card declined", "attempts": 1, "seq": 0}
    assert attempts["charge"] == 1
    (cp,) = (await rt.get(run_id)).steps
    assert cp.error == {"type": "FatalError", "message": "card declined"}
    assert cp.attempts == 1


async def test_non_retryable_types_fail_at_once(rt: Runtime) -> None:
    attempts = Counter[str]()

    @rt.step(retry=RetryPolicy(max_attempts=5, initial_delay=0, non_retryable=(KeyError,)))
    async def lookup() -> str:
        attempts["lookup"] += 1
        raise KeyError("sku")

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        try:
            return await ctx.step(lookup)
        except StepFailed as exc:
            return exc.error_type

    assert await rt.wait(await rt.start("w"), timeout=10) == "KeyError"
    assert attempts["lookup"] == 1


async def test_exhausted_retries_raise_step_failed_and_the_workflow_carries_on(
    rt: Runtime,
) -> None:
    attempts = Counter[str]()

    @rt.step(retry=RetryPolicy(max_attempts=3, initial_delay=0))
    async def always_fails() -> str:
        attempts["always_fails"] += 1
        raise ConnectionError("down")

    @rt.step
    async def fallback() -> str:
        return "fallback"

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> list[str]:
        seen = []
        try:
            await ctx.step(always_fails)
        except StepFailed as exc:
            seen.append(f"{exc.error_type}: {exc.error_message} x{exc.attempts}")
        seen.append(await ctx.step(fallback))
        return seen

    run_id = await rt.start("w")

    assert await rt.wait(run_id, timeout=10) == ["ConnectionError: down x3", "fallback"]
    assert attempts["always_fails"] == 3
    steps = (await rt.get(run_id)).steps
    assert steps[0].error == {"type": "ConnectionError", "message": "down"}
    assert steps[0].attempts == 3
    assert steps[1].value == "fallback"


async def test_step_failure_replays_with_the_same_details(rt: Runtime, clock: FakeClock) -> None:
    seen: list[tuple[str, str, int]] = []
    attempts = Counter[str]()

    @rt.step(retry=RetryPolicy(max_attempts=2, initial_delay=0))
    async def broken() -> None:
        attempts["broken"] += 1
        raise ValueError("nope")

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        try:
            await ctx.step(broken)
        except StepFailed as exc:
            seen.append((exc.error_type, exc.error_message, exc.attempts))
        await ctx.sleep(30)

    run_id = await rt.start("w")
    await rt.resume(run_id)
    clock.advance(30)
    await rt.resume(run_id)

    assert await status(rt, run_id) == "completed"
    assert seen == [("ValueError", "nope", 2), ("ValueError", "nope", 2)]
    assert attempts["broken"] == 2


async def test_uncaught_step_failure_fails_the_run(rt: Runtime) -> None:
    @rt.step(name="explode", retry=RetryPolicy(max_attempts=2, initial_delay=0))
    async def explode() -> None:
        raise RuntimeError("kaboom")

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.step(explode)

    run_id = await rt.start("w")

    with pytest.raises(WorkflowFailed) as caught:
        await rt.wait(run_id, timeout=10)

    assert caught.value.status == "failed"
    error = (await rt.get(run_id)).error
    assert error is not None
    assert error["type"] == "StepFailed"
    assert error["step"] == "explode"
    assert error["cause"] == "RuntimeError"
    assert "kaboom" in error["message"]
    assert caught.value.error == error


# -- step_key ------------------------------------------------------------------------------------


async def test_step_key_names_run_seq_and_attempt(rt: Runtime) -> None:
    keys: list[StepKey] = []

    @rt.step(retry=RetryPolicy(max_attempts=2, initial_delay=0))
    async def first() -> None:
        keys.append(runtime.step_key())
        if runtime.step_key().attempt == 1:
            raise ConnectionError("again")

    @rt.step
    def second() -> None:  # sync steps run in a thread and see their key too
        keys.append(runtime.step_key())

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        assert ctx.run_id == "run-1"
        await ctx.step(first)
        await ctx.step(second)
        return "ok"

    await rt.wait(await rt.start("w", run_id="run-1"), timeout=10)

    assert keys == [StepKey("run-1", 0, 1), StepKey("run-1", 0, 2), StepKey("run-1", 1, 1)]
    assert str(keys[0]) == str(keys[1]) == "run-1:0"  # stable across attempts: an idempotency key


def test_step_key_outside_a_step_raises() -> None:
    with pytest.raises(RuntimeError, match="outside"):
        runtime.step_key()


async def test_step_key_in_the_workflow_body_raises(rt: Runtime) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        try:
            runtime.step_key()
        except RuntimeError:
            return "raised"
        return "did not raise"

    assert await rt.wait(await rt.start("w"), timeout=10) == "raised"


# -- RetryPolicy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_delay": -1},
        {"max_delay": -1},
        {"backoff": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_retry_policy_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_retry_policy_backoff_and_cap() -> None:
    policy = RetryPolicy(max_attempts=10, initial_delay=1.0, backoff=2.0, max_delay=10.0)

    assert [policy.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_retry_policy_constant_delay() -> None:
    policy = RetryPolicy(initial_delay=3.0, backoff=1.0)

    assert [policy.delay(n) for n in range(1, 4)] == [3.0, 3.0, 3.0]


def test_retry_policy_jitter_stays_in_bounds_and_spreads() -> None:
    policy = RetryPolicy(initial_delay=10.0, backoff=1.0, jitter=0.1)
    rng = random.Random(7)

    delays = [policy.delay(1, rng) for _ in range(500)]

    assert all(9.0 <= d <= 11.0 for d in delays)
    assert len(set(delays)) > 100  # spread, not one value
    assert min(delays) < 9.5 and max(delays) > 10.5


def test_retry_policy_full_jitter_never_goes_negative() -> None:
    policy = RetryPolicy(initial_delay=1.0, jitter=1.0)
    rng = random.Random(3)

    assert all(policy.delay(1, rng) >= 0 for _ in range(200))


def test_retry_policy_retryable() -> None:
    policy = RetryPolicy(non_retryable=(KeyError,))

    assert policy.retryable(ConnectionError())
    assert not policy.retryable(FatalError("x"))
    assert not policy.retryable(KeyError("x"))


# -- fan-out with asyncio.gather -------------------------------------------------------------------


async def test_gather_numbers_steps_in_call_order(rt: Runtime, clock: FakeClock) -> None:
    # given 20 steps that finish in the reverse of the order they were started
    calls = Counter[int]()

    @rt.step(name="square")
    async def square(i: int) -> int:
        calls[i] += 1
        for _ in range(20 - i):
            await asyncio.sleep(0)
        return i * i

    @rt.workflow("fan")
    async def fan(ctx: Context, _: Any) -> list[int]:
        results = await asyncio.gather(*(ctx.step(square, i) for i in range(20)))
        await ctx.sleep(5)  # forces a second resume, which replays the fan-out
        return list(results)

    run_id = await rt.start("fan")

    # when it runs over two resumes
    await rt.resume(run_id)
    first = (await rt.get(run_id)).steps
    clock.advance(5)
    output = await rt.wait(run_id, timeout=10)

    # then seq i holds step i, whatever the completion order, and replay ran nothing again
    assert output == [i * i for i in range(20)]
    assert [(cp.seq, cp.value) for cp in first] == [(i, i * i) for i in range(20)]
    assert all(n == 1 for n in calls.values()) and len(calls) == 20
    assert (await rt.get(run_id)).steps[:20] == first


async def test_fan_out_that_suspends_midway_keeps_finished_steps(
    rt: Runtime, clock: FakeClock
) -> None:
    # given a fan-out of steps and a sleep, where the sleep suspends before the steps finish
    calls = Counter[int]()

    @rt.step(name="work")
    async def work(i: int) -> int:
        calls[i] += 1
        for _ in range(5):
            await asyncio.sleep(0)
        return i + 100

    @rt.workflow("fan")
    async def fan(ctx: Context, _: Any) -> list[Any]:
        return list(await asyncio.gather(ctx.step(work, 0), ctx.sleep(60), ctx.step(work, 1)))

    run_id = await rt.start("fan")

    # when the first resume ends on the sleep
    await rt.resume(run_id)

    # then the steps started before it still committed, and the run sleeps
    info = await rt.get(run_id)
    assert info.status == "sleeping"
    assert [(cp.seq, cp.kind, cp.value) for cp in info.steps] == [
        (0, "step", 100),
        (2, "step", 101),
    ]

    # and the next resume completes without running them again
    clock.advance(60)
    assert await rt.wait(run_id, timeout=10) == [100, None, 101]
    assert calls == Counter({0: 1, 1: 1})
    assert await timeline(rt, run_id) == [
        (0, "step", "work"),
        (1, "sleep", "sleep"),
        (2, "step", "work"),
    ]


async def test_step_arguments_by_keyword(rt: Runtime) -> None:
    @rt.step
    async def greet(name: str, *, punctuation: str = ".") -> str:
        return f"hello {name}{punctuation}"

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        return await ctx.step(greet, "ada", punctuation="!")

    assert await rt.wait(await rt.start("w"), timeout=10) == "hello ada!"


async def test_gathered_branches_of_several_steps_replay(rt: Runtime, clock: FakeClock) -> None:
    # given concurrent branches of two steps each, where the second branch's first step
    # finishes first when run live (docs/architecture.md: "steps still running in gathered
    # branches"; the common fan-out `gather(*(process(item) for item in items))`)
    calls = Counter[str]()

    @rt.step(name="fetch")
    async def fetch(i: int) -> int:
        calls[f"fetch-{i}"] += 1
        for _ in range(10 - 5 * i):
            await asyncio.sleep(0)
        return i

    @rt.step(name="save")
    async def save(i: int) -> int:
        calls[f"save-{i}"] += 1
        return i * 10

    async def process(ctx: Context, i: int) -> int:
        return await ctx.step(save, await ctx.step(fetch, i))

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> list[int]:
        results = await asyncio.gather(*(process(ctx, i) for i in range(2)))
        await ctx.sleep(10)
        return list(results)

    # when the run is replayed after its sleep, with the same code
    run_id = await rt.start("w")
    await rt.resume(run_id)
    clock.advance(10)
    await rt.resume(run_id)

    # then it completes from its history (no NonDeterminismError), each step run once
    info = await rt.get(run_id)
    assert info.error is None
    assert info.status == "completed"
    assert info.output == [0, 10]
    assert all(n == 1 for n in calls.values()) and len(calls) == 4


async def test_retries_that_suspend_still_run_out(rt: Runtime, clock: FakeClock) -> None:
    attempts: list[int] = []

    @rt.step(retry=RetryPolicy(max_attempts=3, initial_delay=60, backoff=2))
    async def down() -> None:
        attempts.append(runtime.step_key().attempt)
        raise ConnectionError("still down")

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        try:
            await ctx.step(down)
        except StepFailed as exc:
            return f"gave up after {exc.attempts}"
        return "ok"

    run_id = await rt.start("w")
    now = clock.now()
    await rt.resume(run_id)
    assert (await rt.get(run_id)).wake_at == now + 60
    clock.advance(60)
    await rt.resume(run_id)
    assert (await rt.get(run_id)).wake_at == now + 60 + 120  # the back-off doubled
    clock.advance(120)
    saved = await rt.resume(run_id)

    assert saved is not None and saved.output == "gave up after 3"
    assert attempts == [1, 2, 3]
    (cp,) = (await rt.get(run_id)).steps
    assert cp.attempts == 3
    assert not saved.engine.get("retries")  # the counter is dropped once the step is done
