"""``RedisStore``: every run in Redis, through ``redis.asyncio`` (redis-py), one round trip a call.

Keys. Everything lives under ``prefix`` (``heron:`` by default). The keys of one run carry the
run id as a hash tag, ``{run_id}``, so that they hash to one Redis Cluster slot::

    heron:run:{ID}      hash   the header: one field per column of ``Run.header_fields()``
                               (floats as ``repr``, JSON parts as JSON text, ``None`` = no field),
                               plus ``_heron`` (the format, "1"), ``_ix``/``_ixm`` (the listing
                               index keys the run is in, and its member there)
    heron:cp:{ID}       hash   seq -> the checkpoint as JSON (``Checkpoint.to_json``): create-only
    heron:sig:{ID}      hash   signal id -> the signal as JSON (kept after it is consumed: the id
                               still deduplicates, and a rewind can make it pending again)
    heron:con:{ID}      hash   signal id -> the seq of the checkpoint that consumed it

and a few global index keys, which are not in the run's slot::

    heron:due               zset   run id scored by ``wake_at``: ``due`` is one ZRANGEBYSCORE
    heron:ix:all            zset   every run; members ``<created key>:<run id>``, all scored 0, so
    heron:ix:status:<s>     zset   that ZREVRANGEBYLEX walks them newest first with a cursor
    heron:ix:wf:<workflow>  zset   (the created key is ``created_at`` as 16 hex digits that sort
    heron:ix:tag:<tag>      zset   as the float does)
    heron:ix:parent:<id>    zset
    heron:expiring          zset   finished runs under retention, scored by when they expire
    heron:expiring:data     hash   run id -> what to clean once Redis has expired the run's keys

Scripts. ``create``, ``append``, ``save``, ``signal``, ``acquire`` (and renewal), ``release``,
``rewind`` and ``delete`` are Lua scripts: Redis runs a script as one atomic step, so each of
those operations is decided by Redis on the data as it is at that moment, in one round trip
(see https://redis.io/docs/latest/develop/interact/programmability/eval-intro/). A script is
called by its SHA1 (EVALSHA); the first call on a server that does not have it (a new server, a
restart, ``SCRIPT FLUSH``) gets NOSCRIPT and is sent once more with its source (EVAL), which
also caches it there. The SHA1 is computed here, so no call is spent on ``SCRIPT LOAD``. A step
(``append``) is one EVALSHA; ``load`` is one MULTI/EXEC of four HGETALLs (one round trip, one
consistent snapshot); ``due`` is one ZRANGEBYSCORE ... LIMIT.

Every script checks each key it is about to write before it writes anything: a key under the
prefix that holds another type, or a header hash without ``_heron``, fails the call with
:class:`~heron.stores.contract.StoreError` naming the key, and nothing is overwritten (a Redis
script that fails half way keeps what it wrote, so checking first is what makes that true).

Slots and Redis Cluster. The scripts also touch the global keys (``due``, the listing indexes)
and, in ``save``/``delete``, listing keys read from the header, which are not among the keys the
script declares. On one Redis server (or a primary with replicas, ElastiCache without cluster
mode, Valkey, Upstash's Redis protocol) that is allowed, and a script stays atomic across all of
them. Redis Cluster refuses a script whose keys are in different slots, so the per-run hash tags
alone do not make this store cluster-ready: give it a ``prefix`` that is itself a hash tag
(``prefix={heron}:``), which puts every key in one slot (it works, but does not spread the load),
or, to scale out, the indexes would have to be sharded per slot and updated in a second call
ordered like the KV store's (index entry added before the header, removed after).

Retention. With ``retention_days``, a save that makes a run terminal sets a TTL (PEXPIRE) on all
of its keys, and records it in ``expiring``; a save that makes it active again (a retry) removes
the TTL (PERSIST). Redis deletes the keys itself; the index entries left behind are removed by
later ``create`` calls (each cleans up to ``reap_limit`` runs whose time has passed), and
meanwhile ``list_runs`` skips them and ``acquire`` drops a ``due`` entry whose run is gone.

The client is made on first use inside the running loop (redis-py's pool is bound to it) and
kept until :meth:`RedisStore.close`. ``client=`` takes a ready ``redis.asyncio.Redis`` instead.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from heron.stores._url import masked as mask_url
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

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore", "created_key", "mask_url"]

FORMAT: Final = "1"
_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})
_OPTIONS: Final = ("prefix", "retention_days", "reap_limit")
#: The run header's fields, as ``Run.header_fields()`` names them.
_FIELDS: Final = tuple(Run(id="", workflow="").header_fields())
_SUMMARY: Final = (
    "_heron",
    "id",
    "workflow",
    "version",
    "status",
    "error",
    "parent_id",
    "tags",
    "created_at",
    "updated_at",
    "wake_at",
)
#: Fields ``rewind`` writes: all but the id, the revision (bumped by the script) and the lease.
_REWOUND: Final = tuple(
    f for f in _FIELDS if f not in ("id", "revision", "lease_token", "lease_expires_at")
)
#: Fields ``save`` writes: those, less the input (only create and rewind write it).
_SAVED: Final = tuple(f for f in _REWOUND if f != "input")
#: What a signal consumed in a history a rewind dropped is recorded as consumed by.
GONE: Final = -(2**62)


# -- helpers -----------------------------------------------------------------------------------


def created_key(created_at: float) -> str:
    """``created_at`` as 16 hex digits that sort, as text, the way the float sorts."""
    bits: int = struct.unpack(">Q", struct.pack(">d", float(created_at)))[0]
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | (1 << 63)
    return f"{bits:016x}"


def created_at_of(key: str) -> float:
    """Inverse of :func:`created_key`."""
    bits = int(key[:16], 16)
    bits = bits & ~(1 << 63) if bits >> 63 else bits ^ 0xFFFF_FFFF_FFFF_FFFF
    value: float = struct.unpack(">d", struct.pack(">Q", bits))[0]
    return value


def connect(url: str, options: dict[str, Any]) -> Redis:
    """A redis-py asyncio client for ``url`` (connects on its first command), with Heron's
    timeouts (10 s to connect, 30 s a command) unless ``options`` says otherwise. Imports
    redis-py only now: a store that is never used never imports it."""
    import redis.asyncio

    return redis.asyncio.from_url(
        url, **{"socket_connect_timeout": 10.0, "socket_timeout": 30.0, **options}
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _encode(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _header_args(fields: dict[str, Any], names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The fields to HSET (name, value, ...) and the names to HDEL (the ``None`` ones)."""
    pairs: list[str] = []
    absent: list[str] = []
    for name in names:
        value = fields[name]
        if value is None:
            absent.append(name)
        else:
            pairs += (name, _encode(value))
    return pairs, absent


