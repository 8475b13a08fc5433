"""Helpers for testing workflows: a clock that skips time, a ready-made runtime, and a store
wrapper that counts round trips.

```python
from runtime.testing import FakeClock, test_runtime

rt, clock = test_runtime()
...register workflows on rt...
output = await rt.wait(await rt.start("checkout", order))   # a 3-day sleep takes no time
```
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from runtime._dispatch import NoopDispatcher
from runtime._runtime import Runtime
from stores.contract import Checkpoint, Loaded, Run, RunPage, RunQuery, Signal, WorkflowStore

__all__ = ["CountingStore", "FakeClock", "test_runtime"]


class FakeClock:
    """A clock that only moves when told to, or when someone sleeps on it (time-skipping)."""

    skips_time = True

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


def test_runtime(
    store: WorkflowStore | None = None, *, lease_ttl: float = 30.0
) -> tuple[Runtime, FakeClock]:
    """A runtime on ``store`` (a fresh ``MemoryStore`` by default) with a ``FakeClock`` and no
    background dispatch: ``rt.wait`` drives the runs, deterministically."""
    if store is None:
        from stores.memory import MemoryStore

        store = MemoryStore()
    clock = FakeClock()
    return Runtime(store, lease_ttl=lease_ttl, clock=clock, dispatcher=NoopDispatcher()), clock


test_runtime.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


WRITES = ("create", "append", "save", "signal", "acquire", "release", "delete")
READS = ("load", "due", "list_runs")


class CountingStore(WorkflowStore):
    """Wraps any store and counts the calls the engine makes, by method, in ``calls``.

    ``writes`` and ``reads`` sum them up: assert that a workflow costs what you expect, or see
    where an invocation's store round trips go (``bench/steps.py`` uses it)."""

    def __init__(self, inner: WorkflowStore) -> None:
        self.inner = inner
        self.atomic_lease = inner.atomic_lease
        self.calls: Counter[str] = Counter()

    def reset(self) -> None:
        self.calls.clear()

    @property
    def writes(self) -> int:
        return sum(self.calls[m] for m in WRITES)

    @property
    def reads(self) -> int:
        return sum(self.calls[m] for m in READS)

    async def create(self, run: Run) -> bool:
        self.calls["create"] += 1
        return await self.inner.create(run)

    async def load(self, run_id: str) -> Loaded | None:
        self.calls["load"] += 1
        return await self.inner.load(run_id)

    async def append(self, run_id: str, checkpoint: Checkpoint) -> None:
        self.calls["append"] += 1
        await self.inner.append(run_id, checkpoint)

    async def save(self, run: Run) -> Run:
        self.calls["save"] += 1
        return await self.inner.save(run)

    async def signal(self, run_id: str, signal: Signal) -> bool:
        self.calls["signal"] += 1
        return await self.inner.signal(run_id, signal)

    async def due(self, now: float, limit: int) -> list[str]:
        self.calls["due"] += 1
        return await self.inner.due(now, limit)

    async def delete(self, run_id: str) -> None:
        self.calls["delete"] += 1
        await self.inner.delete(run_id)

    async def list_runs(self, query: RunQuery) -> RunPage:
        self.calls["list_runs"] += 1
        return await self.inner.list_runs(query)

    async def acquire(
        self,
        run_id: str,
        token: str,
        ttl: float,
        *,
        now: float | None = None,
        due_only: bool = False,
    ) -> bool:
        self.calls["acquire"] += 1
        return await self.inner.acquire(run_id, token, ttl, now=now, due_only=due_only)

    async def release(self, run_id: str, token: str) -> None:
        self.calls["release"] += 1
        await self.inner.release(run_id, token)

    async def ensure_schema(self) -> None:
        await self.inner.ensure_schema()

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:  # anything backend-specific (path, synchronous...)
        return getattr(self.inner, name)
