"""The key-value driver protocol ``KVStore`` runs on, and what every driver shares.

A driver is a flat map from text keys to byte values, with the few atomic primitives a workflow
store needs, in the spirit of unstorage's drivers (https://unstorage.unjs.io/guide/custom-driver)
but narrower: no metadata, no watch, plus compare-and-set and ordered key listing::

    get(key)                          -> (value, version) | None
    get_many(keys)                    -> [(value, version) | None, ...]   (one round trip)
    set(key, value, ttl=None)                             unconditional
    set_if_absent(key, value, ttl=None) -> bool           create-only
    compare_and_set(key, value, version, ttl=None) -> bool   only if unchanged since ``get``
    delete(key, version=None) -> bool                     conditional when ``version`` is given
    keys(prefix, start=, end=, limit=, reverse=) -> [key, ...]   sorted, a range of them
    close()

``version`` is an opaque ``bytes`` token that a driver hands out with a value and takes back in
``compare_and_set``/``delete``. The bundled drivers use the value itself (memory, file) or its
SHA-1 (Redis, Upstash: a short token instead of the whole value on the wire), which is sound
for ``KVStore`` because every header it writes carries a counter that only grows, so a value
never comes back (no ABA).

``atomic`` says whether ``set_if_absent``, ``compare_and_set`` and a conditional ``delete`` are
decided by the backend in one indivisible step. A driver that can only emulate them (read, then
write) sets ``atomic = False``; ``KVStore`` then says so (``atomic_lease = False``). ``ttl`` (in
seconds) is honoured only by drivers with ``supports_ttl``; ``KVStore`` refuses retention on the
others when it is opened.

Keys are text; ``/`` separates segments (the file driver makes them directories). ``keys``
lists in the order of the keys' UTF-8 bytes, which is what lets ``KVStore`` keep its wake index
and listing indexes as key ranges: a driver lists a range without reading the keys outside it
(memory: a sorted list; Redis and Upstash: a sorted set of the keys, ZRANGEBYLEX; files:
directories walked in order, subtrees outside the range skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["KVDriver", "Version"]

#: What a driver hands out with a value and takes back for a conditional write.
Version = bytes


@runtime_checkable
class KVDriver(Protocol):
    """What ``KVStore`` needs of a key-value backend. Every method is a coroutine.

    Errors: a backend failure (unreachable, refused, a key holding a type the driver did not
    write) raises :class:`~heron.stores.contract.StoreError` with a message that names the
    backend (credentials masked) and the key.
    """

    #: ``set_if_absent``, ``compare_and_set`` and conditional ``delete`` are atomic.
    atomic: bool
    #: ``ttl`` arguments are honoured (the backend expires keys).
    supports_ttl: bool

    async def get(self, key: str) -> tuple[bytes, Version] | None:
        """The value under ``key`` and its version, or ``None``."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[tuple[bytes, Version] | None]:
        """:meth:`get` for each key, in order, in one round trip where the backend can."""
        ...

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` (replacing any, and any TTL it had); ``ttl`` seconds if given."""
        ...

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` holds nothing; ``False`` (nothing written) if it does."""
        ...

    async def compare_and_set(
        self, key: str, value: bytes, version: Version, *, ttl: float | None = None
    ) -> bool:
        """Replace the value only if its version is still ``version``; ``False`` if it changed
        or is gone. Without ``ttl`` the key keeps no TTL."""
        ...

    async def delete(self, key: str, *, version: Version | None = None) -> bool:
        """Remove ``key`` (only if its version is ``version``, when given); ``True`` if it went."""
        ...

    async def keys(
        self,
        prefix: str,
        *,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[str]:
        """The keys that start with ``prefix``, ``start <= key < end`` (either bound optional),
        in ascending order (descending with ``reverse``: the ``limit`` highest), at most
        ``limit``."""
        ...

    async def close(self) -> None:
        """Release connections; the driver is not used afterwards."""
        ...
