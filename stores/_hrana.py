"""A thin async client of Hrana over HTTP: the protocol of Turso and sqld (the libSQL server).

It is the remote transport of :mod:`heron.stores._sql` (a :class:`~heron.stores._sql.Database`)
and speaks through an :class:`~heron.stores._http.HttpTransport`, never an HTTP library of its
own, so the same client runs on httpx (CPython, a pooled keep-alive connection a warm Lambda
reuses) and on ``fetch`` (Pyodide).

The protocol (Hrana 3 over HTTP, JSON encoding; the spec is ``docs/HRANA_3_SPEC.md`` in
tursodatabase/libsql): ``POST {url}/v3/pipeline`` with ``{"baton": null, "requests": [...]}``
runs the requests in order on a fresh server-side stream and answers ``{"baton", "base_url",
"results": [...]}``, one result per request, ``{"type": "ok", "response": ...}`` or ``{"type":
"error", "error": {"message", "code"}}``. Values travel typed: ``{"type": "integer", "value":
"42"}`` (a string, so that 64-bit integers survive JSON), ``{"type": "float", "value": 1.5}``,
``{"type": "text", "value": "..."}``, ``{"type": "blob", "base64": "..."}``, ``{"type":
"null"}``.

Every call here is ONE HTTP request that ends with a ``close`` request, so no stream (and no
transaction) outlives it. Holding a transaction open across requests is what this client never
does: sqld closes an idle stream after 10 s and hands a write lock held longer than 5 s to the
next writer (measured on sqld 0.24.32), and each round trip would extend the lock while the
client thinks. :meth:`HranaClient.transaction` sends one ``batch`` instead, whose steps are::

    0      BEGIN IMMEDIATE (a write) or BEGIN (a read snapshot)
    1..n   the statements, each only if the step before it succeeded and the stream is still
           inside the transaction ("ok" and "not is_autocommit" conditions: a statement that
           failed, or a transaction SQLite ended on its own, skips the rest)
    n+1    COMMIT, on the same condition
    n+2    ROLLBACK, unless COMMIT succeeded

so the server applies all of them or none, and the client learns which from step n+1.

Errors (all :class:`~heron.stores.contract.StoreError`; messages name the database URL, with
the token masked, and the operation)::

    StoreError
     ├── SqlError            a statement failed (its subclasses: heron.stores._sql)
     └── LibSQLAuthError     the server refused the token: HTTP 401 (missing, malformed,
                             expired, wrong key) or 403 (no permission: a read-only token
                             writing)

sqld's own texts for those (0.24.32): 401 ``{"error": "Expected authorization header but none
given"}``, ``"The JWT has expired"``, ``"The JWT is invalid"``; 403 ``"... doesn't not have
Write permission to namespace default"`` (sic).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import time
from collections.abc import Sequence
from typing import Any, Final

from heron.stores._http import HttpTransport, HttpxTransport, TransportError
from heron.stores._sql import Result, SqlError, Statement, classify
from heron.stores.contract import StoreError

__all__ = ["HranaClient", "LibSQLAuthError", "mask_token"]

_I64: Final = 2**63
_BACKOFF_FIRST: Final = 0.005
_BACKOFF_MAX: Final = 0.2
_EXCERPT: Final = 300


class LibSQLAuthError(StoreError):
    """The libSQL server refused the auth token (HTTP 401 or 403); ``status`` is which. The
    message names the database URL, masks the token and quotes the server's reason."""

    def __init__(self, message: str, *, status: int, run_id: str | None = None) -> None:
        super().__init__(message, run_id=run_id)
        self.status = status


def mask_token(token: str | None) -> str:
    """A token as messages show it: never the token, only its length and a short fingerprint
    (the first 8 hex digits of its SHA-256) to tell two tokens apart."""
    if not token:
        return "no token"
    import hashlib  # here: a cold start that never shows a token does not pay for it

    digest = hashlib.sha256(token.encode()).hexdigest()[:8]
    return f"token <masked, {len(token)} chars, sha256 {digest}>"


