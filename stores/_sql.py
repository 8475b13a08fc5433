"""The SQL every SQLite-dialect store runs: one module, two transports.

``SqliteStore`` (a local file through stdlib :mod:`sqlite3`, statements run inline on the event
loop) and ``LibSQLStore`` (Turso or sqld over Hrana-over-HTTP, or a ``file:`` database) share
everything here: the schema and its migrations, every statement, and :class:`SqlStore`, which
implements the whole store contract on three primitives a transport provides
(:class:`Database`): run one statement, run a list of statements as one atomic transaction, run
a few reads independently. No SQL text lives anywhere else.

One operation, one round trip. Every contract operation is one statement (autocommit) or one
transaction of statements sent together (:meth:`Database.transaction`; over Hrana one HTTP
request whose ``BEGIN IMMEDIATE ... COMMIT`` runs on the server). Nothing reads, decides in
Python and writes back: a transaction cannot wait for the client between its statements, so
every decision is a condition in SQL. The rule that keeps such a transaction all-or-nothing:

    every write of a transaction carries the same guard (a condition on the rows as they are
    when the transaction starts), and only the last statement may change what the guard reads.

So the guard is true for every statement or false for every statement, and the result of the
last one (rows changed, or rows ``RETURNING``) says which. ``save`` rewrites the tag rows first
and the header last (the header holds the ``revision`` its guard compares); ``append(...,
consumes=)`` inserts the checkpoint first and marks the signal consumed last (the guard is
"that signal is pending"). A statement that fails (a duplicate ``seq``) rolls the whole
transaction back. The write lock is taken when the transaction begins (``BEGIN IMMEDIATE``),
so no other writer runs between the statements of one: a guard cannot go stale half way.

The schema. Version 1 is what Heron 0.2's ``SqliteStore`` wrote; every later version only adds
to it (``ALTER TABLE ... ADD COLUMN``, new indexes, new tables), so a database is brought up
to date by running the migrations it has not had, in one transaction, and a fresh database is
made by the same path (version 1, then each migration), so fresh and migrated databases are
the same. The version is recorded in the ``heron_schema`` table: Turso refuses ``PRAGMA
user_version`` writes ("SQL not allowed statement"), so that pragma is written only where the
transport allows it (local SQLite files, so that a Heron before version 2 refuses them). A
database with the four version-1 tables and no ``heron_schema`` is at version 1.

Tables (``run_tags`` indexes tags for ``list_runs``; the child tables are ``WITHOUT ROWID``,
clustered on their key, so appending is one B-tree insert and loading a history one range
scan)::

    runs          id                      the header; partial index on (wake_at, id) for due()
    checkpoints   (run_id, seq)           the history; outcome_order (v2)
    signals       (run_id, id)            buffered signals; consumed_by (v2): the seq of the
                                          checkpoint that consumed it, NULL while pending;
                                          partial index signals_pending (v2) for load()
    run_tags      (tag, created_at, run_id)
    heron_schema  id = 1                  the schema version (v2)

Errors a transport raises (all :class:`~heron.stores.contract.StoreError`)::

    StoreError
     └── SqlError            a statement failed; ``code`` is SQLite's (or sqld's) error code
          ├── SqlConstraint  a UNIQUE / PRIMARY KEY constraint failed (a create-only write lost)
          └── SqlNoSchema    "no such table" / "no such column": the schema is missing or behind
"""

from __future__ import annotations

import abc
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final, NamedTuple, Protocol

from heron.stores.contract import (
    MAX_PENDING_SIGNALS,
    TERMINAL_STATUSES,
    Acquired,
    Checkpoint,
    Conflict,
    Loaded,
    Run,
    RunPage,
    RunQuery,
    RunSummary,
    SchemaMissing,
    Signal,
    StoreError,
    TooManySignals,
    WorkflowStore,
    decode_cursor,
    dumps,
    loads,
)

__all__ = [
    "SCHEMA_VERSION",
    "Database",
    "Result",
    "SqlConstraint",
    "SqlError",
    "SqlNoSchema",
    "SqlStore",
    "Statement",
]

#: The schema version this Heron writes and reads.
SCHEMA_VERSION: Final = 2

#: One statement and its positional arguments (``?NNN`` parameters, numbered from 1).
Statement = tuple[str, Sequence[Any]]


class Result(NamedTuple):
    """What one statement returned: its rows (tuples of SQLite values) and, for a write
    without ``RETURNING``, how many rows it changed (0 for a read)."""

    rows: list[tuple[Any, ...]]
    changes: int


