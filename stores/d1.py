"""``D1Store``: Cloudflare D1, SQLite at the edge, through a Worker's binding.

The schema, the statements and the contract's logic are :mod:`heron.stores._sql`'s, shared with
``SqliteStore`` and ``LibSQLStore``: this module is only the third transport of that SQL,
:class:`D1Connection`, on the two calls of D1's Worker API that it needs
(https://developers.cloudflare.com/d1/worker-api/d1-database/):

* ``DB.prepare(sql).bind(*args).all()``: one statement, autocommit;
* ``DB.batch([statement, ...])``: "Batched statements are SQL transactions. If a statement in
  the sequence fails, then an error is returned for that specific statement, and it aborts or
  rolls back the entire sequence", and D1 runs the statements "sequentially, non-concurrently".

That is exactly the transaction ``_sql`` asks of a transport: the statements are sent together,
nothing is decided in Python between them, and every decision is a condition in SQL (the guard
rule and the race diagrams are in ``_sql``'s docstring and beside each statement). So every
contract operation is one D1 call: ``append`` one statement, ``load``, ``save``, ``acquire``,
``signal`` one batch each; an instance's first call adds one round (two queries) that checks
the schema, and one batch that creates or migrates it with ``auto_schema``. D1 has no explicit
``BEGIN`` (a batch *is* the transaction), no ``PRAGMA`` writes and no busy errors (one
database serves one query at a time), so none of those paths exist here.

Where the binding comes from. ``d1://DB`` names a binding of the Worker (``[[d1_databases]]
binding = "DB"`` in ``wrangler.toml``). ``heron.functions.worker`` passes the binding it reads
from the Worker's ``env`` (``binding=``); without one, under Pyodide the store looks it up in
``workers.env`` on first use, and on CPython there is no D1 binding at all (``ValueError``).
The binding is the object the Workers SDK hands Python (its ``prepare``/``bind``/``all``/
``batch`` take Python values and answer dicts and lists); a raw JavaScript ``D1Database``
is accepted too and wrapped here.

What D1 changes about values (and why Heron is unaffected):

* rows come back as objects keyed by column name, not arrays: every statement in ``_sql``
  names distinct columns, so a row's values in key order are its columns in order;
* numbers come back as JavaScript numbers: an integer beyond 2**53 would lose precision, and an
  integral REAL comes back as an int. Heron stores no such integer (seqs, attempts, revisions,
  counts; the one large constant, a consumed-for-good marker, never leaves SQL) and converts
  every time and count it reads (``float(...)``/``int(...)``); an argument outside 2**53 is
  refused here before it is sent;
* ``None`` must travel as JavaScript ``null`` (Pyodide's default is ``undefined``, which D1
  refuses): the SDK's binding does it, and so does the raw-binding wrapper here.

Limits that matter (https://developers.cloudflare.com/d1/platform/limits/): 2 MB per string
or row (Heron's ``max_payload`` default is 256 KiB), 100 bound parameters per query (Heron
binds at most 17), 100 KB of SQL text, 30 s per query, and 1,000 queries per Worker invocation
on Workers Paid (50 on Free): a step is one query, so one invocation runs at most that many
steps (the resume's time budget ends it sooner; ``docs/edge.md``).

Errors (all :class:`~heron.stores.contract.StoreError`; messages name the binding, the
operation and the run)::

    StoreError
     └── SqlError            D1 refused a statement (``D1_ERROR: ...``), or the call failed
          ├── SqlConstraint  a UNIQUE / PRIMARY KEY constraint failed (a create-only write lost)
          └── SqlNoSchema    "no such table" / "no such column": the schema is missing or behind
"""

from __future__ import annotations

import asyncio
import importlib
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl

from heron.stores._sql import (
    SCHEMA_VERSION,
    SQL_RECORD_VERSION,
    Database,
    Result,
    SqlError,
    SqlStore,
    Statement,
    classify,
    migration,
)
from heron.stores._url import parse_bool
from heron.stores.contract import StoreError

__all__ = ["D1Connection", "D1Store", "schema_sql"]

#: A Worker binding name: a JavaScript identifier (what wrangler accepts).
_BINDING_NAME: Final = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
#: The largest integer a JavaScript number holds exactly.
_MAX_SAFE_INTEGER: Final = 2**53 - 1
_EXCERPT: Final = 120


def _on_pyodide() -> bool:
    return sys.platform == "emscripten"


