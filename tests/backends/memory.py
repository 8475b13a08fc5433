"""``MemoryStore``: the reference, one instance shared by every "executor" of a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from heron.stores.contract import WorkflowStore
from tests.stores import ATOMIC_LEASE, Backend, StoreKind


@asynccontextmanager
async def setup(tmp_path: Path) -> AsyncIterator[Backend]:
    from heron.stores.memory import MemoryStore

    store = MemoryStore()

    async def open_(**options: Any) -> WorkflowStore:
        return store  # one process, one instance: every "executor" shares it

    yield Backend(open=open_)


KINDS = {"memory": StoreKind(setup, frozenset({ATOMIC_LEASE}))}
