# =================================================================================================
# TEST DOUBLE, NOT CLOUDFLARE CODE: the database behind the D1 binding doubles.
#
# D1 is SQLite run by Cloudflare; this is SQLite (stdlib sqlite3) run the way D1's Worker API
# presents it, for two doubles that share it:
#
#   * tests/backends/d1.py (CPython): a Python binding with the shape the Workers SDK gives
#     Python (prepare / bind / all / batch), for the contract, unit and reliability suites;
#   * tests/edge/standins/bindings.mjs (Pyodide in Node): a JavaScript `D1Database` whose
#     calls land here, inside the same Pyodide, through JSON.
#
# It is stdlib only, so the same file runs in both. What it reproduces of D1 (from
# https://developers.cloudflare.com/d1/worker-api/ and .../d1/platform/limits/):
#
#   * one statement per call, autocommit; `batch` runs its statements in one transaction,
#     in order, and rolls all of them back if one fails;
#   * no explicit transactions (BEGIN, COMMIT, SAVEPOINT...) and no PRAGMA writes;
#   * rows as objects keyed by column name (a duplicate column name would collapse in D1: here
#     it raises, so a statement that relies on it fails loudly);
#   * errors as `D1_ERROR: <SQLite's message>: SQLITE_<CODE>`, bind errors as `D1_TYPE_ERROR`;
#   * `meta.changes`: the rows the statement changed.
#
# What it does not reproduce: D1's latency, its per-invocation query limit, read replicas,
# sessions, the 2 MB row and 100-parameter limits, the exact text of every error.
# =================================================================================================
from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from typing import Any

__all__ = ["D1Error", "Engine", "js_number"]

_TRANSACTION = re.compile(r"^\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE)
_PRAGMA_WRITE = re.compile(r"^\s*PRAGMA\s+[\w.]+\s*=", re.IGNORECASE)
MAX_SAFE_INTEGER = 2**53 - 1


class D1Error(Exception):
    """What D1 throws: the message is D1's shape, ``D1_ERROR: ...: SQLITE_...``."""


def js_number(value: Any) -> Any:
    """A value as it comes back from JavaScript: a number is a double, so an integral float is
    an int in Python (Pyodide converts safe integers to ``int``) and an int beyond 2**53 loses
    precision."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
        return float(value)
    return value


def _check_param(value: Any) -> Any:
    """D1's ``bind()`` rules: numbers, strings, null, booleans (as 1/0), byte arrays."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:  # Pyodide sends it as a BigInt
            raise D1Error(f"D1_TYPE_ERROR: Type 'bigint' not supported for value '{value}'")
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None  # JSON carries NaN as null
        return js_number(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise D1Error(
        f"D1_TYPE_ERROR: Type '{type(value).__name__}' not supported for value '{value!r}'"
    )


def _error(exc: sqlite3.Error) -> D1Error:
    code = getattr(exc, "sqlite_errorname", None) or "SQLITE_ERROR"
    return D1Error(f"D1_ERROR: {exc}: {code}")


class Engine:
    """One D1 database: a SQLite connection (``path``, ``":memory:"`` by default)."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA foreign_keys = ON")  # D1's default
        self.queries = 0  # every statement run, batches included (D1 counts them so)

    def close(self) -> None:
        self.conn.close()

    def _one(self, sql: str, params: list[Any]) -> dict[str, Any]:
        if _TRANSACTION.match(sql):
            raise D1Error(
                "D1_ERROR: D1 runs each statement (and each batch) in a transaction of its "
                "own; explicit transactions are not allowed: SQLITE_AUTH"
            )
        if _PRAGMA_WRITE.match(sql):
            raise D1Error(f"D1_ERROR: not authorized: {sql.strip()[:60]}: SQLITE_AUTH")
        values = [_check_param(p) for p in params]
        started = time.perf_counter()
        before = self.conn.total_changes
        try:
            cursor = self.conn.execute(sql, values)
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            raise _error(exc) from None
        self.queries += 1
        columns = [d[0] for d in cursor.description or ()]
        if len(set(columns)) != len(columns):
            raise D1Error(
                f"D1 double: duplicate column names {columns} would collapse in D1's row "
                f"objects: name each column ({sql.strip()[:80]})"
            )
        changes = self.conn.total_changes - before
        return {
            "columns": columns,
            "rows": [list(row) for row in rows],
            "meta": {
                "served_by": "heron-d1-double",
                "duration": (time.perf_counter() - started) * 1000,
                "changes": changes,
                "last_row_id": cursor.lastrowid or 0,
                "changed_db": changes > 0,
                "rows_read": len(rows),
                "rows_written": changes,
            },
        }

    def run(self, sql: str, params: list[Any]) -> dict[str, Any]:
        """One statement, autocommit."""
        return self._one(sql, params)

    def batch(self, statements: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """The statements in one transaction: all of them, or (on an error) none."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            results = [self._one(sql, params) for sql, params in statements]
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return results

    # -- JSON in, JSON out: what the JavaScript double calls (bindings.mjs) -------------------

    def run_json(self, sql: str, params_json: str) -> str:
        return json.dumps(self.run(sql, json.loads(params_json)))

    def batch_json(self, statements_json: str) -> str:
        statements = [(s["sql"], s["params"]) for s in json.loads(statements_json)]
        return json.dumps(self.batch(statements))
