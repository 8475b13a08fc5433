"""``SqliteStore`` on a file in the test's ``tmp_path``; other processes reach it by URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from heron.stores.contract import WorkflowStore
from tests.stores import ATOMIC_LEASE, SCHEMA, URL, Backend, StoreKind


@asynccontextmanager
async def setup(tmp_path: Path) -> AsyncIterator[Backend]:
    from heron.stores.sqlite import SqliteStore

    path = tmp_path / "heron.db"

    async def open_(**options: Any) -> WorkflowStore:
        return SqliteStore(str(path), **options)

    yield Backend(open=open_, url=f"sqlite:///{path}")  # absolute: sqlite:////tmp/...


KINDS = {"sqlite": StoreKind(setup, frozenset({ATOMIC_LEASE, SCHEMA, URL}))}
