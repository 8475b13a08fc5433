"""``UpstashDriver``: the KV driver on Upstash Redis over its REST API, for runtimes with only HTTP.

Upstash's REST API (https://upstash.com/docs/redis/features/restapi) takes one Redis command as
a JSON array in the body of a ``POST`` to the database URL, with ``Authorization: Bearer
<token>``, and answers ``{"result": ...}`` (200) or ``{"error": "..."}`` (400; 401 for a bad
token). Each primitive here is one such request: a ``GET``, an ``MGET`` or an ``EVALSHA`` of
the Lua scripts the Redis driver uses (:mod:`heron.stores.kv._remote`), so every one is atomic on
the server and one HTTP round trip. ``/pipeline`` and ``/multi-exec`` are not needed.

The HTTP goes through an :class:`~heron.stores._http.HttpTransport`: ``HttpxTransport`` (pooled
``httpx``) on CPython by default, or a ``fetch`` transport under Pyodide, passed as
``transport=``. Why not the ``upstash-redis`` client: it builds its own ``httpx`` client (no way
to pass ``fetch``), sends telemetry headers unless told not to, and retries every failed request
itself, writes included, which would turn one lost answer to a create-only write into a wrong
"already exists". A write whose answer is lost raises
:class:`~heron.stores._http.TransportError` here instead (the outcome is unknown; the store's
caller retries the operation, which the contract makes safe).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from heron.stores._http import HttpTransport, HttpxTransport, TransportError
from heron.stores._url import parse_bool
from heron.stores.contract import StoreError
from heron.stores.kv._remote import RedisLikeDriver, Script

__all__ = ["UpstashDriver"]


class UpstashDriver(RedisLikeDriver):
    """KV on Upstash Redis's REST API at ``url`` (``https://<db>.upstash.io``) with ``token``.

    Raises ``StoreError`` naming the URL (never the token) when the database cannot be reached,
    refuses the token, or answers an error.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        transport: HttpTransport | None = None,
        namespace: str = "",
        index: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(namespace=namespace, index=index)
        if not url:
            raise ValueError("UpstashDriver needs the database's REST URL")
        if not token:
            raise ValueError(
                f"UpstashDriver for {url} needs a token (token=, or UPSTASH_REDIS_REST_TOKEN)"
            )
        self.url = url.rstrip("/")
        self._token = token
        self._transport: HttpTransport = transport or HttpxTransport(timeout=timeout)
        self._owned = transport is None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> UpstashDriver:
        """``kv+upstash://[:TOKEN@]HOST[:PORT]?token=...&tls=0``; the host defaults to
        ``UPSTASH_REDIS_REST_URL`` and the token to ``UPSTASH_REDIS_REST_TOKEN`` (read here).
        ``tls=0`` speaks plain HTTP (a local double or proxy); keyword ``options`` override."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        token = options.pop("token", None) or query.pop("token", None)
        if token is None and parts.password:
            token = unquote(parts.password)
        token = token or os.environ.get("UPSTASH_REDIS_REST_TOKEN", "")
        tls = parse_bool("kv+upstash", "tls", query.pop("tls", "1"))
        host = parts.hostname or ""
        if host:
            port = f":{parts.port}" if parts.port else ""
            base = f"{'https' if tls else 'http'}://{host}{port}{parts.path.rstrip('/')}"
        else:
            base = os.environ.get("UPSTASH_REDIS_REST_URL", "")
        if query:
            raise ValueError(f"unknown kv+upstash URL option(s) {sorted(query)}; known: token, tls")
        return cls(base, token, **options)

    def __str__(self) -> str:
        return f"Upstash at {self.url}"

    def __repr__(self) -> str:
        return f"UpstashDriver({self.url!r}, namespace={self.namespace!r})"

    async def _post(self, command: list[Any]) -> Any:
        body = json.dumps(
            [
                c.decode() if isinstance(c, bytes) else c if isinstance(c, str) else str(c)
                for c in command
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        try:
            status, raw = await self._transport.post(self.url, headers, body)
        except TransportError as exc:
            raise StoreError(f"cannot reach Upstash at {self.url}: {exc}") from None
        if status in (401, 403):
            raise StoreError(f"Upstash at {self.url} refused the token (HTTP {status})")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise StoreError(
                f"Upstash at {self.url} answered HTTP {status} with a body that is not JSON"
            ) from None
        if isinstance(answer, dict) and "error" in answer:
            raise _Refused(str(answer["error"]))
        if status != 200 or not isinstance(answer, dict) or "result" not in answer:
            raise StoreError(f"Upstash at {self.url} answered HTTP {status}: {answer!r:.200}")
        return answer["result"]

    def _error(self, text: str, key: str | None) -> StoreError:
        foreign = self._foreign(text)
        if foreign is not None:
            return foreign
        where = f" (key {key!r})" if key else ""
        return StoreError(f"Upstash at {self.url} refused a command{where}: {text}")

    async def _command(self, *args: Any) -> Any:
        try:
            return await self._post(list(args))
        except _Refused as exc:
            raise self._error(str(exc), str(args[1]) if len(args) > 1 else None) from None

    async def _eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        tail = [len(keys), *keys, *args]
        try:
            try:
                return await self._post(["EVALSHA", script.sha, *tail])
            except _Refused as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                return await self._post(["EVAL", script.source, *tail])
        except _Refused as exc:
            raise self._error(str(exc), keys[0] if keys else None) from None

    async def close(self) -> None:
        if self._owned:
            await self._transport.aclose()


class _Refused(Exception):
    """An ``{"error": ...}`` answer (internal: becomes a StoreError)."""