# -- the Lua scripts -----------------------------------------------------------------------------

# Shared by every script. A script checks every key it will write before its first write:
# Redis does not roll a failed script back, so an error after a write would leave half of it.
# error({err=...}) fails the call; the message is "HERON_FOREIGN\t<key>\t<why>\t" (Redis appends
# the script's name), parsed by RedisStore._script.
_LUA_PRELUDE: Final = r"""
local TERMINAL = {completed = true, failed = true, cancelled = true}
local function foreign(key, why)
  error({err = 'HERON_FOREIGN\t' .. key .. '\t' .. why .. '\t'})
end
local function kind(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then foreign(key, 'holds a ' .. t .. ', not a ' .. want) end
  return t
end
-- true if KEYS[1]-style header `key` exists and is ours, false if it does not exist
local function header(key)
  if kind(key, 'hash') == 'none' then return false end
  local v = redis.call('HGET', key, '_heron')
  if not v then foreign(key, 'is a hash without the _heron field: not a Heron run header') end
  if v ~= '1' then foreign(key, 'has Heron format ' .. v .. '; this Heron reads format 1') end
  return true
end
-- the run's other keys get the header's TTL (a finished run under retention)
local function follow_ttl(run, ...)
  local ttl = redis.call('PTTL', run)
  if ttl > 0 then
    for _, k in ipairs({...}) do redis.call('PEXPIRE', k, ttl) end
  end
end
-- remove what an expired run left in the global indexes (`data` as save recorded it)
local function forget(prefix, id, data)
  local d = cjson.decode(data)
  for _, k in ipairs(d['ix']) do redis.pcall('ZREM', k, d['m']) end
  redis.pcall('ZREM', prefix .. 'due', id)
  redis.pcall('DEL', prefix .. 'cp:{' .. id .. '}', prefix .. 'sig:{' .. id .. '}',
              prefix .. 'con:{' .. id .. '}')
  redis.pcall('ZREM', prefix .. 'expiring', id)
  redis.pcall('HDEL', prefix .. 'expiring:data', id)
end
"""