def _argument(value: Any) -> Any:
    """One SQL argument as D1 takes it. Raises ``ValueError``/``TypeError`` for what D1
    would refuse or silently change (an integer beyond 2**53, NaN, another type)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is beyond 2**53: D1 would not keep it exactly")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"float {value!r} cannot be stored in D1")
        return value
    raise TypeError(f"cannot send a {type(value).__name__} to D1 as an SQL value")


def _result(answer: Any) -> Result:
    """A D1 result (``{"results": [row objects], "meta": {"changes": n, ...}}``) as a
    :class:`~heron.stores._sql.Result`."""
    rows = [tuple(row.values()) for row in (answer["results"] or ())]
    meta = answer["meta"] or {}
    return Result(rows, int(meta.get("changes") or 0))


def _excerpt(sql: str) -> str:
    return sql if len(sql) <= _EXCERPT else sql[: _EXCERPT - 1] + "…"


class D1Connection:
    """The D1 transport of :mod:`heron.stores._sql` (a :class:`~heron.stores._sql.Database`):
    statements through a Worker's D1 binding, a transaction as one ``batch``.

    ``name`` is the binding's name (for messages); ``binding`` returns the binding, and is
    called on each use (cheap), so that a store made before the binding exists (at import time
    in a Worker) finds it once a request has it. It raises :class:`StoreError` when there is
    none.
    """

    #: D1 allows no PRAGMA writes; the schema version lives in ``heron_schema`` alone.
    pragmas = False

    def __init__(self, name: str, binding: Callable[[], Any]) -> None:
        self.name = name
        self.where = f"D1 database (binding {name})"
        self._binding = binding

    def __repr__(self) -> str:
        return f"D1Connection({self.name!r})"

    def _arguments(
        self, op: str, run_id: str | None, statements: Sequence[Statement]
    ) -> list[tuple[str, list[Any]]]:
        try:
            return [(sql, [_argument(a) for a in args]) for sql, args in statements]
        except (ValueError, TypeError) as exc:
            message = f"{self.where}, {op}: {exc}; nothing was sent"
            raise StoreError(message, run_id=run_id) from None

    @staticmethod
    def _statement(db: Any, sql: str, args: list[Any]) -> Any:
        statement = db.prepare(sql)
        return statement.bind(*args) if args else statement

    def _error(
        self, op: str, run_id: str | None, exc: BaseException, sql: str, *, write: bool
    ) -> SqlError:
        what = f"{op} of run {run_id!r}" if run_id is not None else op
        message = str(exc).strip() or type(exc).__name__
        if write and "SQLITE_" not in message and classify(message) is SqlError:
            # not SQLite refusing a statement: the call itself failed (the network, D1 reset)
            message += "; the outcome of this write is unknown (one atomic call): load the run"
        return classify(message)(
            f"{self.where}, {what}: {message} [{_excerpt(sql)}]",
            run_id=run_id,
            code=_code(message),
        )

    async def execute(self, op: str, run_id: str | None, sql: str, args: Sequence[Any]) -> Result:
        ((sql, values),) = self._arguments(op, run_id, [(sql, args)])
        db = self._binding()
        try:
            answer = await self._statement(db, sql, values).all()
        except Exception as exc:
            raise self._error(op, run_id, exc, sql, write=not sql.startswith("SELECT")) from None
        return _result(answer)

    async def transaction(
        self, op: str, run_id: str | None, statements: Sequence[Statement], *, write: bool
    ) -> list[Result]:
        checked = self._arguments(op, run_id, statements)
        db = self._binding()
        try:
            answers = await db.batch([self._statement(db, sql, values) for sql, values in checked])
        except Exception as exc:
            sql = f"a batch of {len(statements)} from: {statements[0][0]}"
            raise self._error(op, run_id, exc, sql, write=write) from None
        results = [_result(answer) for answer in answers]
        if len(results) != len(statements):
            raise StoreError(
                f"{self.where} answered {op} with {len(results)} results for "
                f"{len(statements)} statements",
                run_id=run_id,
            )
        return results

    async def each(self, op: str, statements: Sequence[Statement]) -> list[Result | SqlError]:
        """The statements independently (a failing one gives its error), in parallel: a batch
        would stop at the first failure."""

        async def one(sql: str, args: Sequence[Any]) -> Result | SqlError:
            try:
                return await self.execute(op, None, sql, args)
            except SqlError as exc:
                return exc

        return list(await asyncio.gather(*(one(sql, args) for sql, args in statements)))

    async def close(self) -> None:
        """Nothing to close: the binding is the platform's."""
        return None


def _code(message: str) -> str | None:
    found = re.search(r"\b(SQLITE_[A-Z_]+)\b", message)
    return found.group(1) if found else None


