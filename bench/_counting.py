"""``CountingStore``: a transparent proxy that counts the store calls the engine makes.

Writes are ``create append save signal acquire release delete``; reads are ``load due
list_runs``. Used by ``bench/steps.py`` to report store writes and reads per step.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from stores.contract import Checkpoint, Loaded, Run, RunPage, RunQuery, Signal, WorkflowStore

__all__ = ["READS", "WRITES", "CountingStore"]

WRITES = ("create", "append", "save", "signal", "acquire", "release", "delete")
READS = ("load", "due", "list_runs")


class CountingStore(WorkflowStore):
    """Forwards every call to ``inner`` and counts it in ``calls`` (a ``Counter`` by method)."""

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
        self, run_id: str, token: str, ttl: float, *, now: float | None = None
    ) -> bool:
        self.calls["acquire"] += 1
        return await self.inner.acquire(run_id, token, ttl, now=now)

    async def release(self, run_id: str, token: str) -> None:
        self.calls["release"] += 1
        await self.inner.release(run_id, token)

    async def ensure_schema(self) -> None:
        await self.inner.ensure_schema()

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:  # anything backend-specific (path, synchronous...)
        return getattr(self.inner, name)