# The body of save, shared with rewind. KEYS: run, cp, sig, con, due, expiring, expiring:data.
# ARGV from `base`: revision, id, wake_at ('' = none), index keys (JSON), member, retention ms
# ('0' = keep), terminal ('1'/'0'), expiry score, expiry data, #fields to HDEL, their names,
# then field/value pairs to HSET.
_LUA_SAVE_FN: Final = r"""
local function save(base)
  local rev = redis.call('HGET', KEYS[1], 'revision')
  if rev ~= ARGV[base] then return nil end
  kind(KEYS[5], 'zset') kind(KEYS[6], 'zset') kind(KEYS[7], 'hash')
  local id, wake, ix, member = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  local keep, terminal = ARGV[base + 5], ARGV[base + 6]
  local old_ix, old_m = redis.call('HGET', KEYS[1], '_ix'), redis.call('HGET', KEYS[1], '_ixm')
  local moved = old_ix ~= ix or old_m ~= member
  if moved then
    for _, k in ipairs(cjson.decode(ix)) do kind(k, 'zset') end
  end
  -- every key is checked: write
  local ndel = tonumber(ARGV[base + 9])
  if ndel > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, base + 10, base + 9 + ndel)) end
  redis.call('HSET', KEYS[1], 'revision', tostring(tonumber(rev) + 1),
             unpack(ARGV, base + 10 + ndel))
  if wake ~= '' then redis.call('ZADD', KEYS[5], wake, id) else redis.call('ZREM', KEYS[5], id) end
  if moved then
    if old_ix then for _, k in ipairs(cjson.decode(old_ix)) do redis.call('ZREM', k, old_m) end end
    for _, k in ipairs(cjson.decode(ix)) do redis.call('ZADD', k, 0, member) end
    redis.call('HSET', KEYS[1], '_ix', ix, '_ixm', member)
  end
  if keep ~= '0' and terminal == '1' then
    for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], keep) end
    redis.call('ZADD', KEYS[6], ARGV[base + 7], id)
    redis.call('HSET', KEYS[7], id, ARGV[base + 8])
  elseif redis.call('PTTL', KEYS[1]) > 0 then
    for i = 1, 4 do redis.call('PERSIST', KEYS[i]) end
    redis.call('ZREM', KEYS[6], id)
    redis.call('HDEL', KEYS[7], id)
  end
  return {tonumber(rev) + 1, redis.call('HGET', KEYS[1], 'lease_token'),
          redis.call('HGET', KEYS[1], 'lease_expires_at'), redis.call('HGET', KEYS[1], 'input')}
end
"""

# KEYS: run, cp, sig, con, due, expiring, expiring:data, then the listing index keys.
# ARGV: prefix, id, member, wake_at ('' = none), now, reap limit, then field/value pairs.
_LUA_CREATE: Final = r"""
local prefix, id, member, wake = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
-- Two starts of one id: the script runs alone, so the second finds the first's header and
-- writes nothing (create-only without a separate lock).
if header(KEYS[1]) then return 0 end
kind(KEYS[2], 'hash') kind(KEYS[3], 'hash') kind(KEYS[4], 'hash') kind(KEYS[5], 'zset')
kind(KEYS[6], 'zset') kind(KEYS[7], 'hash')
for i = 8, #KEYS do kind(KEYS[i], 'zset') end
-- an earlier run of this id that expired and was not cleaned up yet: clean it now
local old = redis.call('HGET', KEYS[7], id)
if old then forget(prefix, id, old) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
-- clean up to `reap limit` other expired runs (bounded work, amortized over creates)
local expired = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', ARGV[5], 'LIMIT', 0, ARGV[6])
for _, other in ipairs(expired) do
  if redis.call('EXISTS', prefix .. 'run:{' .. other .. '}') == 1 then
    redis.call('ZADD', KEYS[6], tonumber(ARGV[5]) + 60, other)  -- not expired yet (clock skew)
  else
    local data = redis.call('HGET', KEYS[7], other)
    if data then forget(prefix, other, data) else redis.call('ZREM', KEYS[6], other) end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
if wake ~= '' then redis.call('ZADD', KEYS[5], wake, id) end
for i = 8, #KEYS do redis.call('ZADD', KEYS[i], 0, member) end
return 1
"""

# KEYS: run, cp, sig, con. ARGV: seq, checkpoint JSON, signal id it consumes ('' = none).
# Returns 1 written, 0 seq taken, -1 no such run, -2 the signal is not pending.
_LUA_APPEND: Final = r"""
if not header(KEYS[1]) then return -1 end
kind(KEYS[2], 'hash')
local consumes = ARGV[3]
if consumes ~= '' then
  kind(KEYS[3], 'hash') kind(KEYS[4], 'hash')
  if redis.call('HEXISTS', KEYS[3], consumes) == 0
     or redis.call('HEXISTS', KEYS[4], consumes) == 1 then return -2 end
end
-- Two executors committing one seq: HSETNX lets exactly one field in; the loser gets 0 and
-- writes nothing, not even the consumption below.
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
if consumes ~= '' then redis.call('HSET', KEYS[4], consumes, ARGV[1]) end
follow_ttl(KEYS[1], KEYS[2], KEYS[4])
return 1
"""

# KEYS: run, cp, sig, con, due, expiring, expiring:data. ARGV: as `save`, from 1.
# Returns {revision, lease token, lease expiry} or nil (the revision moved or the run is gone).
_LUA_SAVE: Final = r"""
-- An executor saving a header it loaded before a signal (or a cancel, or another executor's
-- save) landed: the revision it carries is no longer the stored one, so it writes nothing and
-- gets Conflict, instead of overwriting the wake that signal set.
if not header(KEYS[1]) then return nil end
return save(1)
"""

