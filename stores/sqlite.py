"""``SqliteStore``: the embedded default store, one SQLite file, stdlib :mod:`sqlite3` only.

The schema, every statement and the contract's logic live in :mod:`heron.stores._sql`, shared
with ``LibSQLStore`` (one SQL module, two transports); this module is the local transport,
:class:`SqliteConnection`, and the store that uses it. A run is a row of ``runs`` (the header),
rows of ``checkpoints`` keyed by ``(run_id, seq)`` and rows of ``signals`` keyed by
``(run_id, id)``; ``run_tags`` indexes tags for ``list_runs``. Both child tables are ``WITHOUT
ROWID``, clustered on their key, so appending is one B-tree insert and loading a history is one
range scan. ``due`` reads a partial index on ``runs(wake_at, id)`` that holds only the runs with
a ``wake_at``, so it never looks at runs that are not due; ``load`` reads a run's pending
signals from a partial index that leaves consumed ones out.

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
write lock, SQLite fails at once with "database is locked", and :meth:`SqliteConnection._call`
(the one helper every statement goes through) rolls back, ``await``-s a short jittered sleep
(1 ms growing to 50 ms) and tries again, until ``busy_timeout`` seconds have passed; then it
raises :class:`~heron.stores.contract.StoreError` naming the run. No ``await`` happens while a
transaction is open, so on one event loop every method is one indivisible step, as in
``MemoryStore``; a lock guards the connection against other threads (``check_same_thread`` is
off).

The connection is opened on first use, never at import or construction time; with
``auto_schema`` (the default) the schema is created (or migrated) then too. The schema version
is in the ``heron_schema`` table and, for tools and older Heron versions, ``PRAGMA
user_version``: a database written by Heron 0.2 (version 1) is migrated on first use, by adding
columns and indexes only (:mod:`heron.stores._sql`).
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from heron.stores._sql import (
    SQL_APPEND,
    Database,
    Result,
    SqlError,
    SqlStore,
    Statement,
    classify,
)
from heron.stores._url import parse_bool
from heron.stores.contract import Checkpoint, Conflict, StoreError

__all__ = ["SqliteConnection", "SqliteStore"]

T = TypeVar("T")
Transaction = Literal["read", "write"] | None

_SYNCHRONOUS: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_BACKOFF_FIRST: Final = 0.001
_BACKOFF_MAX: Final = 0.05


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _rows(cursor: sqlite3.Cursor) -> Result:
    rows = cursor.fetchall()
    return Result(rows, max(cursor.rowcount, 0))


class SqliteConnection:
    """The local transport of :mod:`heron.stores._sql` (a :class:`~heron.stores._sql.Database`):
    one stdlib :mod:`sqlite3` connection, opened on first use, statements run inline.

    ``path`` is a file (made absolute) or ``":memory:"``. ``make_dirs`` creates a missing parent
    directory (``SqliteStore``'s default ``.heron/``); without it a missing directory raises
    :class:`~heron.stores.contract.StoreError` saying so. ``connect`` replaces :meth:`open` as
    the way every call gets the connection (a store's hook; it must return :meth:`open`'s).
    """

    pragmas = True

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
        make_dirs: bool = True,
        connect: Callable[[], sqlite3.Connection] | None = None,
    ) -> None:
        self.file = path if path == ":memory:" else os.path.abspath(path)
        self.where = f"SQLite database {self.file}"
        self.synchronous = synchronous
        self.busy_timeout = float(busy_timeout)
        self.make_dirs = make_dirs
        self._connect = connect or self.open
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._lock = threading.Lock()

    def open(self) -> sqlite3.Connection:
        """The connection, opened now if it is not yet (WAL, busy timeout 0)."""
        if self._closed:
            raise StoreError(f"the store on {self.where} is closed")
        conn = self._conn
        if conn is None:
            if self.file != ":memory:":
                directory = os.path.dirname(self.file)
                if self.make_dirs:
                    os.makedirs(directory, exist_ok=True)
                elif not os.path.isdir(directory):
                    raise StoreError(
                        f"cannot open {self.where}: the directory {directory} does not exist "
                        "(create it first)"
                    )
            try:
                conn = sqlite3.connect(
                    self.file,
                    timeout=0,
                    isolation_level=None,
                    check_same_thread=False,
                    cached_statements=256,
                )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.where}: {exc}") from exc
            try:
                conn.execute("PRAGMA busy_timeout = 0")
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                conn.execute("PRAGMA journal_mode = WAL")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return conn

    async def _call(
        self,
        op: str,
        run_id: str | None,
        fn: Callable[[sqlite3.Connection], T],
        tx: Transaction = None,
    ) -> T:
        """Run ``fn`` on the connection, inline, inside ``tx``; retry while the file is locked.

        ``tx`` is ``None`` (one autocommit statement), ``"read"`` (``BEGIN``: one snapshot for
        several reads) or ``"write"`` (``BEGIN IMMEDIATE``: take the write lock up front, so the
        transaction cannot fail half way with a busy upgrade). ``fn`` may run more than once, so
        it must do nothing but execute statements. It never awaits, so nothing else on this
        event loop runs while a transaction is open.
        """
        deadline: float | None = None
        delay = _BACKOFF_FIRST
        while True:
            try:
                with self._lock:
                    conn = self._connect()
                    try:
                        if tx is None:
                            return fn(conn)
                        conn.execute("BEGIN IMMEDIATE" if tx == "write" else "BEGIN")
                        result = fn(conn)
                        conn.execute("COMMIT")
                        return result
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
            except sqlite3.Error as exc:
                if not (isinstance(exc, sqlite3.OperationalError) and _is_busy(exc)):
                    raise self._error(op, run_id, exc) from exc
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.busy_timeout
                if now >= deadline:
                    what = f"run {run_id!r}" if run_id is not None else "the store"
                    raise StoreError(
                        f"{self.where} stayed locked for {self.busy_timeout:g}s; "
                        f"gave up on {op} of {what}",
                        run_id=run_id,
                    ) from exc
                await asyncio.sleep(min(delay * (0.5 + random.random()), deadline - now))
                delay = min(delay * 2, _BACKOFF_MAX)

    def _error(self, op: str, run_id: str | None, exc: sqlite3.Error) -> SqlError:
        what = f" (run {run_id!r})" if run_id is not None else ""
        return classify(str(exc))(
            f"SQLite error in {self.file}, {op}{what}: {exc}",
            run_id=run_id,
            code=getattr(exc, "sqlite_errorname", None),
        )

    async def execute(self, op: str, run_id: str | None, sql: str, args: Sequence[Any]) -> Result:
        return await self._call(op, run_id, lambda conn: _rows(conn.execute(sql, args)))

    async def transaction(
        self, op: str, run_id: str | None, statements: Sequence[Statement], *, write: bool
    ) -> list[Result]:
        def fn(conn: sqlite3.Connection) -> list[Result]:
            return [_rows(conn.execute(sql, args)) for sql, args in statements]

        return await self._call(op, run_id, fn, "write" if write else "read")

    async def each(self, op: str, statements: Sequence[Statement]) -> list[Result | SqlError]:
        def one(sql: str, args: Sequence[Any]) -> Callable[[sqlite3.Connection], Result | SqlError]:
            def fn(conn: sqlite3.Connection) -> Result | SqlError:
                try:
                    return _rows(conn.execute(sql, args))
                except sqlite3.Error as exc:
                    if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                        raise
                    return self._error(op, None, exc)

            return fn

        return [await self._call(op, None, one(sql, args)) for sql, args in statements]

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()


class SqliteStore(SqlStore):
    """Runs in one SQLite database file (WAL), through one lazily opened connection.

    ``synchronous`` is SQLite's pragma (``NORMAL`` or ``FULL``, see the module docstring);
    ``busy_timeout`` is how long, in seconds, a call keeps retrying while another process holds
    the database locked. ``path`` may be ``":memory:"`` (one private database per store); a
    missing parent directory is created.
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
        super().__init__(auto_schema=auto_schema)
        self.path = path
        self.synchronous = sync
        self.busy_timeout = float(busy_timeout)
        self._db = SqliteConnection(
            path, synchronous=sync, busy_timeout=busy_timeout, connect=lambda: self._connect()
        )

    async def append(
        self, run_id: str, checkpoint: Checkpoint, *, consumes: str | None = None
    ) -> None:
        """The steady-state step's write, run without the layers every other call goes
        through: one statement on the open connection. Anything unusual (a consuming append,
        the schema not checked yet, a locked file, an error) takes the general path, which
        retries and names what went wrong."""
        conn = self._db._conn
        if consumes is None and self._ready and conn is not None and not conn.in_transaction:
            try:
                cp = checkpoint
                params = (run_id, cp.seq, cp.kind, cp.name, cp.value_json(), cp.error_json())
                with self._db._lock:
                    inserted = conn.execute(SQL_APPEND, (*params, cp.at, cp.attempts, cp.order))
            except sqlite3.IntegrityError:
                raise Conflict(
                    f"run {run_id!r} already has seq {checkpoint.seq} "
                    f"({checkpoint.kind} {checkpoint.name!r})",
                    run_id=run_id,
                ) from None
            except sqlite3.Error as exc:
                if not _is_busy(exc):  # reported as the general path would, never retried
                    raise self._db._error("append", run_id, exc) from exc
                # locked by another process: the general path waits and retries
            else:
                if inserted.rowcount == 1:
                    return
                raise Conflict(f"run {run_id!r} does not exist", run_id=run_id)
        await super().append(run_id, checkpoint, consumes=consumes)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteStore:
        """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite:///:memory:``.

        Query parameters: ``synchronous=normal|full|off``, ``auto_schema=true|false``,
        ``busy_timeout=SECONDS``. Keyword ``options`` override them. Raises ``ValueError`` for
        a URL that is not one of these.
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
                params[name] = parse_bool("sqlite", name, value)
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

    def _database(self) -> Database:
        return self._db

    def _connect(self) -> sqlite3.Connection:
        """The connection (opened on first use): the one place a subclass can instrument it."""
        return self._db.open()

    async def close(self) -> None:
        await self._db.close()
