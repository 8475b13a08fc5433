"""``MemoryDriver``: the KV driver in process memory, atomic and with TTL.

Every method runs without awaiting between its read and its write, so on one event loop each is
one indivisible step (``atomic = True``), as in ``MemoryStore``. TTLs are wall-clock deadlines
checked when a key is read. ``keys`` bisects a sorted list of the keys: new keys are appended
and the list re-sorted (Timsort, close to linear on a sorted list with a sorted tail) when it is
next listed; deleted keys are skipped and compacted away once they are half of it.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence

from heron.stores.kv._driver import Version

__all__ = ["MemoryDriver"]


def _after(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None: no bound)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


class MemoryDriver:
    """Keys and values in a dict; the version of a value is the value itself."""

    atomic = True
    supports_ttl = True

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._order: list[str] = []  # sorted, may hold deleted keys
        self._listed: set[str] = set()  # keys in _order or _new
        self._new: list[str] = []
        self._dead = 0

    def __repr__(self) -> str:
        return f"MemoryDriver({len(self._data)} keys)"

    # -- internals -----------------------------------------------------------------------------

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.time():
            del self._data[key]
            self._dead += 1
            return None
        return value

    def _put(self, key: str, value: bytes, ttl: float | None) -> None:
        self._data[key] = (bytes(value), None if ttl is None else time.time() + ttl)
        if key not in self._listed:
            self._listed.add(key)
            self._new.append(key)

    def _sorted(self) -> list[str]:
        if self._new:
            self._order.extend(self._new)
            self._new.clear()
            self._order.sort()
        if self._dead > 64 and self._dead * 2 > len(self._order):
            self._order = [k for k in self._order if k in self._data]
            self._listed = set(self._order)
            self._dead = 0
        return self._order

    # -- the protocol ----------------------------------------------------------------------------

    @staticmethod
    def version_of(value: bytes) -> Version:
        """The version of ``value`` once written: the value itself."""
        return bytes(value)

    async def get(self, key: str) -> tuple[bytes, Version] | None:
        value = self._live(key)
        return None if value is None else (value, value)

    async def get_many(self, keys: Sequence[str]) -> list[tuple[bytes, Version] | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._put(key, value, ttl)

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        if self._live(key) is not None:
            return False
        self._put(key, value, ttl)
        return True

    async def compare_and_set(
        self, key: str, value: bytes, version: Version, *, ttl: float | None = None
    ) -> bool:
        if self._live(key) != version:
            return False
        self._put(key, value, ttl)
        return True

    async def delete(self, key: str, *, version: Version | None = None) -> bool:
        current = self._live(key)
        if current is None or (version is not None and current != version):
            return False
        del self._data[key]
        self._dead += 1
        return True

    async def keys(
        self,
        prefix: str,
        *,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[str]:
        order = self._sorted()
        lo = prefix if start is None or start < prefix else start
        hi = _after(prefix)
        if end is not None and (hi is None or end < hi):
            hi = end
        i = bisect.bisect_left(order, lo)
        j = bisect.bisect_left(order, hi) if hi is not None else len(order)
        out: list[str] = []
        indexes = range(j - 1, i - 1, -1) if reverse else range(i, j)
        for n in indexes:
            key = order[n]
            if not key.startswith(prefix):
                if reverse:
                    continue
                break
            if self._live(key) is None:
                continue
            out.append(key)
            if limit is not None and len(out) >= limit:
                break
        return out

    async def close(self) -> None:
        return None