class SqlError(StoreError):
    """A statement failed. ``code`` is the transport's error code (``SQLITE_CONSTRAINT``...)
    when it gave one; the message names the database, the operation and the run."""

    def __init__(self, message: str, *, run_id: str | None = None, code: str | None = None):
        super().__init__(message, run_id=run_id)
        self.code = code


class SqlConstraint(SqlError):
    """A UNIQUE or PRIMARY KEY constraint failed: a create-only write found its key taken."""


class SqlNoSchema(SqlError):
    """A table or column the statement names does not exist: the schema is missing or older."""


def classify(message: str) -> type[SqlError]:
    """The :class:`SqlError` class for an SQLite error message (the same texts locally and
    from sqld, which passes SQLite's messages through)."""
    text = message.lower()
    if "unique constraint failed" in text:
        return SqlConstraint
    if any(
        m in text
        for m in ("no such table", "no such column", "has no column named", "no such index")
    ):
        return SqlNoSchema
    return SqlError


class Database(Protocol):
    """A transport for SQL: what :class:`SqlStore` needs of a database connection.

    ``op`` and ``run_id`` only name the operation in error messages. Every method raises
    :class:`SqlConstraint` or :class:`SqlNoSchema` for those failures, :class:`SqlError` for
    any other failing statement, and :class:`~heron.stores.contract.StoreError` when the
    database cannot be reached (the message says whether a write may have been applied).
    """

    #: Names the database in messages (a path, or a URL with its credentials masked).
    where: str
    #: Whether ``PRAGMA`` writes are allowed (local SQLite: yes; Turso: no).
    pragmas: bool

    async def execute(self, op: str, run_id: str | None, sql: str, args: Sequence[Any]) -> Result:
        """Run one statement on its own (autocommit): atomic by itself."""
        ...

    async def transaction(
        self, op: str, run_id: str | None, statements: Sequence[Statement], *, write: bool
    ) -> list[Result]:
        """Run ``statements`` in one transaction (``BEGIN IMMEDIATE`` when ``write``, else a
        read snapshot) and commit; any failure rolls all of them back and raises."""
        ...

    async def each(self, op: str, statements: Sequence[Statement]) -> list[Result | SqlError]:
        """Run read-only ``statements`` independently; a failing one gives its error."""
        ...

    async def close(self) -> None: ...


# -- the schema ----------------------------------------------------------------------------------

#: Version 1, exactly as Heron 0.2's SqliteStore created it (its ``PRAGMA user_version = 1``
#: aside). Never edit: migrations add to it.
V1: Final[tuple[str, ...]] = (
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
)

#: The tables of version 1; a database that has them all and no ``heron_schema`` is version 1.
V1_TABLES: Final = ("runs", "checkpoints", "signals", "run_tags")

#: What each version adds to the one before it. Only ever add: a new column (nullable, or with
#: a default), an index, a table.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    2: (
        # Checkpoint.order: where the outcome came in the order outcomes were handed back
        "ALTER TABLE checkpoints ADD COLUMN outcome_order INTEGER",
        # the seq of the checkpoint that consumed the signal; NULL while it is pending
        "ALTER TABLE signals ADD COLUMN consumed_by INTEGER",
        # Partial: a run's pending signals, in load order, without reading consumed ones (they
        # stay, so their ids deduplicate); also what the max_pending count reads.
        "CREATE INDEX IF NOT EXISTS signals_pending ON signals (run_id, at, id)"
        " WHERE consumed_by IS NULL",
        "CREATE TABLE IF NOT EXISTS heron_schema ("
        "id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
    ),
}

TABLES: Final = (*V1_TABLES, "heron_schema")

SQL_SCHEMA_TABLES: Final = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ("
    + ", ".join(f"'{t}'" for t in TABLES)
    + ")"
)
SQL_SCHEMA_VERSION: Final = "SELECT version FROM heron_schema WHERE id = 1"
SQL_RECORD_VERSION: Final = (
    "INSERT INTO heron_schema (id, version) VALUES (1, ?1)"
    " ON CONFLICT (id) DO UPDATE SET version = excluded.version"
)


def schema_version(tables: set[str], recorded: int | None) -> int:
    """The version of a database with these Heron ``tables`` and ``recorded`` version (the
    ``heron_schema`` row, ``None`` without one): 0 is empty, 1 is Heron 0.2's schema."""
    if recorded is not None:
        return recorded
    return 1 if tables.issuperset(V1_TABLES) else 0


