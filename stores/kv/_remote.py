"""What the Redis and Upstash KV drivers share: the same commands and Lua scripts, sent over
RESP (redis-py) or over Upstash's REST API.

A KV key ``k`` is the Redis string ``<namespace>k``. Listing needs the keys in order without a
SCAN of the whole keyspace, so every write also keeps the key in one sorted set,
``<index>`` (all members scored 0, so ZRANGEBYLEX walks them in byte order); each write and its
index update is one Lua script, so they happen together and cost one round trip. A key that
Redis expired (TTL) leaves its member behind; ``keys`` drops such members as it meets them.

Versions are the SHA-1 of the value (``redis.sha1hex`` in the scripts), so a compare-and-set
sends 40 bytes, not the old value. Scripts are called by SHA1 (EVALSHA) and sent once by source
(EVAL) when the server answers NOSCRIPT.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

from heron.stores.contract import StoreError
from heron.stores.kv._driver import Version

__all__ = ["RedisLikeDriver"]

_PRELUDE: Final = r"""
local function kind(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    error({err = 'HERON_FOREIGN\t' .. key .. '\tholds a ' .. t .. ', not a ' .. want .. '\t'})
  end
end
local function put(key, value, ttl)
  if ttl ~= '' then redis.call('SET', key, value, 'PX', ttl)
  else redis.call('SET', key, value) end
end
"""

# KEYS: data key, index. ARGV: member (the KV key), value, ttl ms ('' = none), version.
_SET: Final = r"""
kind(KEYS[1], 'string') kind(KEYS[2], 'zset')
put(KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"""
_ADD: Final = r"""
kind(KEYS[1], 'string') kind(KEYS[2], 'zset')
-- create-only: EXISTS and SET run as one step, so of two writers one finds the other's value
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
put(KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"""
_CAS: Final = r"""
kind(KEYS[1], 'string') kind(KEYS[2], 'zset')
-- compare-and-set: the value is read and replaced in one step, so of two writers holding the
-- same version only the first finds it unchanged
local current = redis.call('GET', KEYS[1])
if not current or redis.sha1hex(current) ~= ARGV[4] then return 0 end
put(KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"""
_DEL: Final = r"""
kind(KEYS[1], 'string') kind(KEYS[2], 'zset')
local current = redis.call('GET', KEYS[1])
if not current then redis.call('ZREM', KEYS[2], ARGV[1]) return 0 end
if ARGV[4] ~= '' and redis.sha1hex(current) ~= ARGV[4] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""
# KEYS: index. ARGV: namespace, low bound, high bound (ZRANGEBYLEX syntax), limit, reverse.
_KEYS: Final = r"""
kind(KEYS[1], 'zset')
local out, lo, hi, want = {}, ARGV[2], ARGV[3], tonumber(ARGV[4])
while #out < want do
  local n = math.min(want - #out, 1000)
  local batch
  if ARGV[5] == '1' then
    batch = redis.call('ZREVRANGEBYLEX', KEYS[1], hi, lo, 'LIMIT', 0, n)
  else
    batch = redis.call('ZRANGEBYLEX', KEYS[1], lo, hi, 'LIMIT', 0, n)
  end
  for _, member in ipairs(batch) do
    if redis.call('EXISTS', ARGV[1] .. member) == 1 then out[#out + 1] = member
    else redis.call('ZREM', KEYS[1], member) end  -- expired by its TTL
  end
  if #batch < n then break end
  if ARGV[5] == '1' then hi = '(' .. batch[#batch] else lo = '(' .. batch[#batch] end
end
return out
"""


class Script:
    """A Lua script with its SHA1 computed here."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.source = _PRELUDE + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


SCRIPTS: Final = {
    name: Script(name, body)
    for name, body in (("set", _SET), ("add", _ADD), ("cas", _CAS), ("del", _DEL), ("keys", _KEYS))
}


def as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def version_of(value: bytes) -> Version:
    return hashlib.sha1(value).hexdigest().encode()


def _ttl(ttl: float | None) -> str:
    return "" if ttl is None else str(max(1, int(ttl * 1000)))


class RedisLikeDriver:
    """The KV protocol on Redis commands; subclasses say how a command and a script are sent.

    ``namespace`` goes before every KV key to make its Redis key; ``index`` is the sorted set of
    the keys (``<namespace>#index`` by default).
    """

    atomic = True
    supports_ttl = True

    def __init__(self, *, namespace: str = "", index: str | None = None) -> None:
        self.namespace = namespace
        self.index = index if index is not None else f"{namespace}#index"

    # what a subclass provides -------------------------------------------------------------------

    async def _command(self, *args: Any) -> Any:
        """Send one command; return its reply; raise StoreError naming the backend."""
        raise NotImplementedError

    async def _eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA, and EVAL after NOSCRIPT; raise StoreError naming the backend."""
        raise NotImplementedError

    def _foreign(self, text: str) -> StoreError | None:
        if not text.startswith("HERON_FOREIGN\t"):
            return None
        _, key, why, *_ = text.split("\t")
        return StoreError(
            f"key {key!r} at {self} {why}: not written by Heron's KV driver; nothing was written"
        )

    @staticmethod
    def version_of(value: bytes) -> Version:
        """The version of ``value`` once written: its SHA-1, as ``redis.sha1hex`` gives it."""
        return version_of(value)

    # the protocol ---------------------------------------------------------------------------------

    async def get(self, key: str) -> tuple[bytes, Version] | None:
        value = await self._command("GET", self.namespace + key)
        if value is None:
            return None
        data = as_bytes(value)
        return data, version_of(data)

    async def get_many(self, keys: Sequence[str]) -> list[tuple[bytes, Version] | None]:
        if not keys:
            return []
        values = await self._command("MGET", *(self.namespace + key for key in keys))
        out: list[tuple[bytes, Version] | None] = []
        for value in values:
            if value is None:
                out.append(None)
            else:
                data = as_bytes(value)
                out.append((data, version_of(data)))
        return out

    async def _write(
        self, name: str, key: str, value: bytes, ttl: float | None, version: Version | None
    ) -> bool:
        keys = [self.namespace + key, self.index]
        args = [key, value, _ttl(ttl), "" if version is None else as_text(version)]
        return bool(await self._eval(SCRIPTS[name], keys, args))

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self._write("set", key, value, ttl, None)

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        return await self._write("add", key, value, ttl, None)

    async def compare_and_set(
        self, key: str, value: bytes, version: Version, *, ttl: float | None = None
    ) -> bool:
        return await self._write("cas", key, value, ttl, version)

    async def delete(self, key: str, *, version: Version | None = None) -> bool:
        return await self._write("del", key, b"", None, version)

    async def keys(
        self,
        prefix: str,
        *,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[str]:
        low = prefix if start is None or start < prefix else start
        lo = "[" + low
        # the keys that start with prefix sort below prefix + U+10FFFF (the highest code point)
        top = prefix + "\U0010ffff"
        hi = "[" + top
        if end is not None and end <= top:
            hi = "(" + end
        want = 1 << 30 if limit is None else limit
        if want <= 0:
            return []
        members = await self._eval(
            SCRIPTS["keys"], [self.index], [self.namespace, lo, hi, want, int(reverse)]
        )
        return [as_text(m) for m in members]