class _JsBinding:
    """A raw JavaScript ``D1Database`` (a Pyodide ``JsProxy``) in the shape the Workers SDK
    gives Python: ``None`` sent as ``null``, answers converted to dicts and lists."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def prepare(self, sql: str) -> _JsStatement:
        return _JsStatement(self._db.prepare(sql))

    async def batch(self, statements: list[_JsStatement]) -> list[Any]:
        ffi = importlib.import_module("pyodide.ffi")
        answers = await self._db.batch(ffi.to_js([s.js for s in statements]))
        return [_to_py(answer) for answer in answers]


class _JsStatement:
    def __init__(self, js: Any) -> None:
        self.js = js

    def bind(self, *values: Any) -> _JsStatement:
        null = importlib.import_module("pyodide.ffi").jsnull
        return _JsStatement(self.js.bind(*(null if v is None else v for v in values)))

    async def all(self) -> Any:
        return _to_py(await self.js.all())


def _to_py(value: Any) -> Any:
    null = importlib.import_module("pyodide.ffi").jsnull
    converted = value.to_py() if hasattr(value, "to_py") else value

    def clean(v: Any) -> Any:
        if v is null:
            return None
        if isinstance(v, Mapping):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(converted)


class D1Store(SqlStore):
    """Runs in a Cloudflare D1 database, through the Worker binding named ``binding_name``.

    ``binding`` is the binding itself (a Worker's ``env.DB``; ``heron.functions.worker`` passes
    it), or ``None`` to look it up in ``workers.env`` on first use (Pyodide only). Any object
    with D1's ``prepare(sql).bind(*args).all()`` and ``batch([...])`` works, which is how the
    test suite runs the contract against a SQLite double on CPython. ``auto_schema`` creates or
    migrates the tables on first use; with it off, ``ensure_schema()`` (or ``schema_sql()``
    through ``wrangler d1 execute``) does.

    Raises ``ValueError`` for a binding name that is not an identifier, and for a store without
    a binding outside Pyodide.
    """

    def __init__(
        self, binding_name: str = "DB", *, binding: Any = None, auto_schema: bool = True
    ) -> None:
        if not _BINDING_NAME.match(binding_name or ""):
            raise ValueError(f"{binding_name!r} is not a Worker binding name (a JS identifier)")
        if binding is None and not _on_pyodide():
            raise ValueError(
                f"D1Store({binding_name!r}) needs the D1 binding: pass binding= (a Worker's "
                f"env.{binding_name}); outside a Worker there is none"
            )
        super().__init__(auto_schema=auto_schema)
        self.binding_name = binding_name
        self._binding = self._wrap(binding) if binding is not None else None
        self._db = D1Connection(binding_name, self._resolve)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> D1Store:
        """``d1://BINDING`` (``d1://DB``), query option ``auto_schema=false``; keyword
        ``options`` (``binding=``, ``auto_schema=``) override the query."""
        scheme, sep, rest = url.partition("://")
        if scheme.lower() != "d1" or not sep:
            raise ValueError(f"not a d1:// URL: {url!r}")
        name, _, query = rest.partition("?")
        name = name.rstrip("/")
        if not name:
            raise ValueError(f"d1 URL {url!r} names no binding; use d1://DB")
        params: dict[str, Any] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "auto_schema":
                params[key] = parse_bool("d1", key, value)
            else:
                raise ValueError(f"unknown d1 URL option {key!r} in {url!r}; known: auto_schema")
        params.update(options)
        return cls(name, **params)

    def __repr__(self) -> str:
        return f"D1Store({self.binding_name!r})"

    @staticmethod
    def _wrap(binding: Any) -> Any:
        if _on_pyodide() and isinstance(binding, importlib.import_module("pyodide.ffi").JsProxy):
            return _JsBinding(binding)
        return binding

    def _resolve(self) -> Any:
        if self._binding is None:
            env = importlib.import_module("workers").env
            found = getattr(env, self.binding_name, None)
            if found is None:
                raise StoreError(
                    f"this Worker has no D1 binding {self.binding_name!r}: add [[d1_databases]] "
                    f'binding = "{self.binding_name}" to wrangler.toml'
                )
            self._binding = self._wrap(found)
        return self._binding

    def _database(self) -> Database:
        return self._db

    async def close(self) -> None:
        """Nothing to close: the binding is the platform's."""
        return None


def schema_sql() -> str:
    """Heron's tables as one SQL script, for ``wrangler d1 execute DB --remote --file=...``
    (to run the store with ``auto_schema=false``): what ``ensure_schema()`` runs on an empty
    database."""
    statements = []
    for sql, args in migration(0, pragmas=False):
        if sql == SQL_RECORD_VERSION:
            sql = sql.replace("?1", str(SCHEMA_VERSION))
        elif args:
            raise AssertionError(f"unexpected arguments in schema statement {sql!r}")
        statements.append(" ".join(sql.split()) + ";")
    return "\n".join(statements) + "\n"
