"""The HTTP a store speaks through, as one small swappable object.

Two stores talk HTTP: ``LibSQLStore`` (Hrana over HTTP, to Turso or sqld) and the KV store's
Upstash driver (Upstash's REST API). Neither needs more than "POST these bytes with these
headers, give me the status and the body", so that is the whole interface, and the store never
imports an HTTP library itself:

* :class:`HttpxTransport` on CPython: one pooled ``httpx.AsyncClient`` (keep-alive, so a warm
  Lambda reuses its connection and TLS session), made on first use inside the running loop;
* a ``fetch`` transport under Pyodide (Cloudflare Python Workers), where there are no sockets,
  only the platform's ``fetch`` (``heron.functions.worker`` passes one in).

A transport returns every HTTP status as it is (4xx and 5xx included) and raises
:class:`TransportError` only when no answer came: refused, reset, timed out.
"""

from __future__ import annotations

from typing import Any, Protocol

from heron.stores.contract import HeronError

__all__ = ["HttpTransport", "HttpxTransport", "TransportError"]


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
