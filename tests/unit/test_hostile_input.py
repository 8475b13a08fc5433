"""Attacks on the engine through its public calls, on every store (docs/security.md): forged
engine messages, squatted child ids, values nested to exhaust the stack, hostile run ids,
records that an older version stored, and what the logs may hold. Each attack once worked.
The same attacks over HTTP are in ``tests/functions/test_security.py``."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from heron.runtime import (
    Context,
    FatalError,
    RetryPolicy,
    Runtime,
    SerializationError,
    WorkflowFailed,
)
from heron.runtime.testing import FakeClock
from heron.stores.contract import Run, Signal, WorkflowStore

CARD = "4111 1111 1111 1111"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def register_billing(rt: Runtime) -> None:
    @rt.workflow("invoice")
    async def invoice(ctx: Context, amount: int) -> dict[str, Any]:
        return {"invoice": f"inv-{amount}", "amount": amount}

    @rt.workflow("order")
    async def order(ctx: Context, amount: int) -> Any:
        await ctx.sleep(60)
        return await ctx.child("invoice", amount)


# -- forged engine messages --------------------------------------------------------------------


async def test_a_signal_cannot_be_sent_under_the_engines_reserved_names(rt: Runtime) -> None:
    register_billing(rt)
    run_id = await rt.start("order", 10)

    for name in ("heron:child:" + run_id + "-c1", "heron:anything"):
        with pytest.raises(ValueError, match="reserved"):
            await rt.signal(run_id, name, {"invoice": "forged"})

    assert (await rt.get(run_id)).signals == []


async def test_a_forged_child_result_in_the_store_does_not_complete_the_parent(
    rt: Runtime, clock: FakeClock, store: WorkflowStore
) -> None:
    # given a parent waiting for its child (started, not yet run)
    register_billing(rt)
    parent = await rt.start("order", 10, run_id="o-1")
    await rt.resume(parent)
    clock.advance(61)
    await rt.resume(parent)
    loaded = await store.load(parent)
    assert loaded is not None
    (child,) = loaded.run.engine["children"]

    # when someone with write access to the store forges the child's message to its parent
    forged = Signal(id="forged", name="heron:child:" + child, payload={"invoice": "x"}, at=1.0)
    assert await store.signal(parent, forged)
    await rt.resume(parent)

    # then the parent still waits (the outcome is read from the child run, which has not ended),
    # and completes with the real child's output once the child runs
    assert (await rt.get(parent)).status == "waiting"
    assert await rt.wait(parent) == {"invoice": "inv-10", "amount": 10}


async def test_a_squatted_child_id_never_strands_the_parent(
    rt: Runtime, clock: FakeClock, store: WorkflowStore
) -> None:
    # given the ids a parent's first child could get, taken before the parent gets there: the
    # predictable one, and (by someone who can read the parent's header) the real one
    register_billing(rt)
    parent = await rt.start("order", 10, run_id="o-2")
    await rt.resume(parent)
    loaded = await store.load(parent)
    assert loaded is not None
    nonce = loaded.run.engine["nonce"]
    assert await rt.start("invoice", 999, run_id="o-2-c1") == "o-2-c1"
    squatted = await rt.start("invoice", 999, run_id=f"o-2-c1-{nonce[:8]}")
    await rt.wait(squatted)

    # when the parent starts its child
    clock.advance(61)
    with pytest.raises(WorkflowFailed) as failed:
        await rt.wait(parent)

    # then it fails at once with the reason, instead of waiting for ever or taking the
    # squatter's output
    info = await rt.get(parent)
    assert info.status == "failed"
    assert "is taken by a run that is not a child of run 'o-2'" in str(failed.value.error)
    assert (await rt.get("o-2-c1")).parent_id is None


async def test_child_ids_cannot_be_guessed_from_the_parent_id(
    rt: Runtime, clock: FakeClock
) -> None:
    register_billing(rt)
    for run_id in ("g-1", "g-2"):
        await rt.start("order", 1, run_id=run_id)
        clock.advance(61)
        await rt.wait(run_id)
    children = [(await rt.get(r)).children[0] for r in ("g-1", "g-2")]
    suffixes = {child.rsplit("-", 1)[1] for child in children}
    assert len(suffixes) == 2 and all(len(s) == 8 for s in suffixes)


# -- values nested to exhaust the stack --------------------------------------------------------


async def test_deeply_nested_values_are_refused_before_anything_is_stored(
    rt: Runtime, store: WorkflowStore
) -> None:
    register_billing(rt)
    with pytest.raises(SerializationError, match="nested more than 64 levels"):
        await rt.start("order", nested(947), run_id="deep")
    assert await store.load("deep") is None

    run_id = await rt.start("order", 1)
    with pytest.raises(SerializationError, match="nested more than 64 levels"):
        await rt.signal(run_id, "note", nested(947))
    assert (await rt.get(run_id)).signals == []


async def test_a_step_result_nested_too_deep_fails_the_run_once(rt: Runtime) -> None:
    calls = 0

    @rt.step(name="deep", retry=RetryPolicy(max_attempts=5, initial_delay=0))
    async def deep() -> Any:
        nonlocal calls
        calls += 1
        return nested(947)

    @rt.workflow("deep")
    async def flow(ctx: Context, _: Any) -> Any:
        return await ctx.step(deep)

    run_id = await rt.start("deep")
    with pytest.raises(WorkflowFailed):
        await rt.wait(run_id)

    info = await rt.get(run_id)
    assert calls == 1 and info.steps == []  # no checkpoint: a retry after a fix reruns it
    assert info.error is not None and info.error["type"] == "SerializationError"
    assert "step 'deep'" in info.error["message"] and "seq 0" in info.error["message"]


async def test_one_bad_record_never_breaks_listing(rt: Runtime, store: WorkflowStore) -> None:
    # given a run that was stored without the checks (an older version, a direct write)
    register_billing(rt)
    now = time.time()
    bad = Run(id="bad", workflow="order", input=nested(900), created_at=now, updated_at=now)
    assert await store.create(bad)
    await rt.start("order", 1, run_id="good")

    # then listing, filtered or not, answers with both runs, and the bad one can be deleted
    for filters in ({}, {"workflow": "order"}, {"status": "pending"}):
        runs, _ = await rt.list_runs(**filters)
        assert {r.id for r in runs} == {"bad", "good"}, filters
    await rt.delete("bad")
    assert await store.load("bad") is None
    assert [r.id for r in (await rt.list_runs())[0]] == ["good"]


# -- ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_id", "reason"),
    [
        ("", "empty"),
        ("x" * 201, "at most 200"),
        ("trailing ", "whitespace"),
        (" leading", "whitespace"),
        (".", "dot segment"),
        ("..", "dot segment"),
        ("a/b", "'/'"),
        ("a?b", "'?'"),
        ("bell\x07", "control"),
        ("esc\x1b[2J", "control"),
        ("\ud800", "control"),  # a lone surrogate is not printable either
    ],
)
async def test_ids_that_cannot_name_a_run_everywhere_are_refused_before_anything_is_stored(
    rt: Runtime, store: WorkflowStore, run_id: str, reason: str
) -> None:
    register_billing(rt)
    with pytest.raises(ValueError, match=reason):
        await rt.start("order", 1, run_id=run_id)
    assert (await rt.list_runs())[0] == []


@pytest.mark.parametrize(
    "run_id", ["注文-42", "cafe\u0301", "user%40example.com", "x%2Fy", "a b", "@:+,;=$&!'()*"]
)
async def test_any_other_id_names_its_run(rt: Runtime, run_id: str) -> None:
    register_billing(rt)
    assert await rt.start("invoice", 5, run_id=run_id) == run_id
    assert await rt.wait(run_id) == {"invoice": "inv-5", "amount": 5}
    assert (await rt.get(run_id)).id == run_id


# -- logs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_messages", [False, True])
async def test_error_messages_reach_the_logs_only_when_asked_for(
    store: WorkflowStore, caplog: pytest.LogCaptureFixture, log_messages: bool
) -> None:
    # given a step whose error message carries the card number from the run's input
    rt = Runtime(store, clock=FakeClock(), log_messages=log_messages)

    @rt.step(retry=RetryPolicy(max_attempts=2, initial_delay=0))
    async def charge(card: str) -> None:
        raise RuntimeError(f"card {card} declined")

    @rt.step
    async def refund(card: str) -> None:
        raise FatalError(f"no refund to {card}")

    @rt.workflow("pay")
    async def pay(ctx: Context, card: str) -> None:
        try:
            await ctx.step(charge, card)
        finally:
            await ctx.step(refund, card)

    # when the run fails, logging everything the engine says
    caplog.set_level(logging.DEBUG, logger="heron")
    run_id = await rt.start("pay", CARD)
    with pytest.raises(WorkflowFailed):
        await rt.wait(run_id)
    await rt.close()

    # then the logs name the error types, and the card only when the runtime was told so
    logged = "\n".join(
        f"{r.getMessage()} {sorted(map(str, vars(r).values()))}" for r in caplog.records
    )
    assert "RuntimeError" in logged
    assert (CARD in logged) is log_messages


@pytest.mark.parametrize("depth", [0, 1, 63, 64, 65, 947])
def test_the_shown_values_depth_rule_is_the_stored_values_rule(depth: int) -> None:
    from heron.runtime import MAX_DEPTH, SerializationError
    from heron.runtime._serde import encode, nested_too_deep

    value = nested(depth)
    try:
        encode(value, "value", 1 << 20)
        stored = True
    except SerializationError:
        stored = False

    # what encode() refuses to store is exactly what is too deep to show
    assert nested_too_deep(value) is (not stored) is (depth > MAX_DEPTH)
    assert nested_too_deep({"a": [value]}, MAX_DEPTH + 2) is (depth > MAX_DEPTH)
