"""``KVStore``: the whole store contract on any key-value driver (:class:`KVDriver`).

Keys (``P`` is ``prefix``; ``<e(x)>`` is ``x`` escaped to ``A-Z a-z 0-9 _ - %``, so ids with
``/`` or ``.`` never split a key; ``~`` stands for the empty string)::

    P/run/<e(id)>                                the run document (JSON): the header, the
                                                 signals (by id), what consumed them, the
                                                 incarnation, a write counter ``v`` and the
                                                 index entries the run owns
    P/cp/<e(id)>/<inc>.<seq>                     one checkpoint, create-only
    P/wake/<t:8 hex>/<t:8 hex>.<e(id)>.<inc>.<w>   the wake index: one entry per scheduled run,
                                                 ``t`` = ``wake_at`` as 16 hex digits that sort
                                                 as the float does (split in two, so the file
                                                 driver keeps about 17 minutes per directory)
    P/ix/all/<c>.<e(id)>.<inc>.<w>               the listing indexes, ``c`` = ``created_at`` as
    P/ix/status/<e(s)>/..., P/ix/wf/..., P/ix/tag/..., P/ix/parent/...     16 sortable hex digits
    P/exp/<t:16 hex>.<e(id)>.<inc>.<w>           finished runs under retention, by expiry time

``inc`` (the incarnation) is a random token a run gets when it is created, and a new one when it
is rewound; checkpoints count only under the document's incarnation, so a zombie executor that
appends after a delete or a rewind writes where no ``load`` looks. ``w`` is the document's write
counter ``v`` when the entry was added (``v`` only grows: ``max(v + 1, now in ms)``).

Atomicity. A driver makes one key's writes atomic (create-only, compare-and-set), never two
keys at once, so each operation is decided by one single-key write, and the writes to the other
keys are ordered around it:

* ``create`` is ``set_if_absent`` of the document; ``append`` is ``set_if_absent`` of the
  checkpoint; ``save``, ``signal``, ``acquire``, ``release`` and ``rewind`` are one
  ``compare_and_set`` of the document (on the version this instance read), retried on a fresh
  read when the document changed in a way that does not decide the outcome (a lease renewal
  under a save). A signal, a save and a lease are therefore as atomic as the driver's
  compare-and-set.
* Index entries (wake, listing, retention) are hints, checked against the document whenever they
  are read. An entry is **added before** the document write that needs it and **removed after**
  the document write that drops it. A crash in between leaves an extra entry, which at worst wakes
  a run that is not due (``due`` reads the documents and skips it), never a missing one, so a wake
  is never lost. An entry is stale when the document exists, does not list it and has ``v >= w``
  (the writer that added it has lost or moved on), or when there is no document and the entry is
  ten minutes old; ``due`` and ``list_runs`` delete the stale entries they meet.
* ``append(..., consumes=s)`` writes the checkpoint first (create-only, carrying ``s``), then
  records the consumption in the document. A checkpoint that consumed ``s`` with no record in
  the document (a crash between the two) still counts: ``load`` treats ``s`` as consumed by the
  lowest such seq. Two different seqs consuming one signal: the document decides; the loser
  deletes its checkpoint (``load`` hides it if a crash left it).
* ``rewind`` copies the history it keeps under a new incarnation, then switches the document to
  it in one compare-and-set, then deletes the old incarnation's keys: interrupted anywhere, the
  run is either as before or rewound.
* ``delete`` removes the document first (the run is gone for everyone), then the rest.

Costs: a steady-state step is one ``set_if_absent`` (one round trip on Redis and Upstash); the
run document is read once per instance and cached for its incarnation. ``due`` is one range of
the wake index plus one ``get_many`` of the documents it names; ``load`` is a ``get``, a listing
of the checkpoints and one ``get_many``.

Drivers without atomic primitives (``driver.atomic`` false) emulate them with a read and a
write: this store then says so (``atomic_lease = False``): two executors may both take a lease,
and two racing writers of one key may both think they won. The write order above still holds,
so a crash gives at worst a spurious wake, never a lost one.

Retention (``retention_days``) needs a driver with TTL: a run that finishes gets its document
written with a TTL, and an entry under ``P/exp/``; each ``create`` removes the checkpoints of up
to ``reap_limit`` runs whose document has expired. A driver without TTL raises ``ValueError``
when the store is opened with retention.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from heron.stores._url import parse_bool
from heron.stores.contract import (
    MAX_PENDING_SIGNALS,
    TERMINAL_STATUSES,
    Acquired,
    Checkpoint,
    Conflict,
    Loaded,
    Run,
    RunPage,
    RunQuery,
    RunSummary,
    Signal,
    StoreError,
    TooManySignals,
    WorkflowStore,
    decode_cursor,
    dumps,
    encode_cursor,
    loads,
)
from heron.stores.kv._driver import KVDriver, Version

log = logging.getLogger("heron.stores.kv")

__all__ = ["KVStore", "escape", "unescape"]

FORMAT: Final = 1
_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_STALE_MS: Final = 600_000  # an entry with no document is stale after ten minutes
_CACHE: Final = 4096
_FIELDS: Final = tuple(Run(id="", workflow="").header_fields())
#: What a signal consumed in a history a rewind dropped is recorded as consumed by.
GONE: Final = -(2**62)


def escape(text: str) -> str:
    """``text`` as one key segment: ``A-Z a-z 0-9 _ -`` as they are, other UTF-8 bytes as
    ``%XX``; the empty string is ``~``."""
    if not text:
        return "~"
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in text.encode())


def unescape(segment: str) -> str:
    if segment == "~":
        return ""
    raw = bytearray()
    i = 0
    while i < len(segment):
        if segment[i] == "%":
            raw.append(int(segment[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(segment[i]))
            i += 1
    return raw.decode()


def sortable(value: float) -> str:
    """A float as 16 hex digits that sort, as text, as the float does."""
    bits: int = struct.unpack(">Q", struct.pack(">d", float(value)))[0]
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | (1 << 63)
    return f"{bits:016x}"


def unsortable(text: str) -> float:
    bits = int(text, 16)
    bits = bits & ~(1 << 63) if bits >> 63 else bits ^ 0xFFFF_FFFF_FFFF_FFFF
    value: float = struct.unpack(">d", struct.pack(">Q", bits))[0]
    return value


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class _Doc:
    """A run document as read (``raw`` is its stored text, ``version`` the driver's token)."""

    run: Run
    v: int
    inc: str
    wake: str | None  # the wake index entry of run.wake_at
    ix: tuple[str, ...]  # the listing index entries
    exp: str | None  # the retention entry
    signals: dict[str, Signal]
    consumed: dict[str, int]
    raw: bytes = b""
    version: Version = b""

    @property
    def entries(self) -> set[str]:
        out = set(self.ix)
        if self.wake is not None:
            out.add(self.wake)
        if self.exp is not None:
            out.add(self.exp)
        return out

    def encode(self) -> bytes:
        run = self.run
        body = {
            "heron": FORMAT,
            "v": self.v,
            "inc": self.inc,
            "wake": self.wake,
            "ix": list(self.ix),
            "exp": self.exp,
            "signals": {
                s.id: {"name": s.name, "payload": s.payload, "at": s.at}
                for s in self.signals.values()
            },
            "consumed": self.consumed,
            "run": {name: getattr(run, name) for name in _FIELDS},
        }
        return dumps(body).encode()


@dataclass(slots=True)
class _Entry:
    """A parsed index entry key."""

    key: str
    run_id: str
    inc: str
    w: int
    at: float = 0.0  # wake_at (wake entries) or created_at (listing entries)
    extra: dict[str, Any] = field(default_factory=dict)


class KVStore(WorkflowStore):
    """The store contract on a key-value ``driver``; see the module docstring for the layout.

    ``prefix`` is the first segment of every key. ``retention_days`` (0: keep) expires finished
    runs (needs ``driver.supports_ttl``, else ``ValueError``). ``reap_limit`` bounds the expired
    runs one ``create`` cleans up. ``atomic_lease`` is ``driver.atomic``.

    Raises :class:`~heron.stores.contract.StoreError` naming the key when a key under the prefix
    holds something this store did not write (nothing is overwritten), and whatever the driver
    raises when its backend fails.
    """

    def __init__(
        self,
        driver: KVDriver,
        *,
        prefix: str = "heron",
        retention_days: float = 0.0,
        reap_limit: int = 16,
    ) -> None:
        if retention_days < 0:
            raise ValueError(f"retention_days={retention_days!r} must be 0 (keep) or more")
        if retention_days and not driver.supports_ttl:
            raise ValueError(
                f"retention_days={retention_days:g} needs a driver with TTL, and {driver!r} "
                "has none: open the store without retention_days, or use a driver with TTL "
                "(memory, redis, upstash)"
            )
        self.driver = driver
        self.prefix = escape(prefix)
        self.retention_days = float(retention_days)
        self.reap_limit = reap_limit
        self.atomic_lease = bool(driver.atomic)
        self._docs: OrderedDict[str, _Doc] = OrderedDict()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KVStore:
        """``kv+memory://``, ``kv+file:///relative/dir`` or ``kv+file:////abs/dir``,
        ``kv+redis://...`` (also ``kv+rediss://``, ``kv+unix://``; the rest of the URL is
        redis-py's), ``kv+upstash://[:TOKEN@]HOST?tls=0``.

        Query options for the store: ``prefix=``, ``retention_days=``, ``reap_limit=``; for the
        file driver ``fsync=1``. ``driver=`` (keyword) passes a ready driver instead. Without a
        password in a ``kv+redis`` URL, ``HERON_REDIS_PASSWORD`` is used; the Upstash token
        comes from the URL or ``UPSTASH_REDIS_REST_TOKEN``.
        """
        import os
        from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

        scheme, sep, rest = url.partition("://")
        scheme = scheme.lower()
        if not sep or not scheme.startswith("kv+"):
            raise ValueError(f"not a kv+<driver>:// URL: {url!r}")
        kind = scheme[3:]
        parts = urlsplit(kind + "://" + rest)
        store: dict[str, Any] = {}
        driver_query: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "prefix":
                store[name] = value
            elif name in ("retention_days", "reap_limit"):
                try:
                    store[name] = float(value) if name == "retention_days" else int(value)
                except ValueError:
                    raise ValueError(f"kv URL option {name}={value!r} is not a number") from None
            else:
                driver_query.append((name, value))
        for name in ("prefix", "retention_days", "reap_limit"):
            if name in options:
                store[name] = options.pop(name)
        driver = options.pop("driver", None)
        if driver is None:
            query = dict(driver_query)
            if kind == "memory":
                from heron.stores.kv.memory import MemoryDriver

                driver = MemoryDriver()
            elif kind == "file":
                from heron.stores.kv.file import FileDriver

                path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
                if parts.netloc or not path:
                    raise ValueError(
                        f"kv+file URL {url!r}: use kv+file:///relative/dir or kv+file:////abs/dir"
                    )
                fsync = parse_bool("kv+file", "fsync", query.pop("fsync", "0"))
                if query:
                    raise ValueError(f"unknown kv+file URL option(s) {sorted(query)}")
                driver = FileDriver(path, fsync=fsync, **options)
            elif kind in ("redis", "rediss", "unix"):
                from heron.stores.kv.redis import RedisDriver

                clean = urlunsplit(parts._replace(query=urlencode(driver_query)))
                password = os.environ.get("HERON_REDIS_PASSWORD")
                if parts.password is None and password and "password" not in options:
                    options["password"] = password
                prefix = escape(store.get("prefix", "heron"))
                driver = RedisDriver(clean, index=f"{prefix}#index", **options)
            elif kind == "upstash":
                from heron.stores.kv.upstash import UpstashDriver

                prefix = escape(store.get("prefix", "heron"))
                clean = urlunsplit(parts._replace(query=urlencode(driver_query)))
                driver = UpstashDriver.from_url(clean, index=f"{prefix}#index", **options)
            else:
                raise ValueError(
                    f"unknown KV driver {kind!r} in {url!r}; known: memory, file, redis, upstash"
                )
        elif options:
            raise ValueError(f"options {sorted(options)} go to the driver, but driver= was given")
        return cls(driver, **store)

    def __repr__(self) -> str:
        return f"KVStore({self.driver!r}, prefix={self.prefix!r})"

    # -- keys --------------------------------------------------------------------------------------

    def _run_key(self, run_id: str) -> str:
        return f"{self.prefix}/run/{escape(run_id)}"

    def _cp_dir(self, run_id: str) -> str:
        return f"{self.prefix}/cp/{escape(run_id)}/"

    def _cp_key(self, run_id: str, inc: str, seq: int) -> str:
        return f"{self.prefix}/cp/{escape(run_id)}/{inc}.{seq}"

    def _wake_key(self, run_id: str, inc: str, w: int, wake_at: float) -> str:
        t = sortable(wake_at)
        return f"{self.prefix}/wake/{t[:8]}/{t[8:]}.{escape(run_id)}.{inc}.{w}"

    def _wake_end(self, now: float) -> str:
        t = sortable(math.nextafter(float(now), math.inf))
        return f"{self.prefix}/wake/{t[:8]}/{t[8:]}"

    def _ix_dirs(self, run: Run) -> list[str]:
        p = self.prefix
        dirs = [f"{p}/ix/all/", f"{p}/ix/status/{escape(run.status)}/"]
        dirs.append(f"{p}/ix/wf/{escape(run.workflow)}/")
        dirs += [f"{p}/ix/tag/{escape(tag)}/" for tag in dict.fromkeys(run.tags)]
        if run.parent_id is not None:
            dirs.append(f"{p}/ix/parent/{escape(run.parent_id)}/")
        return dirs

    def _exp_key(self, run_id: str, inc: str, w: int, expires: float) -> str:
        return f"{self.prefix}/exp/{sortable(expires)}.{escape(run_id)}.{inc}.{w}"

    def _parse(self, key: str) -> _Entry:
        """An index entry key: ``.../<t>.<e(id)>.<inc>.<w>``."""
        folder, _, name = key.rpartition("/")
        head, eid, inc, w = name.rsplit(".", 3)
        entry = _Entry(key=key, run_id=unescape(eid), inc=inc, w=int(w))
        if key.startswith(f"{self.prefix}/wake/"):
            entry.at = unsortable(folder.rpartition("/")[2] + head)
        else:
            entry.at = unsortable(head)
        return entry

    # -- documents ---------------------------------------------------------------------------------

    def _decode(self, key: str, raw: bytes, version: Version) -> _Doc:
        try:
            body = loads(raw)
            if not isinstance(body, dict) or body.get("heron") != FORMAT:
                raise ValueError("no Heron format marker")
            fields = body["run"]
            run = Run(**{name: fields[name] for name in _FIELDS})
            run.created_at = float(run.created_at)
            run.updated_at = float(run.updated_at)
            run.wake_at = None if run.wake_at is None else float(run.wake_at)
            if run.lease_expires_at is not None:
                run.lease_expires_at = float(run.lease_expires_at)
            signals = {
                sid: Signal(id=sid, name=s["name"], payload=s["payload"], at=float(s["at"]))
                for sid, s in body["signals"].items()
            }
            return _Doc(
                run=run,
                v=int(body["v"]),
                inc=str(body["inc"]),
                wake=body["wake"],
                ix=tuple(body["ix"]),
                exp=body["exp"],
                signals=signals,
                consumed={sid: int(seq) for sid, seq in body["consumed"].items()},
                raw=raw,
                version=version,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(
                f"key {key!r} in {self.driver!r} holds a value this store did not write "
                f"({type(exc).__name__}: {exc}); nothing was written to it"
            ) from None

    def _remember(self, run_id: str, doc: _Doc | None) -> None:
        if doc is None:
            self._docs.pop(run_id, None)
            return
        self._docs[run_id] = doc
        self._docs.move_to_end(run_id)
        while len(self._docs) > _CACHE:
            self._docs.popitem(last=False)

    def _remember_written(self, doc: _Doc, raw: bytes) -> None:
        """Cache a document this instance wrote, if the driver can tell its version without a
        read (``version_of``); otherwise the next call reads it."""
        version_of = getattr(self.driver, "version_of", None)
        if version_of is None:
            self._remember(doc.run.id, None)
        else:
            self._remember(doc.run.id, replace(doc, raw=raw, version=version_of(raw)))

    async def _read(self, run_id: str) -> _Doc | None:
        key = self._run_key(run_id)
        got = await self.driver.get(key)
        doc = None if got is None else self._decode(key, *got)
        self._remember(run_id, doc)
        return doc

    async def _current(self, run_id: str) -> tuple[_Doc | None, bool]:
        """The cached document if this instance has one (a compare-and-set checks it), else a
        fresh read; and whether it is fresh."""
        doc = self._docs.get(run_id)
        if doc is not None:
            return doc, False
        return await self._read(run_id), True

    def _next(self, doc: _Doc, run: Run, *, inc: str | None = None, **changes: Any) -> _Doc:
        """The document after a write: ``run`` as the header, entries moved to match it."""
        v = max(doc.v + 1, _now_ms())
        inc = inc or doc.inc
        same = inc == doc.inc
        wake = None
        if run.wake_at is not None:
            if same and doc.wake is not None and doc.run.wake_at == run.wake_at:
                wake = doc.wake
            else:
                wake = self._wake_key(run.id, inc, v, run.wake_at)
        ix = self._ix_for(run, inc, v, doc.ix if same else ())
        exp = None
        if self.retention_days and run.status in TERMINAL_STATUSES:
            exp = doc.exp if same and doc.exp is not None and doc.run.terminal else None
            if exp is None:
                expires = time.time() + self.retention_days * 86_400
                exp = self._exp_key(run.id, inc, v, expires)
        return replace(doc, run=run, v=v, inc=inc, wake=wake, ix=ix, exp=exp, **changes)

    def _ix_for(self, run: Run, inc: str, w: int, old: Iterable[str]) -> tuple[str, ...]:
        """The listing entries of ``run``: kept from ``old`` where the directory matches."""
        name = f"{sortable(run.created_at)}.{escape(run.id)}.{inc}."
        have = {key.rpartition("/")[0] + "/": key for key in old if f"/{name}" in key}
        return tuple(have.get(d) or f"{d}{name}{w}" for d in self._ix_dirs(run))

    async def _commit(self, old: _Doc, new: _Doc) -> bool:
        """Write ``new`` over ``old`` with one compare-and-set; entries added before, removed
        after (a crash in between leaves an extra entry, never a missing one)."""
        before, after = old.entries, new.entries
        added = [key for key in after - before]
        if added:
            await asyncio.gather(*(self.driver.set(key, b"") for key in added))
        raw = new.encode()
        ttl = self.retention_days * 86_400 if new.exp is not None else None
        key = self._run_key(new.run.id)
        # The one write that decides: another writer (a signal, a save, a lease) that got in
        # since `old` was read changed the value, so this compare-and-set fails and the caller
        # reads again and re-decides instead of overwriting what that writer did.
        if not await self.driver.compare_and_set(key, raw, old.version, ttl=ttl):
            self._remember(new.run.id, None)
            return False
        self._remember_written(new, raw)
        removed = before - after
        if removed:
            await asyncio.gather(*(self.driver.delete(key) for key in removed))
        return True

    # -- the contract ------------------------------------------------------------------------------

    async def create(self, run: Run) -> bool:
        await self._reap()
        base = _Doc(
            run=run,
            v=0,
            inc=secrets.token_hex(6),
            wake=None,
            ix=(),
            exp=None,
            signals={},
            consumed={},
        )
        doc = self._next(base, run.copy())
        raw = doc.encode()
        if doc.entries:  # index entries first: a crash leaves a hint, never a hidden run
            await asyncio.gather(*(self.driver.set(key, b"") for key in doc.entries))
        key = self._run_key(run.id)
        # Two starts of one id: set_if_absent lets one document in; the other returns False.
        ttl = self.retention_days * 86_400 if doc.exp is not None else None
        if not await self.driver.set_if_absent(key, raw, ttl=ttl):
            existing = await self.driver.get(key)
            kept: set[str] = set()
            if existing is not None:
                winner = self._decode(key, *existing)  # foreign values raise
                self._remember(run.id, winner)
                kept = winner.entries
            # the entries written above name this attempt (its own inc): take them back, or
            # every repeated start of an id (start is idempotent) would leave some behind
            await self._forget(sorted(doc.entries - kept))
            return False
        self._remember_written(doc, raw)
        return True

    async def load(self, run_id: str) -> Loaded | None:
        # The checkpoints are listed before the document is read, so that an executor's window
        # between its read and its next compare-and-set is as short as it can be. A checkpoint
        # written in between is simply not seen (as if the load came a moment earlier), except
        # one the document already records as consuming a signal: that one is fetched by key.
        listed = await self.driver.keys(self._cp_dir(run_id))
        doc = await self._read(run_id)
        if doc is None:
            return None
        mine = f"{self._cp_dir(run_id)}{doc.inc}."
        keys = [key for key in listed if key.startswith(mine)]
        known = set(keys)
        keys += [
            key
            for key in dict.fromkeys(
                self._cp_key(run_id, doc.inc, s) for s in doc.consumed.values() if s != GONE
            )
            if key not in known
        ]
        values = await self.driver.get_many(keys) if keys else []
        checkpoints: list[tuple[Checkpoint, str | None]] = []
        for key, got in zip(keys, values, strict=True):
            if got is not None:
                checkpoints.append(self._checkpoint(key, got[0]))
        visible, consumed = _resolve(checkpoints, doc.consumed)
        signals = sorted(
            (s for sid, s in doc.signals.items() if sid not in consumed),
            key=lambda s: (s.at, s.id),
        )
        return Loaded(run=doc.run.copy(), checkpoints=visible, signals=signals)

    def _checkpoint(self, key: str, raw: bytes) -> tuple[Checkpoint, str | None]:
        try:
            d = loads(raw)
            cp = Checkpoint(
                seq=d["seq"],
                kind=d["kind"],
                name=d["name"],
                value=d.get("value"),
                error=d.get("error"),
                at=d.get("at", 0.0),
                attempts=d.get("attempts", 1),
                order=d.get("order"),
            )
            return cp, d.get("consumes")
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"key {key!r} in {self.driver!r} holds a value this store did not write "
                f"({type(exc).__name__}: {exc})"
            ) from None

    async def append(
        self, run_id: str, checkpoint: Checkpoint, *, consumes: str | None = None
    ) -> None:
        cp = checkpoint
        doc = (await self._current(run_id))[0] if consumes is None else await self._read(run_id)
        if doc is None:
            raise Conflict(f"run {run_id!r} does not exist", run_id=run_id)
        body = cp.to_json()
        if consumes is not None:
            if consumes not in doc.signals or doc.consumed.get(consumes, cp.seq) != cp.seq:
                raise Conflict(
                    f"run {run_id!r} has no pending signal {consumes!r} for seq {cp.seq}",
                    run_id=run_id,
                )
            body = f'{{"consumes":{dumps(consumes)},{body[1:]}'
        key = self._cp_key(run_id, doc.inc, cp.seq)
        raw = body.encode()
        # Two executors committing one seq: set_if_absent lets exactly one checkpoint in.
        if not await self.driver.set_if_absent(key, raw):
            if not await self._overwrite_loser(key, doc, cp.seq, raw):
                raise Conflict(
                    f"run {run_id!r} already has seq {cp.seq} ({cp.kind} {cp.name!r})",
                    run_id=run_id,
                )
        if consumes is not None:
            await self._claim(run_id, consumes, cp.seq, key, raw)

    async def _overwrite_loser(self, key: str, doc: _Doc, seq: int, raw: bytes) -> bool:
        """A checkpoint at ``key`` that consumed a signal the document gives to another seq is
        a loser's leftover (``load`` hides it): replace it, on its version."""
        got = await self.driver.get(key)
        if got is None:
            return await self.driver.set_if_absent(key, raw)
        _, consumed = self._checkpoint(key, got[0])
        if consumed is None or doc.consumed.get(consumed, seq) == seq:
            return False
        return await self.driver.compare_and_set(key, raw, got[1])

    async def _claim(self, run_id: str, signal_id: str, seq: int, key: str, raw: bytes) -> None:
        """Record in the document that checkpoint ``seq`` consumed ``signal_id``."""
        while True:
            doc = await self._read(run_id)
            owner = None if doc is None else doc.consumed.get(signal_id)
            if doc is not None and owner == seq:
                return
            if doc is None or owner is not None:
                # Another seq consumed it first (or the run is gone): ours never counted.
                await self.driver.delete(key, version=_version(self.driver, raw))
                raise Conflict(
                    f"run {run_id!r} has no pending signal {signal_id!r} for seq {seq}",
                    run_id=run_id,
                )
            consumed = {**doc.consumed, signal_id: seq}
            if await self._commit(doc, self._next(doc, doc.run, consumed=consumed)):
                return

    async def save(self, run: Run) -> Run:
        doc, fresh = await self._current(run.id)
        while True:
            if doc is None or doc.run.revision != run.revision:
                if not fresh:
                    doc, fresh = await self._read(run.id), True
                    continue
                raise Conflict(
                    f"run {run.id!r} changed since revision {run.revision}", run_id=run.id
                )
            header = replace(
                run.copy(),
                input=doc.run.input,  # only create and rewind write the input
                revision=run.revision + 1,
                lease_token=doc.run.lease_token,
                lease_expires_at=doc.run.lease_expires_at,
            )
            if await self._commit(doc, self._next(doc, header)):
                return header.copy()
            doc, fresh = await self._read(run.id), True

    async def signal(
        self, run_id: str, signal: Signal, *, max_pending: int = MAX_PENDING_SIGNALS
    ) -> bool:
        doc = await self._read(run_id)
        while True:
            if doc is None:
                return False
            if signal.id in doc.signals:
                return True
            if len(doc.signals) - len(doc.consumed) >= max_pending:
                raise TooManySignals(run_id, max_pending)
            run = doc.run.copy()
            if not run.terminal:
                run.wake_at = signal.at if run.wake_at is None else min(run.wake_at, signal.at)
            run.revision += 1
            stored = Signal(
                id=signal.id,
                name=signal.name,
                payload=loads(dumps(signal.payload)),
                at=float(signal.at),
            )
            signals = {**doc.signals, signal.id: stored}
            if await self._commit(doc, self._next(doc, run, signals=signals)):
                return True
            doc = await self._read(run_id)

    async def due(self, now: float, limit: int) -> list[str]:
        out: list[str] = []
        if limit <= 0:
            return out
        prefix = f"{self.prefix}/wake/"
        end = self._wake_end(now)
        start: str | None = None
        chunk = max(limit, 16)
        stale: list[str] = []
        while len(out) < limit:
            keys = await self.driver.keys(prefix, start=start, end=end, limit=chunk)
            if not keys:
                break
            entries = [self._parse(key) for key in keys]
            docs = await self._docs_of({e.run_id for e in entries})
            for entry in entries:
                doc = docs.get(entry.run_id)
                if doc is not None and entry.key == doc.wake:
                    if entry.run_id not in out:
                        out.append(entry.run_id)
                        if len(out) >= limit:
                            break
                elif _stale(entry, doc):
                    stale.append(entry.key)
            if len(keys) < chunk:
                break
            start = keys[-1] + "\x00"
        await self._forget(stale)
        return out

    async def _docs_of(self, run_ids: Iterable[str]) -> dict[str, _Doc]:
        """The documents of ``run_ids`` that exist. One that cannot be read is logged and
        stands as a document with no entries and version -1: due() and listings pass over it
        (one bad record never fails them for every run) and keep its index entries, and
        the reaper keeps its checkpoints, so nothing of it is lost while someone repairs it."""
        ids = sorted(run_ids)
        keys = [self._run_key(run_id) for run_id in ids]
        values = await self.driver.get_many(keys)
        docs: dict[str, _Doc] = {}
        for run_id, key, got in zip(ids, keys, values, strict=True):
            if got is None:
                continue
            try:
                docs[run_id] = self._decode(key, *got)
            except StoreError as exc:
                log.warning("run %r: its record cannot be read; passed over: %s", run_id, exc)
                docs[run_id] = _unreadable(run_id)
        return docs

    async def _forget(self, keys: Sequence[str]) -> None:
        if keys:
            await asyncio.gather(*(self.driver.delete(key) for key in keys))

    async def delete(self, run_id: str) -> None:
        doc = await self._read(run_id)
        self._remember(run_id, None)
        if doc is not None:
            # The document first: from here on the run is gone for everyone; what follows is
            # cleanup that a crash may leave for due/list_runs to skip and remove.
            await self.driver.delete(self._run_key(run_id))
            await self._forget(sorted(doc.entries))
        cps = await self.driver.keys(self._cp_dir(run_id))
        await self._forget(cps)

    async def rewind(self, run: Run, seq: int, *, restore_signals: bool = True) -> Run:
        doc = await self._read(run.id)
        while True:
            if doc is None or doc.run.revision != run.revision:
                raise Conflict(
                    f"run {run.id!r} changed since revision {run.revision}", run_id=run.id
                )
            keys = await self.driver.keys(f"{self._cp_dir(run.id)}{doc.inc}.")
            values = await self.driver.get_many(keys)
            history = [
                (self._checkpoint(key, got[0]), got[0])
                for key, got in zip(keys, values, strict=True)
                if got is not None
            ]
            inc = secrets.token_hex(6)
            kept = [
                (cp, raw)
                for (cp, _), raw in history
                if not (cp.seq >= seq or (cp.kind == "patch" and _taken_at(cp, seq) >= seq))
            ]
            # the history that stays, under the new incarnation, before the switch
            copies = [self._cp_key(run.id, inc, cp.seq) for cp, _ in kept]
            await asyncio.gather(
                *(self.driver.set(key, raw) for key, (_, raw) in zip(copies, kept, strict=True))
            )
            # what the dropped checkpoints consumed: pending again (restore), or consumed for
            # good by GONE, a seq no later rewind reaches
            consumed = {
                sid: by if by < seq else GONE
                for sid, by in doc.consumed.items()
                if not (restore_signals and by >= seq)
            }
            header = replace(
                run.copy(),
                revision=run.revision + 1,
                lease_token=doc.run.lease_token,
                lease_expires_at=doc.run.lease_expires_at,
            )
            if await self._commit(doc, self._next(doc, header, inc=inc, consumed=consumed)):
                await self._forget(keys)  # the old incarnation: no load reads it any more
                return header.copy()
            await self._forget(copies)
            doc = await self._read(run.id)

    async def list_runs(self, query: RunQuery) -> RunPage:
        """Walks one listing index newest first (tag, else parent, else workflow, else status,
        else all), reads the documents of a chunk of entries with one ``get_many``, and filters
        by the rest of the query. At most ``max(1000, 4 * (limit + 1))`` entries a page: a page
        cut short by that has fewer runs than ``limit`` and a cursor to go on."""
        after = decode_cursor(query.cursor) if query.cursor else None
        p = self.prefix
        if query.tag is not None:
            index = f"{p}/ix/tag/{escape(query.tag)}/"
        elif query.parent_id is not None:
            index = f"{p}/ix/parent/{escape(query.parent_id)}/"
        elif query.workflow is not None:
            index = f"{p}/ix/wf/{escape(query.workflow)}/"
        elif query.status is not None:
            index = f"{p}/ix/status/{escape(query.status)}/"
        else:
            index = f"{p}/ix/all/"
        end: str | None = None
        if query.created_before is not None:
            end = index + sortable(query.created_before)
        if after is not None:
            # up to where the cursor run's own entries begin ("<id>." + inc): ids that extend
            # the cursor's (a-b after a) sort below that point and are still to come
            at_cursor = f"{index}{sortable(after[0])}.{escape(after[1])}."
            end = at_cursor if end is None else min(end, at_cursor)
        start = None if query.created_after is None else index + sortable(query.created_after)
        limit = max(query.limit, 0)
        budget = max(1000, 4 * (limit + 1))
        hits: list[RunSummary] = []
        stale: list[str] = []
        examined = 0
        exhausted = False
        last: _Entry | None = None
        while len(hits) <= limit and examined < budget:
            chunk = min(budget - examined, max(limit + 1 - len(hits), 50))
            keys = await self.driver.keys(index, start=start, end=end, limit=chunk, reverse=True)
            if keys:
                entries = [self._parse(key) for key in keys]
                docs = await self._docs_of({e.run_id for e in entries})
                for entry in entries:
                    examined += 1
                    last = entry
                    doc = docs.get(entry.run_id)
                    if doc is None or entry.key not in doc.ix:
                        if _stale(entry, doc):
                            stale.append(entry.key)
                        continue
                    summary = doc.run.summary()
                    if query.matches(summary):
                        hits.append(summary)
                        if len(hits) > limit:
                            break
                end = keys[-1]
            if len(keys) < chunk:
                exhausted = True
                break
        await self._forget(stale)
        if len(hits) > limit or exhausted or last is None:
            return self._page(hits, query)
        return RunPage(runs=hits, next_cursor=encode_cursor(last.at, last.run_id))

    # -- the lease -------------------------------------------------------------------------------

    async def acquire(
        self,
        run_id: str,
        token: str,
        ttl: float,
        *,
        now: float | None = None,
        due_only: bool = False,
    ) -> Acquired:
        now = self._now(now)
        doc, fresh = await self._current(run_id)
        while True:
            if doc is None or doc.run.terminal:
                if not fresh:
                    doc, fresh = await self._read(run_id), True
                    continue
                return Acquired.NO
            run = doc.run
            refused = due_only and (run.wake_at is None or run.wake_at > now)
            held = run.lease_expires_at is not None and run.lease_expires_at > now
            if refused or (held and run.lease_token != token):
                if not fresh:
                    doc, fresh = await self._read(run_id), True
                    continue
                return Acquired.NO
            expires = now + ttl
            header = replace(run.copy(), lease_token=token, lease_expires_at=expires)
            header.wake_at = expires
            # Two executors taking one lease: both may read it free, but only the first
            # compare-and-set finds the document unchanged; the second reads again and sees the
            # first's unexpired lease (on a driver without atomic compare-and-set, both may win:
            # atomic_lease is False there).
            if await self._commit(doc, self._next(doc, header)):
                if run.lease_token is None:
                    return Acquired.FREE
                return Acquired.RENEWED if run.lease_token == token else Acquired.TAKEN_OVER
            doc, fresh = await self._read(run_id), True

    async def release(self, run_id: str, token: str) -> None:
        doc, fresh = await self._current(run_id)
        while doc is not None:
            if doc.run.lease_token != token:
                if fresh:
                    return
                doc, fresh = await self._read(run_id), True
                continue
            header = replace(doc.run.copy(), lease_token=None, lease_expires_at=None)
            if await self._commit(doc, self._next(doc, header)):
                return
            doc, fresh = await self._read(run_id), True

    # -- retention -------------------------------------------------------------------------------

    async def _reap(self) -> None:
        """Remove what up to ``reap_limit`` runs whose document expired left behind."""
        if not self.retention_days or self.reap_limit <= 0:
            return
        prefix = f"{self.prefix}/exp/"
        keys = await self.driver.keys(
            prefix, end=prefix + sortable(time.time()), limit=self.reap_limit
        )
        if not keys:
            return
        entries = [self._parse(key) for key in keys]
        docs = await self._docs_of({e.run_id for e in entries})
        for entry in entries:
            doc = docs.get(entry.run_id)
            if doc is not None:
                if entry.key != doc.exp and _stale(entry, doc):
                    await self.driver.delete(entry.key)
                continue  # still there (its TTL has not fired yet): later
            cps = await self.driver.keys(self._cp_dir(entry.run_id) + entry.inc + ".")
            await self._forget(cps)
            await self.driver.delete(entry.key)

    async def close(self) -> None:
        self._docs.clear()
        await self.driver.close()


def _version(driver: KVDriver, raw: bytes) -> Version | None:
    """The version ``driver`` gives the value ``raw``, if it can tell (``version_of``)."""
    version_of = getattr(driver, "version_of", None)
    return None if version_of is None else version_of(raw)


def _unreadable(run_id: str) -> _Doc:
    """What stands for a document that cannot be read (:meth:`KVStore._docs_of`)."""
    return _Doc(Run(id=run_id, workflow="", input=None), -1, "", None, (), None, {}, {})


def _stale(entry: _Entry, doc: _Doc | None) -> bool:
    """Whether an index entry no document will ever list again (safe to delete)."""
    if doc is None:
        return entry.w + _STALE_MS < _now_ms()
    return entry.key not in doc.entries and doc.v >= entry.w


def _taken_at(marker: Checkpoint, seq: int) -> int:
    if isinstance(marker.value, int) and not isinstance(marker.value, bool):
        return int(marker.value)
    return 0 if seq == 0 else -1


def _resolve(
    checkpoints: list[tuple[Checkpoint, str | None]], claims: dict[str, int]
) -> tuple[list[Checkpoint], set[str]]:
    """The checkpoints a load shows, in seq order, and the signal ids consumed.

    A checkpoint that consumed a signal counts if the document gives the signal to its seq, or
    if the document has no record for the signal and it is the lowest seq that consumed it (a
    crash between the checkpoint and the record); otherwise it is a loser's leftover, hidden.
    """
    checkpoints.sort(key=lambda item: item[0].seq)
    consumed = set(claims)
    visible: list[Checkpoint] = []
    for cp, signal_id in checkpoints:
        if signal_id is not None:
            owner = claims.get(signal_id)
            if owner is None and signal_id not in consumed:
                consumed.add(signal_id)  # the lowest seq without a record
            elif owner != cp.seq:
                continue
        visible.append(cp)
    return visible, consumed
