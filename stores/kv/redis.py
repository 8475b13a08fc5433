"""``RedisDriver``: the KV driver on Redis through ``redis.asyncio`` (redis-py).

Atomic (each primitive is one Lua script) and with TTL (``SET ... PX``); see
:mod:`heron.stores.kv._remote` for the keys and scripts it shares with the Upstash driver. The
client is made on first use inside the running loop; ``client=`` takes a ready one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from heron.stores.contract import StoreError
from heron.stores.kv._remote import RedisLikeDriver, Script
from heron.stores.redis import connect, mask_url

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisDriver"]


class RedisDriver(RedisLikeDriver):
    """KV on Redis. ``url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL as redis-py
    takes it; ``client`` a ready ``redis.asyncio.Redis`` (never closed here); ``options`` go to
    ``redis.asyncio.from_url``. Errors raise ``StoreError`` naming the URL, password masked."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        namespace: str = "",
        index: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(namespace=namespace, index=index)
        if url is None and client is None:
            raise ValueError("RedisDriver needs a redis:// URL or a client")
        self.url = url
        self._client = client
        self._owned = client is None
        self._options = options
        self._where = mask_url(url) if url else "the given Redis client"

    def __str__(self) -> str:
        return f"Redis at {self._where}"

    def __repr__(self) -> str:
        return f"RedisDriver({self._where!r}, namespace={self.namespace!r})"

    def _redis(self) -> Redis:
        client = self._client
        if client is None:
            assert self.url is not None
            client = self._client = connect(self.url, self._options)
        return client

    def _error(self, exc: Exception, key: str | None = None) -> StoreError:
        import redis.exceptions as rx

        text = str(exc)
        foreign = self._foreign(text)
        if foreign is not None:
            return foreign
        if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
            return StoreError(f"Redis at {self._where} refused the credentials: {text}")
        if isinstance(exc, rx.ConnectionError | rx.TimeoutError | OSError):
            return StoreError(f"cannot reach Redis at {self._where}: {type(exc).__name__}: {text}")
        where = f" (key {key!r})" if key else ""
        return StoreError(f"Redis error at {self._where}{where}: {text}")

    async def _command(self, *args: Any) -> Any:
        import redis.exceptions as rx

        try:
            return await self._redis().execute_command(*args)  # type: ignore[no-untyped-call]
        except (rx.RedisError, OSError) as exc:
            raise self._error(exc, str(args[1]) if len(args) > 1 else None) from None

    async def _eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        import redis.exceptions as rx

        client = self._redis()
        try:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except rx.NoScriptError:
                return await client.eval(script.source, len(keys), *keys, *args)
        except (rx.RedisError, OSError) as exc:
            raise self._error(exc, keys[0] if keys else None) from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._owned:
            await client.aclose()
