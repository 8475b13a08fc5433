"""``FileDriver``: the KV driver on a directory tree, atomic across processes on one machine.

A key ``a/b/c`` is the file ``ROOT/a/b/c``. Segments must be made of ``A-Z a-z 0-9 _ - ~ % .``
and not start with ``.`` (``KVStore`` escapes its keys to that alphabet); names that start with
``.`` are the driver's own: ``.tmp-*`` files being written and the ``.locks/`` directory.

* ``set`` and ``compare_and_set`` write a temporary file in the key's directory and
  ``os.replace`` it over the key: a reader sees the old value or the new one, never half.
* ``set_if_absent`` writes a temporary file and hard-links it to the key (``os.link``), which
  fails if the key exists: create-only, atomic, and never visible half written (an ``O_EXCL``
  create would be visible while it is still being written).
* ``compare_and_set``, ``set`` and ``delete`` hold an exclusive ``flock`` on one of 64 lock
  files (``ROOT/.locks/N``, picked by a hash of the key) while they read, compare and write, so
  two processes (or two instances in one process) never interleave on one key. The lock is
  tried without blocking; while another holder has it the call awaits a short back-off (1 ms
  growing to 20 ms), so the event loop never blocks on it.

So the driver is ``atomic`` across processes that share the directory on one machine. ``flock``
is not reliable on NFS and some network filesystems: there, give each machine its own store.
It has no TTL (``supports_ttl = False``): ``KVStore`` refuses retention on it.

Durability: with ``fsync`` (off by default) each write is flushed before its rename and the
directory after; without it a killed process loses nothing, a power loss may lose the last
writes (as SQLite's ``synchronous=NORMAL``). File operations run inline on the event loop: a
small write costs tens of microseconds, less than a hop to a thread.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import re
import secrets
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from heron.stores.contract import StoreError
from heron.stores.kv._driver import Version

__all__ = ["FileDriver"]

_SEGMENT: Final = re.compile(r"[A-Za-z0-9_~%\-][A-Za-z0-9_~%.\-]*")
_STRIPES: Final = 64


#: The longest file name most file systems take (ext4, XFS, APFS: 255 bytes; the escaped key
#: segments are ASCII, so characters are bytes).
_NAME_MAX = 255


def _write_all(fd: int, value: bytes) -> None:
    """``os.write`` until every byte is written: a write may take fewer (a nearly full disk)."""
    view = memoryview(value)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no byte could be written")
        view = view[written:]


class FileDriver:
    """Keys as files under ``root`` (created on first write); the version is the content."""

    atomic = True
    supports_ttl = False

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.root = Path(root).absolute()
        self.fsync = fsync
        self._locks: dict[int, int] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"FileDriver({str(self.root)!r})"

    # -- paths and locks -------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        for part in parts:
            if not _SEGMENT.fullmatch(part):
                raise ValueError(
                    f"key {key!r}: segment {part!r} is not a file name the file driver takes "
                    "(A-Z a-z 0-9 _ - ~ % ., not starting with .)"
                )
            if len(part) > _NAME_MAX:
                raise StoreError(
                    f"key {key!r}: segment of {len(part)} bytes is longer than a file name may "
                    f"be ({_NAME_MAX}); the id, tag or name in it is too long for the file driver"
                )
        return self.root.joinpath(*parts)

    def _fd(self, key: str) -> int:
        if self._closed:
            raise StoreError(f"the FileDriver for {self.root} is closed")
        stripe = zlib.crc32(key.encode()) % _STRIPES
        fd = self._locks.get(stripe)
        if fd is None:
            folder = self.root / ".locks"
            folder.mkdir(parents=True, exist_ok=True)
            fd = self._locks[stripe] = os.open(folder / str(stripe), os.O_RDWR | os.O_CREAT, 0o644)
        return fd

    async def _lock(self, key: str) -> int:
        """Take the key's stripe lock (cross-process). Nothing awaits while it is held."""
        fd = self._fd(key)
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.02)

    @staticmethod
    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

    def _temp(self, path: Path, value: bytes) -> Path:
        """Write ``value`` to a fresh temporary file beside ``path`` (making the directory)."""
        while True:
            temp = path.parent / f".tmp-{secrets.token_hex(8)}"
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                _write_all(fd, value)
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:  # a full disk, a quota: nothing half-written is kept
                os.close(fd)
                temp.unlink(missing_ok=True)
                raise StoreError(f"could not write {path} ({exc.strerror or exc})") from exc
            os.close(fd)
            return temp

    def _sync_dir(self, path: Path) -> None:
        if self.fsync:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            raise StoreError(f"{path} is a directory, not a value the file driver wrote") from None

    def _replace(self, path: Path, value: bytes) -> None:
        temp = self._temp(path, value)
        try:
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        self._sync_dir(path)

    def _prune(self, path: Path) -> None:
        """Remove now-empty directories above a deleted key (a writer recreates them)."""
        folder = path.parent
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # -- the protocol ----------------------------------------------------------------------------

    @staticmethod
    def version_of(value: bytes) -> Version:
        """The version of ``value`` once written: the value itself."""
        return bytes(value)

    async def get(self, key: str) -> tuple[bytes, Version] | None:
        value = self._read(self._path(key))
        return None if value is None else (value, value)

    async def get_many(self, keys: Sequence[str]) -> list[tuple[bytes, Version] | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        path = self._path(key)
        fd = await self._lock(key)
        try:
            self._replace(path, value)
        finally:
            self._unlock(fd)

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        path = self._path(key)
        temp = self._temp(path, value)
        try:
            # Two writers creating one key: link(2) fails with EEXIST for all but one, and the
            # winner's file is complete before it has a name.
            while True:
                try:
                    os.link(temp, path)
                    break
                except FileExistsError:
                    return False
                except FileNotFoundError:  # a delete pruned the directory meanwhile
                    path.parent.mkdir(parents=True, exist_ok=True)
        finally:
            temp.unlink(missing_ok=True)
        self._sync_dir(path)
        return True

    async def compare_and_set(
        self, key: str, value: bytes, version: Version, *, ttl: float | None = None
    ) -> bool:
        path = self._path(key)
        fd = await self._lock(key)
        try:
            # Two writers on one version: the stripe lock makes read-compare-replace one step
            # for every process; the second sees the first's value and gets False.
            if self._read(path) != version:
                return False
            self._replace(path, value)
            return True
        finally:
            self._unlock(fd)

    async def delete(self, key: str, *, version: Version | None = None) -> bool:
        path = self._path(key)
        fd = await self._lock(key)
        try:
            if version is not None and self._read(path) != version:
                return False
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            self._sync_dir(path)
        finally:
            self._unlock(fd)
        self._prune(path)
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
        head, _, name = prefix.rpartition("/")
        folder = self._path(head) if head else self.root
        base = f"{head}/" if head else ""
        out: list[str] = []
        for key in self._walk(folder, base, name, start, end, reverse):
            out.append(key)
            if limit is not None and len(out) >= limit:
                break
        return out

    def _walk(
        self,
        folder: Path,
        base: str,
        name: str,
        start: str | None,
        end: str | None,
        reverse: bool,
    ) -> Iterator[str]:
        """Keys under ``folder`` (whose key prefix is ``base``) whose next segment starts with
        ``name``, in key order, skipping subtrees wholly outside ``[start, end)``."""
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
            raise
        # Key order: a directory's keys all start with "<name>/", so it sorts as that string.
        ranked = sorted(
            (
                (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e)
                for e in entries
                if not e.name.startswith(".") and e.name.startswith(name)
            ),
            key=lambda item: item[0],
            reverse=reverse,
        )
        for label, entry in ranked:
            key = base + label
            if label.endswith("/"):
                # every key below lies in [key, key + "\U0010ffff")
                if end is not None and key >= end:
                    continue
                if start is not None and key + "\U0010ffff" < start:
                    continue
                yield from self._walk(Path(entry.path), key, "", start, end, reverse)
            else:
                if (start is None or key >= start) and (end is None or key < end):
                    yield key

    async def close(self) -> None:
        self._closed = True
        locks, self._locks = self._locks, {}
        for fd in locks.values():
            os.close(fd)
