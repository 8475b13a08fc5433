"""What the contract suite cannot see of ``SqliteStore``: its schema, its migration from a
version-1 file (what Heron 0.2 wrote) and its query plans.

The version-1 schema is copied here as Heron 0.2 created it, on purpose: the test must keep
describing the files that exist in the field even if ``stores/_sql.py`` changes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from heron.stores import Checkpoint, Run, RunQuery, SchemaMissing, Signal, StoreError
from heron.stores._sql import SCHEMA_VERSION
from heron.stores.sqlite import SqliteStore

T0 = 1_700_000_000.0

#: Heron 0.2's SqliteStore._SCHEMA, verbatim.
V1_DDL = (
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        version TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT NOT NULL,
        output TEXT NOT NULL,
        error TEXT NOT NULL,
        parent_id TEXT,
        tags TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        wake_at REAL,
        revision INTEGER NOT NULL,
        engine TEXT NOT NULL,
        lease_token TEXT,
        lease_expires_at REAL
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT,
        error TEXT,
        at REAL NOT NULL,
        attempts INTEGER NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS signals (
        run_id TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        payload TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (run_id, id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS run_tags (
        tag TEXT NOT NULL,
        created_at REAL NOT NULL,
        run_id TEXT NOT NULL,
        PRIMARY KEY (tag, created_at, run_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS run_tags_by_run ON run_tags (run_id)",
    "CREATE INDEX IF NOT EXISTS runs_due ON runs (wake_at, id) WHERE wake_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at, id)",
    "CREATE INDEX IF NOT EXISTS runs_workflow ON runs (workflow, created_at, id)",
    "CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created_at, id)",
    "CREATE INDEX IF NOT EXISTS runs_parent ON runs (parent_id, created_at, id)"
    " WHERE parent_id IS NOT NULL",
    "PRAGMA user_version = 1",
)

V1_RUN = Run(
    id="old-1",
    workflow="order",
    input={"n": 1},
    status="waiting",
    tags=["prod"],
    created_at=T0,
    updated_at=T0 + 1,
    wake_at=None,
    revision=3,
    engine={"waits": {"2": "approved"}},
)


def write_v1_file(path: Path) -> None:
    """A database as Heron 0.2 left it: one waiting run, two checkpoints, a buffered signal."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in V1_DDL:
            conn.execute(statement)
        fields = V1_RUN.header_fields()
        conn.execute(
            f"INSERT INTO runs ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
            tuple(fields.values()),
        )
        conn.execute("INSERT INTO run_tags VALUES ('prod', ?, 'old-1')", (T0,))
        conn.executemany(
            "INSERT INTO checkpoints VALUES ('old-1', ?, 'step', ?, ?, NULL, ?, 1)",
            [(0, "a", '{"x":1}', T0), (1, "b", '"two"', T0 + 1)],
        )
        conn.execute(
            "INSERT INTO signals VALUES ('old-1', 's-1', 'approved', '{\"by\":\"ops\"}', ?)",
            (T0 + 2,),
        )
    finally:
        conn.close()


