"""``heron.testing.environment``: an app's own runtime, tested without registering anything
again: the demo app (``heron.functions.demo``) is the app under test here."""

from __future__ import annotations

import datetime as dt

import pytest

from heron import Context, NonDeterminismError, Runtime, WorkflowFailed
from heron.functions import demo
from heron.testing import FakeClock, environment

ORDER = {"id": "o-7", "items": [{"sku": "mug", "qty": 2}, {"sku": "tee", "qty": 1}], "total": 900}


async def test_a_run_of_the_apps_workflow_completes_with_time_skipped() -> None:
    async with environment(demo.rt) as env:
        run_id = await env.start("order", ORDER, run_id="o-7")
        await env.signal(run_id, "approved", {"by": "ops"})
        output = await env.run(run_id)
        timeline = await env.timeline(run_id)

    assert output["status"] == "shipped"
    assert output["approved_by"] == "ops"
    assert [(kind, name) for _, kind, name in timeline] == [
        ("step", "charge"),
        ("sleep", "sleep"),
        ("signal", "approved"),
        ("step", "pack"),
        ("step", "pack"),
        ("child", "invoice"),
    ]


async def test_the_runtime_gets_its_own_store_and_clock_back() -> None:
    before = (demo.rt._store, demo.rt.clock, demo.rt.dispatcher)
    async with environment(demo.rt) as env:
        assert demo.rt.clock is env.clock
        assert demo.rt.store is env.store
    assert (demo.rt._store, demo.rt.clock, demo.rt.dispatcher) == before


async def test_a_step_failed_more_times_than_its_policy_allows_fails_for_good() -> None:
    async with environment(demo.rt) as env:
        env.fail_step(demo.charge, times=3)  # every attempt of the 3 its policy allows
        run_id = await env.start("order", ORDER)
        output = await env.run(run_id)
        charge = (await env.get(run_id)).steps[0]

    assert output["status"] == "payment_failed"
    assert "injected failure of step 'charge'" in output["reason"]
    assert (charge.name, charge.attempts, charge.error["type"]) == ("charge", 3, "ConnectionError")


async def test_an_unanswered_approval_times_out_after_a_day() -> None:
    async with environment(demo.rt) as env:
        run_id = await env.start("order", ORDER)
        await env.run_until_idle()
        assert (await env.get(run_id)).status == "sleeping"  # the 1 s hold
        await env.skip(dt.timedelta(hours=23))
        assert (await env.get(run_id)).status == "waiting"
        await env.skip(dt.timedelta(hours=2))
        info = await env.get(run_id)

    assert info.status == "completed"
    assert info.output["status"] == "refunded"


async def test_a_killed_executor_loses_nothing_and_reruns_no_committed_step() -> None:
    async with environment(demo.rt) as env:
        env.kill_after(seq=0)  # right after the charge is committed
        run_id = await env.start("order", ORDER)
        await env.signal(run_id, "approved", {"by": "ops"})
        output = await env.run(run_id)
        charge = (await env.get(run_id)).steps[0]

    assert env.killed == 1
    assert output["status"] == "shipped"
    assert charge.attempts == 2  # the demo's first attempt always fails; no third one ran


async def test_a_recorded_history_replays_and_a_changed_workflow_is_caught() -> None:
    async with environment(demo.rt) as env:
        run_id = await env.start("order", ORDER, run_id="recorded")
        await env.signal(run_id, "approved", {"by": "ops"})
        await env.run(run_id)
        info = await env.get(run_id)
    history = {
        "run": {"id": "replayed", "workflow": "order", "input": info.input, "version": "1"},
        "steps": [
            {"seq": cp.seq, "kind": cp.kind, "name": cp.name, "value": cp.value, "at": cp.at}
            for cp in info.steps
        ],
    }

    async with environment(demo.rt) as env:
        same = await env.replay(history)
    assert same.status == "completed"
    assert same.output == info.output

    history["steps"][0]["name"] = "charge_card"  # the code calls `charge` where this was
    async with environment(demo.rt) as env:
        changed = await env.replay(history)
    assert changed.status == "failed"
    assert changed.error is not None
    assert changed.error["type"] == NonDeterminismError.__name__


async def test_a_failed_run_raises_from_run() -> None:
    rt = Runtime()

    @rt.workflow("broken")
    async def broken(ctx: Context, _: object) -> None:
        raise ValueError("no")

    async with environment(rt, clock=FakeClock(start=0.0)) as env:
        run_id = await env.start("broken")
        with pytest.raises(WorkflowFailed, match="ValueError: no"):
            await env.run(run_id)


async def test_a_run_waiting_for_a_signal_nobody_sends_is_reported() -> None:
    rt = Runtime()

    @rt.workflow("patient")
    async def patient(ctx: Context, _: object) -> object:
        return await ctx.wait_for_signal("go")

    async with environment(rt) as env:
        run_id = await env.start("patient")
        with pytest.raises(TimeoutError, match="is waiting and nothing will wake it"):
            await env.run(run_id)
        await env.signal(run_id, "go", 42)
        assert await env.run(run_id) == 42
