"""``D1Store`` against a D1 DOUBLE: SQLite behind the binding shape the Workers SDK gives Python.

There is no D1 outside Cloudflare (``workerd`` runs it only with Cloudflare's backend), so the
binding is :class:`D1Binding`, a TEST DOUBLE: ``prepare(sql).bind(*args).all()`` and
``batch([...])`` as the SDK presents them to Python (answers as dicts, rows as objects keyed by
column name, numbers as JavaScript hands them back, D1's error texts), over the SQLite engine in
``tests/edge/d1_engine.py``, which the Pyodide harness's JavaScript double uses too. Every call
yields to the event loop first, as a call to D1 does, so two store instances on one binding are
two executors whose calls interleave; each call then runs whole, as D1 runs one query (or one
batch) at a time.

Capabilities: ``SCHEMA`` and ``ATOMIC_LEASE``. Not ``URL``: ``d1://DB`` reaches a database only
through a binding, which no other process can be handed, so the tests that race separate
processes (and kill them) do not run on this store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from heron.stores.contract import WorkflowStore
from tests.edge.d1_engine import Engine, js_number
from tests.stores import ATOMIC_LEASE, SCHEMA, Backend, StoreKind


def _answer(result: dict[str, Any]) -> dict[str, Any]:
    """The engine's result as the SDK hands it to Python: row objects, JavaScript numbers."""
    columns = result["columns"]
    rows = [
        {column: js_number(value) for column, value in zip(columns, row, strict=True)}
        for row in result["rows"]
    ]
    return {"success": True, "results": rows, "meta": dict(result["meta"])}


class D1Statement:
    """TEST DOUBLE of a D1 prepared statement (immutable: ``bind`` returns a new one)."""

    def __init__(self, db: D1Binding, sql: str, params: tuple[Any, ...] = ()) -> None:
        self.db, self.sql, self.params = db, sql, params

    def bind(self, *values: Any) -> D1Statement:
        return D1Statement(self.db, self.sql, values)

    async def all(self) -> dict[str, Any]:
        await asyncio.sleep(0)  # a call to D1 is I/O: other tasks run in between
        self.db.calls += 1
        return _answer(self.db.engine.run(self.sql, list(self.params)))

    run = all


class D1Binding:
    """TEST DOUBLE of a Worker's D1 binding (``env.DB`` as the Workers SDK wraps it)."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or Engine()
        self.calls = 0  # D1 calls: one per statement run alone, one per batch

    def prepare(self, sql: str) -> D1Statement:
        return D1Statement(self, sql)

    async def batch(self, statements: list[D1Statement]) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        self.calls += 1
        results = self.engine.batch([(s.sql, list(s.params)) for s in statements])
        return [_answer(result) for result in results]


@asynccontextmanager
async def setup(tmp_path: Path) -> AsyncIterator[Backend]:
    from heron.stores.d1 import D1Store

    binding = D1Binding(Engine(str(tmp_path / "d1.sqlite")))

    async def open_(**options: Any) -> WorkflowStore:
        return D1Store("DB", binding=binding, **options)

    try:
        yield Backend(open=open_)
    finally:
        binding.engine.close()


KINDS = {"d1": StoreKind(setup, frozenset({ATOMIC_LEASE, SCHEMA}))}
