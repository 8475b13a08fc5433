"""Fixtures for the engine's unit tests.

``rt``/``clock``/``store``  a ``Runtime`` on a ``MemoryStore`` with a ``FakeClock`` and no
                            background dispatch (``runtime.testing.test_runtime``): ``rt.wait``
                            and ``rt.resume`` drive the runs, deterministically.
``any_store``               a fresh store of each kind (memory, sqlite in ``tmp_path``).
``CountingStore``           a proxy that counts every store call, for the write-cost invariant.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime import Runtime
from runtime.testing import FakeClock, test_runtime
from stores.contract import Checkpoint, Loaded, Run, RunPage, RunQuery, Signal, WorkflowStore
from stores.memory import MemoryStore

#: The store methods that write.
WRITES = frozenset({"create", "append", "save", "signal", "delete", "acquire", "release"})


class CountingStore(WorkflowStore):
    """Delegates every call to ``inner`` and counts it by method name in ``calls``."""

    def __init__(self, inner: WorkflowStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.atomic_lease = inner.atomic_lease

    @property
    def writes(self) -> int:
        return sum(n for method, n in self.calls.items() if method in WRITES)

    def reset(self) -> None:
        self.calls.clear()

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


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def harness(store: MemoryStore) -> tuple[Runtime, FakeClock]:
    return test_runtime(store)


@pytest.fixture
def rt(harness: tuple[Runtime, FakeClock]) -> Runtime:
    return harness[0]


@pytest.fixture
def clock(harness: tuple[Runtime, FakeClock]) -> FakeClock:
    return harness[1]


@pytest.fixture(params=["memory", "sqlite"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorkflowStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    from stores.sqlite import SqliteStore

    sqlite = SqliteStore(str(tmp_path / "heron.db"))
    try:
        yield sqlite
    finally:
        await sqlite.close()
