"""Replay from recorded histories (``histories/*.json``, beside this file).

Each history is what a run of the workflow code below wrote to its store: the run header's
workflow, version and input, its checkpoints (``Checkpoint.to_json`` dicts, in ``seq`` order)
and the output the run completed with. A test loads a history into a fresh ``MemoryStore`` and
resumes it with today's code: recorded steps must not run again and the output must be rebuilt
from the history alone. A variant of the code that renames, reorders or drops a step must stop
the run as failed with ``NonDeterminismError`` and leave the history as it was.

The histories are recorded, not generated per test run: a change to the engine that stops them
replaying is a break of every run in flight. To re-record on purpose (a deliberate format change),
run ``python -m tests.unit.test_replay`` and review the diff.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from heron.runtime import (
    Context,
    FatalError,
    NonDeterminismError,
    RetryPolicy,
    Runtime,
    StepFailed,
    WorkflowFailed,
)
from heron.runtime.testing import FakeClock, test_runtime
from heron.stores.contract import Checkpoint, Run, WorkflowStore, dumps
from heron.stores.memory import MemoryStore
from tests.unit.helpers import status, timeline

HISTORIES = Path(__file__).parent / "histories"

ORDER = {
    "id": "o-1",
    "items": [
        {"sku": "book", "price": 1200},
        {"sku": "out-of-stock", "price": 500},
        {"sku": "pen", "price": 300},
    ],
}


# -- the workflow code the histories were recorded with ------------------------------------------


def register_checkout(rt: Runtime, variant: str = "current") -> Counter[str]:
    """Register the ``checkout`` workflow on ``rt``; returns the per-step call counter.

    ``variant`` is today's code (``current``) or a change that breaks old histories:
    ``renamed`` (the charge step got a new name), ``reordered`` (charge moved before the
    reservations), ``kind_changed`` (the sleep became a step), ``truncated`` (the workflow now
    returns after validating).
    """
    calls: Counter[str] = Counter()

    @rt.step(name="validate")
    async def validate(order: dict[str, Any]) -> dict[str, Any]:
        calls["validate"] += 1
        return {"ok": True, "total": sum(item["price"] for item in order["items"])}

    @rt.step(name="reserve", retry=RetryPolicy(max_attempts=2, initial_delay=0))
    async def reserve(sku: str) -> str:
        calls["reserve"] += 1
        if sku == "out-of-stock":
            raise FatalError(f"{sku} cannot be reserved")
        return f"res-{sku}"

    @rt.step(name="charge_card" if variant == "renamed" else "charge")
    def charge(order_id: str, cents: int) -> dict[str, Any]:  # a sync step
        calls["charge"] += 1
        return {"charge_id": f"ch-{order_id}", "cents": cents}

    @rt.step(name="pack")
    async def pack(reservation: str) -> str:
        calls["pack"] += 1
        return f"box-{reservation}"

    @rt.step(name="send_receipt")
    async def send_receipt(order_id: str, charge_id: str) -> str:
        calls["send_receipt"] += 1
        return f"receipt-{order_id}-{charge_id}"

    @rt.step(name="cool_down")
    async def cool_down() -> None:
        calls["cool_down"] += 1

    @rt.workflow("checkout")
    async def checkout(ctx: Context, order: dict[str, Any]) -> dict[str, Any]:
        check = await ctx.step(validate, order)  # seq 0
        if variant == "truncated":
            return {"check": check}
        if variant == "reordered":
            await ctx.step(charge, order["id"], check["total"])
        reserved, missing = [], []
        for item in order["items"]:  # seq 1, 2, 3 (the second fails for good)
            try:
                reserved.append(await ctx.step(reserve, item["sku"]))
            except StepFailed as exc:
                missing.append({"sku": item["sku"], "error": exc.error_type})
        payment = check
        if variant != "reordered":
            payment = await ctx.step(charge, order["id"], check["total"])  # seq 4
        if variant == "kind_changed":
            await ctx.step(cool_down)
        else:
            await ctx.sleep(60)  # seq 5
        approval = await ctx.wait_for_signal("approved", timeout=3600)  # seq 6
        labels = await asyncio.gather(*(ctx.step(pack, r) for r in reserved))  # seq 7, 8
        receipt = await ctx.step(send_receipt, order["id"], payment["charge_id"])  # seq 9
        return {
            "payment": payment,
            "missing": missing,
            "approval": approval,
            "labels": labels,
            "receipt": receipt,
            "stamp": ctx.now().isoformat(),
            "token": str(ctx.uuid()),
        }

    return calls


def register_pricing(rt: Runtime, variant: str = "patched") -> Counter[str]:
    """``pricing``: the fee step changed; ``patched`` guards the change with ``ctx.patched``."""
    calls: Counter[str] = Counter()

    @rt.step(name="quote")
    async def quote(amount: int) -> int:
        calls["quote"] += 1
        return amount

    @rt.step(name="fee_v1")
    async def fee_v1(amount: int) -> int:
        calls["fee_v1"] += 1
        return amount // 10

    @rt.step(name="fee_v2")
    async def fee_v2(amount: int) -> int:
        calls["fee_v2"] += 1
        return amount // 20

    @rt.step(name="finish")
    async def finish(amount: int, fee: int) -> dict[str, int]:
        calls["finish"] += 1
        return {"amount": amount, "fee": fee}

    @rt.workflow("pricing")
    async def pricing(ctx: Context, amount: int) -> dict[str, int]:
        amount = await ctx.step(quote, amount)  # seq 0
        if variant == "patched" and ctx.patched("fee-v2"):
            fee = await ctx.step(fee_v2, amount)  # seq 1
        else:
            fee = await ctx.step(fee_v1, amount)  # seq 1
        await ctx.sleep(10)  # seq 2
        return await ctx.step(finish, amount, fee)  # seq 3

    return calls


# -- loading a history -----------------------------------------------------------------------------


def read_history(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HISTORIES / name).read_text())
    return data


async def load_history(
    store: WorkflowStore, clock: FakeClock, history: dict[str, Any], *, upto: int | None = None
) -> tuple[str, list[Checkpoint]]:
    """Create the run header and append the first ``upto`` checkpoints; the run is due now."""
    header = history["run"]
    run = Run(
        id=header["id"],
        workflow=header["workflow"],
        version=header["version"],
        input=header["input"],
        status="pending",
        created_at=header["created_at"],
        updated_at=header["created_at"],
        wake_at=clock.now(),
    )
    assert await store.create(run)
    checkpoints = [Checkpoint.from_json(json.dumps(cp)) for cp in history["checkpoints"][:upto]]
    for cp in checkpoints:
        await store.append(run.id, cp)
    return run.id, checkpoints


Replayer = tuple[Runtime, FakeClock, MemoryStore]


@pytest.fixture
def replayer() -> Replayer:
    store = MemoryStore()
    rt, clock = test_runtime(store)
    return rt, clock, store


# -- replaying with today's code -----------------------------------------------------------------


async def test_completed_history_replays_without_running_any_step(replayer: Replayer) -> None:
    # given a complete recorded history
    rt, clock, store = replayer
    history = read_history("checkout_v1.json")
    calls = register_checkout(rt)
    run_id, recorded = await load_history(store, clock, history)

    # when today's code resumes it
    output = await rt.wait(run_id, timeout=10)

    # then nothing runs again and the output is rebuilt from the history alone
    assert sum(calls.values()) == 0
    assert output == history["output"]
    assert (await rt.get(run_id)).steps == recorded


async def test_partial_history_runs_only_what_is_left(replayer: Replayer) -> None:
    # given a run recorded up to its wait for approval (validate, 3 reserves, charge, sleep)
    rt, clock, store = replayer
    history = read_history("checkout_v1.json")
    calls = register_checkout(rt)
    run_id, recorded = await load_history(store, clock, history, upto=6)
    assert [cp.seq for cp in recorded] == [0, 1, 2, 3, 4, 5]

    # when it is resumed: it waits for the signal, having run nothing
    await rt.resume(run_id)
    assert await status(rt, run_id) == "waiting"
    assert sum(calls.values()) == 0

    await rt.signal(run_id, "approved", {"by": "ops"}, signal_id="approval-1")
    output = await rt.wait(run_id, timeout=10)

    # then only the steps after the recorded ones ran, and the result matches the recording
    assert calls == Counter({"pack": 2, "send_receipt": 1})
    assert output["payment"] == history["output"]["payment"]
    assert output["missing"] == [{"sku": "out-of-stock", "error": "FatalError"}]
    assert output["labels"] == history["output"]["labels"]
    assert output["receipt"] == history["output"]["receipt"]
    assert output["token"] == history["output"]["token"]  # ctx.uuid() depends on run id + seq
    steps = (await rt.get(run_id)).steps
    assert steps[:6] == recorded
    assert [(cp.seq, cp.kind, cp.name) for cp in steps[6:]] == [
        (6, "signal", "approved"),
        (7, "step", "pack"),
        (8, "step", "pack"),
        (9, "step", "send_receipt"),
    ]


async def test_recorded_step_failure_is_raised_again_on_replay(replayer: Replayer) -> None:
    rt, clock, store = replayer
    history = read_history("checkout_v1.json")
    failed = history["checkpoints"][2]
    assert failed["name"] == "reserve"
    assert failed["error"]["type"] == "FatalError"
    calls = register_checkout(rt)
    run_id, _ = await load_history(store, clock, history)

    output = await rt.wait(run_id, timeout=10)

    assert calls["reserve"] == 0
    assert output["missing"] == [{"sku": "out-of-stock", "error": "FatalError"}]


# -- code that changed under a running workflow --------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "seq"),
    [("renamed", 4), ("reordered", 1), ("kind_changed", 5)],
)
async def test_changed_code_fails_the_run_with_non_determinism(
    replayer: Replayer, variant: str, seq: int
) -> None:
    # given a recorded history
    rt, clock, store = replayer
    history = read_history("checkout_v1.json")
    calls = register_checkout(rt, variant)
    run_id, recorded = await load_history(store, clock, history)

    # when code that no longer matches it resumes the run
    with pytest.raises(WorkflowFailed) as caught:
        await rt.wait(run_id, timeout=10)

    # then the run stops as failed, naming the seq, and the history is untouched
    assert caught.value.status == "failed"
    info = await rt.get(run_id)
    assert info.status == "failed"
    assert info.error is not None
    assert info.error["type"] == "NonDeterminismError"
    assert f"seq {seq}" in info.error["message"]
    assert info.steps == recorded
    assert sum(calls.values()) == 0


async def test_finishing_before_the_recorded_seqs_is_non_determinism(replayer: Replayer) -> None:
    rt, clock, store = replayer
    history = read_history("checkout_v1.json")
    register_checkout(rt, "truncated")
    run_id, recorded = await load_history(store, clock, history)

    await rt.resume(run_id)

    info = await rt.get(run_id)
    assert info.status == "failed"
    assert info.error is not None
    assert info.error["type"] == "NonDeterminismError"
    assert info.output is None
    assert info.steps == recorded


async def test_non_determinism_cannot_be_swallowed(replayer: Replayer) -> None:
    rt, clock, store = replayer
    history = read_history("checkout_v1.json")

    @rt.step(name="something_else")
    async def something_else() -> str:
        raise AssertionError("must not run")

    @rt.workflow("checkout")
    async def checkout(ctx: Context, order: dict[str, Any]) -> str:
        try:
            await ctx.step(something_else)
        except Exception:  # a careless catch-all must not hide the mismatch
            pass
        return "done"

    run_id, recorded = await load_history(store, clock, history)
    await rt.resume(run_id)

    info = await rt.get(run_id)
    assert info.status == "failed"
    assert info.error is not None
    assert info.error["type"] == "NonDeterminismError"
    assert info.steps == recorded


async def test_non_determinism_is_an_error_of_the_run_not_of_resume(replayer: Replayer) -> None:
    rt, clock, store = replayer
    register_checkout(rt, "renamed")
    run_id, _ = await load_history(store, clock, read_history("checkout_v1.json"))

    saved = await rt.resume(run_id)  # does not raise

    assert saved is not None
    assert saved.status == "failed"
    assert issubclass(NonDeterminismError, Exception)


async def test_fixing_the_code_then_retrying_carries_on(replayer: Replayer) -> None:
    # given a run failed by non-determinism (the charge step was renamed)
    rt, clock, store = replayer
    history = read_history("checkout_v1.json")
    register_checkout(rt, "renamed")
    run_id, recorded = await load_history(store, clock, history, upto=6)
    await rt.resume(run_id)
    assert await status(rt, run_id) == "failed"

    # when the rename is reverted and the run retried
    calls = register_checkout(rt, "current")
    await rt.retry(run_id)
    await rt.resume(run_id)
    await rt.signal(run_id, "approved", {"by": "ops"})
    output = await rt.wait(run_id, timeout=10)

    # then it goes on from its history
    assert output["receipt"] == history["output"]["receipt"]
    assert calls == Counter({"pack": 2, "send_receipt": 1})
    assert (await rt.get(run_id)).steps[:6] == recorded


async def test_a_run_keeps_the_version_it_started_with(rt: Runtime, clock: FakeClock) -> None:
    @rt.workflow("greet", version="1")
    async def greet_v1(ctx: Context, name: str) -> str:
        await ctx.sleep(10)
        return f"hello {name}"

    old = await rt.start("greet", "ada")
    await rt.resume(old)

    @rt.workflow("greet", version="2")
    async def greet_v2(ctx: Context, name: str) -> str:
        return f"hi {name}"

    new = await rt.start("greet", "bob")
    clock.advance(10)

    assert await rt.wait(old, timeout=10) == "hello ada"
    assert await rt.wait(new, timeout=10) == "hi bob"
    assert (await rt.get(old)).version == "1"
    assert (await rt.get(new)).version == "2"


# -- versioning with ctx.patched -----------------------------------------------------------------


async def test_patched_takes_the_old_path_for_a_history_past_the_patch(replayer: Replayer) -> None:
    # given a run recorded by the code before the patch, complete
    rt, clock, store = replayer
    history = read_history("pricing_before_patch.json")
    calls = register_pricing(rt, "patched")
    run_id, recorded = await load_history(store, clock, history)

    output = await rt.wait(run_id, timeout=10)

    assert output == history["output"] == {"amount": 1000, "fee": 100}
    assert sum(calls.values()) == 0
    steps = (await rt.get(run_id)).steps
    assert steps == recorded  # no patch marker added to an old run
    assert all(cp.kind != "patch" for cp in steps)


async def test_patched_takes_the_old_path_for_a_run_interrupted_after_the_patch(
    replayer: Replayer,
) -> None:
    # given an old run that recorded quote and fee_v1, then stopped (a crash before its sleep)
    rt, clock, store = replayer
    history = read_history("pricing_before_patch.json")
    calls = register_pricing(rt, "patched")
    run_id, recorded = await load_history(store, clock, history, upto=2)

    await rt.resume(run_id)
    assert await status(rt, run_id) == "sleeping"
    output = await rt.wait(run_id, timeout=10)

    assert output == {"amount": 1000, "fee": 100}  # the old fee, from the old path
    assert calls == Counter({"finish": 1})
    assert await timeline(rt, run_id) == [
        (0, "step", "quote"),
        (1, "step", "fee_v1"),
        (2, "sleep", "sleep"),
        (3, "step", "finish"),
    ]


async def test_patched_takes_the_new_path_for_a_new_run(rt: Runtime) -> None:
    calls = register_pricing(rt, "patched")

    run_id = await rt.start("pricing", 1000)
    output = await rt.wait(run_id, timeout=10)

    assert output == {"amount": 1000, "fee": 50}
    assert calls == Counter({"quote": 1, "fee_v2": 1, "finish": 1})
    # the marker has a negative seq, so the operations keep the numbers an old run has
    assert await timeline(rt, run_id) == [
        (-1, "patch", "fee-v2"),
        (0, "step", "quote"),
        (1, "step", "fee_v2"),
        (2, "sleep", "sleep"),
        (3, "step", "finish"),
    ]


async def test_patched_answer_is_stable_across_replays(rt: Runtime, clock: FakeClock) -> None:
    calls = register_pricing(rt, "patched")
    run_id = await rt.start("pricing", 1000)

    await rt.resume(run_id)  # quote, marker, fee_v2, then sleeps
    assert await status(rt, run_id) == "sleeping"
    clock.advance(10)
    await rt.resume(run_id)  # replays: patched() must say True again

    assert (await rt.get(run_id)).output == {"amount": 1000, "fee": 50}
    assert calls == Counter({"quote": 1, "fee_v2": 1, "finish": 1})
    assert [s for s in await timeline(rt, run_id) if s[1] == "patch"] == [(-1, "patch", "fee-v2")]


async def test_patched_keeps_its_answer_for_the_whole_run(rt: Runtime, clock: FakeClock) -> None:
    # given a run started on old code that calls one step per loop iteration
    calls: Counter[str] = Counter()

    @rt.step(name="old_step")
    async def old_step(i: int) -> str:
        calls["old"] += 1
        return f"old-{i}"

    @rt.step(name="new_step")
    async def new_step(i: int) -> str:
        calls["new"] += 1
        return f"new-{i}"

    @rt.workflow("loop")
    async def loop_before(ctx: Context, n: int) -> list[str]:
        out = []
        for i in range(n):
            out.append(await ctx.step(old_step, i))
            await ctx.sleep(10)
        return out

    run_id = await rt.start("loop", 3)
    await rt.resume(run_id)  # iteration 0 on the old code, then sleeps

    # when the new code, which guards the change in the loop, takes over
    @rt.workflow("loop")
    async def loop_after(ctx: Context, n: int) -> list[str]:
        out = []
        for i in range(n):
            step = new_step if ctx.patched("new-step") else old_step
            out.append(await ctx.step(step, i))
            await ctx.sleep(10)
        return out

    # then each call of patched() answers the same on every later replay, so the run completes
    # (Temporal memoizes the first answer for the whole run: here False, old path throughout)
    output = await rt.wait(run_id, timeout=10)
    assert output[0] == "old-0"
    assert len(output) == 3
    assert sum(calls.values()) == 3  # each iteration's step ran once


# -- recording (python -m tests.unit.test_replay) ------------------------------------------------


async def record() -> None:  # pragma: no cover - run by hand to re-record the histories
    HISTORIES.mkdir(exist_ok=True)

    async def save(name: str, rt: Runtime, run_id: str, output: Any, note: str) -> None:
        info = await rt.get(run_id)
        data = {
            "description": note,
            "run": {
                "id": info.id,
                "workflow": info.workflow,
                "version": info.version,
                "input": info.input,
                "created_at": info.created_at,
            },
            "checkpoints": [json.loads(cp.to_json()) for cp in info.steps],
            "output": json.loads(dumps(output)),
        }
        (HISTORIES / name).write_text(json.dumps(data, indent=2) + "\n")

    rt, clock = test_runtime()
    register_checkout(rt)
    run_id = await rt.start("checkout", ORDER, run_id="order-o-1")
    await rt.resume(run_id)
    clock.advance(60)
    await rt.resume(run_id)
    await rt.signal(run_id, "approved", {"by": "ops"}, signal_id="approval-1")
    output = await rt.wait(run_id)
    await save("checkout_v1.json", rt, run_id, output, "checkout, recorded complete")

    rt, clock = test_runtime()
    register_pricing(rt, "before_patch")
    run_id = await rt.start("pricing", 1000, run_id="pricing-1")
    output = await rt.wait(run_id)
    await save("pricing_before_patch.json", rt, run_id, output, "pricing before the fee-v2 patch")


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(record())