def schema_of(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
        return dict(rows)
    finally:
        conn.close()


def columns(path: Path, table: str) -> list[tuple[str, str, int, int]]:
    """(name, type, not null, primary key position) of each column, in order."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(f"PRAGMA table_info({table})").fetchall()
        return [(name, type_, notnull, pk) for _, name, type_, notnull, _, pk in rows]
    finally:
        conn.close()


V1_COLUMNS = {
    "checkpoints": [
        ("run_id", "TEXT", 1, 1),
        ("seq", "INTEGER", 1, 2),
        ("kind", "TEXT", 1, 0),
        ("name", "TEXT", 1, 0),
        ("value", "TEXT", 0, 0),
        ("error", "TEXT", 0, 0),
        ("at", "REAL", 1, 0),
        ("attempts", "INTEGER", 1, 0),
    ],
    "signals": [
        ("run_id", "TEXT", 1, 1),
        ("id", "TEXT", 1, 2),
        ("name", "TEXT", 1, 0),
        ("payload", "TEXT", 0, 0),
        ("at", "REAL", 1, 0),
    ],
}


def pragma_user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        return version
    finally:
        conn.close()


@pytest.fixture
async def v1_file(tmp_path: Path) -> Path:
    path = tmp_path / "v1.db"
    write_v1_file(path)
    return path


async def test_a_version_1_file_migrates_on_first_use_and_keeps_its_data(v1_file: Path) -> None:
    store = SqliteStore(str(v1_file))
    try:
        # when the first call touches it
        loaded = await store.load("old-1")

        # then the data is all there, checkpoints without an order, the signal pending
        assert loaded is not None
        assert loaded.run == V1_RUN
        assert loaded.checkpoints == [
            Checkpoint(seq=0, kind="step", name="a", value={"x": 1}, at=T0),
            Checkpoint(seq=1, kind="step", name="b", value="two", at=T0 + 1),
        ]
        assert [cp.order for cp in loaded.checkpoints] == [None, None]
        assert loaded.signals == [
            Signal(id="s-1", name="approved", payload={"by": "ops"}, at=T0 + 2)
        ]
        assert [r.id for r in (await store.list_runs(RunQuery(tag="prod"))).runs] == ["old-1"]

        # and version 2 works on it: a consuming checkpoint with an order
        await store.append(
            "old-1",
            Checkpoint(seq=2, kind="signal", name="approved", value={"by": "ops"}, order=2),
            consumes="s-1",
        )
        after = await store.load("old-1")
        assert after is not None and after.signals == []
        assert after.checkpoints[-1].order == 2
        assert await store.signal("old-1", Signal(id="s-1", name="approved", at=T0)) is True
        assert (await store.load("old-1")).signals == []  # type: ignore[union-attr]
    finally:
        await store.close()

    # the file says version 2 both ways (older Heron reads user_version and refuses it)
    assert pragma_user_version(v1_file) == SCHEMA_VERSION
    conn = sqlite3.connect(v1_file)
    try:
        assert conn.execute("SELECT version FROM heron_schema").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


async def test_the_migration_only_adds_to_version_1(v1_file: Path, tmp_path: Path) -> None:
    before = schema_of(v1_file)
    store = SqliteStore(str(v1_file))
    await store.ensure_schema()
    await store.close()

    after = schema_of(v1_file)
    # every version-1 object is still there, unchanged but for the columns added at the end
    assert set(before) <= set(after)
    for name, sql in before.items():
        if name not in ("checkpoints", "signals"):
            assert after[name] == sql
    assert set(after) - set(before) == {"signals_pending", "heron_schema"}
    assert columns(v1_file, "checkpoints")[:8] == V1_COLUMNS["checkpoints"]
    assert columns(v1_file, "checkpoints")[8:] == [("outcome_order", "INTEGER", 0, 0)]
    assert columns(v1_file, "signals")[:5] == V1_COLUMNS["signals"]
    assert columns(v1_file, "signals")[5:] == [("consumed_by", "INTEGER", 0, 0)]

    # and a fresh database gets exactly the same schema as a migrated one
    fresh = SqliteStore(str(tmp_path / "fresh.db"))
    await fresh.ensure_schema()
    await fresh.close()
    assert schema_of(tmp_path / "fresh.db") == after


async def test_without_auto_schema_a_version_1_file_asks_for_ensure_schema(v1_file: Path) -> None:
    store = SqliteStore(str(v1_file), auto_schema=False)
    try:
        with pytest.raises(SchemaMissing, match="version 1.*ensure"):
            await store.load("old-1")
        assert pragma_user_version(v1_file) == 1  # nothing was changed

        await store.ensure_schema()

        loaded = await store.load("old-1")
        assert loaded is not None and loaded.run == V1_RUN
    finally:
        await store.close()


async def test_instances_migrating_one_file_at_once(v1_file: Path) -> None:
    stores = [SqliteStore(str(v1_file)) for _ in range(4)]
    try:
        loaded = await asyncio.gather(*(s.load("old-1") for s in stores))
        assert all(one is not None and one.run == V1_RUN for one in loaded)
        # a second round needs no migration and sees what another instance wrote
        await stores[0].append("old-1", Checkpoint(seq=2, kind="step", name="c"))
        again = await stores[3].load("old-1")
        assert again is not None and [cp.seq for cp in again.checkpoints] == [0, 1, 2]
    finally:
        for store in stores:
            await store.close()


async def test_a_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    store = SqliteStore(str(path))
    await store.ensure_schema()
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE heron_schema SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()

    newer = SqliteStore(str(path))
    try:
        with pytest.raises(StoreError, match=f"version {SCHEMA_VERSION + 1}.*upgrade Heron"):
            await newer.load("x")
    finally:
        await newer.close()


def plan(path: Path, sql: str, args: tuple[object, ...]) -> str:
    conn = sqlite3.connect(path)
    try:
        return " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
    finally:
        conn.close()


async def test_due_and_pending_signals_read_their_partial_indexes(tmp_path: Path) -> None:
    from heron.stores import _sql

    path = tmp_path / "plans.db"
    store = SqliteStore(str(path))
    await store.ensure_schema()
    await store.close()

    assert "USING COVERING INDEX runs_due" in plan(path, _sql.SQL_DUE, (T0, 10))
    assert "USING INDEX signals_pending" in plan(path, _sql.SQL_LOAD_SIGNALS, ("r",))
    count = plan(path, _sql.SQL_SIGNAL_INSERT, ("r", "s", "n", "null", T0, 100))
    assert "signals_pending" in count
    assert "SCAN" not in plan(path, _sql.SQL_LOAD_CHECKPOINTS, ("r",))
