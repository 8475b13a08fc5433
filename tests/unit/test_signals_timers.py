"""Timers and signals: durable sleeps under the fake clock, buffered signals consumed exactly once,
signal timeouts, and suspensions that a workflow cannot swallow."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from typing import Any

import pytest

from heron.runtime import Context, RunNotFound, Runtime
from heron.runtime.testing import FakeClock
from tests.unit.helpers import status, timeline

DAY = 86400.0

# -- sleeping ------------------------------------------------------------------------------------


async def test_a_three_day_sleep_completes_under_the_fake_clock(
    rt: Runtime, clock: FakeClock
) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        await ctx.sleep(3 * DAY)
        return "rested"

    started = clock.now()
    run_id = await rt.start("w")

    assert await rt.wait(run_id, timeout=10) == "rested"
    assert clock.now() >= started + 3 * DAY
    ((seq, kind, _),) = await timeline(rt, run_id)
    assert (seq, kind) == (0, "sleep")


async def test_a_sleeping_run_reports_sleeping_and_its_wake(rt: Runtime, clock: FakeClock) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        await ctx.sleep(100)
        return "done"

    run_id = await rt.start("w")
    now = clock.now()

    await rt.resume(run_id)

    info = await rt.get(run_id)
    assert info.status == "sleeping"
    assert info.wake_at == now + 100
    assert info.steps == []
    assert await rt.resume(run_id) is None  # not due: nothing happens
    clock.advance(100)
    saved = await rt.resume(run_id)
    assert saved is not None and saved.status == "completed"


async def test_a_suspended_run_says_what_it_waits_for_and_until_when(
    rt: Runtime, clock: FakeClock
) -> None:
    @rt.workflow("kid")
    async def kid(ctx: Context, _: Any) -> str:
        await ctx.wait_for_signal("go")
        return "done"

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> Any:
        async def nap() -> None:
            await ctx.sleep(100)

        return await asyncio.gather(
            nap(),
            ctx.wait_for_any_signal("approve", "reject", timeout=50),
            ctx.child("kid"),
        )

    run_id = await rt.start("w")
    now = clock.now()
    await rt.resume(run_id)

    info = await rt.get(run_id)
    assert info.status == "sleeping"  # a timer is pending: it will wake by itself
    (child,) = info.children
    # (the helper coroutine takes its seq when gather runs it: after the two direct calls)
    assert [(w.seq, w.kind, w.name, w.until) for w in info.waiting_for] == [
        (0, "signal", "approve|reject", now + 50),
        (1, "child", child, None),
        (2, "sleep", "sleep", now + 100),
    ]
    assert info.wake_at == now + 50

    # once the signal and the child came, only the sleep is left; at the end, nothing
    await rt.signal(run_id, "approve")
    await rt.signal(child, "go")
    await rt.resume(child)
    await rt.resume(run_id)
    info = await rt.get(run_id)
    assert [(w.kind, w.until) for w in info.waiting_for] == [("sleep", now + 100)]
    clock.advance(100)
    await rt.wait(run_id)
    assert (await rt.get(run_id)).waiting_for == []


@pytest.mark.parametrize(
    "duration", [dt.timedelta(hours=2), 7200, 7200.0], ids=["timedelta", "int", "float"]
)
async def test_sleep_takes_seconds_or_a_timedelta(
    rt: Runtime, clock: FakeClock, duration: Any
) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.sleep(duration)

    run_id = await rt.start("w")
    await rt.resume(run_id)

    assert (await rt.get(run_id)).wake_at == clock.now() + 7200


async def test_sleep_until_a_datetime(rt: Runtime, clock: FakeClock) -> None:
    target = dt.datetime.fromtimestamp(clock.now() + 3 * 3600, dt.UTC)

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        await ctx.sleep_until(target)
        return ctx.now().isoformat()

    run_id = await rt.start("w")
    await rt.resume(run_id)
    info = await rt.get(run_id)
    assert info.status == "sleeping"
    assert info.wake_at == target.timestamp()

    output = await rt.wait(run_id, timeout=10)
    assert dt.datetime.fromisoformat(output) >= target


async def test_sleep_until_a_naive_datetime_is_utc(rt: Runtime, clock: FakeClock) -> None:
    aware = dt.datetime.fromtimestamp(clock.now() + 600, dt.UTC)

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.sleep_until(aware.replace(tzinfo=None))

    run_id = await rt.start("w")
    await rt.resume(run_id)

    assert (await rt.get(run_id)).wake_at == aware.timestamp()


async def test_sleep_until_the_past_does_not_suspend(rt: Runtime, clock: FakeClock) -> None:
    past = dt.datetime.fromtimestamp(clock.now() - 600, dt.UTC)

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        await ctx.sleep_until(past)
        return "on time"

    run_id = await rt.start("w")
    saved = await rt.resume(run_id)

    assert saved is not None and saved.output == "on time"


async def test_negative_sleep_is_an_error_of_the_workflow(rt: Runtime) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.sleep(-1)

    run_id = await rt.start("w")
    await rt.resume(run_id)

    info = await rt.get(run_id)
    assert info.status == "failed"
    assert info.error is not None and info.error["type"] == "ValueError"


async def test_an_early_wake_keeps_the_deadline(rt: Runtime, clock: FakeClock) -> None:
    # a spurious wake (here a signal nobody waits for) is harmless: the run sleeps on
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        await ctx.sleep(100)

    run_id = await rt.start("w")
    deadline = clock.now() + 100
    await rt.resume(run_id)
    clock.advance(40)
    await rt.signal(run_id, "nobody-listens")

    await rt.resume(run_id)

    info = await rt.get(run_id)
    assert info.status == "sleeping"
    assert info.wake_at == deadline


# -- suspension cannot be swallowed ------------------------------------------------------------


async def test_except_exception_does_not_swallow_a_sleep(rt: Runtime, clock: FakeClock) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        try:
            await ctx.sleep(100)
        except Exception:
            return "swallowed"
        return "slept"

    run_id = await rt.start("w")
    await rt.resume(run_id)
    assert await status(rt, run_id) == "sleeping"

    assert await rt.wait(run_id, timeout=10) == "slept"


async def test_except_base_exception_does_not_swallow_a_sleep(
    rt: Runtime, clock: FakeClock
) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        try:
            await ctx.sleep(100)
        except BaseException:  # the careless code under test
            pass
        return "done"

    run_id = await rt.start("w")
    await rt.resume(run_id)
    info = await rt.get(run_id)
    assert info.status == "sleeping"
    assert info.output is None

    clock.advance(100)
    assert await rt.wait(run_id, timeout=10) == "done"
    assert await timeline(rt, run_id) == [(0, "sleep", "sleep")]


async def test_gather_return_exceptions_does_not_swallow_a_sleep(
    rt: Runtime, clock: FakeClock
) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        results = await asyncio.gather(ctx.sleep(100), return_exceptions=True)
        return "slept" if list(results) == [None] else "swallowed"

    run_id = await rt.start("w")
    await rt.resume(run_id)
    assert await status(rt, run_id) == "sleeping"

    clock.advance(100)
    assert await rt.wait(run_id, timeout=10) == "slept"


async def test_code_after_a_swallowed_sleep_does_not_run_early(
    rt: Runtime, clock: FakeClock
) -> None:
    # given a workflow that swallows the suspension of its sleep, then calls a step
    calls = Counter[str]()

    @rt.step(name="after")
    async def after() -> str:
        calls["after"] += 1
        return "after"

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        try:
            await ctx.sleep(100)
        except BaseException:  # the careless code under test
            pass
        return await ctx.step(after)

    # when the first resume reaches the sleep
    run_id = await rt.start("w")
    await rt.resume(run_id)

    # then the run suspends and the step after the sleep has not run 100 s early
    assert await status(rt, run_id) == "sleeping"
    assert calls["after"] == 0
    assert await timeline(rt, run_id) == []

    clock.advance(100)
    assert await rt.wait(run_id, timeout=10) == "after"
    assert calls["after"] == 1


async def test_code_after_a_sleep_hidden_by_gather_does_not_run_early(
    rt: Runtime, clock: FakeClock
) -> None:
    calls = Counter[str]()

    @rt.step(name="after")
    async def after() -> str:
        calls["after"] += 1
        return "after"

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        await asyncio.gather(ctx.sleep(100), return_exceptions=True)
        return await ctx.step(after)

    run_id = await rt.start("w")
    await rt.resume(run_id)

    assert await status(rt, run_id) == "sleeping"
    assert calls["after"] == 0
    clock.advance(100)
    assert await rt.wait(run_id, timeout=10) == "after"
    assert calls["after"] == 1
    assert await timeline(rt, run_id) == [(0, "sleep", "sleep"), (1, "step", "after")]


async def test_gather_return_exceptions_does_not_swallow_a_signal_wait(
    rt: Runtime, clock: FakeClock
) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> list[Any]:
        results = await asyncio.gather(ctx.wait_for_signal("go"), return_exceptions=True)
        return [r if not isinstance(r, BaseException) else "lost" for r in results]

    run_id = await rt.start("w")
    await rt.resume(run_id)
    assert await status(rt, run_id) == "waiting"

    await rt.signal(run_id, "go", "payload")
    assert await rt.wait(run_id, timeout=10) == ["payload"]


# -- signals -------------------------------------------------------------------------------------


async def test_signal_sent_before_the_wait_is_buffered(rt: Runtime) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> Any:
        return await ctx.wait_for_signal("approved")

    run_id = await rt.start("w")
    await rt.signal(run_id, "approved", {"by": "ops"})  # before the run ever ran

    assert await rt.wait(run_id, timeout=10) == {"by": "ops"}


async def test_signal_sent_after_the_run_waits(rt: Runtime) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> Any:
        return await ctx.wait_for_signal("approved")

    run_id = await rt.start("w")
    await rt.resume(run_id)
    info = await rt.get(run_id)
    assert info.status == "waiting"
    assert info.wake_at is None  # no timeout: only a signal wakes it

    await rt.signal(run_id, "approved", {"by": "ops"})
    assert (await rt.get(run_id)).wake_at is not None  # the signal made it due

    assert await rt.wait(run_id, timeout=10) == {"by": "ops"}
    ((seq, kind, name),) = await timeline(rt, run_id)
    assert (seq, kind, name) == (0, "signal", "approved")


async def test_two_signals_of_one_name_are_consumed_in_order(rt: Runtime, clock: FakeClock) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> list[Any]:
        return [await ctx.wait_for_signal("item"), await ctx.wait_for_signal("item")]

    run_id = await rt.start("w")
    await rt.signal(run_id, "item", "first")
    clock.advance(1)
    await rt.signal(run_id, "item", "second")

    assert await rt.wait(run_id, timeout=10) == ["first", "second"]


async def test_a_signal_is_consumed_exactly_once(rt: Runtime, clock: FakeClock) -> None:
    seen: list[Any] = []

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> Any:
        first = await ctx.wait_for_signal("go")
        seen.append(first)
        await ctx.sleep(10)
        second = await ctx.wait_for_signal("go")
        return [first, second]

    run_id = await rt.start("w")
    await rt.signal(run_id, "go", 1)
    await rt.resume(run_id)  # consumes signal 1, sleeps
    assert await status(rt, run_id) == "sleeping"

    # a second signal wakes the run early; replay still returns the first payload
    clock.advance(1)
    await rt.signal(run_id, "go", 2)
    await rt.resume(run_id)
    assert seen == [1, 1]
    assert await status(rt, run_id) == "sleeping"
    consumed = [cp for cp in (await rt.get(run_id)).steps if cp.kind == "signal"]
    assert len(consumed) == 1

    # resuming again does not consume anything more until the second wait
    await rt.resume(run_id)
    assert len([cp for cp in (await rt.get(run_id)).steps if cp.kind == "signal"]) == 1

    clock.advance(10)
    assert await rt.wait(run_id, timeout=10) == [1, 2]
    assert seen == [1, 1, 1]


async def test_signal_id_deduplicates(rt: Runtime, clock: FakeClock) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> list[Any]:
        got = [await ctx.wait_for_signal("pay")]
        try:
            got.append(await ctx.wait_for_signal("pay", timeout=60))
        except TimeoutError:
            got.append("no second signal")
        return got

    run_id = await rt.start("w")
    first = await rt.signal(run_id, "pay", {"cents": 100}, signal_id="pay-1")
    second = await rt.signal(run_id, "pay", {"cents": 100}, signal_id="pay-1")

    assert first == second == "pay-1"
    assert len((await rt.get(run_id)).signals) == 1
    assert await rt.wait(run_id, timeout=10) == [{"cents": 100}, "no second signal"]


async def test_signal_to_an_unknown_run(rt: Runtime) -> None:
    with pytest.raises(RunNotFound):
        await rt.signal("no-such-run", "go")


async def test_signal_name_must_be_a_string(rt: Runtime) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        return None

    run_id = await rt.start("w")
    with pytest.raises(ValueError):
        await rt.signal(run_id, "")


async def test_wait_for_signal_times_out(rt: Runtime, clock: FakeClock) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> str:
        try:
            await ctx.wait_for_signal("approved", timeout=3600)
        except TimeoutError:
            return "timed out"
        return "approved"

    run_id = await rt.start("w")
    now = clock.now()
    await rt.resume(run_id)
    info = await rt.get(run_id)
    assert info.status == "waiting"
    assert info.wake_at == now + 3600

    clock.advance(3599)
    assert await rt.resume(run_id) is None
    clock.advance(1)
    saved = await rt.resume(run_id)
    assert saved is not None and saved.output == "timed out"
    (cp,) = (await rt.get(run_id)).steps
    assert (cp.kind, cp.name) == ("signal", "approved")
    assert cp.error is not None and cp.error["type"] == "TimeoutError"


async def test_a_signal_timeout_replays_as_a_timeout(rt: Runtime, clock: FakeClock) -> None:
    outcomes: list[str] = []

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        try:
            await ctx.wait_for_signal("approved", timeout=dt.timedelta(minutes=1))
            outcomes.append("signal")
        except TimeoutError:
            outcomes.append("timeout")
        await ctx.sleep(60)

    run_id = await rt.start("w")
    await rt.resume(run_id)
    clock.advance(60)
    await rt.resume(run_id)  # times out, then sleeps
    await rt.signal(run_id, "approved", "too late")
    await rt.resume(run_id)  # the late signal wakes it: replay still says timeout

    assert outcomes == ["timeout", "timeout"]
    await rt.wait(run_id, timeout=10)
    assert outcomes == ["timeout", "timeout", "timeout"]


async def test_a_signal_in_time_beats_the_timeout(rt: Runtime, clock: FakeClock) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> Any:
        return await ctx.wait_for_signal("approved", timeout=3600)

    run_id = await rt.start("w")
    await rt.resume(run_id)
    clock.advance(1800)
    await rt.signal(run_id, "approved", "yes")

    assert await rt.wait(run_id, timeout=10) == "yes"


async def test_a_signal_sent_while_the_run_suspends_is_not_lost(rt: Runtime) -> None:
    # the step sends the signal while the executor holds the run: its save then loses to the
    # signal's revision bump, and the executor reloads and replays instead of overwriting
    @rt.step
    async def ask() -> None:
        from heron.runtime import step_key

        await rt.signal(step_key().run_id, "answer", 42)

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> Any:
        await ctx.step(ask)
        return await ctx.wait_for_signal("answer")

    run_id = await rt.start("w")
    saved = await rt.resume(run_id)

    assert saved is not None and saved.status == "completed"
    assert saved.output == 42


async def test_signals_sent_at_the_same_instant_are_consumed_in_send_order(
    rt: Runtime,
) -> None:
    # the fake clock does not move between the two sends, so both signals carry the same time;
    # the ids are chosen so that their sort order is the reverse of the send order
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> list[Any]:
        return [await ctx.wait_for_signal("item"), await ctx.wait_for_signal("item")]

    run_id = await rt.start("w")
    await rt.signal(run_id, "item", "first", signal_id="z-first")
    await rt.signal(run_id, "item", "second", signal_id="a-second")

    assert await rt.wait(run_id, timeout=10) == ["first", "second"]


async def test_signal_payloads_are_checked(store: Any) -> None:
    from heron.runtime import NoopDispatcher, PayloadTooLarge, SerializationError

    rt = Runtime(store, max_payload=100, clock=FakeClock(), dispatcher=NoopDispatcher())

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> Any:
        return await ctx.wait_for_signal("go")

    run_id = await rt.start("w")
    with pytest.raises(SerializationError, match="go"):
        await rt.signal(run_id, "go", object())
    with pytest.raises(PayloadTooLarge, match="go"):
        await rt.signal(run_id, "go", "x" * 500)
    assert (await rt.get(run_id)).signals == []


async def test_wait_gives_up_after_its_timeout(rt: Runtime) -> None:
    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> Any:
        return await ctx.wait_for_signal("never")

    run_id = await rt.start("w")

    with pytest.raises(TimeoutError, match=run_id):
        await rt.wait(run_id, timeout=0)