def migration(version: int, *, pragmas: bool) -> list[Statement]:
    """The statements that bring a database at ``version`` (0: empty) to
    :data:`SCHEMA_VERSION`, to run in one transaction. A second instance that migrated first
    makes an ``ALTER TABLE`` fail (duplicate column) and this transaction roll back whole."""
    statements: list[Statement] = []
    if version < 1:
        statements += [(sql, ()) for sql in V1]
    for step in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
        statements += [(sql, ()) for sql in MIGRATIONS[step]]
    statements.append((SQL_RECORD_VERSION, (SCHEMA_VERSION,)))
    if pragmas:  # so that a Heron that knows only PRAGMA user_version refuses a newer file
        statements.append((f"PRAGMA user_version = {SCHEMA_VERSION}", ()))
    return statements


# -- statements ----------------------------------------------------------------------------------
#
# Parameters are positional and numbered (?1, ?2...), so one tuple binds the same way through
# sqlite3 and through Hrana's "args"; sqlite3 caches a prepared statement per text.

RUN_COLUMNS: Final = tuple(Run(id="", workflow="").header_fields())
_RUN_SELECT: Final = ", ".join(RUN_COLUMNS)
_RUN_PARAMS: Final = ", ".join(f"?{i}" for i in range(1, len(RUN_COLUMNS) + 1))
SUMMARY_COLUMNS: Final = (
    "id",
    "workflow",
    "version",
    "status",
    "error",
    "parent_id",
    "tags",
    "created_at",
    "updated_at",
    "wake_at",
)
_TERMINAL_SQL: Final = ", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES))

# create: the tag rows first, guarded on the run not existing yet, then the header, which makes
# the guard false (so it goes last). Two creates of one id cannot interleave: the second one's
# transaction starts after the first one committed, sees the run, and writes nothing.
SQL_CREATE: Final = (
    f"INSERT INTO runs ({_RUN_SELECT}) VALUES ({_RUN_PARAMS}) ON CONFLICT (id) DO NOTHING"
)
SQL_CREATE_TAGS: Final = (
    "INSERT OR IGNORE INTO run_tags (tag, created_at, run_id)"
    " SELECT DISTINCT value, ?2, ?1 FROM json_each(?3)"
    " WHERE NOT EXISTS (SELECT 1 FROM runs WHERE id = ?1)"
)

SQL_LOAD_RUN: Final = f"SELECT {_RUN_SELECT} FROM runs WHERE id = ?1"
SQL_LOAD_CHECKPOINTS: Final = (
    "SELECT seq, kind, name, value, error, at, attempts, outcome_order FROM checkpoints"
    " WHERE run_id = ?1 ORDER BY seq"
)
# consumed_by IS NULL matches the partial index signals_pending, which serves the order too
SQL_LOAD_SIGNALS: Final = (
    "SELECT id, name, payload, at FROM signals"
    " WHERE run_id = ?1 AND consumed_by IS NULL ORDER BY at, id"
)