# KEYS: run, sig, con, due. ARGV: signal id, signal JSON, at, max pending, run id.
# Returns 1 stored (or already there), 0 no such run, -1 too many pending.
_LUA_SIGNAL: Final = r"""
if not header(KEYS[1]) then return 0 end
kind(KEYS[2], 'hash') kind(KEYS[3], 'hash') kind(KEYS[4], 'zset')
-- A signal racing an executor's save: both are scripts, so one runs first. Signal first: the
-- revision bump below makes the save conflict. Save first: the wake set here comes after it.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 1 end
if redis.call('HLEN', KEYS[2]) - redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[4]) then
  return -1
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if not TERMINAL[redis.call('HGET', KEYS[1], 'status')] then
  local wake = redis.call('HGET', KEYS[1], 'wake_at')
  if not wake or tonumber(ARGV[3]) < tonumber(wake) then
    redis.call('HSET', KEYS[1], 'wake_at', ARGV[3])
    redis.call('ZADD', KEYS[4], ARGV[3], ARGV[5])
  end
end
redis.call('HINCRBY', KEYS[1], 'revision', 1)
follow_ttl(KEYS[1], KEYS[2])
return 1
"""

# KEYS: run, due. ARGV: token, expiry, now, due_only ('1'/'0'), run id. Returns an Acquired.
_LUA_ACQUIRE: Final = r"""
kind(KEYS[2], 'zset')
if not header(KEYS[1]) then
  redis.call('ZREM', KEYS[2], ARGV[5])  -- a due entry left by a run that expired
  return 0
end
if TERMINAL[redis.call('HGET', KEYS[1], 'status')] then return 0 end
local now = tonumber(ARGV[3])
if ARGV[4] == '1' then
  local wake = redis.call('HGET', KEYS[1], 'wake_at')
  if not wake or tonumber(wake) > now then return 0 end
end
-- Two executors taking one lease: the check and the set below run as one step, so the second
-- sees the first's unexpired lease and gets 0 (a read-then-write from outside would let both in).
local holder = redis.call('HGET', KEYS[1], 'lease_token')
local expires = redis.call('HGET', KEYS[1], 'lease_expires_at')
if expires and tonumber(expires) > now and holder ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_token', ARGV[1], 'lease_expires_at', ARGV[2],
           'wake_at', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5])
if not holder then return 1 elseif holder == ARGV[1] then return 2 else return 3 end
"""

# KEYS: run. ARGV: token.
_LUA_RELEASE: Final = r"""
if not header(KEYS[1]) then return 0 end
-- Only the holder drops the lease: a holder whose lease lapsed and was taken over must not
-- free the new holder's lease.
if redis.call('HGET', KEYS[1], 'lease_token') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'lease_token', 'lease_expires_at')
return 1
"""

# KEYS: as save. ARGV: seq, restore signals ('1'/'0'), GONE, then save's arguments.
_LUA_REWIND: Final = r"""
if not header(KEYS[1]) then return nil end
if redis.call('HGET', KEYS[1], 'revision') ~= ARGV[4] then return nil end
kind(KEYS[2], 'hash') kind(KEYS[4], 'hash')
local seq = tonumber(ARGV[1])
local drop = {}
local history = redis.call('HGETALL', KEYS[2])
for i = 1, #history, 2 do
  local s, body = tonumber(history[i]), history[i + 1]
  if s >= seq then
    drop[#drop + 1] = history[i]
  elseif s < 0 and string.find(body, '^{"seq":%-?%d+,"kind":"patch",') then
    -- a patch marker's value is the seq at which it was decided (an int, not a bool); one
    -- without goes only when seq is 0
    local raw = string.match(body, '.*,"value":(.*)}$')
    local taken
    if raw and string.match(raw, '^%s*%-?%d+%s*$') then taken = tonumber(raw)
    elseif seq == 0 then taken = 0
    else taken = -1 end
    if taken >= seq then drop[#drop + 1] = history[i] end
  end
end
-- the signals the dropped checkpoints consumed: pending again (restore), or consumed for good
-- by GONE, a seq no later rewind reaches
local undo, gone = {}, {}
local consumed = redis.call('HGETALL', KEYS[4])
for i = 1, #consumed, 2 do
  if tonumber(consumed[i + 1]) >= seq then
    if ARGV[2] == '1' then undo[#undo + 1] = consumed[i]
    else gone[#gone + 1] = consumed[i] gone[#gone + 1] = ARGV[3] end
  end
end
local saved = save(4)
for i = 1, #drop, 500 do
  redis.call('HDEL', KEYS[2], unpack(drop, i, math.min(i + 499, #drop)))
end
for i = 1, #undo, 500 do
  redis.call('HDEL', KEYS[4], unpack(undo, i, math.min(i + 499, #undo)))
end
for i = 1, #gone, 500 do
  redis.call('HSET', KEYS[4], unpack(gone, i, math.min(i + 499, #gone)))
end
return saved
"""