# -- values ------------------------------------------------------------------------------------


def encode_value(value: Any) -> dict[str, Any]:
    """One SQL argument as a Hrana value. Raises ``ValueError`` for an integer outside 64 bits
    or a float JSON cannot carry (NaN, infinity), ``TypeError`` for any other type."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, str):
        return {"type": "text", "value": value}
    if isinstance(value, bool):
        return {"type": "integer", "value": "1" if value else "0"}
    if isinstance(value, int):
        if not -_I64 <= value < _I64:
            raise ValueError(f"integer {value} does not fit SQLite's 64 bits")
        return {"type": "integer", "value": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"float {value!r} cannot travel as Hrana JSON")
        return {"type": "float", "value": value}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"type": "blob", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"cannot send a {type(value).__name__} as an SQL value")


def decode_value(value: dict[str, Any]) -> Any:
    """A Hrana value as Python: int, float, str, bytes or None (sqld sends an infinite float
    as ``null``: None here)."""
    kind = value.get("type")
    if kind == "null":
        return None
    if kind == "integer":
        return int(value["value"])
    if kind == "float":
        number = value.get("value")
        return None if number is None else float(number)
    if kind == "text":
        return value["value"]
    if kind == "blob":
        data: str = value["base64"]
        return base64.b64decode(data + "=" * (-len(data) % 4))  # sqld omits the padding
    raise ValueError(f"unknown Hrana value type {kind!r}")


def _stmt(sql: str, args: Sequence[Any]) -> dict[str, Any]:
    return {"sql": sql, "args": [encode_value(arg) for arg in args]}


def _encoded(what: str, run_id: str | None, build: Any) -> dict[str, Any]:
    """``build()``, the request; a value Hrana cannot carry is a ``StoreError`` naming the
    operation (nothing was sent)."""
    try:
        request: dict[str, Any] = build()
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what}: {exc}; nothing was sent", run_id=run_id) from None
    return request


def _result(result: dict[str, Any]) -> Result:
    rows = [tuple(decode_value(v) for v in row) for row in result.get("rows") or ()]
    return Result(rows, int(result.get("affected_row_count") or 0))


def _ok(step: int) -> dict[str, Any]:
    """The step succeeded and the stream is still inside the transaction."""
    return {
        "type": "and",
        "conds": [{"type": "ok", "step": step}, {"type": "not", "cond": {"type": "is_autocommit"}}],
    }


def _busy(error: dict[str, Any] | None) -> bool:
    if not error:
        return False
    text = f"{error.get('code', '')} {error.get('message', '')}".lower()
    return "sqlite_busy" in text or "database is locked" in text


class _Busy(Exception):
    """The database was locked and nothing was applied: try again."""


# -- the client ----------------------------------------------------------------------------------


class HranaClient:
    """Hrana over HTTP to one database: ``url`` is its ``http(s)://`` base URL (``libsql://``
    already resolved by the store), ``auth_token`` a JWT sent as a bearer token.

    ``transport`` is the :class:`~heron.stores._http.HttpTransport` to speak through; by default
    an :class:`~heron.stores._http.HttpxTransport` with ``timeout`` seconds per request, made on
    first use (inside the running event loop) and closed by :meth:`close`. ``busy_timeout`` is
    how long, in seconds, a call that found the database locked (nothing applied) is retried.
    """

    pragmas = False  # Turso refuses PRAGMA writes ("SQL not allowed statement")

    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None = None,
        transport: HttpTransport | None = None,
        timeout: float = 30.0,
        busy_timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.where = f"libSQL database {self.url} ({mask_token(auth_token)})"
        self.timeout = timeout
        self.busy_timeout = busy_timeout
        self._pipeline = f"{self.url}/v3/pipeline"
        self._headers = {"content-type": "application/json"}
        if auth_token:
            self._headers["authorization"] = f"Bearer {auth_token}"
        self._transport = transport
        self._owned = transport is None

    def __repr__(self) -> str:
        return f"HranaClient({self.where})"

    # -- one request -----------------------------------------------------------------------------

    async def _send(
        self, op: str, run_id: str | None, requests: list[dict[str, Any]], *, write: bool
    ) -> list[dict[str, Any]]:
        """POST ``requests`` (and a ``close``) as one pipeline; the results, without the close's.
        Raises :class:`LibSQLAuthError` for a refused token, ``StoreError`` for anything else
        but statement errors (those are in the results)."""
        transport = self._transport
        if transport is None:
            transport = self._transport = HttpxTransport(timeout=self.timeout)
        what = f"{op} of run {run_id!r}" if run_id is not None else op
        try:
            body = json.dumps(
                {"baton": None, "requests": [*requests, {"type": "close"}]},
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            raise StoreError(
                f"{what}: cannot encode its SQL arguments: {exc}", run_id=run_id
            ) from None
        try:
            status, data = await transport.post(self._pipeline, self._headers, body)
        except TransportError as exc:
            outcome = (
                "it was applied entirely or not at all (one atomic request): load the run to see"
                if write
                else "nothing was written"
            )
            raise StoreError(
                f"{self.where}: no answer to {what}: {exc}; {outcome}", run_id=run_id
            ) from None
        if status != 200:
            raise self._http_error(status, data, what, run_id)
        try:
            results: list[dict[str, Any]] = json.loads(data)["results"]
        except (ValueError, KeyError, TypeError):
            raise StoreError(
                f"{self.where} answered {what} with something that is not a Hrana pipeline "
                f"response: {data[:_EXCERPT]!r}",
                run_id=run_id,
            ) from None
        if len(results) != len(requests) + 1:
            raise StoreError(
                f"{self.where} answered {what} with {len(results)} results for "
                f"{len(requests) + 1} requests",
                run_id=run_id,
            )
        return results[:-1]

    def _http_error(self, status: int, data: bytes, what: str, run_id: str | None) -> StoreError:
        text = data.decode("utf-8", "replace").strip()
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):  # sqld: {"error": "..."}; Hrana: {"message", "code"}
            reason = decoded.get("error") or decoded.get("message") or text
        else:
            reason = text
        reason = str(reason)[:_EXCERPT] or "(empty body)"
        if status == 401:
            return LibSQLAuthError(
                f"{self.where} refused {what}: HTTP 401: {reason}; check the auth token "
                "(?authToken= in the URL, auth_token=, or TURSO_AUTH_TOKEN)",
                status=status,
                run_id=run_id,
            )
        if status == 403:
            return LibSQLAuthError(
                f"{self.where} denied {what}: HTTP 403: {reason}; the token lacks the "
                "permission (a read-only token cannot write)",
                status=status,
                run_id=run_id,
            )
        if status == 404:
            reason += " (is this the URL of a libSQL server that speaks Hrana 3 over HTTP?)"
        return StoreError(f"{self.where} failed {what}: HTTP {status}: {reason}", run_id=run_id)

    def _statement_error(
        self, error: dict[str, Any], what: str, run_id: str | None, sql: str
    ) -> SqlError:
        message = str(error.get("message") or "statement failed")
        if "response is too large" in message.lower():
            message += (
                " (the server caps each statement's result: sqld's --max-response-size, 10 MB "
                "by default; a run whose history is that large is better split with "
                "ctx.continue_as_new)"
            )
        excerpt = sql if len(sql) <= 120 else sql[:119] + "…"
        return classify(message)(
            f"{self.where}, {what}: {message} [{excerpt}]",
            run_id=run_id,
            code=error.get("code"),
        )

    async def _retrying(self, call: Any) -> Any:
        """Run ``call()`` again while it raises :class:`_Busy`, up to ``busy_timeout``."""
        deadline = time.monotonic() + self.busy_timeout
        delay = _BACKOFF_FIRST
        while True:
            try:
                return await call()
            except _Busy as busy:
                now = time.monotonic()
                if now >= deadline:
                    raise StoreError(f"{self.where} stayed locked: {busy}") from None
                await asyncio.sleep(min(delay * (0.5 + random.random()), deadline - now))
                delay = min(delay * 2, _BACKOFF_MAX)

    # -- the Database protocol -----------------------------------------------------------------

    async def execute(self, op: str, run_id: str | None, sql: str, args: Sequence[Any]) -> Result:
        """One statement, autocommit: one request."""
        what = f"{op} of run {run_id!r}" if run_id is not None else op
        request = _encoded(what, run_id, lambda: {"type": "execute", "stmt": _stmt(sql, args)})
        write = not sql.startswith("SELECT")  # only for the message of a lost answer

        async def once() -> Result:
            (result,) = await self._send(op, run_id, [request], write=write)
            if result.get("type") != "ok":
                error = result.get("error") or {}
                if _busy(error):
                    raise _Busy(f"{what}: {error.get('message')}")
                raise self._statement_error(error, what, run_id, sql)
            return _result(result["response"]["result"])

        result: Result = await self._retrying(once)
        return result

    async def transaction(
        self, op: str, run_id: str | None, statements: Sequence[Statement], *, write: bool
    ) -> list[Result]:
        """``statements`` in one transaction, as one ``batch`` request (module docstring)."""
        what = f"{op} of run {run_id!r}" if run_id is not None else op
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        n = len(statements)
        steps: list[dict[str, Any]] = [{"stmt": {"sql": begin}}]
        for i, (sql, args) in enumerate(statements):
            stmt = _encoded(what, run_id, lambda sql=sql, args=args: _stmt(sql, args))
            steps.append({"condition": _ok(i), "stmt": stmt})
        commit = n + 1
        steps.append({"condition": _ok(n), "stmt": {"sql": "COMMIT"}})
        steps.append(
            {
                "condition": {"type": "not", "cond": {"type": "ok", "step": commit}},
                "stmt": {"sql": "ROLLBACK"},
            }
        )
        request = {"type": "batch", "batch": {"steps": steps}}

        async def once() -> list[Result]:
            (result,) = await self._send(op, run_id, [request], write=write)
            if result.get("type") != "ok":
                error = result.get("error") or {}
                raise self._statement_error(error, what, run_id, begin)
            outcome = result["response"]["result"]
            done: list[dict[str, Any] | None] = outcome["step_results"]
            errors: list[dict[str, Any] | None] = outcome["step_errors"]
            if done[commit] is not None:
                return [_result(r) for r in done[1:commit] if r is not None]
            # not committed, so rolled back: find the step that stopped it
            for step in range(commit + 1):
                error = errors[step]
                if error is None and done[step] is not None:
                    continue
                sql = (
                    begin if step == 0 else "COMMIT" if step == commit else statements[step - 1][0]
                )
                if error is None:
                    error = {"message": "skipped: the transaction ended before this statement"}
                if _busy(error):
                    raise _Busy(f"{what}: {error.get('message')}")
                raise self._statement_error(error, what, run_id, sql)
            raise StoreError(f"{self.where}: {what} was not committed", run_id=run_id)

        results: list[Result] = await self._retrying(once)
        return results

    async def each(self, op: str, statements: Sequence[Statement]) -> list[Result | SqlError]:
        """Read-only ``statements``, independently, as one ``batch`` request without a
        transaction or conditions: a failing one gives its error, the others run."""
        steps = [{"stmt": _encoded(op, None, lambda s=s: _stmt(*s))} for s in statements]
        (result,) = await self._send(
            op, None, [{"type": "batch", "batch": {"steps": steps}}], write=False
        )
        if result.get("type") != "ok":
            raise self._statement_error(result.get("error") or {}, op, None, statements[0][0])
        outcome = result["response"]["result"]
        answers: list[Result | SqlError] = []
        for (sql, _), done, error in zip(
            statements, outcome["step_results"], outcome["step_errors"], strict=True
        ):
            if done is not None:
                answers.append(_result(done))
            else:
                answers.append(self._statement_error(error or {}, op, None, sql))
        return answers

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None and self._owned:
            await transport.aclose()
