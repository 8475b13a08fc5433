"""One racer of the cross-process contract tests, and the attempts the in-process races share.

    python race_worker.py URL OP RUN LABEL

opens the store at ``URL`` with ``heron.stores.open_store``, prints ``ready``, then runs in lockstep
with the test: for each line ``i`` read from stdin it makes attempt ``i`` of ``OP`` and prints its
outcome as one JSON line; an empty line or end of input stops it.

    append   append seq i to run RUN, named LABEL            true if it won, false on Conflict
    acquire  acquire run RUN{i} with token LABEL             true if it got the lease
    execute  load RUN, save it as waiting (wake_at None)     the commit, or null on Conflict
    signal   signal RUN with a new id LABEL-i                [id, at]
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from heron.stores import Checkpoint, Conflict, Signal, WorkflowStore, open_store

T0 = 1_700_000_000.0
LEASE_TTL = 60.0


async def append_once(store: WorkflowStore, run_id: str, seq: int, label: str) -> bool:
    try:
        await store.append(run_id, Checkpoint(seq=seq, kind="step", name=label, at=T0))
    except Conflict:
        return False
    return True


async def acquire_once(store: WorkflowStore, run_id: str, label: str) -> bool:
    return await store.acquire(run_id, label, LEASE_TTL, now=T0)


async def execute_once(store: WorkflowStore, run_id: str) -> dict[str, Any] | None:
    """An executor's turn: load, yield (a signal may land), save as waiting."""
    loaded = await store.load(run_id)
    assert loaded is not None
    run = loaded.run
    run.status = "waiting"
    run.wake_at = None
    await asyncio.sleep(0)
    try:
        saved = await store.save(run)
    except Conflict:
        return None
    return {"revision": saved.revision, "seen": [s.id for s in loaded.signals]}


async def signal_once(store: WorkflowStore, run_id: str, i: int, label: str) -> tuple[str, float]:
    signal = Signal(id=f"{label}-{i}", name="go", payload={"i": i}, at=T0 + 1 + i)
    # more signals than the default cap on pending ones: the race, not the cap, is under test
    assert await store.signal(run_id, signal, max_pending=100_000)
    return signal.id, signal.at


async def execute_loop(store: WorkflowStore, run_id: str, count: int) -> list[dict[str, Any]]:
    """``count`` executor turns; returns the commits (the saves that went through)."""
    commits = [await execute_once(store, run_id) for _ in range(count)]
    return [commit for commit in commits if commit is not None]


async def signal_loop(
    store: WorkflowStore, run_id: str, count: int, label: str
) -> list[tuple[str, float]]:
    """``count`` distinct signals, yielding 0-2 times between them; returns ``(id, at)``."""
    sent = []
    for i in range(count):
        sent.append(await signal_once(store, run_id, i, label))
        for _ in range(i % 3):
            await asyncio.sleep(0)
    return sent


async def attempt(store: WorkflowStore, op: str, run_id: str, i: int, label: str) -> Any:
    if op == "append":
        return await append_once(store, run_id, i, label)
    if op == "acquire":
        return await acquire_once(store, f"{run_id}{i}", label)
    if op == "execute":
        return await execute_once(store, run_id)
    if op == "signal":
        return await signal_once(store, run_id, i, label)
    raise SystemExit(f"unknown op {op!r}")


async def main(url: str, op: str, run_id: str, label: str) -> None:
    store = open_store(url)
    try:
        await store.load("warm-up")  # connect (and check the schema) before the race starts
        print("ready", flush=True)
        while line := sys.stdin.readline().strip():
            outcome = await attempt(store, op, run_id, int(line), label)
            print(json.dumps(outcome), flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