# KEYS: run, cp, sig, con, due, expiring, expiring:data. ARGV: prefix, run id.
_LUA_DELETE: Final = r"""
kind(KEYS[5], 'zset') kind(KEYS[6], 'zset') kind(KEYS[7], 'hash')
local id = ARGV[2]
if header(KEYS[1]) then
  local ix, m = redis.call('HGET', KEYS[1], '_ix'), redis.call('HGET', KEYS[1], '_ixm')
  if ix then
    local keys = cjson.decode(ix)
    for _, k in ipairs(keys) do kind(k, 'zset') end
    for _, k in ipairs(keys) do redis.call('ZREM', k, m) end
  end
else
  local data = redis.call('HGET', KEYS[7], id)
  if data then forget(ARGV[1], id, data) end
end
kind(KEYS[2], 'hash') kind(KEYS[3], 'hash') kind(KEYS[4], 'hash')
redis.call('ZREM', KEYS[5], id)
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[6], id)
redis.call('HDEL', KEYS[7], id)
return 1
"""


class _Script:
    """One Lua script: its source and its SHA1, computed here (no SCRIPT LOAD round trip)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, *parts: str) -> None:
        self.name = name
        self.source = "".join(parts)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


_SCRIPTS: Final = {
    "create": _Script("create", _LUA_PRELUDE, _LUA_CREATE),
    "append": _Script("append", _LUA_PRELUDE, _LUA_APPEND),
    "save": _Script("save", _LUA_PRELUDE, _LUA_SAVE_FN, _LUA_SAVE),
    "signal": _Script("signal", _LUA_PRELUDE, _LUA_SIGNAL),
    "acquire": _Script("acquire", _LUA_PRELUDE, _LUA_ACQUIRE),
    "release": _Script("release", _LUA_PRELUDE, _LUA_RELEASE),
    "rewind": _Script("rewind", _LUA_PRELUDE, _LUA_SAVE_FN, _LUA_REWIND),
    "delete": _Script("delete", _LUA_PRELUDE, _LUA_DELETE),
}


class RedisStore(WorkflowStore):
    """Runs in Redis (or Valkey, ElastiCache, Upstash's Redis protocol), one round trip a call.

    ``url`` is a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL as redis-py takes it
    (https://redis.readthedocs.io/en/stable/connections.html#redis.Redis.from_url); ``client`` is
    a ready ``redis.asyncio.Redis`` to use instead (never closed here). ``prefix`` goes before
    every key. ``retention_days`` (0: keep) expires finished runs. ``reap_limit`` is how many
    expired runs one ``create`` cleans out of the indexes at most. ``redis_options`` go to
    ``redis.asyncio.from_url`` (``socket_timeout=``, ``ssl_ca_certs=``, ...).

    Raises :class:`~heron.stores.contract.StoreError` (with the URL, password masked) when
    Redis cannot be reached or refuses a call, and naming the key when a key under ``prefix``
    holds something Heron did not write.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = "heron:",
        retention_days: float = 0.0,
        reap_limit: int = 16,
        **redis_options: Any,
    ) -> None:
        if url is None and client is None:
            raise ValueError("RedisStore needs a redis:// URL or a client")
        if url is not None and urlsplit(url).scheme.lower() not in _SCHEMES:
            raise ValueError(f"not a redis://, rediss:// or unix:// URL: {mask_url(url)!r}")
        if retention_days < 0:
            raise ValueError(f"retention_days={retention_days!r} must be 0 (keep) or more")
        self.url = url
        self.prefix = prefix
        self.retention_days = float(retention_days)
        self.reap_limit = int(reap_limit)
        self._options = redis_options
        self._client = client
        self._owned = client is None
        self._closed = False
        self._where = mask_url(url) if url is not None else "the given Redis client"
        p = prefix
        self._due = f"{p}due"
        self._expiring = f"{p}expiring"
        self._expiring_data = f"{p}expiring:data"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` or ``unix:///path``.

        Heron's query options, taken out before the URL goes to redis-py: ``prefix=``,
        ``retention_days=``, ``reap_limit=``; redis-py's own (``db``, ``socket_timeout``,
        ``ssl_cert_reqs``, ...) stay. Without a password in the URL, ``HERON_REDIS_PASSWORD``
        is used when set. Keyword ``options`` override the URL's.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() not in _SCHEMES:
            raise ValueError(f"not a redis://, rediss:// or unix:// URL: {mask_url(url)!r}")
        ours: dict[str, Any] = {}
        rest: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "prefix":
                ours[name] = value
            elif name in ("retention_days", "reap_limit"):
                try:
                    ours[name] = float(value) if name == "retention_days" else int(value)
                except ValueError:
                    raise ValueError(
                        f"redis store URL option {name}={value!r} is not a number"
                    ) from None
            elif name == "auto_schema":  # accepted for symmetry; Redis has no schema
                parse_bool("redis", name, value)
            else:
                rest.append((name, value))
        clean = urlunsplit(parts._replace(query=urlencode(rest)))
        password = os.environ.get("HERON_REDIS_PASSWORD")
        if parts.password is None and password and "password" not in options:
            options = {**options, "password": password}
        ours.update(options)
        return cls(clean, **ours)

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, prefix={self.prefix!r})"

    # -- the client and the one place calls go through -------------------------------------------

    def _redis(self) -> Redis:
        if self._closed:
            raise StoreError(f"the RedisStore for {self._where} is closed")
        client = self._client
        if client is None:
            assert self.url is not None
            client = self._client = connect(self.url, self._options)
        return client

    def _error(self, exc: Exception, run_id: str | None) -> StoreError:
        """A redis-py exception as a StoreError that names the server, never the password."""
        import redis.exceptions as rx

        what = f" (run {run_id!r})" if run_id is not None else ""
        text = str(exc)
        if isinstance(exc, rx.ResponseError) and text.startswith("HERON_FOREIGN\t"):
            _, key, why, *_ = text.split("\t")
            return StoreError(
                f"Redis key {key!r} at {self._where} {why}; Heron wrote nothing. Use another "
                f"prefix (now {self.prefix!r}) or remove the key",
                run_id=run_id,
            )
        if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
            return StoreError(
                f"Redis at {self._where} refused the credentials{what}: {text} "
                "(password: in the URL or HERON_REDIS_PASSWORD)",
                run_id=run_id,
            )
        if isinstance(exc, rx.ConnectionError | rx.TimeoutError | OSError):
            return StoreError(
                f"cannot reach Redis at {self._where}{what}: {type(exc).__name__}: {text}",
                run_id=run_id,
            )
        if isinstance(exc, rx.ResponseError) and text.startswith("WRONGTYPE"):
            return StoreError(
                f"a key under prefix {self.prefix!r} at {self._where} holds a type Heron did not "
                f"write{what}: {text}",
                run_id=run_id,
            )
        return StoreError(f"Redis error at {self._where}{what}: {text}", run_id=run_id)

    async def _script(
        self, name: str, keys: Sequence[str], args: Sequence[Any], run_id: str | None
    ) -> Any:
        """Run script ``name`` by SHA1 (EVALSHA), or by source after NOSCRIPT (EVAL)."""
        import redis.exceptions as rx

        script = _SCRIPTS[name]
        client = self._redis()
        try:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except rx.NoScriptError:
                # the server does not have it (new, restarted, flushed): EVAL runs and caches it
                return await client.eval(script.source, len(keys), *keys, *args)
        except rx.RedisError as exc:
            raise self._error(exc, run_id) from None
        except OSError as exc:
            raise self._error(exc, run_id) from None

    # -- keys --------------------------------------------------------------------------------------

    def _run_keys(self, run_id: str) -> list[str]:
        p, tag = self.prefix, f"{{{run_id}}}"
        return [f"{p}run:{tag}", f"{p}cp:{tag}", f"{p}sig:{tag}", f"{p}con:{tag}"]

    def _index_keys(self, run: Run) -> list[str]:
        p = self.prefix
        keys = [f"{p}ix:all", f"{p}ix:status:{run.status}", f"{p}ix:wf:{run.workflow}"]
        keys += [f"{p}ix:tag:{tag}" for tag in dict.fromkeys(run.tags)]
        if run.parent_id is not None:
            keys.append(f"{p}ix:parent:{run.parent_id}")
        return keys

    @staticmethod
    def _member(run: Run) -> str:
        return f"{created_key(run.created_at)}:{run.id}"

    def _global(self) -> list[str]:
        return [self._due, self._expiring, self._expiring_data]

    # -- the contract ------------------------------------------------------------------------------

    async def create(self, run: Run) -> bool:
        fields = run.header_fields()
        pairs, _ = _header_args(fields, _FIELDS)
        ix = self._index_keys(run)
        member = self._member(run)
        pairs += ("_heron", FORMAT, "_ix", dumps(ix), "_ixm", member)
        wake = "" if run.wake_at is None else _encode(run.wake_at)
        keys = [*self._run_keys(run.id), *self._global(), *ix]
        args = [self.prefix, run.id, member, wake, repr(time.time()), self.reap_limit, *pairs]
        return bool(await self._script("create", keys, args, run.id))

    async def load(self, run_id: str) -> Loaded | None:
        import redis.exceptions as rx

        keys = self._run_keys(run_id)
        try:
            async with self._redis().pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                replies = await pipe.execute(raise_on_error=False)
        except rx.RedisError as exc:
            raise self._error(exc, run_id) from None
        except OSError as exc:
            raise self._error(exc, run_id) from None
        for key, reply in zip(keys, replies, strict=True):
            if isinstance(reply, Exception):
                raise StoreError(
                    f"Redis key {key!r} at {self._where} is not a hash Heron wrote: {reply}",
                    run_id=run_id,
                )
        head, cps, sigs, consumed = ({_text(k): v for k, v in r.items()} for r in replies)
        if not head:
            return None
        run = self._run(keys[0], head, run_id)
        try:
            checkpoints = sorted(
                (Checkpoint.from_json(body) for body in cps.values()), key=lambda cp: cp.seq
            )
            pending = [Signal.from_json(body) for sid, body in sigs.items() if sid not in consumed]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"a checkpoint or signal of run {run_id!r} at {self._where} is not JSON Heron "
                f"wrote ({keys[1]!r} / {keys[2]!r}): {exc}",
                run_id=run_id,
            ) from None
        pending.sort(key=lambda s: (s.at, s.id))
        return Loaded(run=run, checkpoints=checkpoints, signals=pending)

    def _run(self, key: str, head: dict[str, Any], run_id: str) -> Run:
        marker = head.get("_heron")
        if marker is None or _text(marker) != FORMAT:
            raise StoreError(
                f"Redis key {key!r} at {self._where} is not a Heron run header "
                f"(_heron={marker!r}); Heron wrote nothing",
                run_id=run_id,
            )
        row = {name: None if name not in head else _text(head[name]) for name in _FIELDS}
        try:
            return Run.from_fields(row)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"Redis key {key!r} at {self._where} holds a run header Heron cannot read: {exc}",
                run_id=run_id,
            ) from None

    async def append(
        self, run_id: str, checkpoint: Checkpoint, *, consumes: str | None = None
    ) -> None:
        keys = self._run_keys(run_id)
        args = [checkpoint.seq, checkpoint.to_json(), consumes or ""]
        outcome = await self._script("append", keys, args, run_id)
        if outcome == 1:
            return
        cp = checkpoint
        if outcome == 0:
            raise Conflict(
                f"run {run_id!r} already has seq {cp.seq} ({cp.kind} {cp.name!r})", run_id=run_id
            )
        if outcome == -1:
            raise Conflict(f"run {run_id!r} does not exist", run_id=run_id)
        raise Conflict(
            f"run {run_id!r} has no pending signal {consumes!r} for seq {cp.seq}", run_id=run_id
        )

    def _save_args(self, run: Run, names: Sequence[str] = _SAVED) -> list[Any]:
        fields = run.header_fields()
        pairs, absent = _header_args(fields, names)
        ix = self._index_keys(run)
        terminal = run.status in TERMINAL_STATUSES
        keep_ms = int(self.retention_days * 86_400_000)
        expiry = repr(time.time() + self.retention_days * 86_400)
        data = dumps({"m": self._member(run), "ix": ix})
        wake = "" if run.wake_at is None else _encode(run.wake_at)
        return [
            run.revision,
            run.id,
            wake,
            dumps(ix),
            self._member(run),
            keep_ms,
            "1" if terminal else "0",
            expiry,
            data,
            len(absent),
            *absent,
            *pairs,
        ]

    def _saved(self, run: Run, reply: Any) -> Run:
        revision, token, expires, stored_input = reply
        saved = run.copy()
        saved.input = loads(stored_input)
        saved.revision = int(revision)
        saved.lease_token = None if token is None else _text(token)
        saved.lease_expires_at = None if expires is None else float(_text(expires))
        return saved

    async def save(self, run: Run) -> Run:
        keys = [*self._run_keys(run.id), *self._global()]
        reply = await self._script("save", keys, self._save_args(run), run.id)
        if reply is None:
            raise Conflict(f"run {run.id!r} changed since revision {run.revision}", run_id=run.id)
        return self._saved(run, reply)

    async def signal(
        self, run_id: str, signal: Signal, *, max_pending: int = MAX_PENDING_SIGNALS
    ) -> bool:
        run_key, _, sig, con = self._run_keys(run_id)
        args = [signal.id, signal.to_json(), _encode(float(signal.at)), max_pending, run_id]
        outcome = await self._script("signal", [run_key, sig, con, self._due], args, run_id)
        if outcome == -1:
            raise TooManySignals(run_id, max_pending)
        return bool(outcome)

    async def due(self, now: float, limit: int) -> list[str]:
        import redis.exceptions as rx

        if limit <= 0:
            return []
        try:
            ids = await self._redis().zrangebyscore(
                self._due, "-inf", _encode(float(now)), start=0, num=limit
            )
        except rx.RedisError as exc:
            raise self._error(exc, None) from None
        except OSError as exc:
            raise self._error(exc, None) from None
        return [_text(run_id) for run_id in ids]

    async def delete(self, run_id: str) -> None:
        keys = [*self._run_keys(run_id), *self._global()]
        await self._script("delete", keys, [self.prefix, run_id], run_id)

    async def rewind(self, run: Run, seq: int, *, restore_signals: bool = True) -> Run:
        keys = [*self._run_keys(run.id), *self._global()]
        args = [seq, "1" if restore_signals else "0", GONE, *self._save_args(run, _REWOUND)]
        reply = await self._script("rewind", keys, args, run.id)
        if reply is None:
            raise Conflict(f"run {run.id!r} changed since revision {run.revision}", run_id=run.id)
        return self._saved(run, reply)

    async def list_runs(self, query: RunQuery) -> RunPage:
        """Walks one listing index newest first (tag, else parent, else workflow, else status,
        else all runs), reads the summaries of a chunk of members in one pipelined round trip,
        and filters them by the rest of the query. It examines at most ``max(1000, 4 * (limit
        + 1))`` index entries a page: a page cut short by that bound has fewer runs than
        ``limit`` and a ``next_cursor`` that goes on from where it stopped."""
        import redis.exceptions as rx

        after = decode_cursor(query.cursor) if query.cursor else None
        p = self.prefix
        if query.tag is not None:
            index = f"{p}ix:tag:{query.tag}"
        elif query.parent_id is not None:
            index = f"{p}ix:parent:{query.parent_id}"
        elif query.workflow is not None:
            index = f"{p}ix:wf:{query.workflow}"
        elif query.status is not None:
            index = f"{p}ix:status:{query.status}"
        else:
            index = f"{p}ix:all"
        upper: str | None = None  # exclusive, without the "(" ZRANGEBYLEX wants
        if query.created_before is not None:
            upper = created_key(query.created_before)
        if after is not None:
            at_cursor = f"{created_key(after[0])}:{after[1]}"
            upper = at_cursor if upper is None else min(upper, at_cursor)
        hi = "+" if upper is None else "(" + upper
        lo = "-" if query.created_after is None else "[" + created_key(query.created_after)
        limit = max(query.limit, 0)
        budget = max(1000, 4 * (limit + 1))
        hits: list[RunSummary] = []
        last = ""
        examined = 0
        exhausted = False
        client = self._redis()
        try:
            while len(hits) <= limit and examined < budget:
                chunk = min(budget - examined, max(limit + 1 - len(hits), 50))
                members = [
                    _text(m) for m in await client.zrevrangebylex(index, hi, lo, start=0, num=chunk)
                ]
                if members:
                    async with client.pipeline(transaction=False) as pipe:
                        for member in members:
                            pipe.hmget(self._run_keys(member[17:])[0], _SUMMARY)
                        rows = await pipe.execute()
                    for member, row in zip(members, rows, strict=True):
                        examined += 1
                        last = member
                        if all(value is None for value in row):
                            continue  # the run expired: its entries go at a later create
                        summary = self._summary(member[17:], row)
                        if query.matches(summary):
                            hits.append(summary)
                            if len(hits) > limit:
                                break
                    hi = "(" + members[-1]
                if len(members) < chunk:
                    exhausted = True
                    break
        except rx.RedisError as exc:
            raise self._error(exc, None) from None
        except OSError as exc:
            raise self._error(exc, None) from None
        if len(hits) > limit or exhausted:
            return self._page(hits, query)
        # the work bound ran out before the page filled: go on from the last entry examined
        return RunPage(runs=hits, next_cursor=encode_cursor(created_at_of(last), last[17:]))

    def _summary(self, run_id: str, row: Sequence[Any]) -> RunSummary:
        values = dict(zip(_SUMMARY, (None if v is None else _text(v) for v in row), strict=True))
        if values["_heron"] != FORMAT:
            key = self._run_keys(run_id)[0]
            raise StoreError(
                f"Redis key {key!r} at {self._where} is not a Heron run header", run_id=run_id
            )
        return RunSummary(
            id=run_id,
            workflow=str(values["workflow"]),
            version=str(values["version"]),
            status=str(values["status"]),
            error=loads(values["error"]),
            parent_id=values["parent_id"],
            tags=loads(values["tags"]) or [],
            created_at=float(str(values["created_at"])),
            updated_at=float(str(values["updated_at"])),
            wake_at=None if values["wake_at"] is None else float(values["wake_at"]),
        )

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
        run_key = self._run_keys(run_id)[0]
        args = [token, _encode(float(now + ttl)), _encode(float(now)), int(due_only), run_id]
        return Acquired(await self._script("acquire", [run_key, self._due], args, run_id))

    async def release(self, run_id: str, token: str) -> None:
        await self._script("release", [self._run_keys(run_id)[0]], [token], run_id)

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None and self._owned:
            await client.aclose()
