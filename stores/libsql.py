"""``LibSQLStore``: Turso, sqld (the libSQL server) or a local file, through the same SQL.

The schema, the statements and the contract's logic are :mod:`heron.stores._sql`'s, shared
with ``SqliteStore``: one SQL module, two transports. Over the network the transport is
:class:`~heron.stores._hrana.HranaClient`, Hrana 3 over HTTP on the swappable
:class:`~heron.stores._http.HttpTransport` (httpx on CPython, ``fetch`` under Pyodide); for a
``file:`` URL it is :class:`~heron.stores.sqlite.SqliteConnection`, stdlib :mod:`sqlite3`
running the very same statements inline.

Costs. Every contract operation is one statement or one transaction sent as one request, with
every decision a condition in SQL (``_sql``'s docstring has the rule and the races): a
steady-state step (``append``) is one HTTP request, ``acquire``, ``load``, ``save``,
``signal`` one each. The first call of an instance adds one request that checks the schema
(and creates or migrates it, with ``auto_schema``). One connection (keep-alive, TLS session) is
made on first use inside the running event loop and reused by every later call, so a warm
Lambda pays no new handshake.

Why Hrana over HTTP, on Heron's own transport, rather than a libSQL SDK
(``docs/stores.md``): ``libsql-client`` is archived and speaks only the old HTTP protocol
without transactions; the maintained ``libsql`` bindings are synchronous (every call would
block the event loop, or pay a thread hop) and ship no Linux arm64 wheels, Lambda's default
here; ``turso-python``'s batch sends its statements as separate requests, so it is not atomic.
A pipeline request is small enough to write by hand, installs anywhere httpx does, and adds
little to a cold start.

Embedded replicas (a local file that syncs from Turso) are not offered: only the ``libsql``
bindings implement them, and against self-hosted sqld 0.24 their sync fails (the server answers
``/export`` with 404).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from heron.stores._hrana import HranaClient, LibSQLAuthError, mask_token
from heron.stores._http import HttpTransport, HttpxTransport
from heron.stores._sql import Database, SqlStore
from heron.stores._url import masked, parse_bool

if TYPE_CHECKING:
    from heron.stores.sqlite import SqliteConnection

__all__ = ["LibSQLAuthError", "LibSQLStore"]

_SCHEMES: Final = ("libsql", "http", "https", "file")
_OPTIONS: Final = ("authToken", "tls", "auto_schema", "timeout", "busy_timeout")


def _seconds(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"libSQL store URL option {name}={text!r} is not a number") from None


class LibSQLStore(SqlStore):
    """Runs in a libSQL database: Turso, sqld, or a local file.

    ``url`` is one of:

    * ``libsql://HOST[:PORT][/PATH]``: Turso or sqld over HTTPS (``tls=False``: plain HTTP);
    * ``https://HOST...`` or ``http://HOST...``: the same, the scheme saying whether TLS is used;
    * ``file:PATH`` (``file:relative.db``, ``file:/abs.db``, ``file:///abs.db``,
      ``file::memory:``): a local SQLite file, whose directory must exist.

    ``auth_token`` is the database token (a JWT; Turso: ``turso db tokens create``), sent as a
    bearer token and never shown (messages show a fingerprint); ``timeout`` is seconds per HTTP
    request; ``busy_timeout`` how long a call that found the database locked is retried.
    ``transport`` is an :class:`~heron.stores._http.HttpTransport` to speak through (a
    ``fetch`` transport under Pyodide, a counting one in a benchmark), ``client`` a ready
    ``httpx.AsyncClient`` for the default one; the store closes neither.

    Raises ``ValueError`` for a URL it does not take. Errors of use name the database URL,
    never the token: :class:`LibSQLAuthError` when the server refuses the token, and
    :class:`~heron.stores.contract.StoreError` otherwise.
    """

    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None = None,
        tls: bool = True,
        auto_schema: bool = True,
        timeout: float = 30.0,
        busy_timeout: float = 30.0,
        transport: HttpTransport | None = None,
        client: Any = None,
    ) -> None:
        super().__init__(auto_schema=auto_schema)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError(
                f"not a libSQL URL: {masked(url)!r} (libsql://, https://, http:// or file:)"
            )
        if parts.query:
            raise ValueError(
                f"LibSQLStore({masked(url)!r}, ...) takes options as keywords; "
                "LibSQLStore.from_url (open_store) reads them from the query string"
            )
        self.timeout = float(timeout)
        self.busy_timeout = float(busy_timeout)
        self._client: HranaClient | None = None
        self._local: SqliteConnection | None = None
        self._token = auth_token
        self._transport = transport
        if transport is None and client is not None:
            self._transport = HttpxTransport(timeout=self.timeout, client=client)
        #: The file of a ``file:`` URL, else None.
        self.path: str | None = None
        if scheme == "file":
            from heron.stores.sqlite import SqliteConnection  # only here: sqlite3 is not free

            self.path = _file_path(url)
            self.url = f"file:{self.path}"
            self._local = SqliteConnection(
                self.path, busy_timeout=self.busy_timeout, make_dirs=False
            )
            return
        if not parts.hostname:
            raise ValueError(f"libSQL URL {masked(url)!r} names no host")
        if scheme == "libsql":
            scheme = "https" if tls else "http"
        self.url = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

    @classmethod
    def from_url(cls, url: str, **options: Any) -> LibSQLStore:
        """Open the database ``url`` names (the forms :class:`LibSQLStore` takes).

        Query parameters: ``authToken=JWT``, ``tls=0|1`` (``libsql://`` only), ``auto_schema``,
        ``timeout``, ``busy_timeout``. The token comes from the keyword ``auth_token``, else
        ``?authToken=``, else the ``TURSO_AUTH_TOKEN`` environment variable (read here, when
        the store is opened; never for a ``file:`` URL). Keyword ``options`` override the query.
        """
        base, _, query = url.partition("?")
        params: dict[str, Any] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name == "authToken":
                params["auth_token"] = value
            elif name in ("tls", "auto_schema"):
                params[name] = parse_bool("libSQL", name, value)
            elif name in ("timeout", "busy_timeout"):
                params[name] = _seconds(name, value)
            else:
                raise ValueError(
                    f"unknown libSQL URL option {name!r} in {masked(url)!r}; "
                    f"known: {', '.join(_OPTIONS)}"
                )
        params.update(options)
        if "tls" in params and not base.lower().startswith("libsql:"):
            raise ValueError(f"tls= applies to libsql:// URLs only, not {masked(url)!r}")
        if base.lower().startswith("file:"):
            params.pop("auth_token", None)
        elif not params.get("auth_token"):
            params["auth_token"] = os.environ.get("TURSO_AUTH_TOKEN") or None
        return cls(base, **params)

    def __repr__(self) -> str:
        if self._local is not None:
            return f"LibSQLStore({self.url!r})"
        return f"LibSQLStore({self.url!r}, {mask_token(self._token)})"

    def _database(self) -> Database:
        if self._local is not None:
            return self._local
        client = self._client
        if client is None:
            client = self._client = HranaClient(
                self.url,
                auth_token=self._token,
                transport=self._transport,
                timeout=self.timeout,
                busy_timeout=self.busy_timeout,
            )
        return client

    async def close(self) -> None:
        if self._local is not None:
            await self._local.close()
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _file_path(url: str) -> str:
    """The path of a ``file:`` URL: ``file:rel``, ``file:/abs``, ``file:///abs``,
    ``file://localhost/abs``, ``file::memory:``."""
    rest = url[len("file:") :]
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host not in ("", "localhost"):
            raise ValueError(f"file URL {url!r} names a host; use file:///abs/path.db")
        rest = slash + path
    path = unquote(rest)
    if not path:
        raise ValueError(f"file URL {url!r} names no database file")
    return path
