"""Child workflows: awaited output, failures raised into the parent as ``WorkflowFailed``,
``parent_id``, and cancellation flowing from parent to child."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from heron.runtime import Context, Runtime, WorkflowFailed, WorkflowNotFound
from heron.runtime.testing import FakeClock
from tests.unit.helpers import status, timeline


def register_family(rt: Runtime) -> Counter[str]:
    calls: Counter[str] = Counter()

    @rt.step(name="bill")
    async def bill(n: int) -> int:
        calls["bill"] += 1
        return n * 10

    @rt.workflow("invoice")
    async def invoice(ctx: Context, order: dict[str, Any]) -> dict[str, Any]:
        amount = await ctx.step(bill, order["n"])
        return {"order": order["id"], "amount": amount}

    @rt.workflow("broken")
    async def broken(ctx: Context, _: Any) -> None:
        raise ValueError("child blew up")

    @rt.workflow("napper")
    async def napper(ctx: Context, seconds: float) -> str:
        await ctx.sleep(seconds)
        return "rested"

    @rt.workflow("parent")
    async def parent(ctx: Context, plan: dict[str, Any]) -> Any:
        calls["parent-body"] += 1
        try:
            return await ctx.child(plan["child"], plan.get("input"))
        except WorkflowFailed as exc:
            if plan.get("catch"):
                return {"child_failed": exc.status, "error": exc.error}
            raise

    return calls


async def children_of(rt: Runtime, run_id: str) -> list[str]:
    runs, _ = await rt.list_runs(parent_id=run_id)
    return [r.id for r in runs]


async def test_child_output_is_returned_to_the_parent(rt: Runtime) -> None:
    calls = register_family(rt)
    run_id = await rt.start("parent", {"child": "invoice", "input": {"id": "o-1", "n": 4}})

    output = await rt.wait(run_id, timeout=10)

    assert output == {"order": "o-1", "amount": 40}
    assert calls["bill"] == 1
    assert await timeline(rt, run_id) == [(0, "child", "invoice")]


async def test_the_child_is_its_own_run_with_parent_id(rt: Runtime) -> None:
    register_family(rt)
    run_id = await rt.start("parent", {"child": "invoice", "input": {"id": "o-1", "n": 1}})

    await rt.resume(run_id)  # the parent starts the child and waits for it
    assert await status(rt, run_id) == "waiting"
    (child_id,) = await children_of(rt, run_id)
    child = await rt.get(child_id)
    assert child.parent_id == run_id
    assert child.workflow == "invoice"
    assert child.input == {"id": "o-1", "n": 1}

    await rt.wait(run_id, timeout=10)
    assert (await rt.get(child_id)).status == "completed"
    assert (await rt.get(child_id)).wake_at is None  # settled: told its parent, no longer due


async def test_a_failing_child_raises_workflow_failed_in_the_parent(rt: Runtime) -> None:
    register_family(rt)
    run_id = await rt.start("parent", {"child": "broken", "catch": True})

    output = await rt.wait(run_id, timeout=10)

    assert output["child_failed"] == "failed"
    assert "child blew up" in str(output["error"])
    (child_id,) = await children_of(rt, run_id)
    child = await rt.get(child_id)
    assert child.status == "failed"
    assert child.error == {"type": "ValueError", "message": "child blew up"}


async def test_an_uncaught_child_failure_fails_the_parent(rt: Runtime) -> None:
    register_family(rt)
    run_id = await rt.start("parent", {"child": "broken"})

    with pytest.raises(WorkflowFailed) as caught:
        await rt.wait(run_id, timeout=10)

    assert caught.value.status == "failed"
    assert caught.value.error is not None
    assert caught.value.error["type"] == "WorkflowFailed"


async def test_the_child_result_is_replayed_not_rerun(rt: Runtime, clock: FakeClock) -> None:
    calls = Counter[str]()
    register_family(rt)

    @rt.workflow("twice")
    async def twice(ctx: Context, _: Any) -> list[Any]:
        calls["body"] += 1
        first = await ctx.child("invoice", {"id": "a", "n": 1})
        await ctx.sleep(60)
        return [first, await ctx.child("invoice", {"id": "b", "n": 2})]

    run_id = await rt.start("twice")

    output = await rt.wait(run_id, timeout=10)

    assert output == [{"order": "a", "amount": 10}, {"order": "b", "amount": 20}]
    assert len(await children_of(rt, run_id)) == 2  # one run per ctx.child, never a third
    assert await timeline(rt, run_id) == [
        (0, "child", "invoice"),
        (1, "sleep", "sleep"),
        (2, "child", "invoice"),
    ]


async def test_cancelling_the_parent_cancels_active_children(rt: Runtime, clock: FakeClock) -> None:
    # given a parent waiting on a child that sleeps for a long time
    register_family(rt)
    run_id = await rt.start("parent", {"child": "napper", "input": 10 * 86400})
    await rt.resume(run_id)
    (child_id,) = await children_of(rt, run_id)
    await rt.resume(child_id)
    assert await status(rt, child_id) == "sleeping"

    # when the parent is cancelled
    await rt.cancel(run_id, "customer gave up")

    # then both runs are cancelled and waiting on the parent raises
    parent = await rt.get(run_id)
    child = await rt.get(child_id)
    assert parent.status == "cancelled"
    assert parent.error == {"type": "Cancelled", "message": "customer gave up"}
    assert child.status == "cancelled"
    with pytest.raises(WorkflowFailed) as caught:
        await rt.wait(run_id, timeout=10)
    assert caught.value.status == "cancelled"
    with pytest.raises(WorkflowFailed):
        await rt.wait(child_id, timeout=10)


async def test_a_cancelled_child_raises_workflow_failed_in_its_parent(rt: Runtime) -> None:
    register_family(rt)
    run_id = await rt.start("parent", {"child": "napper", "input": 3600, "catch": True})
    await rt.resume(run_id)
    (child_id,) = await children_of(rt, run_id)

    await rt.cancel(child_id)

    output = await rt.wait(run_id, timeout=10)
    assert output["child_failed"] == "cancelled"


async def test_an_unknown_child_workflow_fails_the_parent(rt: Runtime) -> None:
    @rt.workflow("lonely")
    async def lonely(ctx: Context, _: Any) -> Any:
        return await ctx.child("nobody")

    run_id = await rt.start("lonely")

    with pytest.raises(WorkflowFailed) as caught:
        await rt.wait(run_id, timeout=10)
    assert caught.value.error is not None
    assert caught.value.error["type"] == WorkflowNotFound.__name__