# append, the hot path: one statement. Create-only (a taken seq fails the PRIMARY KEY) and only
# under an existing run, decided by the statement itself, so a delete cannot slip in between a
# check and the insert.
SQL_APPEND: Final = (
    "INSERT INTO checkpoints"
    " (run_id, seq, kind, name, value, error, at, attempts, outcome_order)"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1)"
)
# append(..., consumes=?10): the guard is "signal ?10 is pending" (a signal row exists only
# under an existing run). The checkpoint goes in first (a taken seq fails it, and the whole
# transaction with it), the signal is marked consumed last:
#
#   executor A: append(seq 7, consumes s1)     executor B: append(seq 9, consumes s1)
#   BEGIN IMMEDIATE                             BEGIN IMMEDIATE  (waits for A's lock)
#   INSERT seq 7 WHERE s1 pending    -> 1
#   UPDATE s1 SET consumed_by = 7    -> 1
#   COMMIT
#                                               INSERT seq 9 WHERE s1 pending    -> 0
#                                               UPDATE ... WHERE s1 pending      -> 0
#                                               COMMIT: nothing written -> Conflict
SQL_APPEND_CONSUMING: Final = (
    "INSERT INTO checkpoints"
    " (run_id, seq, kind, name, value, error, at, attempts, outcome_order)"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS ("
    "SELECT 1 FROM signals WHERE run_id = ?1 AND id = ?10 AND consumed_by IS NULL)"
)
SQL_CONSUME: Final = (
    "UPDATE signals SET consumed_by = ?2 WHERE run_id = ?1 AND id = ?3 AND consumed_by IS NULL"
)

# save and rewind: the guard is "the stored revision is ?rev". Tag rows are rewritten (only when
# the tags or created_at changed) before the header, whose UPDATE bumps the revision and so
# goes last; RETURNING hands back the lease the header keeps.
#
#   executor: save(revision 4)                  sender: signal(s1)
#   BEGIN IMMEDIATE                             BEGIN IMMEDIATE  (waits)
#   tags WHERE revision = 4        -> rewritten
#   UPDATE runs WHERE revision = 4 -> 1 row, revision 5
#   COMMIT
#                                               UPDATE runs SET wake_at = min(..), revision 6
#                                               INSERT signal
#                                               COMMIT: the run is due at the signal
#
# Had the signal committed first (revision 5), every statement of the save matches nothing and
# the save raises Conflict: the executor reloads and sees the signal.
# (?1 run id, ?2 revision, ?3 tags as JSON, ?4 created_at)
_TAGS_CHANGED: Final = (
    "EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND revision = ?2"
    " AND (tags IS NOT ?3 OR created_at IS NOT ?4))"
)
SQL_TAGS_CLEAR: Final = f"DELETE FROM run_tags WHERE run_id = ?1 AND {_TAGS_CHANGED}"
SQL_TAGS_WRITE: Final = (
    "INSERT OR IGNORE INTO run_tags (tag, created_at, run_id)"
    f" SELECT DISTINCT value, ?4, ?1 FROM json_each(?3) WHERE {_TAGS_CHANGED}"
)
#: What rewind writes: the header without the lease, which is acquire's and release's.
REWIND_COLUMNS: Final = tuple(
    c for c in RUN_COLUMNS if c not in ("lease_token", "lease_expires_at")
)
#: What save writes: that without the input too, which only create and rewind write (it never
#: changes in between, and it can be a quarter of a megabyte to send at every suspension).
SAVE_COLUMNS: Final = tuple(c for c in REWIND_COLUMNS if c != "input")


def _header_update(columns: tuple[str, ...]) -> str:
    assignments = ", ".join(
        f"{c} = ?{i}" for i, c in enumerate(columns, 1) if c not in ("id", "revision")
    )
    return (
        f"UPDATE runs SET {assignments}, revision = revision + 1"
        f" WHERE id = ?{columns.index('id') + 1} AND revision = ?{columns.index('revision') + 1}"
        " RETURNING lease_token, lease_expires_at"
    )


SQL_SAVE: Final = _header_update(SAVE_COLUMNS)
SQL_REWIND_HEADER: Final = _header_update(REWIND_COLUMNS)

#: consumed_by of a signal consumed in a history that a rewind dropped without restoring it: a
#: seq no history reaches, so no later rewind makes it pending again.
CONSUMED_BY_GONE: Final = -(2**62)

# rewind (guard: revision ?2): signals consumed from ?3 on are pending again (?4 = 1: restore)
# or consumed for good (?4 = 0: continue_as_new), checkpoints from ?3 on go, and so do patch
# markers decided at ?3 or later (a marker's value is the seq at which it was decided; one
# without an integer value counts as decided before, unless ?3 is 0).
SQL_REWIND_SIGNALS: Final = (
    f"UPDATE signals SET consumed_by = CASE WHEN ?4 THEN NULL ELSE {CONSUMED_BY_GONE} END"
    " WHERE run_id = ?1 AND consumed_by >= ?3"
    " AND EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND revision = ?2)"
)
SQL_REWIND_CHECKPOINTS: Final = (
    "DELETE FROM checkpoints WHERE run_id = ?1"
    " AND EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND revision = ?2)"
    " AND (seq >= ?3 OR (kind = 'patch' AND CASE"
    " WHEN json_valid(value) AND json_type(value) = 'integer' THEN CAST(value AS INTEGER)"
    " WHEN ?3 = 0 THEN 0 ELSE -1 END >= ?3))"
)


# signal: the guard is "the run exists, has never seen this id, and holds fewer than ?6 pending
# signals". The header is made due first (its UPDATE does not change what the guard reads),
# the signal row goes in last; the closing read tells a missing run from a duplicate id from a
# full buffer when nothing was written.
#
#   sender A: signal(s1)                        sender B: signal(s1)  (a retry)
#   BEGIN IMMEDIATE                             BEGIN IMMEDIATE  (waits)
#   UPDATE runs WHERE s1 unseen  -> due, rev+1
#   INSERT s1 WHERE s1 unseen    -> 1
#   COMMIT
#                                               UPDATE runs WHERE s1 unseen  -> 0
#                                               INSERT s1 WHERE s1 unseen    -> 0
#                                               SELECT: the run and s1 exist -> True
def _signal_guard(max_pending: str) -> str:
    return (
        "NOT EXISTS (SELECT 1 FROM signals WHERE run_id = ?1 AND id = ?2)"
        # INDEXED BY: without statistics the planner prefers the primary key, which would
        # also walk the run's consumed signals (they stay, to deduplicate)
        " AND (SELECT count(*) FROM (SELECT 1 FROM signals INDEXED BY signals_pending"
        f" WHERE run_id = ?1 AND consumed_by IS NULL LIMIT {max_pending})) < {max_pending}"
    )


# (?1 run id, ?2 signal id, ?3 at, ?4 max_pending)
SQL_SIGNAL_WAKE: Final = (
    "UPDATE runs SET wake_at = CASE"
    f" WHEN status IN ({_TERMINAL_SQL}) THEN wake_at"
    " WHEN wake_at IS NULL THEN ?3"
    " ELSE min(wake_at, ?3) END,"
    f" revision = revision + 1 WHERE id = ?1 AND {_signal_guard('?4')}"
)
# (?1 run id, ?2 signal id, ?3 name, ?4 payload, ?5 at, ?6 max_pending)
SQL_SIGNAL_INSERT: Final = (
    "INSERT INTO signals (run_id, id, name, payload, at) SELECT ?1, ?2, ?3, ?4, ?5"
    f" WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1) AND {_signal_guard('?6')}"
)
SQL_SIGNAL_CHECK: Final = (
    "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1),"
    " EXISTS (SELECT 1 FROM signals WHERE run_id = ?1 AND id = ?2)"
)

SQL_DUE: Final = (
    "SELECT id FROM runs WHERE wake_at IS NOT NULL AND wake_at <= ?1 ORDER BY wake_at, id LIMIT ?2"
)

SQL_DELETE: Final = (
    "DELETE FROM checkpoints WHERE run_id = ?1",
    "DELETE FROM signals WHERE run_id = ?1",
    "DELETE FROM run_tags WHERE run_id = ?1",
    "DELETE FROM runs WHERE id = ?1",
)

# acquire: the UPDATE decides; the read before it, in the same write transaction, only tells
# FREE from RENEWED from TAKEN_OVER.
#
#   executor A: acquire(r, "a")                 executor B: acquire(r, "b")
#   BEGIN IMMEDIATE                             BEGIN IMMEDIATE  (waits)
#   UPDATE ... WHERE lease is free  -> 1
#   COMMIT
#                                               UPDATE ... WHERE lease is free  -> 0
#
# The condition is evaluated by the UPDATE itself under the write lock, so the second sees the
# first one's token and an unexpired lease. Reading the lease and writing it from the client
# (check-then-set) would let both see it free and both win. The lease is free when it has no
# expiry or has expired; its own holder may always renew it.
SQL_LEASE_HOLDER: Final = "SELECT lease_token FROM runs WHERE id = ?1"
SQL_ACQUIRE: Final = (
    "UPDATE runs SET lease_token = ?1, lease_expires_at = ?2, wake_at = ?2"
    f" WHERE id = ?3 AND status NOT IN ({_TERMINAL_SQL})"
    " AND (lease_expires_at IS NULL OR lease_expires_at <= ?4 OR lease_token = ?1)"
)
SQL_ACQUIRE_DUE: Final = SQL_ACQUIRE + " AND wake_at IS NOT NULL AND wake_at <= ?4"
SQL_RELEASE: Final = (
    "UPDATE runs SET lease_token = NULL, lease_expires_at = NULL WHERE id = ?1 AND lease_token = ?2"
)

# list_runs: a constant select, then filter fragments in a fixed order, so the few shapes a
# caller can produce each stay one cached statement. With a tag, run_tags drives the join
# (CROSS JOIN fixes the order) and its (tag, created_at, run_id) key gives newest-first order.
_SQL_LIST: Final = f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM runs"
_SQL_LIST_BY_TAG: Final = (
    "SELECT "
    + ", ".join(f"runs.{c}" for c in SUMMARY_COLUMNS)
    + " FROM run_tags CROSS JOIN runs ON runs.id = run_tags.run_id"
)


def list_runs_statement(query: RunQuery) -> Statement:
    """The one SELECT that answers ``query`` (one row more than a page, to know if there is
    a next one). Raises ``ValueError`` for a cursor Heron did not issue."""
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
    return sql, params


# -- rows to records -----------------------------------------------------------------------------


def run_from_row(row: Sequence[Any]) -> Run:
    return Run.from_fields(dict(zip(RUN_COLUMNS, row, strict=True)))


def summary_from_row(row: Sequence[Any]) -> RunSummary:
    (id_, workflow, version, status, error, parent_id, tags, created, updated, wake_at) = row
    return RunSummary(
        id=id_,
        workflow=workflow,
        version=version,
        status=status,
        error=loads(error),
        parent_id=parent_id,
        tags=loads(tags) or [],
        created_at=float(created),
        updated_at=float(updated),
        wake_at=None if wake_at is None else float(wake_at),
    )


def checkpoint_from_row(row: Sequence[Any]) -> Checkpoint:
    seq, kind, name, value, error, at, attempts, order = row
    return Checkpoint(
        seq=int(seq),
        kind=kind,
        name=name,
        value=loads(value),
        error=loads(error),
        at=float(at),
        attempts=int(attempts),
        order=None if order is None else int(order),
    )


def signal_from_row(row: Sequence[Any]) -> Signal:
    id_, name, payload, at = row
    return Signal(id=id_, name=name, payload=loads(payload), at=float(at))


def run_params(run: Run) -> tuple[Any, ...]:
    """The header's columns in :data:`RUN_COLUMNS` order (JSON parts encoded once)."""
    return tuple(run.header_fields().values())


def header_params(fields: dict[str, Any], columns: tuple[str, ...]) -> tuple[Any, ...]:
    """``columns`` of ``Run.header_fields()``, in that order."""
    return tuple(fields[c] for c in columns)


def checkpoint_params(run_id: str, cp: Checkpoint) -> tuple[Any, ...]:
    """?1-?9 of :data:`SQL_APPEND`; the value is written as the runtime encoded it."""
    return (
        run_id,
        cp.seq,
        cp.kind,
        cp.name,
        cp.value_json(),
        cp.error_json(),
        cp.at,
        cp.attempts,
        cp.order,
    )


# -- the store -------------------------------------------------------------------------------------


class SqlStore(WorkflowStore):
    """The store contract on SQL, over whichever :class:`Database` a subclass gives it.

    A subclass provides the transport (:meth:`_database`) and ``close``. The schema is checked
    on an instance's first call (one read; over Hrana one request) and, with ``auto_schema``,
    created or migrated then; without it a missing or older schema raises
    :class:`~heron.stores.contract.SchemaMissing` from every call until ``ensure_schema()``.
    Every method is one call of the transport: one statement, or one transaction.
    """

    def __init__(self, *, auto_schema: bool = True) -> None:
        self.auto_schema = auto_schema
        self._ready = False

    @abc.abstractmethod
    def _database(self) -> Database:
        """The transport, made on first use (never at import or construction)."""

    # -- the schema --------------------------------------------------------------------------

    async def _prepare(self, run_id: str | None, *, create: bool) -> None:
        """Check the schema; create or migrate it when ``create``, else raise
        :class:`SchemaMissing` if it is missing or behind."""
        db = self._database()
        version = await self._schema_version(db)
        if version == SCHEMA_VERSION:
            self._ready = True
            return
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{db.where} holds Heron schema version {version}, newer than this Heron "
                f"supports ({SCHEMA_VERSION}); upgrade Heron",
                run_id=run_id,
            )
        if not create:
            raise self._schema_missing(db, version, run_id)
        try:
            await db.transaction(
                "ensure_schema", run_id, migration(version, pragmas=db.pragmas), write=True
            )
        except SqlError:
            # Another instance migrated first (its ALTER TABLE made ours fail and roll back).
            if await self._schema_version(db) != SCHEMA_VERSION:
                raise
        self._ready = True

    async def _schema_version(self, db: Database) -> int:
        tables, recorded = await db.each(
            "ensure_schema", [(SQL_SCHEMA_TABLES, ()), (SQL_SCHEMA_VERSION, ())]
        )
        if isinstance(tables, SqlError):
            raise tables
        names = {row[0] for row in tables.rows}
        if isinstance(recorded, SqlError):
            if "heron_schema" in names:  # the table is there, so that error is real
                raise recorded
            return schema_version(names, None)
        version = schema_version(names, int(recorded.rows[0][0]) if recorded.rows else None)
        missing = set(TABLES) - names
        if version >= SCHEMA_VERSION and missing:
            raise StoreError(
                f"{db.where} records Heron schema version {version} but lacks the table(s) "
                f"{', '.join(sorted(missing))}; restore them from a backup"
            )
        return version

    @staticmethod
    def _schema_missing(db: Database, version: int, run_id: str | None) -> SchemaMissing:
        state = (
            "do not exist"
            if version == 0
            else f"are at schema version {version}, this Heron needs {SCHEMA_VERSION}"
        )
        return SchemaMissing(
            f"the Heron tables in {db.where} {state}; run `heron schema ensure` or "
            "`await store.ensure_schema()` (or open the store with auto_schema=True)",
            run_id=run_id,
        )

    async def ensure_schema(self) -> None:
        """Create the tables and indexes, or migrate them to this version, if needed (whatever
        ``auto_schema`` says). Only ever adds. Raises :class:`StoreError` for a database whose
        schema is newer than this Heron."""
        await self._prepare(None, create=True)

    # -- the primitives, through the schema check ----------------------------------------------

    async def _execute(self, op: str, run_id: str | None, sql: str, args: Sequence[Any]) -> Result:
        if not self._ready:
            await self._prepare(run_id, create=self.auto_schema)
        try:
            return await self._database().execute(op, run_id, sql, args)
        except SqlNoSchema as exc:
            raise self._lost_schema(exc, run_id) from exc

    async def _transaction(
        self, op: str, run_id: str | None, statements: Sequence[Statement], *, write: bool = True
    ) -> list[Result]:
        if not self._ready:
            await self._prepare(run_id, create=self.auto_schema)
        try:
            return await self._database().transaction(op, run_id, statements, write=write)
        except SqlNoSchema as exc:
            raise self._lost_schema(exc, run_id) from exc

    def _lost_schema(self, exc: SqlNoSchema, run_id: str | None) -> SchemaMissing:
        """A table went away after the check (dropped by hand): check again next time."""
        self._ready = False
        return SchemaMissing(
            f"{exc}; the Heron schema is incomplete: run `heron schema ensure` or "
            "`await store.ensure_schema()`",
            run_id=run_id,
        )

    # -- runs --------------------------------------------------------------------------------

    async def create(self, run: Run) -> bool:
        params = run_params(run)
        if not run.tags:
            return (await self._execute("create", run.id, SQL_CREATE, params)).changes == 1
        fields = run.header_fields()
        tags = (run.id, fields["created_at"], fields["tags"])
        results = await self._transaction(
            "create", run.id, [(SQL_CREATE_TAGS, tags), (SQL_CREATE, params)]
        )
        return results[-1].changes == 1

    async def load(self, run_id: str) -> Loaded | None:
        args = (run_id,)
        header, checkpoints, signals = await self._transaction(
            "load",
            run_id,
            [(SQL_LOAD_RUN, args), (SQL_LOAD_CHECKPOINTS, args), (SQL_LOAD_SIGNALS, args)],
            write=False,
        )
        if not header.rows:
            return None
        return Loaded(
            run=run_from_row(header.rows[0]),
            checkpoints=[checkpoint_from_row(row) for row in checkpoints.rows],
            signals=[signal_from_row(row) for row in signals.rows],
        )

    async def append(
        self, run_id: str, checkpoint: Checkpoint, *, consumes: str | None = None
    ) -> None:
        cp = checkpoint
        params = checkpoint_params(run_id, cp)
        try:
            if consumes is None:
                inserted = (await self._execute("append", run_id, SQL_APPEND, params)).changes
            else:
                results = await self._transaction(
                    "append",
                    run_id,
                    [
                        (SQL_APPEND_CONSUMING, (*params, consumes)),
                        (SQL_CONSUME, (run_id, cp.seq, consumes)),
                    ],
                )
                inserted = results[0].changes
        except SqlConstraint:
            raise Conflict(
                f"run {run_id!r} already has seq {cp.seq} ({cp.kind} {cp.name!r})",
                run_id=run_id,
            ) from None
        if inserted != 1:
            if consumes is None:
                raise Conflict(f"run {run_id!r} does not exist", run_id=run_id)
            raise Conflict(
                f"run {run_id!r} has no pending signal {consumes!r} for seq {cp.seq} "
                "(never sent, consumed already, or the run does not exist)",
                run_id=run_id,
            )

    def _header_statements(self, run: Run, *, rewind: bool) -> list[Statement]:
        """The tag rewrite (guarded on the revision) and the header UPDATE, last."""
        fields = run.header_fields()
        tags = (run.id, run.revision, fields["tags"], fields["created_at"])
        header = (
            (SQL_REWIND_HEADER, header_params(fields, REWIND_COLUMNS))
            if rewind
            else (SQL_SAVE, header_params(fields, SAVE_COLUMNS))
        )
        return [(SQL_TAGS_CLEAR, tags), (SQL_TAGS_WRITE, tags), header]

    def _saved(self, run: Run, result: Result) -> Run:
        """The run as saved: revision bumped, the stored lease. (Its input is the caller's:
        save never writes it, and the caller holds what create or rewind wrote.)"""
        if not result.rows:
            raise Conflict(f"run {run.id!r} changed since revision {run.revision}", run_id=run.id)
        lease_token, lease_expires_at = result.rows[0]
        return replace(
            run.copy(),
            revision=run.revision + 1,
            lease_token=lease_token,
            lease_expires_at=None if lease_expires_at is None else float(lease_expires_at),
        )

    async def save(self, run: Run) -> Run:
        results = await self._transaction(
            "save", run.id, self._header_statements(run, rewind=False)
        )
        return self._saved(run, results[-1])

    async def rewind(self, run: Run, seq: int, *, restore_signals: bool = True) -> Run:
        guard = (run.id, run.revision, seq)
        statements: list[Statement] = [
            (SQL_REWIND_SIGNALS, (*guard, int(restore_signals))),
            (SQL_REWIND_CHECKPOINTS, guard),
            *self._header_statements(run, rewind=True),
        ]
        results = await self._transaction("rewind", run.id, statements)
        return self._saved(run, results[-1])

    async def signal(
        self, run_id: str, signal: Signal, *, max_pending: int = MAX_PENDING_SIGNALS
    ) -> bool:
        ids = (run_id, signal.id)
        _, inserted, check = await self._transaction(
            "signal",
            run_id,
            [
                (SQL_SIGNAL_WAKE, (*ids, signal.at, max_pending)),
                (
                    SQL_SIGNAL_INSERT,
                    (*ids, signal.name, dumps(signal.payload), signal.at, max_pending),
                ),
                (SQL_SIGNAL_CHECK, ids),
            ],
        )
        if inserted.changes == 1:
            return True
        run_exists, seen = check.rows[0]
        if not run_exists:
            return False
        if seen:
            return True  # a duplicate id: stored (or consumed) already, nothing changes
        raise TooManySignals(run_id, max_pending)

    async def due(self, now: float, limit: int) -> list[str]:
        # "everything scheduled" (now = inf) as the largest float: the same for every finite
        # wake_at, and Hrana's JSON cannot carry an infinity
        now = min(now, sys.float_info.max)
        result = await self._execute("due", None, SQL_DUE, (now, max(limit, 0)))
        return [row[0] for row in result.rows]

    async def delete(self, run_id: str) -> None:
        await self._transaction("delete", run_id, [(sql, (run_id,)) for sql in SQL_DELETE])

    async def list_runs(self, query: RunQuery) -> RunPage:
        sql, params = list_runs_statement(query)
        result = await self._execute("list_runs", None, sql, params)
        return self._page([summary_from_row(row) for row in result.rows], query)

    # -- the lease -----------------------------------------------------------------------------

    async def acquire(
        self,
        run_id: str,
        token: str,
        ttl: float,
        *,
        now: float | None = None,
        due_only: bool = False,
    ) -> Acquired:
        now = self._now(now)
        args = (token, now + ttl, run_id, now)
        holder, taken = await self._transaction(
            "acquire",
            run_id,
            [(SQL_LEASE_HOLDER, (run_id,)), (SQL_ACQUIRE_DUE if due_only else SQL_ACQUIRE, args)],
        )
        if taken.changes != 1:
            return Acquired.NO
        previous = holder.rows[0][0]
        if previous is None:
            return Acquired.FREE
        return Acquired.RENEWED if previous == token else Acquired.TAKEN_OVER

    async def release(self, run_id: str, token: str) -> None:
        await self._execute("release", run_id, SQL_RELEASE, (run_id, token))
