"""The HTTP a store speaks through, as one small swappable object.

Two stores talk HTTP: ``LibSQLStore`` (Hrana over HTTP, to Turso or sqld) and the KV store's
Upstash driver (Upstash's REST API). Neither needs more than "POST these bytes with these
headers, give me the status and the body", so that is the whole interface, and the store never
imports an HTTP library itself:

* :class:`HttpxTransport` on CPython: one pooled ``httpx.AsyncClient`` (keep-alive, so a warm
  Lambda reuses its connection and TLS session), made on first use inside the running loop;
* :class:`FetchTransport` under Pyodide (Cloudflare Python Workers), where there are no
  sockets, only the platform's ``fetch`` (``heron.functions.worker`` passes one in).

A transport returns every HTTP status as it is (4xx and 5xx included) and raises
:class:`TransportError` only when no answer came: refused, reset, timed out.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from heron.stores.contract import HeronError

__all__ = ["FetchTransport", "HttpTransport", "HttpxTransport", "TransportError"]


class TransportError(HeronError, ConnectionError):
    """No HTTP answer: the connection was refused or reset, or the request timed out. The
    message names the URL (never a credential); for a write, the outcome is unknown."""


class HttpTransport(Protocol):
    """What a store needs of HTTP: one POST at a time, the answer as ``(status, body)``."""

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """POST ``body`` to ``url``; return the status and the body, whatever the status.
        Raises :class:`TransportError` when no answer came."""
        ...

    async def aclose(self) -> None:
        """Close the connections this transport opened."""
        ...


class HttpxTransport:
    """:class:`HttpTransport` on a pooled ``httpx.AsyncClient`` (imported on first use).

    ``timeout`` is seconds per request (connect, read, write and pool alike). ``client`` is a
    ready ``httpx.AsyncClient`` to use instead (never closed here).
    """

    def __init__(self, *, timeout: float = 30.0, client: Any = None) -> None:
        self.timeout = timeout
        self._client = client
        self._owned = client is None

    async def _get(self) -> Any:
        if self._client is None:
            import httpx  # only now: neither import nor cold start pays for it unused

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout), follow_redirects=False
            )
        return self._client

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        import httpx

        client = await self._get()
        try:
            response = await client.post(url, headers=headers, content=body)
        except httpx.TimeoutException:
            # `from None`: an httpx error carries the request, and with it the Authorization
            raise TransportError(f"no answer from {url} within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
        return response.status_code, response.content

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._owned:
            await client.aclose()


class FetchTransport:
    """:class:`HttpTransport` on the platform's ``fetch``, for Pyodide (Cloudflare Python
    Workers, or Pyodide in Node), where Python has no sockets.

    Each ``post`` is one ``fetch`` with ``AbortSignal.timeout(timeout)``; the platform pools the
    connections, so there is nothing to close. ``fetch`` is the JavaScript function to call
    (``js.fetch`` by default, looked up on first use, so this module imports on CPython too, and
    constructing one at import time costs nothing); pass a service binding's ``fetch`` to reach
    a Worker, or a stand-in in a test.

    Pyodide converts a Python ``None`` to JavaScript ``undefined`` and a ``dict`` to a ``Map``,
    which ``fetch`` does not read; the init object is therefore built with
    ``Object.fromEntries``, and the body handed over as a ``Uint8Array`` copy.
    """

    def __init__(self, *, timeout: float = 30.0, fetch: Any = None) -> None:
        self.timeout = timeout
        self._fetch = fetch

    def __repr__(self) -> str:
        return f"FetchTransport(timeout={self.timeout:g})"

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        js = importlib.import_module("js")  # Pyodide's bridge: only there, only now
        ffi = importlib.import_module("pyodide.ffi")
        fetch = self._fetch if self._fetch is not None else js.fetch
        init = ffi.to_js(
            {
                "method": "POST",
                "headers": ffi.to_js(headers, dict_converter=js.Object.fromEntries),
                "body": ffi.to_js(body),
                "redirect": "manual",
                "signal": js.AbortSignal.timeout(max(1, int(self.timeout * 1000))),
            },
            dict_converter=js.Object.fromEntries,
            depth=1,
        )
        try:
            response = await fetch(url, init)
            data = await response.arrayBuffer()
        except ffi.JsException as exc:
            # TimeoutError / AbortError from the signal, TypeError "fetch failed" when refused
            name = str(getattr(exc, "name", "") or type(exc).__name__)
            if name in ("TimeoutError", "AbortError"):
                raise TransportError(f"no answer from {url} within {self.timeout:g}s") from None
            raise TransportError(f"cannot reach {url}: {name}: {exc}") from None
        return int(response.status), bytes(data.to_bytes())

    async def aclose(self) -> None:
        """Nothing to close: the platform owns the connections."""
        return None
