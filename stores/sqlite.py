"""``SqliteStore``: the embedded default store, one SQLite file, stdlib :mod:`sqlite3` only.

A run is a row of ``runs`` (the header), rows of ``checkpoints`` keyed by ``(run_id, seq)`` and
rows of ``signals`` keyed by ``(run_id, id)``; ``run_tags`` indexes tags for ``list_runs``. Both
child tables are ``WITHOUT ROWID``, clustered on their key, so appending is one B-tree insert and
loading a history is one range scan. ``due`` reads a partial index on ``runs(wake_at, id)`` that
holds only the runs with a ``wake_at``, so it never looks at runs that are not due.

Durability. The database runs in WAL mode. With ``synchronous=NORMAL`` (the default) a commit
appends to the WAL without an fsync: a killed process loses nothing, but a power loss or kernel
crash may lose the last transactions before the next checkpoint (the database stays
consistent). ``synchronous=FULL`` fsyncs the WAL on every commit and survives power loss, at
10-15x the cost per commit (measured on a 2-core VM: an insert and its commit took about 20 µs
with NORMAL, 170-270 µs with FULL; through this store, about 30,000-40,000 appends/s with NORMAL
and 3,500-5,500 with FULL).

Why statements run inline. A write here costs about 10-20 µs, while handing a call to a thread
(``run_in_executor``/``to_thread``) and back costs about 130 µs, so a thread would make every
step several times slower. Statements therefore run on the event loop thread. They must never
block it for long, so the connection's own busy timeout is 0: when another process holds the
write lock, SQLite fails at once with "database is locked", and :meth:`SqliteStore._call`
(the one helper every method goes through) rolls back, ``await``-s a short jittered sleep
(1 ms growing to 50 ms) and tries again, until ``busy_timeout`` seconds have passed; then it
raises :class:`~heron.stores.contract.StoreError` naming the run. No ``await`` happens while a
transaction is open, so on one event loop every method is one indivisible step, as in
``MemoryStore``; a lock guards the connection against other threads (``check_same_thread`` is
off).

The connection is opened on first use, never at import or construction time; with
``auto_schema`` (the default) the schema is created then too. ``PRAGMA user_version`` records the
schema version for future migrations.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from heron.stores.contract import (
    TERMINAL_STATUSES,
    Checkpoint,
    Conflict,
    Loaded,
    Run,
    RunPage,
    RunQuery,
    SchemaMissing,
    Signal,
    StoreError,
    WorkflowStore,
    decode_cursor,
    dumps,
    loads,
)

__all__ = ["SqliteStore"]

T = TypeVar("T")
Transaction = Literal["read", "write"] | None

SCHEMA_VERSION: Final = 1
_SYNCHRONOUS: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_BACKOFF_FIRST: Final = 0.001
_BACKOFF_MAX: Final = 0.05

# -- schema ------------------------------------------------------------------------------------

_TABLES: Final = ("runs", "checkpoints", "signals", "run_tags")

_SCHEMA: Final = (
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
    # One row per (tag, run); created_at is copied from the run so that a tag filter walks this
    # table newest first and stops after one page.
    """CREATE TABLE IF NOT EXISTS run_tags (
        tag TEXT NOT NULL,
        created_at REAL NOT NULL,
        run_id TEXT NOT NULL,
        PRIMARY KEY (tag, created_at, run_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS run_tags_by_run ON run_tags (run_id)",
    # Partial: only runs that have a wake_at are in it, so due() costs what is due, not what exists.
    "CREATE INDEX IF NOT EXISTS runs_due ON runs (wake_at, id) WHERE wake_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at, id)",
    "CREATE INDEX IF NOT EXISTS runs_workflow ON runs (workflow, created_at, id)",
    "CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created_at, id)",
    "CREATE INDEX IF NOT EXISTS runs_parent ON runs (parent_id, created_at, id)"
    " WHERE parent_id IS NOT NULL",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

_SQL_USER_VERSION: Final = "PRAGMA user_version"
_SQL_TABLES: Final = "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?, ?)"

# -- statements (sqlite3 caches prepared statements by their text) -----------------------------

_RUN_COLUMNS: Final = tuple(Run(id="", workflow="").header_fields())
_RUN_SELECT: Final = ", ".join(_RUN_COLUMNS)
_TERMINAL_SQL: Final = ", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES))

_SQL_CREATE: Final = (
    f"INSERT OR IGNORE INTO runs ({_RUN_SELECT}) "
    f"VALUES ({', '.join(':' + c for c in _RUN_COLUMNS)})"
)
_SQL_TAG_INSERT: Final = "INSERT OR IGNORE INTO run_tags (tag, created_at, run_id) VALUES (?, ?, ?)"
_SQL_TAG_DELETE: Final = "DELETE FROM run_tags WHERE run_id = ?"

_SQL_LOAD_RUN: Final = f"SELECT {_RUN_SELECT} FROM runs WHERE id = ?"
_SQL_LOAD_CHECKPOINTS: Final = (
    "SELECT seq, kind, name, value, error, at, attempts FROM checkpoints "
    "WHERE run_id = ? ORDER BY seq"
)
_SQL_LOAD_SIGNALS: Final = (
    "SELECT id, name, payload, at FROM signals WHERE run_id = ? ORDER BY at, id"
)

# Create-only, and only under an existing run: one statement, so a concurrent delete cannot
# slip in between the existence check and the insert.
_SQL_APPEND: Final = (
    "INSERT INTO checkpoints (run_id, seq, kind, name, value, error, at, attempts) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1)"
)

_SQL_SAVE_READ: Final = (
    "SELECT tags, created_at, lease_token, lease_expires_at FROM runs WHERE id = ?"
)
_SQL_SAVE: Final = (
    "UPDATE runs SET "
    + ", ".join(
        f"{c} = :{c}"
        for c in _RUN_COLUMNS
        if c not in ("id", "revision", "lease_token", "lease_expires_at")
    )
    + ", revision = revision + 1 WHERE id = :id AND revision = :revision"
)

_SQL_SIGNAL_INSERT: Final = (
    "INSERT OR IGNORE INTO signals (run_id, id, name, payload, at) "
    "SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1)"
)
_SQL_SIGNAL_WAKE: Final = (
    "UPDATE runs SET wake_at = CASE"
    f" WHEN status IN ({_TERMINAL_SQL}) THEN wake_at"
    " WHEN wake_at IS NULL THEN ?2"
    " ELSE min(wake_at, ?2) END,"
    " revision = revision + 1 WHERE id = ?1"
)
_SQL_EXISTS: Final = "SELECT 1 FROM runs WHERE id = ?"

_SQL_DUE: Final = (
    "SELECT id FROM runs WHERE wake_at IS NOT NULL AND wake_at <= ? ORDER BY wake_at, id LIMIT ?"
)

_SQL_DELETE: Final = (
    "DELETE FROM checkpoints WHERE run_id = ?",
    "DELETE FROM signals WHERE run_id = ?",
    _SQL_TAG_DELETE,
    "DELETE FROM runs WHERE id = ?",
)

# Two executors may try to take the same lease at the same moment:
#
#   executor A: acquire(r, "a")            executor B: acquire(r, "b")
#   UPDATE ... WHERE lease is free  -> 1    UPDATE ... WHERE lease is free  -> 0
#
# SQLite runs one write at a time, and the condition is re-evaluated by the UPDATE itself, so the
# second UPDATE sees the first one's token and an unexpired lease and matches no row. Reading the
# lease first and writing it after (check-then-set) would let both see it free and both win.
# The lease is free when it has no expiry or has expired; its own holder may always renew it.
_SQL_ACQUIRE: Final = (
    "UPDATE runs SET lease_token = ?1, lease_expires_at = ?2, wake_at = ?2"
    f" WHERE id = ?3 AND status NOT IN ({_TERMINAL_SQL})"
    " AND (lease_expires_at IS NULL OR lease_expires_at <= ?4 OR lease_token = ?1)"
)
_SQL_RELEASE: Final = (
    "UPDATE runs SET lease_token = NULL, lease_expires_at = NULL WHERE id = ? AND lease_token = ?"
)

# list_runs: a constant select, then filter fragments in a fixed order, so the few shapes a
# caller can produce each stay one cached statement. With a tag, run_tags drives the join
# (CROSS JOIN fixes the order) and its (tag, created_at, run_id) key gives newest-first order.
_SQL_LIST: Final = f"SELECT {_RUN_SELECT} FROM runs"
_SQL_LIST_BY_TAG: Final = (
    "SELECT "
    + ", ".join(f"runs.{c}" for c in _RUN_COLUMNS)
    + " FROM run_tags CROSS JOIN runs ON runs.id = run_tags.run_id"
)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _parse_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"sqlite store URL option {name}={text!r} is not a boolean")


class SqliteStore(WorkflowStore):
    """Runs in one SQLite database file (WAL), through one lazily opened connection.

    ``synchronous`` is SQLite's pragma (``NORMAL`` or ``FULL``, see the module docstring);
    ``busy_timeout`` is how long, in seconds, a call keeps retrying while another process holds
    the database locked. ``path`` may be ``":memory:"`` (one private database per store).
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "NORMAL",
        auto_schema: bool = True,
        busy_timeout: float = 30.0,
    ) -> None:
        sync = synchronous.upper()
        if sync not in _SYNCHRONOUS:
            raise ValueError(
                f"synchronous={synchronous!r} is not one of {', '.join(sorted(_SYNCHRONOUS))}"
            )
        if not path:
            raise ValueError("SqliteStore needs a database path (or ':memory:')")
        self.path = path
        self.synchronous = sync
        self.auto_schema = auto_schema
        self.busy_timeout = float(busy_timeout)
        self._file = path if path == ":memory:" else os.path.abspath(path)
        self._conn: sqlite3.Connection | None = None
        self._schema_ready = False
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteStore:
        """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite:///:memory:``.

        Query parameters: ``synchronous=normal|full|off``, ``auto_schema=true|false``,
        ``busy_timeout=SECONDS``. Keyword ``options`` override them.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "sqlite":
            raise ValueError(f"not a sqlite URL: {url!r}")
        if parts.netloc:
            raise ValueError(
                f"sqlite URL {url!r} has a host; use sqlite:///relative.db or sqlite:////abs.db"
            )
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not path:
            raise ValueError(f"sqlite URL {url!r} names no database file")
        params: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "synchronous":
                params[name] = value
            elif name == "auto_schema":
                params[name] = _parse_bool(name, value)
            elif name == "busy_timeout":
                try:
                    params[name] = float(value)
                except ValueError:
                    raise ValueError(
                        f"sqlite URL option busy_timeout={value!r} is not a number"
                    ) from None
            else:
                raise ValueError(
                    f"unknown sqlite URL option {name!r} in {url!r}; "
                    "known: synchronous, auto_schema, busy_timeout"
                )
        params.update(options)
        return cls(path, **params)

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}, synchronous={self.synchronous!r})"

    # -- the connection and the one helper every method goes through ---------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"the SqliteStore for {self._file} is closed")
        conn = self._conn
        if conn is None:
            if self._file != ":memory:":
                os.makedirs(os.path.dirname(self._file), exist_ok=True)
            conn = sqlite3.connect(
                self._file,
                timeout=0,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
            try:
                conn.execute("PRAGMA busy_timeout = 0")
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                conn.execute("PRAGMA journal_mode = WAL")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return conn

    def _prepare_schema(
        self, conn: sqlite3.Connection, run_id: str | None, *, create: bool
    ) -> None:
        version = conn.execute(_SQL_USER_VERSION).fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite database {self._file} has Heron schema version {version}, newer than "
                f"this Heron supports ({SCHEMA_VERSION}); upgrade Heron"
            )
        present = {row[0] for row in conn.execute(_SQL_TABLES, _TABLES)}
        if version == SCHEMA_VERSION and present.issuperset(_TABLES):
            return
        if not create:
            raise self._schema_missing(run_id)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _schema_missing(self, run_id: str | None) -> SchemaMissing:
        return SchemaMissing(
            f"the Heron tables do not exist in SQLite database {self._file}; "
            "run `heron schema ensure` or `await store.ensure_schema()` "
            "(or open the store with auto_schema=True)",
            run_id=run_id,
        )

    async def _call(
        self,
        run_id: str | None,
        op: Callable[[sqlite3.Connection], T],
        tx: Transaction = None,
        *,
        create_schema: bool = False,
    ) -> T:
        """Run ``op`` on the connection, inline, inside ``tx``; retry while the file is locked.

        ``tx`` is ``None`` (one autocommit statement), ``"read"`` (``BEGIN``: one snapshot for
        several reads) or ``"write"`` (``BEGIN IMMEDIATE``: take the write lock up front, so the
        transaction cannot fail half way with a busy upgrade). ``op`` may run more than once, so
        it must do nothing but execute statements. It never awaits, so nothing else on this
        event loop runs while a transaction is open.
        """
        deadline: float | None = None
        delay = _BACKOFF_FIRST
        while True:
            try:
                with self._lock:
                    conn = self._connect()
                    if create_schema or not self._schema_ready:
                        self._prepare_schema(conn, run_id, create=create_schema or self.auto_schema)
                        self._schema_ready = True
                    if tx is None:
                        try:
                            return op(conn)
                        except BaseException:
                            if conn.in_transaction:
                                conn.execute("ROLLBACK")
                            raise
                    try:
                        conn.execute("BEGIN IMMEDIATE" if tx == "write" else "BEGIN")
                        result = op(conn)
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                    return result
            except sqlite3.Error as exc:
                if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self.busy_timeout
                    if now >= deadline:
                        what = f"run {run_id!r}" if run_id is not None else "the store"
                        raise StoreError(
                            f"SQLite database {self._file} stayed locked for "
                            f"{self.busy_timeout:g}s; gave up on {what}",
                            run_id=run_id,
                        ) from exc
                    await asyncio.sleep(min(delay * (0.5 + random.random()), deadline - now))
                    delay = min(delay * 2, _BACKOFF_MAX)
                    continue
                if "no such table" in str(exc):
                    self._schema_ready = False
                    raise self._schema_missing(run_id) from exc
                what = f" (run {run_id!r})" if run_id is not None else ""
                raise StoreError(
                    f"SQLite error in {self._file}{what}: {exc}", run_id=run_id
                ) from exc

    # -- schema and lifecycle ----------------------------------------------------------------------

    async def ensure_schema(self) -> None:
        """Create the tables and indexes if they are missing (whatever ``auto_schema`` says)."""
        await self._call(None, lambda conn: None, create_schema=True)

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    # -- runs ------------------------------------------------------------------------------------

    async def create(self, run: Run) -> bool:
        fields = run.header_fields()

        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute(_SQL_CREATE, fields).rowcount != 1:
                return False
            _insert_tags(conn, run.id, run.tags, fields["created_at"])
            return True

        return await self._call(run.id, op, "write")

    async def load(self, run_id: str) -> Loaded | None:
        def op(conn: sqlite3.Connection) -> Loaded | None:
            row = conn.execute(_SQL_LOAD_RUN, (run_id,)).fetchone()
            if row is None:
                return None
            checkpoints = [
                Checkpoint(
                    seq=seq,
                    kind=kind,
                    name=name,
                    value=loads(value),
                    error=loads(error),
                    at=at,
                    attempts=attempts,
                )
                for seq, kind, name, value, error, at, attempts in conn.execute(
                    _SQL_LOAD_CHECKPOINTS, (run_id,)
                )
            ]
            signals = [
                Signal(id=id_, name=name, payload=loads(payload), at=at)
                for id_, name, payload, at in conn.execute(_SQL_LOAD_SIGNALS, (run_id,))
            ]
            return Loaded(run=_run(row), checkpoints=checkpoints, signals=signals)

        return await self._call(run_id, op, "read")

    async def append(self, run_id: str, checkpoint: Checkpoint) -> None:
        cp = checkpoint
        params = (
            run_id,
            cp.seq,
            cp.kind,
            cp.name,
            dumps(cp.value),
            None if cp.error is None else dumps(cp.error),
            cp.at,
            cp.attempts,
        )

        def op(conn: sqlite3.Connection) -> None:
            try:
                inserted = conn.execute(_SQL_APPEND, params).rowcount
            except sqlite3.IntegrityError:
                raise Conflict(
                    f"run {run_id!r} already has seq {cp.seq} ({cp.kind} {cp.name!r})",
                    run_id=run_id,
                ) from None
            if inserted != 1:
                raise Conflict(f"run {run_id!r} does not exist", run_id=run_id)

        await self._call(run_id, op)

    async def save(self, run: Run) -> Run:
        fields = run.header_fields()

        def op(conn: sqlite3.Connection) -> Run:
            stored = conn.execute(_SQL_SAVE_READ, (run.id,)).fetchone()
            # The conditional UPDATE is what decides; the read before it (under the same write
            # lock) only supplies the lease to return and tells whether the tag rows change.
            if stored is None or conn.execute(_SQL_SAVE, fields).rowcount != 1:
                raise Conflict(
                    f"run {run.id!r} changed since revision {run.revision}", run_id=run.id
                )
            tags, created_at, lease_token, lease_expires_at = stored
            if tags != fields["tags"] or created_at != fields["created_at"]:
                conn.execute(_SQL_TAG_DELETE, (run.id,))
                _insert_tags(conn, run.id, run.tags, fields["created_at"])
            return replace(
                run.copy(),
                revision=run.revision + 1,
                lease_token=lease_token,
                lease_expires_at=lease_expires_at,
            )

        return await self._call(run.id, op, "write")

    async def signal(self, run_id: str, signal: Signal) -> bool:
        params = (run_id, signal.id, signal.name, dumps(signal.payload), signal.at)

        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute(_SQL_SIGNAL_INSERT, params).rowcount == 1:
                conn.execute(_SQL_SIGNAL_WAKE, (run_id, signal.at))
                return True
            # Nothing inserted: the run is missing (False) or the signal id is buffered (True).
            return conn.execute(_SQL_EXISTS, (run_id,)).fetchone() is not None

        return await self._call(run_id, op, "write")

    async def due(self, now: float, limit: int) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute(_SQL_DUE, (now, max(limit, 0)))]

        return await self._call(None, op)

    async def delete(self, run_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            for statement in _SQL_DELETE:
                conn.execute(statement, (run_id,))

        await self._call(run_id, op, "write")

    async def list_runs(self, query: RunQuery) -> RunPage:
        tagged = query.tag is not None
        # Time and cursor conditions go on the driving table, so its index serves them.
        key = "run_tags.created_at" if tagged else "runs.created_at"
        key_id = "run_tags.run_id" if tagged else "runs.id"
        where: list[str] = []
        params: list[Any] = []
        for condition, value in (
            ("run_tags.tag = ?", query.tag),
            ("runs.workflow = ?", query.workflow),
            ("runs.status = ?", query.status),
            ("runs.parent_id = ?", query.parent_id),
            (f"{key} >= ?", query.created_after),
            (f"{key} < ?", query.created_before),
        ):
            if value is not None:
                where.append(condition)
                params.append(value)
        if query.cursor:
            where.append(f"({key}, {key_id}) < (?, ?)")
            params.extend(decode_cursor(query.cursor))
        sql = _SQL_LIST_BY_TAG if tagged else _SQL_LIST
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {key} DESC, {key_id} DESC LIMIT ?"
        params.append(max(query.limit, 0) + 1)

        def op(conn: sqlite3.Connection) -> list[Run]:
            return [_run(row) for row in conn.execute(sql, params)]

        return self._page(await self._call(None, op), query)

    # -- the lease -------------------------------------------------------------------------------

    async def acquire(
        self,
        run_id: str,
        token: str,
        ttl: float,
        *,
        now: float | None = None,
        due_only: bool = False,
    ) -> bool:
        now = self._now(now)
        params = (token, now + ttl, run_id, now)
        sql = _SQL_ACQUIRE + (" AND wake_at IS NOT NULL AND wake_at <= ?4" if due_only else "")

        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(sql, params).rowcount == 1

        return await self._call(run_id, op)

    async def release(self, run_id: str, token: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(_SQL_RELEASE, (run_id, token))

        await self._call(run_id, op)


def _run(row: Sequence[Any]) -> Run:
    return Run.from_fields(dict(zip(_RUN_COLUMNS, row, strict=True)))


def _insert_tags(conn: sqlite3.Connection, run_id: str, tags: list[str], created_at: Any) -> None:
    if tags:
        conn.executemany(_SQL_TAG_INSERT, [(tag, created_at, run_id) for tag in tags])
