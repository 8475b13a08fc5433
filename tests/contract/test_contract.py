"""The store contract (``stores/contract.py``, DESIGN.md section 5), checked for every store.

Every test runs once per store in ``conftest.STORES``. Time is explicit everywhere (``now=`` on
acquire, ``at=`` on signals, ``created_at``/``wake_at`` on runs), never the wall clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from heron.stores import (
    Acquired,
    Checkpoint,
    Conflict,
    Loaded,
    Run,
    RunQuery,
    SchemaMissing,
    Signal,
    TooManySignals,
    WorkflowStore,
    open_store,
)
from heron.stores.contract import RunStatus
from tests.contract.race_worker import (
    LEASE_TTL,
    T0,
    execute_loop,
    signal_loop,
)

StoreFactory = Callable[..., Awaitable[WorkflowStore]]

TERMINAL = ["completed", "failed", "cancelled"]
TTL = 30.0


def make_run(run_id: str = "run-1", **fields: Any) -> Run:
    fields.setdefault("workflow", "order")
    fields.setdefault("created_at", T0)
    fields.setdefault("updated_at", T0)
    return Run(id=run_id, **fields)


def step(seq: int, name: str = "step", **fields: Any) -> Checkpoint:
    fields.setdefault("kind", "step")
    fields.setdefault("at", T0 + seq)
    return Checkpoint(seq=seq, name=name, **fields)


async def load(store: WorkflowStore, run_id: str = "run-1") -> Loaded:
    loaded = await store.load(run_id)
    assert loaded is not None, f"run {run_id!r} is gone"
    return loaded


async def header(store: WorkflowStore, run_id: str = "run-1") -> Run:
    return (await load(store, run_id)).run


# -- create and load --------------------------------------------------------------------------


async def test_create_then_load_roundtrips_every_run_field(store: WorkflowStore) -> None:
    # given a run with every field set, JSON parts full of unicode, nesting and edge values
    run = Run(
        id="run-é-1",
        workflow="ordér.process",
        input={
            "name": "Héron 🐦 ÿ 中文",
            "nested": {"list": [1, 2.5, None, True, False, "x"], "deep": {"a": {"b": {}}}},
            'quote"back\\slash': "line\nbreak\ttab",
            "big": 2**53 + 1,
            "float": 0.1,
            "empty": "",
        },
        version="2024-06-01",
        status="sleeping",
        output=["partial", {"ok": True}],
        error={"type": "Boom", "message": "ça a cassé"},
        parent_id="parent-1",
        tags=["prod", "eu-west", "ünïcode"],
        created_at=T0 + 0.123456,
        updated_at=T0 + 1.5,
        wake_at=T0 + 60.25,
        revision=0,
        engine={"timers": {"3": T0 + 60.25}, "retries": [1, 2]},
    )

    # when
    created = await store.create(run)
    loaded = await store.load(run.id)

    # then
    assert created is True
    assert loaded is not None
    assert loaded.run == run
    assert loaded.checkpoints == []
    assert loaded.signals == []


async def test_create_existing_id_returns_false_and_keeps_the_original(
    store: WorkflowStore,
) -> None:
    original = make_run(input={"n": 1}, tags=["a"])
    assert await store.create(original)

    again = make_run(workflow="other", input={"n": 2}, tags=["b"], status="running")
    assert await store.create(again) is False

    assert await header(store) == original


async def test_load_of_an_unknown_id_is_none(store: WorkflowStore) -> None:
    assert await store.load("no-such-run") is None


async def test_callers_never_share_a_header_with_the_store(store: WorkflowStore) -> None:
    # given
    run = make_run(input={"items": [1]}, tags=["a"], engine={"k": {"v": 1}})
    await store.create(run)

    # when the caller mutates what it passed in and what it got back
    run.input["items"].append(2)
    run.tags.append("b")
    loaded = await header(store)
    loaded.engine["k"]["v"] = 2
    loaded.status = "failed"

    # then the stored header is unchanged
    assert await header(store) == make_run(input={"items": [1]}, tags=["a"], engine={"k": {"v": 1}})


async def test_callers_never_share_checkpoint_or_signal_values_with_the_store(
    store: WorkflowStore,
) -> None:
    # given a checkpoint and a signal whose values are mutable JSON
    await store.create(make_run())
    cp = step(0, value={"a": 1})
    await store.append("run-1", cp)
    await store.signal("run-1", Signal(id="s1", name="go", payload={"b": [1]}, at=T0))

    # when the caller mutates what it passed in and what it got back
    cp.value["a"] = 2
    loaded = await load(store)
    loaded.checkpoints[0].value["a"] = 3
    loaded.signals[0].payload["b"].append(2)

    # then the stored values are unchanged
    again = await load(store)
    assert again.checkpoints[0].value == {"a": 1}
    assert again.signals[0].payload == {"b": [1]}


# -- append -----------------------------------------------------------------------------------


async def test_append_then_load_roundtrips_every_checkpoint_field(store: WorkflowStore) -> None:
    await store.create(make_run())
    checkpoint = Checkpoint(
        seq=7,
        kind="side_effect",
        name="charge card 💳",
        value={"amount": 12.5, "currency": "€", "lines": [{"sku": "ä"}]},
        error={"type": "CardDeclined", "message": "declined – try again"},
        at=T0 + 0.75,
        attempts=3,
    )

    await store.append("run-1", checkpoint)

    assert (await load(store)).checkpoints == [checkpoint]


async def test_append_the_same_seq_twice_conflicts_and_keeps_the_original(
    store: WorkflowStore,
) -> None:
    await store.create(make_run())
    await store.append("run-1", step(0, "first", value=1))

    with pytest.raises(Conflict):
        await store.append("run-1", step(0, "second", value=2))

    assert (await load(store)).checkpoints == [step(0, "first", value=1)]


async def test_append_to_a_missing_run_conflicts(store: WorkflowStore) -> None:
    with pytest.raises(Conflict):
        await store.append("no-such-run", step(0))
    assert await store.load("no-such-run") is None


async def test_append_writes_only_the_checkpoint(store: WorkflowStore) -> None:
    # a steady-state step costs one write: the header, and its revision, stay as they are
    await store.create(make_run(status="running", wake_at=T0 + 5))
    before = await header(store)

    await store.append("run-1", step(0))

    assert await header(store) == before


async def test_checkpoints_load_in_seq_order_with_patch_markers_and_errors(
    store: WorkflowStore,
) -> None:
    # given checkpoints appended out of order: negative seqs (patch markers), seqs past 9 (a
    # store that orders seq as text puts 10 before 2), failed operations
    await store.create(make_run())
    seqs = [3, -1, 10, 0, 12, -3, 2, 11, 1, -2, 9]
    for seq in seqs:
        if seq < 0:
            checkpoint = Checkpoint(seq=seq, kind="patch", name=f"patch-{-seq}", value=True)
        elif seq % 4 == 1:
            checkpoint = step(seq, error={"type": "ValueError", "message": f"bad {seq}"})
        else:
            checkpoint = step(seq, value={"seq": seq})
        await store.append("run-1", checkpoint)

    # when
    loaded = await load(store)

    # then
    assert [cp.seq for cp in loaded.checkpoints] == sorted(seqs)
    assert [cp.kind for cp in loaded.checkpoints[:3]] == ["patch"] * 3
    assert loaded.checkpoints[sorted(seqs).index(1)].error == {
        "type": "ValueError",
        "message": "bad 1",
    }
    assert loaded.checkpoints[sorted(seqs).index(1)].value is None


async def test_a_long_history_loads_completely_and_in_order(store: WorkflowStore) -> None:
    await store.create(make_run())
    for seq in range(1000):
        await store.append("run-1", step(seq, value={"i": seq, "pad": "x" * 20}))

    loaded = await load(store)

    assert [cp.seq for cp in loaded.checkpoints] == list(range(1000))
    assert loaded.checkpoints[999] == step(999, value={"i": 999, "pad": "x" * 20})


# -- save ---------------------------------------------------------------------------------------


async def test_save_writes_the_header_and_bumps_the_revision(store: WorkflowStore) -> None:
    # given
    await store.create(make_run(status="pending"))
    run = await header(store)

    # when the run suspends, then finishes
    run.status = "sleeping"
    run.wake_at = T0 + 100
    run.updated_at = T0 + 1
    run.engine = {"timer": {"seq": 4, "deadline": T0 + 100}}
    saved = await store.save(run)
    saved.status = "completed"
    saved.output = {"result": "dönë"}
    saved.wake_at = None
    again = await store.save(saved)

    # then each save bumped the revision by one and wrote every field
    assert saved.revision == run.revision + 1
    assert again.revision == run.revision + 2
    assert await header(store) == replace(
        run,
        status="completed",
        output={"result": "dönë"},
        wake_at=None,
        revision=run.revision + 2,
    )


async def test_save_with_a_stale_revision_conflicts_and_writes_nothing(
    store: WorkflowStore,
) -> None:
    await store.create(make_run(status="running"))
    stale = await header(store)
    current = await store.save(replace(stale, status="sleeping", wake_at=T0 + 10))

    with pytest.raises(Conflict):
        await store.save(replace(stale, status="failed", error={"type": "X", "message": "y"}))

    assert await header(store) == replace(current, lease_token=None, lease_expires_at=None)
    assert (await header(store)).revision == stale.revision + 1


async def test_save_leaves_the_lease_fields_alone(store: WorkflowStore) -> None:
    # given a run whose lease is held
    await store.create(make_run(status="running"))
    assert await store.acquire("run-1", "executor-a", TTL, now=T0)
    run = await header(store)

    # when a save carries other lease values
    run.status = "waiting"
    run.lease_token = "someone-else"
    run.lease_expires_at = None
    await store.save(run)

    # then the lease is the store's
    stored = await header(store)
    assert stored.status == "waiting"
    assert (stored.lease_token, stored.lease_expires_at) == ("executor-a", T0 + TTL)
    assert await store.acquire("run-1", "someone-else", TTL, now=T0 + 1) == Acquired.NO


async def test_save_of_a_missing_run_conflicts(store: WorkflowStore) -> None:
    with pytest.raises(Conflict):
        await store.save(make_run("no-such-run"))
    assert await store.load("no-such-run") is None

    # and a save does not bring a deleted run back
    await store.create(make_run())
    run = await header(store)
    await store.delete("run-1")
    with pytest.raises(Conflict):
        await store.save(run)
    assert await store.load("run-1") is None


# -- signal ---------------------------------------------------------------------------------


async def test_signal_buffers_and_bumps_the_revision(store: WorkflowStore) -> None:
    await store.create(make_run(status="waiting"))
    before = await header(store)
    signal = Signal(id="sig-1", name="approve", payload={"by": "zoë", "n": [1, 2]}, at=T0 + 5)

    assert await store.signal("run-1", signal) is True

    loaded = await load(store)
    assert loaded.signals == [signal]
    assert loaded.run.revision == before.revision + 1


@pytest.mark.parametrize(
    ("wake_at", "at", "expected"),
    [
        (None, T0 + 5, T0 + 5),  # not scheduled: due at the signal
        (T0 + 100, T0 + 5, T0 + 5),  # sleeping past the signal: woken early
        (T0 + 1, T0 + 5, T0 + 1),  # already due earlier: stays
    ],
    ids=["unscheduled", "later", "earlier"],
)
async def test_signal_makes_the_run_due(
    store: WorkflowStore, wake_at: float | None, at: float, expected: float
) -> None:
    await store.create(make_run(status="waiting", wake_at=wake_at))

    await store.signal("run-1", Signal(id="s", name="go", at=at))

    assert (await header(store)).wake_at == expected
    assert await store.due(expected, 10) == ["run-1"]


async def test_a_duplicate_signal_id_changes_nothing(store: WorkflowStore) -> None:
    # given a buffered signal
    await store.create(make_run(status="waiting"))
    first = Signal(id="sig-1", name="approve", payload={"v": 1}, at=T0 + 50)
    await store.signal("run-1", first)
    before = await load(store)

    # when the same id comes again, earlier and with another payload
    again = await store.signal("run-1", Signal(id="sig-1", name="x", payload={"v": 2}, at=T0 + 1))

    # then it is acknowledged and nothing changes: not the signal, revision or wake_at
    assert again is True
    assert await load(store) == before
    assert before.signals == [first]
    assert before.run.wake_at == T0 + 50


async def test_signal_to_a_missing_run_is_false(store: WorkflowStore) -> None:
    assert await store.signal("no-such-run", Signal(id="s", name="go", at=T0)) is False
    assert await store.load("no-such-run") is None
    assert await store.due(T0 + 1000, 10) == []


@pytest.mark.parametrize("status", TERMINAL)
@pytest.mark.parametrize("wake_at", [None, T0 + 100], ids=["unscheduled", "scheduled"])
async def test_a_terminal_run_keeps_the_signal_but_is_not_made_due(
    store: WorkflowStore, status: str, wake_at: float | None
) -> None:
    await store.create(make_run(status=status, wake_at=wake_at))
    signal = Signal(id="late", name="approve", at=T0 + 5)

    assert await store.signal("run-1", signal) is True

    loaded = await load(store)
    assert loaded.signals == [signal]
    assert loaded.run.wake_at == wake_at
    assert loaded.run.status == status
    assert await store.due(T0 + 50, 10) == []


async def test_signals_load_in_at_then_id_order(store: WorkflowStore) -> None:
    await store.create(make_run(status="waiting"))
    signals = [
        Signal(id="c", name="n", at=T0 + 2),
        Signal(id="b", name="n", at=T0 + 3),
        Signal(id="z", name="n", at=T0 + 1),
        Signal(id="a", name="n", at=T0 + 2),
        Signal(id="b2", name="n", at=T0 + 2),
    ]
    for signal in signals:
        await store.signal("run-1", signal)

    loaded = await load(store)

    assert [(s.at, s.id) for s in loaded.signals] == sorted((s.at, s.id) for s in signals)


# -- due --------------------------------------------------------------------------------------


async def test_due_is_earliest_first_and_respects_the_limit(store: WorkflowStore) -> None:
    for i, offset in enumerate([5, 1, 4, 2, 3]):
        await store.create(make_run(f"run-{i}", status="sleeping", wake_at=T0 + offset))

    assert await store.due(T0 + 10, 10) == ["run-1", "run-3", "run-4", "run-2", "run-0"]
    assert await store.due(T0 + 10, 2) == ["run-1", "run-3"]
    assert await store.due(T0 + 10, 0) == []


async def test_due_excludes_unscheduled_and_future_runs_and_includes_now(
    store: WorkflowStore,
) -> None:
    await store.create(make_run("unscheduled", status="waiting", wake_at=None))
    await store.create(make_run("future", status="sleeping", wake_at=T0 + 0.001))
    await store.create(make_run("exactly-now", status="sleeping", wake_at=T0))
    await store.create(make_run("past", status="sleeping", wake_at=T0 - 3600))

    assert await store.due(T0, 10) == ["past", "exactly-now"]


async def test_due_follows_save(store: WorkflowStore) -> None:
    await store.create(make_run(status="sleeping", wake_at=T0))
    run = await header(store)

    run = await store.save(replace(run, wake_at=T0 + 100))
    assert await store.due(T0 + 50, 10) == []
    assert await store.due(T0 + 100, 10) == ["run-1"]

    run = await store.save(replace(run, status="waiting", wake_at=None))
    assert await store.due(T0 + 10_000, 10) == []

    await store.save(replace(run, status="running", wake_at=T0 + 1))
    assert await store.due(T0 + 1, 10) == ["run-1"]


async def test_due_follows_acquire_and_release(store: WorkflowStore) -> None:
    # given a due run
    await store.create(make_run(status="pending", wake_at=T0 - 10))
    assert await store.due(T0, 10) == ["run-1"]

    # when an executor takes the lease, the run is due again only when the lease lapses
    await store.acquire("run-1", "a", TTL, now=T0)
    assert await store.due(T0, 10) == []
    assert await store.due(T0 + TTL, 10) == ["run-1"]

    # and a release does not move it
    await store.release("run-1", "a")
    assert await store.due(T0 + TTL - 1, 10) == []
    assert await store.due(T0 + TTL, 10) == ["run-1"]


async def test_due_follows_delete(store: WorkflowStore) -> None:
    await store.create(make_run("keep", status="sleeping", wake_at=T0))
    await store.create(make_run("drop", status="sleeping", wake_at=T0 - 1))

    await store.delete("drop")

    assert await store.due(T0, 10) == ["keep"]


# -- delete ---------------------------------------------------------------------------------


async def test_delete_removes_the_run_and_everything_it_owns(store: WorkflowStore) -> None:
    # given a run with checkpoints and signals
    await store.create(make_run(status="waiting", tags=["t"]))
    await store.append("run-1", step(0))
    await store.append("run-1", Checkpoint(seq=-1, kind="patch", name="p"))
    await store.signal("run-1", Signal(id="s", name="go", at=T0))

    # when
    await store.delete("run-1")

    # then nothing of it is left: not in load, due, list_runs, nor under a new run of that id
    assert await store.load("run-1") is None
    assert await store.due(T0 + 1000, 10) == []
    assert (await store.list_runs(RunQuery())).runs == []
    assert (await store.list_runs(RunQuery(tag="t"))).runs == []
    assert await store.signal("run-1", Signal(id="s2", name="go", at=T0)) is False
    with pytest.raises(Conflict):
        await store.append("run-1", step(1))
    assert await store.create(make_run(status="pending"))
    reborn = await load(store)
    assert (reborn.checkpoints, reborn.signals) == ([], [])
    assert reborn.run == make_run(status="pending")


async def test_delete_of_a_missing_run_is_a_no_op(store: WorkflowStore) -> None:
    await store.create(make_run("other", wake_at=T0))

    await store.delete("no-such-run")
    await store.delete("no-such-run")

    assert await header(store, "other") == make_run("other", wake_at=T0)


# -- list_runs ------------------------------------------------------------------------------


async def test_list_runs_of_an_empty_store(store: WorkflowStore) -> None:
    page = await store.list_runs(RunQuery())
    assert page.runs == []
    assert page.next_cursor is None


async def test_list_runs_is_newest_first_with_summaries(store: WorkflowStore) -> None:
    runs = [
        make_run(f"run-{i}", created_at=T0 + offset, input={"i": i, "s": "é"}, tags=[f"t{i}"])
        for i, offset in enumerate([3, 1, 4, 2])
    ]
    for run in runs:
        await store.create(run)

    page = await store.list_runs(RunQuery())

    # summaries: no input or output is read to answer a list
    assert page.runs == [
        r.summary() for r in sorted(runs, key=lambda r: r.created_at, reverse=True)
    ]
    assert page.next_cursor is None


@pytest.fixture
async def population(store: WorkflowStore) -> WorkflowStore:
    """Runs of two workflows, all statuses, tags and a parent, one second apart."""
    specs = [
        ("a1", "billing", "completed", ["prod", "eu"], None),
        ("a2", "billing", "failed", ["production"], None),
        ("a3", "billing", "running", ["prod"], "a1"),
        ("b1", "shipping", "completed", ["staging", "50%_off"], None),
        ("b2", "shipping", "waiting", ["prod"], "a1"),
        ("b3", "shipping", "completed", [], "b1"),
    ]
    for i, (run_id, workflow, status, tags, parent_id) in enumerate(specs):
        run = make_run(
            run_id,
            workflow=workflow,
            status=status,
            tags=tags,
            parent_id=parent_id,
            created_at=T0 + i,
        )
        await store.create(run)
    return store


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (RunQuery(), ["b3", "b2", "b1", "a3", "a2", "a1"]),
        (RunQuery(workflow="billing"), ["a3", "a2", "a1"]),
        (RunQuery(workflow="bill"), []),
        (RunQuery(status="completed"), ["b3", "b1", "a1"]),
        (RunQuery(tag="prod"), ["b2", "a3", "a1"]),  # a tag matches whole, never "production"
        (RunQuery(tag="50%_off"), ["b1"]),
        (RunQuery(tag="%"), []),
        (RunQuery(tag="pro"), []),
        (RunQuery(parent_id="a1"), ["b2", "a3"]),
        (RunQuery(created_after=T0 + 2), ["b3", "b2", "b1", "a3"]),  # inclusive
        (RunQuery(created_before=T0 + 2), ["a2", "a1"]),  # exclusive
        (RunQuery(created_after=T0 + 1, created_before=T0 + 4), ["b1", "a3", "a2"]),
        (RunQuery(workflow="shipping", status="completed", tag="staging"), ["b1"]),
        (RunQuery(workflow="billing", status="waiting"), []),
    ],
    ids=lambda value: repr(value) if isinstance(value, RunQuery) else None,
)
async def test_list_runs_filters(
    population: WorkflowStore, query: RunQuery, expected: list[str]
) -> None:
    page = await population.list_runs(query)

    assert [run.id for run in page.runs] == expected
    assert page.next_cursor is None


@pytest.mark.parametrize("total", [25, 20, 10, 9])
async def test_list_runs_pages_return_each_run_exactly_once(
    store: WorkflowStore, total: int
) -> None:
    # given runs three to a second, so pages cut through runs created at the same time
    for i in range(total):
        await store.create(make_run(f"run-{i:02}", created_at=T0 + i // 3))

    # when paging ten at a time
    pages, cursor = [], None
    while True:
        page = await store.list_runs(RunQuery(limit=10, cursor=cursor))
        pages.append([run.id for run in page.runs])
        cursor = page.next_cursor
        if cursor is None:
            break
        assert len(pages) <= total, "paging does not end"

    # then
    seen = [run_id for page_ids in pages for run_id in page_ids]
    assert sorted(seen) == [f"run-{i:02}" for i in range(total)]
    assert len(seen) == total
    assert [len(ids) for ids in pages[:-1]] == [10] * (len(pages) - 1)
    assert len(pages) == max(1, -(-total // 10))
    created = [(await header(store, run_id)).created_at for run_id in seen]
    assert created == sorted(created, reverse=True)


async def test_paging_one_at_a_time_keeps_runs_whose_ids_extend_another(
    store: WorkflowStore,
) -> None:
    # given runs created at the same moment, whose ids extend one another or escape
    ids = ["a", "a-b", "a b", "ab", "a.b", "a%b"]
    for run_id in ids:
        await store.create(make_run(run_id, created_at=T0))

    # when paging one run at a time
    seen, cursor = [], None
    for _ in range(2 * len(ids)):
        page = await store.list_runs(RunQuery(limit=1, cursor=cursor))
        seen += [run.id for run in page.runs]
        cursor = page.next_cursor
        if cursor is None:
            break

    # then every run comes, once
    assert sorted(seen) == sorted(ids)


async def test_list_runs_pages_through_a_filter(population: WorkflowStore) -> None:
    first = await population.list_runs(RunQuery(status="completed", limit=2))
    assert [run.id for run in first.runs] == ["b3", "b1"]
    assert first.next_cursor is not None

    second = await population.list_runs(
        RunQuery(status="completed", limit=2, cursor=first.next_cursor)
    )
    assert [run.id for run in second.runs] == ["a1"]
    assert second.next_cursor is None


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        _b64("hello"),
        _b64('{"a": 1}'),
        _b64("[1, 2, 3]"),
        _b64('[1, "\\ud800"]'),  # a lone surrogate: no store can hold it as an id
        _b64('[NaN, "r-1"]'),
        _b64('[true, "r-1"]'),
        _b64('[1, ["r-1"]]'),
    ],
)
async def test_list_runs_with_an_invalid_cursor_raises_value_error(
    population: WorkflowStore, cursor: str
) -> None:
    with pytest.raises(ValueError):
        await population.list_runs(RunQuery(cursor=cursor))


# -- consuming signals, the pending cap ----------------------------------------------------------


def consumed_by(seq: int, signal: Signal, **fields: Any) -> Checkpoint:
    """The checkpoint a workflow writes when it consumes ``signal`` at ``seq``."""
    value = {"id": signal.id, "payload": signal.payload}
    return Checkpoint(seq=seq, kind="signal", name=signal.name, value=value, at=T0 + seq, **fields)


async def test_a_consumed_signal_no_longer_loads_and_still_deduplicates(
    store: WorkflowStore,
) -> None:
    await store.create(make_run(status="waiting"))
    first = Signal(id="s-1", name="approved", payload={"by": "ops"}, at=T0)
    second = Signal(id="s-2", name="approved", payload={"by": "qa"}, at=T0 + 1)
    await store.signal("run-1", first)
    await store.signal("run-1", second)

    # when the workflow consumes the first one
    await store.append("run-1", consumed_by(0, first), consumes="s-1")

    # then only the second is pending; the checkpoint holds the first's payload
    loaded = await load(store)
    assert loaded.signals == [second]
    assert loaded.checkpoints == [consumed_by(0, first)]
    # and sending the consumed id again changes nothing
    revision = loaded.run.revision
    assert await store.signal("run-1", first) is True
    assert (await load(store)).signals == [second]
    assert (await header(store)).revision == revision


@pytest.mark.parametrize("missing", ["never-sent", "s-1"])
async def test_consuming_a_signal_that_is_not_pending_conflicts_and_writes_nothing(
    store: WorkflowStore, missing: str
) -> None:
    await store.create(make_run(status="waiting"))
    signal = Signal(id="s-1", name="go", at=T0)
    await store.signal("run-1", signal)
    await store.append("run-1", consumed_by(0, signal), consumes="s-1")

    with pytest.raises(Conflict):
        await store.append("run-1", step(1), consumes=missing)

    assert [cp.seq for cp in (await load(store)).checkpoints] == [0]


async def test_a_run_holds_at_most_max_pending_signals(store: WorkflowStore) -> None:
    await store.create(make_run(status="waiting"))
    for i in range(3):
        await store.signal("run-1", Signal(id=f"s-{i}", name="x", at=T0 + i), max_pending=3)
    revision = (await header(store)).revision

    # when a fourth arrives, it is refused and nothing changes
    with pytest.raises(TooManySignals) as refused:
        await store.signal("run-1", Signal(id="s-3", name="x", at=T0 + 3), max_pending=3)

    assert refused.value.run_id == "run-1" and refused.value.limit == 3
    assert [s.id for s in (await load(store)).signals] == ["s-0", "s-1", "s-2"]
    assert (await header(store)).revision == revision
    # a duplicate of one it holds is still fine, and consuming one makes room
    assert await store.signal("run-1", Signal(id="s-0", name="x", at=T0), max_pending=3)
    await store.append("run-1", consumed_by(0, Signal(id="s-0", name="x")), consumes="s-0")
    assert await store.signal("run-1", Signal(id="s-3", name="x", at=T0 + 3), max_pending=3)
    assert [s.id for s in (await load(store)).signals] == ["s-1", "s-2", "s-3"]


async def test_a_checkpoint_keeps_its_order_and_its_encoded_value(store: WorkflowStore) -> None:
    await store.create(make_run())
    encoded = Checkpoint(seq=0, kind="step", name="a", value={"x": [1, "é"]}, order=1)
    encoded = replace(encoded, encoded='{"x":[1,"é"]}')

    await store.append("run-1", encoded)
    await store.append("run-1", step(1, order=0))

    loaded = await load(store)
    assert loaded.checkpoints == [encoded, step(1, order=0)]
    assert loaded.checkpoints[0].value == {"x": [1, "é"]}
    assert [cp.order for cp in loaded.checkpoints] == [1, 0]


# -- rewind -----------------------------------------------------------------------------------


async def rewind_fixture(store: WorkflowStore) -> tuple[Run, list[Signal]]:
    """A failed run: steps 0-1, a signal consumed at 2, a patch decided at 3, step 3 failed,
    one signal still pending."""
    await store.create(make_run(status="running", wake_at=T0))
    signals = [Signal(id=f"s-{i}", name="go", payload={"i": i}, at=T0 + i) for i in range(2)]
    for signal in signals:
        await store.signal("run-1", signal)
    await store.append("run-1", step(0, value="a"))
    await store.append("run-1", step(1, value="b"))
    await store.append("run-1", consumed_by(2, signals[0]), consumes="s-0")
    await store.append("run-1", Checkpoint(seq=-1, kind="patch", name="old", value=None))
    await store.append("run-1", Checkpoint(seq=-2, kind="patch", name="early", value=1))
    await store.append("run-1", Checkpoint(seq=-3, kind="patch", name="late", value=3))
    await store.append("run-1", step(3, error={"type": "Boom", "message": "no"}))
    run = await header(store)
    run.status, run.error, run.wake_at = "failed", {"type": "StepFailed", "message": "no"}, None
    return await store.save(run), signals


async def test_rewind_drops_the_history_from_seq_and_restores_what_it_consumed(
    store: WorkflowStore,
) -> None:
    failed, signals = await rewind_fixture(store)
    retry = replace(failed, status="pending", error=None, wake_at=T0 + 10)

    saved = await store.rewind(retry, 2)

    loaded = await load(store)
    assert saved.revision == failed.revision + 1
    assert loaded.run == saved
    assert [(cp.seq, cp.name) for cp in loaded.checkpoints] == [
        (-2, "early"),
        (-1, "old"),
        (0, "step"),
        (1, "step"),
    ]
    assert loaded.signals == signals  # s-0, consumed at seq 2, is pending again
    assert await store.due(T0 + 10, 10) == ["run-1"]


async def test_rewind_to_zero_without_restoring_signals_is_a_fresh_history(
    store: WorkflowStore,
) -> None:
    failed, signals = await rewind_fixture(store)
    fresh = replace(failed, status="pending", input={"n": 2}, error=None, wake_at=T0 + 1)

    saved = await store.rewind(fresh, 0, restore_signals=False)

    loaded = await load(store)
    assert loaded.run == saved and loaded.run.input == {"n": 2}
    assert loaded.checkpoints == []
    assert loaded.signals == [signals[1]]  # s-0 stays consumed; s-1 carries over
    # the history starts again at 0, and the consumed id still deduplicates
    await store.append("run-1", step(0, value="again"))
    assert await store.signal("run-1", signals[0]) is True
    assert (await load(store)).signals == [signals[1]]


async def test_a_signal_consumed_before_a_fresh_history_stays_consumed_through_later_rewinds(
    store: WorkflowStore,
) -> None:
    failed, signals = await rewind_fixture(store)  # s-0 consumed at seq 2
    fresh = await store.rewind(replace(failed, status="pending"), 0, restore_signals=False)
    await store.append("run-1", consumed_by(0, signals[1]), consumes="s-1")
    await store.append("run-1", step(1, value="x"))

    await store.rewind(fresh, 0)  # restores what the new history consumed, and only that

    assert [s.id for s in (await load(store)).signals] == ["s-1"]


async def test_save_leaves_the_input_as_create_wrote_it(store: WorkflowStore) -> None:
    await store.create(make_run(input={"order": 1}))
    run = await header(store)

    saved = await store.save(replace(run, input={"order": 2}, status="sleeping"))

    assert (await header(store)).input == {"order": 1}
    assert (await header(store)).status == "sleeping"
    assert saved.revision == run.revision + 1


async def test_rewind_with_a_stale_revision_conflicts_and_changes_nothing(
    store: WorkflowStore,
) -> None:
    failed, _ = await rewind_fixture(store)
    before = await load(store)
    await store.signal("run-1", Signal(id="late", name="go", at=T0 + 5))  # bumps the revision

    with pytest.raises(Conflict):
        await store.rewind(replace(failed, status="pending"), 0)

    after = await load(store)
    assert after.checkpoints == before.checkpoints
    assert after.run.status == "failed"


# -- the lease --------------------------------------------------------------------------------


async def test_acquire_a_free_lease(store: WorkflowStore) -> None:
    await store.create(make_run(status="pending", wake_at=T0 - 5))

    assert await store.acquire("run-1", "a", TTL, now=T0) == Acquired.FREE

    run = await header(store)
    assert run.lease_token == "a"
    assert run.lease_expires_at == T0 + TTL
    assert run.wake_at == T0 + TTL


async def test_acquire_a_live_lease_with_another_token_fails(store: WorkflowStore) -> None:
    await store.create(make_run(status="running"))
    await store.acquire("run-1", "a", TTL, now=T0)
    before = await header(store)

    assert await store.acquire("run-1", "b", TTL, now=T0 + TTL - 1) == Acquired.NO

    assert await header(store) == before


async def test_acquire_with_the_holders_token_renews(store: WorkflowStore) -> None:
    await store.create(make_run(status="running"))
    await store.acquire("run-1", "a", TTL, now=T0)

    assert await store.acquire("run-1", "a", TTL, now=T0 + 20) == Acquired.RENEWED

    run = await header(store)
    assert (run.lease_token, run.lease_expires_at, run.wake_at) == ("a", T0 + 50, T0 + 50)
    assert await store.acquire("run-1", "b", TTL, now=T0 + 40) == Acquired.NO


async def test_after_expiry_another_token_takes_the_lease(store: WorkflowStore) -> None:
    await store.create(make_run(status="running"))
    await store.acquire("run-1", "a", TTL, now=T0)

    assert await store.acquire("run-1", "b", TTL, now=T0 + TTL + 1) == Acquired.TAKEN_OVER

    run = await header(store)
    assert (run.lease_token, run.lease_expires_at, run.wake_at) == ("b", T0 + 61, T0 + 61)
    assert await store.acquire("run-1", "a", TTL, now=T0 + TTL + 2) == Acquired.NO


@pytest.mark.parametrize("status", TERMINAL)
async def test_acquire_on_a_terminal_run_fails(store: WorkflowStore, status: str) -> None:
    await store.create(make_run(status=status))

    assert await store.acquire("run-1", "a", TTL, now=T0) == Acquired.NO

    run = await header(store)
    assert (run.lease_token, run.lease_expires_at, run.wake_at) == (None, None, None)


async def test_acquire_on_a_missing_run_fails(store: WorkflowStore) -> None:
    assert await store.acquire("no-such-run", "a", TTL, now=T0) == Acquired.NO
    assert await store.load("no-such-run") is None
    assert await store.due(T0 + 1000, 10) == []


async def test_release_with_the_wrong_token_does_nothing(store: WorkflowStore) -> None:
    await store.create(make_run(status="running"))
    await store.acquire("run-1", "a", TTL, now=T0)
    before = await header(store)

    await store.release("run-1", "b")

    assert await header(store) == before
    assert await store.acquire("run-1", "b", TTL, now=T0 + 1) == Acquired.NO


async def test_release_frees_the_lease_and_leaves_wake_at(store: WorkflowStore) -> None:
    await store.create(make_run(status="running"))
    await store.acquire("run-1", "a", TTL, now=T0)

    await store.release("run-1", "a")

    run = await header(store)
    assert (run.lease_token, run.lease_expires_at) == (None, None)
    assert run.wake_at == T0 + TTL
    assert await store.acquire("run-1", "b", TTL, now=T0 + 1) == Acquired.FREE


async def test_release_of_a_missing_run_is_a_no_op(store: WorkflowStore) -> None:
    await store.release("no-such-run", "a")
    assert await store.load("no-such-run") is None


async def test_acquire_does_not_bump_the_revision(store: WorkflowStore) -> None:
    # given an executor that loaded the run before taking the lease
    await store.create(make_run(status="pending"))
    loaded = await header(store)

    # when it acquires and renews
    await store.acquire("run-1", "a", TTL, now=T0)
    await store.acquire("run-1", "a", TTL, now=T0 + 10)

    # then the revision is the one it loaded, and its save goes through
    assert (await header(store)).revision == loaded.revision
    saved = await store.save(replace(loaded, status="completed", wake_at=None))
    assert saved.revision == loaded.revision + 1


async def test_acquire_due_only_takes_only_a_due_run(store: WorkflowStore) -> None:
    # given runs that are waiting (no wake), sleeping (wake later) and due (wake now)
    await store.create(make_run("waiting", wake_at=None))
    await store.create(make_run("sleeping", wake_at=T0 + 60))
    await store.create(make_run("due", wake_at=T0))

    # when executors try to take each one only if it is due
    got = {
        run_id: await store.acquire(run_id, "a", TTL, now=T0, due_only=True)
        for run_id in ("waiting", "sleeping", "due")
    }

    # then only the due run is taken, and the others keep their wake untouched
    assert got == {"waiting": False, "sleeping": False, "due": True}
    assert (await header(store, "waiting")).wake_at is None
    assert (await header(store, "sleeping")).wake_at == T0 + 60
    assert (await header(store, "sleeping")).lease_token is None
    assert (await header(store, "due")).wake_at == T0 + TTL


async def test_the_atomic_lease_flag_matches_the_capability(
    store: WorkflowStore, capabilities: frozenset[str]
) -> None:
    assert store.atomic_lease is ("atomic_lease" in capabilities)


# -- races between two executors (two instances on the same data) -------------------------------


def _results(outcomes: list[Any]) -> tuple[list[int], list[BaseException]]:
    """Indexes of the calls that returned, and the exceptions of those that raised."""
    wins = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, BaseException)]
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    return wins, errors


async def test_racing_creates_have_one_winner(store: WorkflowStore, peer: WorkflowStore) -> None:
    for i in range(20):
        # when two executors start the same run id at once (in either order)
        executors = [(store, "wf-a"), (peer, "wf-b")][:: 1 if i % 2 else -1]
        created = await asyncio.gather(
            *(s.create(make_run(f"run-{i}", workflow=workflow)) for s, workflow in executors)
        )

        # then exactly one created it, and the stored header is the winner's
        assert sorted(created) == [False, True]
        winner = executors[created.index(True)][1]
        assert await header(store, f"run-{i}") == make_run(f"run-{i}", workflow=winner)


async def test_racing_appends_of_one_seq_have_one_winner(
    store: WorkflowStore, peer: WorkflowStore
) -> None:
    await store.create(make_run(status="running"))
    for seq in range(30):
        # when both executors write seq at once (in either order)
        executors = [(store, "a"), (peer, "b")][:: 1 if seq % 2 else -1]
        outcomes = await asyncio.gather(
            *(s.append("run-1", step(seq, name)) for s, name in executors),
            return_exceptions=True,
        )

        # then exactly one wins, the other gets Conflict, and the winner's checkpoint is stored
        wins, errors = _results(outcomes)
        assert len(wins) == 1, outcomes
        assert len(errors) == 1 and isinstance(errors[0], Conflict), outcomes
        stored = (await load(store)).checkpoints[seq]
        assert stored == step(seq, executors[wins[0]][1])


@pytest.mark.stores("atomic_lease")
async def test_racing_acquires_have_one_winner(store: WorkflowStore, peer: WorkflowStore) -> None:
    for i in range(30):
        await store.create(make_run(f"run-{i}", status="pending", wake_at=T0))
        executors = [(store, "a"), (peer, "b")][:: 1 if i % 2 else -1]

        acquired = await asyncio.gather(
            *(s.acquire(f"run-{i}", token, TTL, now=T0) for s, token in executors)
        )

        assert sorted(acquired) == [False, True]
        winner = executors[acquired.index(True)][1]
        assert (await header(store, f"run-{i}")).lease_token == winner


async def test_racing_saves_of_one_revision_have_one_winner(
    store: WorkflowStore, peer: WorkflowStore
) -> None:
    await store.create(make_run(status="running"))
    for i in range(20):
        run = await header(store)
        statuses: list[RunStatus] = ["completed", "failed"]
        executors = list(zip([store, peer], statuses, strict=True))[:: 1 if i % 2 else -1]

        outcomes = await asyncio.gather(
            *(s.save(replace(run, status=status)) for s, status in executors),
            return_exceptions=True,
        )

        wins, errors = _results(outcomes)
        assert len(wins) == 1, outcomes
        assert len(errors) == 1 and isinstance(errors[0], Conflict), outcomes
        stored = await header(store)
        assert stored.status == executors[wins[0]][1]
        assert stored.revision == run.revision + 1


async def test_a_signal_between_load_and_save_is_never_lost(
    store: WorkflowStore, peer: WorkflowStore
) -> None:
    # given an executor that has loaded a running run
    await store.create(make_run(status="running"))
    loaded = await header(store)

    # when a signal arrives through another instance, then the executor suspends the run
    assert await peer.signal("run-1", Signal(id="s1", name="approve", at=T0 + 5))
    with pytest.raises(Conflict):
        await store.save(replace(loaded, status="waiting", wake_at=None))

    # then the signal is buffered and the run is due at the signal
    after = await load(store)
    assert [s.id for s in after.signals] == ["s1"]
    assert after.run.wake_at == T0 + 5
    assert after.run.status == "running"
    assert after.run.revision == loaded.revision + 1
    assert await store.due(T0 + 5, 10) == ["run-1"]


@pytest.mark.parametrize("suspend_to", [None, T0 + 1000], ids=["waiting", "sleeping"])
async def test_a_signal_racing_a_save_is_never_lost(
    store: WorkflowStore, peer: WorkflowStore, suspend_to: float | None
) -> None:
    for i in range(40):
        # given an executor holding a loaded header
        run_id = f"run-{i}"
        await store.create(make_run(run_id, status="running"))
        loaded = await header(store, run_id)
        signal = Signal(id=f"s-{i}", name="go", at=T0 + 5)
        suspended = replace(loaded, status="sleeping" if suspend_to else "waiting")
        suspended.wake_at = suspend_to

        # when its save and a signal from another instance race, in either order
        racers = [store.save(suspended), peer.signal(run_id, signal)]
        outcomes = await asyncio.gather(
            *(racers if i % 2 else racers[::-1]), return_exceptions=True
        )

        # then the save either won or lost with Conflict, and either way the signal is there
        # and the run is due at it
        save_outcome = outcomes[0] if i % 2 else outcomes[1]
        signal_outcome = outcomes[1] if i % 2 else outcomes[0]
        assert signal_outcome is True
        assert isinstance(save_outcome, Run | Conflict), save_outcome
        after = await load(store, run_id)
        assert after.signals == [signal]
        assert after.run.wake_at == T0 + 5
        saves = 0 if isinstance(save_outcome, Conflict) else 1
        assert after.run.revision == loaded.revision + 1 + saves
        assert run_id in await store.due(T0 + 5, 100)


def assert_no_signal_lost(
    final: Loaded,
    start_revision: int,
    commits: list[dict[str, Any]],
    sent: list[tuple[str, float]],
) -> None:
    """An executor saving ``wake_at=None`` raced signals: every signal was seen or wakes it.

    Each commit records the signals its load saw. A signal that the last commit did not see
    arrived after that commit (had it arrived in between, the save would have conflicted), so
    it must have made the run due.
    """
    sent_ids = {signal_id for signal_id, _ in sent}
    assert {s.id for s in final.signals} == sent_ids
    assert final.run.revision == start_revision + len(commits) + len(sent)
    revisions = [commit["revision"] for commit in commits]
    assert len(set(revisions)) == len(revisions)
    seen = set(max(commits, key=lambda c: c["revision"])["seen"]) if commits else set()
    unseen = [at for signal_id, at in sent if signal_id not in seen]
    assert final.run.wake_at == (min(unseen) if unseen else None)


@pytest.mark.parametrize(
    "turns",
    [150, 40],
    ids=["executor-outlasts-signals", "signals-outlast-executor"],
)
async def test_an_executor_and_a_signaller_interleaved_never_lose_a_signal(
    store: WorkflowStore, peer: WorkflowStore, turns: int
) -> None:
    # given a run that one executor keeps loading and suspending while 100 signals arrive
    await store.create(make_run(status="running"))
    start = await header(store)

    # when both run at once, on two instances
    commits, sent = await asyncio.gather(
        execute_loop(store, "run-1", turns), signal_loop(peer, "run-1", 100, "sig")
    )

    # then every signal was seen by the last save or made the run due after it

    assert_no_signal_lost(await load(store), start.revision, commits, sent)
    assert commits, "no save ever went through"


async def test_concurrent_distinct_signals_are_all_stored(
    store: WorkflowStore, peer: WorkflowStore
) -> None:
    await store.create(make_run(status="waiting"))
    start = await header(store)
    rng = random.Random(7)
    signals = [
        Signal(id=f"sig-{i:02}", name="n", payload=i, at=T0 + rng.randrange(1, 20))
        for i in range(40)
    ]

    delivered = await asyncio.gather(
        *((store if i % 2 else peer).signal("run-1", s) for i, s in enumerate(signals))
    )

    assert delivered == [True] * 40
    after = await load(store)
    assert after.signals == sorted(signals, key=lambda s: (s.at, s.id))
    assert after.run.revision == start.revision + 40
    assert after.run.wake_at == min(s.at for s in signals)


async def test_a_duplicate_signal_delivered_concurrently_is_stored_once(
    store: WorkflowStore, peer: WorkflowStore
) -> None:
    await store.create(make_run(status="waiting"))
    start = await header(store)
    copies = [Signal(id="once", name="n", payload=side, at=T0 + 1) for side in "ab"]

    delivered = await asyncio.gather(
        store.signal("run-1", copies[0]), peer.signal("run-1", copies[1])
    )

    assert list(delivered) == [True, True]
    after = await load(store)
    assert len(after.signals) == 1 and after.signals[0] in copies
    assert after.run.revision == start.revision + 1


# -- races between processes ------------------------------------------------------------------

WORKER = Path(__file__).with_name("race_worker.py")
REPO = Path(__file__).resolve().parents[2]


async def race_processes(url: str, rounds: int, *racers: tuple[str, str, str]) -> list[list[Any]]:
    """Race one worker process per ``(op, run, label)`` for ``rounds`` rounds, in lockstep.

    Each round tells every worker to make attempt ``i`` at once (who is told first alternates)
    and collects one outcome from each; returns the outcomes per racer.
    """
    pythonpath = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    procs = [
        await asyncio.create_subprocess_exec(
            *(sys.executable, str(WORKER), url, op, run_id, label),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        for op, run_id, label in racers
    ]
    outcomes: list[list[Any]] = [[] for _ in procs]

    async def read(proc: asyncio.subprocess.Process) -> bytes:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            _, err = await proc.communicate()
            raise AssertionError(f"race worker died: {err.decode()}")
        return line

    try:
        for proc in procs:
            assert await read(proc) == b"ready\n"
        for i in range(rounds):
            for proc in procs if i % 2 else procs[::-1]:
                assert proc.stdin is not None
                proc.stdin.write(b"%d\n" % i)
            await asyncio.gather(*(proc.stdin.drain() for proc in procs if proc.stdin))
            lines = await asyncio.gather(*(read(proc) for proc in procs))
            for outcome, line in zip(outcomes, lines, strict=True):
                outcome.append(json.loads(line))
        results = await asyncio.wait_for(
            asyncio.gather(*(proc.communicate(b"\n") for proc in procs)), 30
        )
        for proc, (_, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, err.decode()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    return outcomes


@pytest.mark.stores("url")
async def test_open_store_by_url_reaches_the_same_data(store: WorkflowStore, backend: Any) -> None:
    await store.create(make_run(input={"via": "factory"}))

    other = open_store(backend.url)
    try:
        assert type(other) is type(store)
        assert await header(other) == make_run(input={"via": "factory"})
        assert await other.create(make_run("run-2"))
    finally:
        await other.close()
    assert await store.load("run-2") is not None


@pytest.mark.stores("url")
async def test_cross_process_appends_have_one_winner_per_seq(
    store: WorkflowStore, backend: Any
) -> None:
    await store.create(make_run(status="running"))

    a, b = await race_processes(
        backend.url, 200, ("append", "run-1", "a"), ("append", "run-1", "b")
    )

    assert [sorted(pair) for pair in zip(a, b, strict=True)] == [[False, True]] * 200
    checkpoints = (await load(store)).checkpoints
    assert [cp.seq for cp in checkpoints] == list(range(200))
    assert [cp.name for cp in checkpoints] == ["a" if won else "b" for won in a]


@pytest.mark.stores("url", "atomic_lease")
async def test_cross_process_acquires_have_one_winner_per_run(
    store: WorkflowStore, backend: Any
) -> None:
    for i in range(200):
        await store.create(make_run(f"run-{i}", status="pending", wake_at=T0))

    a, b = await race_processes(
        backend.url, 200, ("acquire", "run-", "a"), ("acquire", "run-", "b")
    )

    assert [sorted(pair) for pair in zip(a, b, strict=True)] == [[False, True]] * 200
    for i, won in enumerate(a):
        run = await header(store, f"run-{i}")
        assert (run.lease_token, run.lease_expires_at) == ("a" if won else "b", T0 + LEASE_TTL)


@pytest.mark.stores("url")
async def test_cross_process_signals_racing_saves_are_never_lost(
    store: WorkflowStore, backend: Any
) -> None:
    await store.create(make_run(status="running"))
    start = await header(store)

    executor, signaller = await race_processes(
        backend.url, 200, ("execute", "run-1", "x"), ("signal", "run-1", "sig")
    )

    commits = [commit for commit in executor if commit is not None]
    sent = [(signal_id, at) for signal_id, at in signaller]
    assert_no_signal_lost(await load(store), start.revision, commits, sent)


# -- schema -----------------------------------------------------------------------------------

OPERATIONS: dict[str, Callable[[WorkflowStore], Awaitable[Any]]] = {
    "create": lambda s: s.create(make_run()),
    "load": lambda s: s.load("run-1"),
    "append": lambda s: s.append("run-1", step(0)),
    "signal": lambda s: s.signal("run-1", Signal(id="s", name="n", at=T0)),
    "due": lambda s: s.due(T0, 10),
    "list_runs": lambda s: s.list_runs(RunQuery()),
    "acquire": lambda s: s.acquire("run-1", "a", TTL, now=T0),
}


@pytest.mark.stores("schema")
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_without_auto_schema_a_fresh_store_raises_schema_missing(
    store_factory: StoreFactory, operation: str
) -> None:
    store = await store_factory(auto_schema=False)

    with pytest.raises(SchemaMissing, match="ensure"):
        await OPERATIONS[operation](store)


@pytest.mark.stores("schema")
async def test_ensure_schema_makes_a_store_without_auto_schema_work(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory(auto_schema=False)
    with pytest.raises(SchemaMissing):
        await store.create(make_run())

    await store.ensure_schema()
    await store.ensure_schema()

    assert await store.create(make_run())
    assert await header(store) == make_run()


@pytest.mark.stores("schema")
async def test_ensure_schema_again_keeps_the_data(store_factory: StoreFactory) -> None:
    store = await store_factory()
    await store.create(make_run(status="sleeping", wake_at=T0))
    await store.append("run-1", step(0))

    await store.ensure_schema()
    await (await store_factory(auto_schema=False)).ensure_schema()

    loaded = await load(store)
    assert loaded.run == make_run(status="sleeping", wake_at=T0)
    assert loaded.checkpoints == [step(0)]
    assert await store.due(T0, 10) == ["run-1"]


@pytest.mark.stores("schema")
async def test_without_auto_schema_an_existing_schema_is_used(store_factory: StoreFactory) -> None:
    deployer = await store_factory(auto_schema=False)
    await deployer.ensure_schema()

    store = await store_factory(auto_schema=False)

    assert await store.create(make_run())
    assert await header(deployer) == make_run()


@pytest.mark.stores("schema")
async def test_two_instances_creating_the_schema_at_once(store_factory: StoreFactory) -> None:
    first, second = await store_factory(), await store_factory()

    created = await asyncio.gather(first.create(make_run("a")), second.create(make_run("b")))

    assert list(created) == [True, True]
    assert {run.id for run in (await first.list_runs(RunQuery())).runs} == {"a", "b"}
