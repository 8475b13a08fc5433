"""``DynamoDBStore``: every run in one DynamoDB table, through aioboto3's low-level client.

One table. :data:`TABLE` is the single source of truth for its keys, indexes, TTL attribute and
stream: ``ensure_schema`` and the deployment template are built from it. The partition key
``pk`` is the run id, so one run is one item collection and ``load`` is one Query::

    pk       sk                          what
    run id   C#<hinc>#<seq:010d>         one checkpoint per operation (seq >= 0): ``body``
    run id   P#<hinc>#<-seq:010d>        one patch marker (seq < 0, a key space of its own):
                                         ``body``, and ``decided`` (the seq it was decided at)
    run id   R                           the header: native attributes for what conditions and
                                         indexes need, JSON strings for the rest; ``pending``,
                                         the number of signals no checkpoint consumed yet
    run id   S#<inc>#<signal id>         one signal: ``name``, ``at``, ``payload``; once
                                         consumed, a tombstone: the payload is removed and
                                         ``consumed_by``/``consumed_in`` (seq, history) are set
    run id   T#<tag>                     one small item per tag, for the ``by_ref`` index
    run id   X#<inc>                     a reap request: ``delete`` writes it, already expired
                                         (see Deleting)

Any of them may be *retired* (see Retiring): then it holds its key, ``gone`` (when) and the TTL
attribute, and nothing reads it.

Incarnations. ``inc`` is a random token the header gets when it is created; the run's signals
are keyed by it. A signal or checkpoint counts only under the incarnations of the header it was
written for, so a zombie executor that writes to a run after it was deleted (and perhaps started
again under the same id) leaves an item that no ``load`` will ever return, instead of history in
the new run. The history has an incarnation of its own, ``hinc`` (absent until the first rewind
to 0: it is ``inc`` then), which keys the checkpoints and markers: see Rewind.

A checkpoint's ``body`` is the JSON the runtime already encoded (``Checkpoint.value_json``, not
encoded again) inside a small head without ``seq`` (the key has it) or fields at their default:
a small step is an item of about 100 bytes.

Costs, in DynamoDB's request units (a write unit per KB of the larger of the item before and
after, doubled inside a transaction; a consistent read unit per 4 KB of the whole item, whatever
the projection; GSI reads half that), for small items (a header under 1 KB, ``h`` KB else). No
operation but ``reap`` deletes an item; TTL's removals cost nothing:

    operation          requests                                        units
    append             1 PutItem, no read, no index entry             1 write
    append(consumes=)  1 TransactWriteItems: checkpoint, signal,      2 x (1 + 1 + h) writes
                       header (no index entry moves)                  (6 for small items)
    signal             1 GetItem, 1 TransactWriteItems: signal,       1 read, 2 x (1 + h) writes,
                       header                                         + the due entry it moves
    signal at the cap  2 GetItem (header, signal), no write           2 reads
    save               1 UpdateItem                                   h writes + index moves
    save, new tags     1 failed UpdateItem, 1 TransactWriteItems:     h + 2 x (h + t) writes for
                       header, tag items, the lost ones retired       t tag items put or retired
    create             1 PutItem; with tags a TransactWriteItems      h (2 x (h + tags)) writes
                       of the header and its tag items                + 1 per index entry
    list_runs page     1 Query per shard of one index (at most        index entries: about 0.5
                       limit + 1 entries each; filters left over:     read per 4 KB read; the
                       at most 2 of 100 each), 1 BatchGetItem of      headers: 1 read per 4 KB
                       the page's headers (summary attributes)        each; none for other runs
    rewind to 0        1 GetItem, 1 UpdateItem (the switch); then     1 read, h writes; then
    (continue_as_new)  1 Query of the keys, 1 PutItem per old item    reads of the keys, 1 write
                       (retired; 32 in flight)                        per KB of each old item
    rewind to seq > 0  1 GetItem, 1 Query of the history's keys,      reads of the keys; 2 x
                       1 Query of the tombstones, 1 BatchGetItem      (h + d + 2 r) writes for d
                       of their checkpoints, 1 TransactWriteItems     KB retired, r restored
                       (one per 99 writes past that)                  signals (+ 2 h a chunk)
    delete             1 GetItem, 2 PutItem (the reap request, the    1 read per 4 KB; 1 + h
                       header's tombstone), 1 PutItem per tag         writes, + 1 per tag, + the
                                                                      index entries it drops
    reap (the reaper)  1 Query of the run's keys, 1 BatchWriteItem    reads of every item; 1
                       per 25 deletes, 1 DeleteItem for the header    write per KB of each item
                       and each tag item; the run's S3 objects        it deletes

The store remembers the incarnations of each run it created or loaded, so ``append`` reads
nothing in the steady state (an executor always loads the run before it runs steps); an append
to a run this instance has not seen reads the header once first, which is also how an append to
a missing run fails with ``Conflict``. Header writes (suspend, finish, lease) cost 1 unit per KB
plus the index entries they move.

``due``: a sparse, sharded global secondary index. Only a header with a ``wake_at`` carries the
index keys ``due_shard`` (a stable hash of the run id modulo ``shards``) and ``wake_at``; every
other item is absent from the index. ``due`` queries the ``shards`` partitions of the index in
parallel (``wake_at <= now``, ascending, ``Limit=limit``) and merges them by ``(wake_at, id)``,
so its cost is the due entries it reads, whatever the number of idle runs, and it never scans.
The shards spread index writes (every suspend and lease renewal moves ``wake_at``) over several
partitions, where one constant key would cap them at one partition's 1,000 writes a second.
GSIs are eventually consistent: a run just made due may show up in ``due`` a moment later (the
dispatch that comes with a signal, and the next sweep, cover that).

``list_runs`` reads one index, sorted by ``created_key`` (the creation time as 16 hex digits
that sort as the float does, ``#``, the id), newest first, sharded like ``due``: ``by_status``
(``<status>#<shard>``), ``by_ref`` for a parent or a tag, ``by_workflow``, or ``by_created``.
``by_ref`` is sparse and holds two kinds of entries under one key attribute, ``ref_shard``:
``parent:<parent id>#<shard>`` on a child's header, and ``tag:<tag>#<shard>`` on the run's
``T#<tag>`` items (written with the header, in one transaction, by ``create``, and by a ``save``
or ``rewind`` that changes the tags). One index for both, not two, because CloudFormation adds
one GSI per stack update to a deployed table. Each index answers its own filter exactly; a query
that names several filters uses the first of status, parent, tag, workflow and tests the others
on what the index projects (``workflow``, ``parent_id``, ``tag_set``). So a page reads about
``limit + 1`` entries a shard, whatever the table holds; with a filter left over, a shard reads
100 entries a query and at most two queries, after which the page ends early (fewer runs than
``limit``, perhaps none) with a cursor at the point every shard was read to. The page's headers
come from one ``BatchGetItem`` that asks for a summary's attributes only (never input, output
or engine state); the header, not the lagging index, decides whether a run matches.

Signals. ``signal`` reads the header, then stores the signal and updates the header in one
transaction conditional on the revision it read: ``wake_at``, ``revision + 1`` and ``pending +
1`` while ``pending < max_pending``. Past the cap it writes nothing and raises
``TooManySignals``, unless the id is one the run has seen. A checkpoint that consumes a signal is
one transaction of three writes: the checkpoint (create-only), the signal (exists, not consumed:
set ``consumed_by`` and ``consumed_in``, remove the payload) and the header (its history is the
writer's: ``pending - 1``). A plain ``append`` stays one PutItem. ``load`` drops tombstones in
the Query's filter; their ids still make a duplicate signal a no-op.

Rewind. DynamoDB transactions hold 100 items, and a history can hold thousands, so the header
carries the history's incarnation. A rewind to 0 (``continue_as_new``) is one conditional header
update that sets a new ``hinc``: atomic at any length, the old checkpoints and markers are
invisible from that write on, and are retired afterwards, best-effort (a failure there is
logged; the next rewind and the reaper remove what is left). A rewind to ``seq > 0`` (a retry)
retires the checkpoints from ``seq`` on and the markers decided there, and makes pending again
the signals those checkpoints consumed (their payload back from the checkpoint's value,
``pending`` raised), all in the transaction that writes the header on its revision. When that
is more than 100 writes, it goes in chunks, highest seqs first, each conditional on the revision
(the first one guards the rest: a stale caller changes nothing), each restored signal in the
chunk that retires the checkpoint that consumed it: after any chunk the run is a shorter history
of itself, and a rewind cut short is done again from where it stopped. The header write comes
last.

Retiring. The API's and the resume function's roles may not delete (``DeleteItem`` and
``BatchWriteItem`` are the reaper's alone, and a transaction's ``Delete`` needs ``DeleteItem``),
and ``rewind`` (``Runtime.retry``, ``continue_as_new``), ``save`` and ``delete`` run under them.
So where one of them would remove an item, it retires it with a write those roles may make: a
``Put`` of the bare key with ``gone`` and the TTL attribute set to now (inside the transaction
where the removal must be atomic; conditional on the item being the deleted run's, for its tag
items). DynamoDB's TTL removes the item later, at no write cost. Every read skips
a retired item (``load``'s filter, ``rewind``'s plan, a listing's header check; a retired tag
item has left ``by_ref``), and every create-only write treats one as absent
(``attribute_not_exists(pk) OR attribute_exists(gone)``): a rerun step writes its checkpoint
over the one a rewind retired, a run starts again under the id of a deleted one. That write
replaces the whole item, TTL attribute included, and an expired item whose TTL attribute was
removed is no longer TTL's to delete (DynamoDB's TTL documentation).

Deleting. ``delete`` (the operator's, through the API or the CLI) reads the header, writes a reap
request ``X#<inc>`` that is expired from the start, then replaces the header by a tombstone
(``gone`` and nothing else: no index key, so the run leaves ``due`` and every listing at once;
``load`` returns ``None``, ``signal`` ``False``, ``acquire`` and ``save`` fail, and so does an
``append`` that reads the header), and retires the tag items. TTL removes the reap request, and
the table's stream hands that removal to the reaper, which calls :meth:`DynamoDBStore.reap`:
one Query of the run's keys, batch deletes of every item no live header owns, conditional
deletes of the tag items and of the tombstone, then the run's S3 objects. TTL's removal of a
finished run's header (past ``retention_days``) calls the reaper the same way; TTL's removals
of retired items call nothing (:data:`REAPER_FILTER`). A run started again under a deleted
run's id, before the reaper came, keeps everything of its own incarnations: the reaper tells
items apart by incarnation, not by id, so it may come at any time, and twice.

Races. Each write that can race is a conditional write, and the condition is evaluated by
DynamoDB on the item at the moment of the write; the comment next to each one says which
interleaving it prevents. A failed condition maps to ``Conflict``/``False``; a failed
transaction has written nothing, and one cancelled for a conflict with another transaction is
sent again.

Large items. An item over DynamoDB's 400 KB limit is refused with ``PayloadTooLarge`` naming the
run (and the step and seq), or, with ``payload_bucket`` set, its largest JSON values move to S3
(content-addressed, immutable objects under ``<run id>/``) and the item keeps a reference.
Nothing is ever truncated. Objects stay until the reaper removes the run (one may be shared by
several items), rewinds included.

Errors and retries. Throttling and transient errors are retried by botocore (``standard`` mode,
``max_attempts``). Every other failure becomes :class:`~heron.stores.contract.StoreError` carrying
botocore's message, the run id and the store URL. A missing table raises
:class:`~heron.stores.contract.SchemaMissing` when ``auto_schema`` is off, and is created (table,
indexes, TTL) on first use when it is on. Every AWS call goes through :meth:`DynamoDBStore._call`.

aioboto3 is imported on first use, never at import time, and the clients are made then, inside
the running event loop, and kept until :meth:`DynamoDBStore.close`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import re
import secrets
import struct
import time
import zlib
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from heron.stores._url import parse_bool
from heron.stores.contract import (
    MAX_PENDING_SIGNALS,
    TERMINAL_STATUSES,
    Acquired,
    Checkpoint,
    Conflict,
    Loaded,
    PayloadTooLarge,
    Run,
    RunPage,
    RunQuery,
    RunSummary,
    SchemaMissing,
    Signal,
    StoreError,
    TooManySignals,
    WorkflowStore,
    decode_cursor,
    dumps,
    encode_cursor,
    loads,
)

__all__ = [
    "REAPER_FILTER",
    "TABLE",
    "DynamoDBStore",
    "IndexSpec",
    "TableSpec",
    "expired_run_ids",
    "item_size",
]

#: An attribute value as the low-level client takes and returns it: ``{"S": "..."}``, ...
AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]
#: An aiobotocore client; aioboto3 ships no type information.
Client = Any
T = TypeVar("T")

_log = logging.getLogger(__name__)

# -- the table: one source of truth -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """A global secondary index: its keys and the attributes it projects (none: KEYS_ONLY)."""

    name: str
    partition_key: str
    sort_key: str
    sort_key_type: str
    projected: tuple[str, ...] = ()

    def definition(self) -> dict[str, Any]:
        """The index as ``CreateTable``'s ``GlobalSecondaryIndexes`` takes it."""
        projection: dict[str, Any] = (
            {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(self.projected)}
            if self.projected
            else {"ProjectionType": "KEYS_ONLY"}
        )
        return {
            "IndexName": self.name,
            "KeySchema": [
                {"AttributeName": self.partition_key, "KeyType": "HASH"},
                {"AttributeName": self.sort_key, "KeyType": "RANGE"},
            ],
            "Projection": projection,
        }


@dataclass(frozen=True, slots=True)
class TableSpec:
    """The table's keys, indexes, TTL attribute and stream: what ``ensure_schema`` creates."""

    partition_key: str
    sort_key: str
    ttl_attribute: str
    stream_view_type: str
    indexes: tuple[IndexSpec, ...]

    def index(self, name: str) -> IndexSpec:
        return next(index for index in self.indexes if index.name == name)

    def attribute_definitions(self) -> list[dict[str, str]]:
        types = {self.partition_key: "S", self.sort_key: "S"}
        for index in self.indexes:
            types.setdefault(index.partition_key, "S")
            types.setdefault(index.sort_key, index.sort_key_type)
        return [{"AttributeName": name, "AttributeType": kind} for name, kind in types.items()]

    def create_table_request(self, table: str) -> dict[str, Any]:
        """``CreateTable`` parameters: on-demand billing, every index, a KEYS_ONLY stream."""
        return {
            "TableName": table,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [
                {"AttributeName": self.partition_key, "KeyType": "HASH"},
                {"AttributeName": self.sort_key, "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": self.attribute_definitions(),
            "GlobalSecondaryIndexes": [index.definition() for index in self.indexes],
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": self.stream_view_type},
        }


#: What the listing indexes project, for the filters ``list_runs`` applies on the index. The
#: engine sets all three when a run starts, so a header save does not rewrite those entries.
_LISTED: Final = ("workflow", "parent_id", "tag_set")

TABLE: Final = TableSpec(
    partition_key="pk",
    sort_key="sk",
    ttl_attribute="expires_at",
    # Lets a stream consumer see TTL deletions of headers and remove the rest of the run.
    stream_view_type="KEYS_ONLY",
    indexes=(
        # Sparse: only headers with a wake_at have due_shard, so only they are in it.
        IndexSpec("due", "due_shard", "wake_at", "N"),
        IndexSpec("by_status", "status_shard", "created_key", "S", _LISTED),
        IndexSpec("by_workflow", "workflow_shard", "created_key", "S", _LISTED),
        IndexSpec("by_created", "shard", "created_key", "S", _LISTED),
        # Sparse: a run's references, "tag:<tag>#<shard>" on one small item per tag and
        # "parent:<parent id>#<shard>" on a child's header; nothing else carries ref_shard.
        IndexSpec("by_ref", "ref_shard", "created_key", "S", ("workflow", "tag_set")),
    ),
)

_PK: Final = TABLE.partition_key
_SK: Final = TABLE.sort_key
_TTL: Final = TABLE.ttl_attribute
HEADER_SK: Final = "R"
#: Tag items' sort keys start here; every item ``load`` reads sorts before it.
_TAGS_FROM: Final = "T"
#: A reap request's sort key starts so (``X#<inc>``): after the tag items, so no ``load`` and
#: no rewind reads one.
_REAP_PREFIX: Final = "X#"
#: A retired item carries this attribute (the wall-clock second it was retired): nothing reads
#: it, and a create-only write may replace it.
_GONE: Final = "gone"
#: The condition of a create-only write: no item at the key, or a retired one. Uses ``#pk`` and
#: ``#gone``.
_ABSENT: Final = "(attribute_not_exists(#pk) OR attribute_exists(#gone))"

#: The stream records that call the reaper, as a Lambda event filter pattern: DynamoDB's TTL
#: (not anyone's DeleteItem) removing a header (a finished run past its retention) or a reap
#: request (a run ``delete`` retired). TTL also removes retired items; those match nothing here,
#: so they never invoke the reaper. ``template.yaml`` holds a copy (``tests/infra/`` checks it),
#: the CDK stack uses this one; :func:`expired_run_ids` reads the same records.
REAPER_FILTER: Final[dict[str, Any]] = {
    "eventName": ["REMOVE"],
    "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]},
    "dynamodb": {"Keys": {_SK: {"S": [HEADER_SK, {"prefix": _REAP_PREFIX}]}}},
}

#: DynamoDB's hard limit on one item (attribute names and values).
ITEM_LIMIT: Final = 400 * 1024
DEFAULT_OFFLOAD_THRESHOLD: Final = 350_000
DEFAULT_SHARDS: Final = 8

#: The header's JSON parts, largest first when some must move to S3.
_HEADER_BLOBS: Final = ("input", "output", "engine", "error", "tags")
#: Header attributes that are absent (REMOVE'd on save) when they have no value.
_OPTIONAL: Final = ("parent_id", "ref_shard", "tag_set", "wake_at", "due_shard", _TTL)
#: Written once by create, never by save: the keys, the incarnation, the shard, the lease.
_NOT_SAVED: Final = frozenset({_PK, _SK, "inc", "shard", "lease_token", "lease_expires_at"})
_TERMINAL: Final = tuple(sorted(TERMINAL_STATUSES))
#: The header attributes the tag items copy or follow: a save that changes one rewrites them.
_RETAGGED: Final = ("created_key", "workflow", "tag_set")
#: What ``load`` reads of each item: the header's fields and incarnations, a checkpoint's body,
#: a signal's name, time and payload; not the keys it already knows, nor the index keys.
_LOAD_NAMES: Final = {
    f"#{name}": name
    for name in (_SK, "inc", "hinc", "body", "name", "at", "payload", *_HEADER_BLOBS)
    + ("workflow", "version", "status", "parent_id", "created_at", "updated_at", "wake_at")
    + ("revision", "lease_token", "lease_expires_at")
}
_LOAD_PROJECTION: Final = ", ".join(_LOAD_NAMES)
#: What ``list_runs`` reads of a header: a summary's fields, never input, output or engine.
_SUMMARY_NAMES: Final = {
    f"#{name}": name
    for name in (_PK, "workflow", "version", "status", "error", "parent_id", "tags")
    + ("created_at", "updated_at", "wake_at", _GONE)
}

#: What ``rewind`` reads of the header before it writes: revision, incarnations, lease, and
#: what the tag items follow.
_REWIND_NAMES: Final = {
    f"#{name}": name
    for name in ("inc", "hinc", "revision", "lease_token", "lease_expires_at", _GONE, *_RETAGGED)
}

_TABLE_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_SIGNAL_ATTEMPTS: Final = 64
#: How often a transaction that DynamoDB cancelled for a conflict (nothing written) is retried.
_TRANSACT_ATTEMPTS: Final = 8
#: Cancellation reasons that mean "nothing was written, try again".
_TRANSIENT: Final = frozenset({"TransactionConflict", "ThrottlingError"})
#: A transaction holds at most 100 items and 4 MB; the store keeps some room under the latter.
_TRANSACT_ITEMS: Final = 100
_TRANSACT_BYTES: Final = 3_500_000
_BACKOFF_FIRST: Final = 0.005
_BACKOFF_MAX: Final = 0.2
_INCARNATIONS_KEPT: Final = 4096
_BATCH_WRITE: Final = 25
_BATCH_GET: Final = 100
#: Batch writes in flight at once while the reaper deletes a run's items.
_DELETES_IN_FLIGHT: Final = 4
#: Single writes in flight at once while retiring many items (an old history) or deleting the
#: reaper's conditional ones (tag items).
_WRITES_IN_FLIGHT: Final = 32
#: How often ``delete`` reads the header again when it changed incarnation under it.
_DELETE_ATTEMPTS: Final = 8
#: A filtered listing reads up to this many index entries per shard and query...
_FILTERED_PAGE: Final = 100
#: ... and makes at most this many queries per shard for one page (then returns a shorter page
#: with a cursor), so a page's cost is bounded whatever the filters.
_LIST_ROUNDS: Final = 2

# -- attribute values ---------------------------------------------------------------------------


def _s(value: str) -> AttributeValue:
    return {"S": value}


def _n(value: float) -> AttributeValue:
    return {"N": repr(value) if isinstance(value, float) else str(int(value))}


def _float_key(value: float) -> str:
    """16 hex digits that sort as ``value`` does (IEEE-754 bits, sign-adjusted): exact, unlike a
    rounded decimal, so index order is ``(created_at, id)`` order to the last bit."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", float(value)))
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 0x8000_0000_0000_0000
    return f"{bits:016x}"


def _float_of_key(key: str) -> float:
    bits = int(key[:16], 16)
    bits = bits & 0x7FFF_FFFF_FFFF_FFFF if bits >> 63 else bits ^ 0xFFFF_FFFF_FFFF_FFFF
    value: float = struct.unpack(">d", struct.pack(">Q", bits))[0]
    return value


def _created_key(created_at: float, run_id: str) -> str:
    return f"{_float_key(created_at)}#{run_id}"


def _wall_second() -> int:
    """Now, in the epoch seconds DynamoDB's TTL compares (its clock, not the runtime's)."""
    return int(time.time())


def _retired(key: Mapping[str, AttributeValue], now: int) -> Item:
    """The item that retires the one at ``key``: the key, ``gone`` and a TTL of ``now``, so
    DynamoDB's TTL removes it. Small: its Put costs what the replaced item weighed."""
    return {_PK: key[_PK], _SK: key[_SK], _GONE: _n(now), _TTL: _n(now)}


# -- items: keys and bodies ---------------------------------------------------------------------


def _checkpoint_sk(hinc: str, seq: int) -> str:
    return f"C#{hinc}#{seq:010d}" if seq >= 0 else f"P#{hinc}#{-seq:010d}"


def _signal_sk(inc: str, signal_id: str) -> str:
    return f"S#{inc}#{signal_id}"


def _tag_sk(tag: str) -> str:
    return f"T#{tag}"


def _tags(run: Run) -> list[str]:
    """The run's tags as the indexes hold them: distinct, sorted, never empty (a string set
    holds no empty string, and the runtime refuses empty tags)."""
    return sorted({tag for tag in run.tags if tag})


def _checkpoint_body(cp: Checkpoint) -> str:
    """A checkpoint as the JSON text of its item: ``seq`` is in the key, fields at their default
    are left out, and the value is the runtime's own encoding when it has one
    (:meth:`Checkpoint.value_json`), never encoded a second time."""
    head: dict[str, Any] = {"kind": cp.kind, "name": cp.name, "at": cp.at}
    if cp.error is not None:
        head["error"] = cp.error
    if cp.attempts != 1:
        head["attempts"] = cp.attempts
    if cp.order is not None:
        head["order"] = cp.order
    text, value = dumps(head), cp.value_json()
    return text if value == "null" else f'{text[:-1]},"value":{value}}}'


def _checkpoint_of(seq: int, body: str) -> Checkpoint:
    """Inverse of :func:`_checkpoint_body` (bodies that also carry ``seq`` read the same)."""
    d = loads(body)
    return Checkpoint(
        seq=seq,
        kind=d["kind"],
        name=d["name"],
        value=d.get("value"),
        error=d.get("error"),
        at=d.get("at", 0.0),
        attempts=d.get("attempts", 1),
        order=d.get("order"),
    )


def _decided(cp: Checkpoint) -> int | None:
    """The seq at which a patch marker was decided, which ``rewind`` compares with its own;
    ``None`` for a marker without one (it is dropped only by a rewind to 0). Mirrors
    ``MemoryStore``: any ``int`` value counts."""
    if cp.seq < 0 and cp.kind == "patch" and isinstance(cp.value, int):
        return int(cp.value)
    return None


@dataclass(frozen=True, slots=True)
class _Incarnation:
    """What a writer must know of a run's header to address its items.

    ``run`` is the header's incarnation from ``create`` on: it keys the run's signals (which
    outlive any rewind). ``history`` keys its checkpoints and patch markers; a rewind to 0 gives
    the history a new one. A header without ``hinc`` has never had one: its history incarnation
    is ``inc``.
    """

    run: str
    history: str

    @classmethod
    def of(cls, item: Item) -> _Incarnation:
        inc: str = item["inc"]["S"]
        return cls(inc, item["hinc"]["S"] if "hinc" in item else inc)


#: The header's history incarnation is ``:hinc`` (see :class:`_Incarnation`).
_SAME_HISTORY: Final = "(#hinc = :hinc OR (attribute_not_exists(#hinc) AND #inc = :hinc))"


@dataclass(slots=True)
class _Update:
    """An UpdateExpression under construction, with its placeholders."""

    sets: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    adds: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, AttributeValue] = field(default_factory=dict)

    def expression(self) -> str:
        clauses = [("SET", self.sets), ("REMOVE", self.removes), ("ADD", self.adds)]
        return " ".join(f"{verb} {', '.join(parts)}" for verb, parts in clauses if parts)

    def params(self, condition: str) -> dict[str, Any]:
        return {
            "UpdateExpression": self.expression(),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": self.names,
            "ExpressionAttributeValues": self.values,
        }


def _header_update(item: Item, revision: int, *, with_input: bool = False) -> _Update:
    """``save``'s update of header ``item``: SET every saved attribute and ``revision + 1``,
    REMOVE the optional attributes it lacks. Defines ``#pk``, ``#rev`` and ``:rev`` for the
    condition. The input is written by ``create`` and ``rewind`` (``with_input``) only: a save
    never sends it again (it cannot change there, and it may be a quarter of a megabyte)."""
    update = _Update(
        sets=["#rev = :next"],
        names={"#pk": _PK, "#rev": "revision"},
        values={":rev": _n(revision), ":next": _n(revision + 1)},
    )
    for i, (name, value) in enumerate(item.items()):
        if name not in _NOT_SAVED and name != "revision" and (with_input or name != "input"):
            update.names[f"#a{i}"] = name
            update.values[f":a{i}"] = value
            update.sets.append(f"#a{i} = :a{i}")
    for i, name in enumerate(_OPTIONAL):
        if name not in item:
            update.names[f"#r{i}"] = name
            update.removes.append(f"#r{i}")
    return update


def item_size(item: Mapping[str, AttributeValue]) -> int:
    """An item's size as DynamoDB counts it (attribute names plus values, UTF-8 bytes).

    Write units are ``ceil(size / 1024)`` per item (doubled in a transaction).
    """
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: AttributeValue) -> int:
    (kind, data), *_ = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "N":  # about one byte per two significant digits, plus one
        digits = data.lower().split("e")[0].lstrip("-").replace(".", "").strip("0")
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(text.encode()) for text in data)
    if kind == "NS":
        return sum(_value_size({"N": number}) for number in data)
    if kind == "L":
        return 3 + sum(1 + _value_size(element) for element in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in data.items())
    return sum(len(element) for element in data)  # BS


# -- private signals from _call -----------------------------------------------------------------


class _ConditionFailed(Exception):
    """A ConditionExpression was false: the race this write guards against happened. ``item``
    is the item as it was, when the call asked for it (``ReturnValuesOnConditionCheckFailure``)."""

    def __init__(self, item: Item | None = None) -> None:
        super().__init__()
        self.item = item


class _Cancelled(Exception):
    """A transaction was cancelled; ``codes`` has one reason per item, ``"None"`` if fine."""

    def __init__(self, codes: list[str]) -> None:
        super().__init__(", ".join(codes))
        self.codes = codes

    def failed(self, index: int) -> bool:
        """Whether item ``index``'s condition was false."""
        return index < len(self.codes) and self.codes[index] == "ConditionalCheckFailed"


def _parse_number(name: str, text: str, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"dynamodb store URL option {name}={text!r} is not a number") from None


_URL_OPTIONS: Final[dict[str, Callable[[str, str], Any]]] = {
    "region": lambda name, text: text,
    "endpoint_url": lambda name, text: text,
    "payload_bucket": lambda name, text: text,
    "payload_prefix": lambda name, text: text,
    "auto_schema": lambda name, text: parse_bool("dynamodb", name, text),
    "shards": lambda name, text: _parse_number(name, text, int),
    "retention_days": lambda name, text: _parse_number(name, text, float),
    "offload_threshold": lambda name, text: _parse_number(name, text, int),
    "max_attempts": lambda name, text: _parse_number(name, text, int),
}


class DynamoDBStore(WorkflowStore):
    """Runs in one DynamoDB table (see the module docstring for the layout and its costs).

    ``client``/``s3_client`` are ready aiobotocore clients to use instead of making them (the
    store then never closes them); ``session`` an ``aioboto3.Session`` to make them from.
    ``shards`` is the number of partitions of each index: fixed for the life of a table, since
    queries read shards ``0..shards-1``. ``retention_days`` sets a TTL on finished runs
    (``None`` or ``0``: keep them).
    ``payload_bucket`` (and ``payload_prefix``) let values too large for an item go to S3, above
    ``offload_threshold`` bytes per item. ``max_attempts`` is botocore's retry budget per call.

    No method deletes an item but :meth:`reap`, the reaper's: the others need only ``GetItem``,
    ``PutItem``, ``UpdateItem``, ``Query`` and ``BatchGetItem`` (with ``auto_schema`` off), and
    retire what they would delete (see Retiring and Deleting, in the module docstring).
    """

    def __init__(
        self,
        table: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Client | None = None,
        session: Any = None,
        shards: int = DEFAULT_SHARDS,
        auto_schema: bool = True,
        retention_days: float | None = None,
        payload_bucket: str | None = None,
        payload_prefix: str = "",
        s3_client: Client | None = None,
        offload_threshold: int = DEFAULT_OFFLOAD_THRESHOLD,
        max_attempts: int = 8,
        url: str | None = None,
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ValueError(
                f"{table!r} is not a DynamoDB table name (3-255 of letters, digits, _ . -)"
            )
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        if retention_days is not None and retention_days < 0:
            raise ValueError(f"retention_days must be >= 0 (0: keep runs), got {retention_days}")
        if not 1 <= offload_threshold <= ITEM_LIMIT:
            raise ValueError(f"offload_threshold must be 1..{ITEM_LIMIT}, got {offload_threshold}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.table = table
        self.region = region
        self.endpoint_url = endpoint_url
        self.shards = shards
        self.auto_schema = auto_schema
        self.retention_days = retention_days or None
        self.payload_bucket = payload_bucket
        self.payload_prefix = payload_prefix
        self.offload_threshold = offload_threshold
        self.max_attempts = max_attempts
        self.url = url or self._url()
        self._session = session
        self._client: Client | None = client
        self._s3: Client | None = s3_client
        self._own = AsyncExitStack()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._errors: tuple[type[Exception], type[Exception]] | None = None
        self._closed = False
        #: run id -> incarnations, for the runs this instance created or loaded (bounded).
        self._incarnations: dict[str, _Incarnation] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DynamoDBStore:
        """``dynamodb://TABLE?region=eu-west-1&endpoint_url=http://localhost:8000``.

        Query parameters: ``region``, ``endpoint_url``, ``auto_schema``, ``shards``,
        ``retention_days``, ``payload_bucket``, ``payload_prefix``, ``offload_threshold``,
        ``max_attempts``. Keyword ``options`` override them (and add ``client=``, ``session=``).
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "dynamodb":
            raise ValueError(f"not a dynamodb URL: {url!r}")
        if not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"dynamodb URL {url!r} must name one table: dynamodb://TABLE?...")
        params: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            parse = _URL_OPTIONS.get(name)
            if parse is None:
                raise ValueError(
                    f"unknown dynamodb URL option {name!r} in {url!r}; "
                    f"known: {', '.join(_URL_OPTIONS)}"
                )
            params[name] = parse(name, value)
        params.update(options)
        params.setdefault("url", url)
        return cls(parts.netloc, **params)

    def _url(self) -> str:
        query = {
            name: value
            for name, value in (
                ("region", self.region),
                ("endpoint_url", self.endpoint_url),
                ("payload_bucket", self.payload_bucket),
            )
            if value
        }
        return f"dynamodb://{self.table}" + (f"?{urlencode(query, safe=':/')}" if query else "")

    def __repr__(self) -> str:
        return f"DynamoDBStore({self.url!r})"

    # -- clients and the one helper every AWS call goes through --------------------------------

    async def _clients(self) -> Client:
        """The DynamoDB client, made on first use in the running loop (with S3's, if needed)."""
        loop = asyncio.get_running_loop()
        if self._closed:
            raise StoreError(f"the DynamoDBStore for {self.url} is closed")
        if self._loop is not loop:
            if self._loop is not None:
                raise StoreError(
                    f"the DynamoDBStore for {self.url} is bound to the event loop that first "
                    "used it; open one store per event loop"
                )
            self._loop = loop
            self._lock = asyncio.Lock()
        if self._errors is None:
            from botocore.exceptions import BotoCoreError, ClientError

            self._errors = (ClientError, BotoCoreError)
        if self._client is not None and (self._s3 is not None or self.payload_bucket is None):
            return self._client
        assert self._lock is not None
        async with self._lock:
            if self._client is None:
                self._client = await self._make_client("dynamodb")
            if self._s3 is None and self.payload_bucket is not None:
                self._s3 = await self._make_client("s3")
        return self._client

    async def _make_client(self, service: str) -> Client:
        import aioboto3
        from botocore.config import Config

        if self._session is None:
            self._session = aioboto3.Session()
        config = Config(
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            connect_timeout=5,
            read_timeout=20,
            max_pool_connections=64,
            tcp_keepalive=True,
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        assert self._errors is not None
        try:
            return await self._own.enter_async_context(
                self._session.client(
                    service,
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=config,
                )
            )
        except self._errors as exc:  # NoRegionError, a malformed endpoint ...
            raise StoreError(f"cannot make a {service} client: {exc} (store {self.url})") from exc

    async def _call(
        self,
        operation: str,
        run_id: str | None,
        *,
        service: str = "dynamodb",
        what: str | None = None,
        schema: bool = True,
        allow: Collection[str] = (),
        **params: Any,
    ) -> dict[str, Any]:
        """Make one AWS call; map its errors to the contract's.

        A false condition raises :class:`_ConditionFailed`, a cancelled transaction
        :class:`_Cancelled`: the caller knows what race each one means. A missing table or
        index is created and the call made again when ``auto_schema`` is on (``schema=False``
        for the schema calls themselves), else it raises ``SchemaMissing``. DynamoDB's item
        size error becomes ``PayloadTooLarge`` naming ``what``; an error whose code is in
        ``allow`` returns ``{}``; anything else raises ``StoreError`` with botocore's message,
        the run and the store URL. botocore has already retried throttling and transient
        errors by then.
        """
        client = await self._clients()
        if service == "s3":
            client = self._s3
        assert self._errors is not None
        client_error, botocore_error = self._errors
        for attempt in range(2):
            try:
                result: dict[str, Any] = await getattr(client, operation)(**params)
                return result
            except client_error as exc:
                error = getattr(exc, "response", {}) or {}
                code = str(error.get("Error", {}).get("Code", ""))
                message = str(error.get("Error", {}).get("Message", exc))
                if code in allow:
                    return {}
                if code == "ConditionalCheckFailedException":
                    raise _ConditionFailed(error.get("Item")) from None
                if code == "TransactionCanceledException":
                    reasons = error.get("CancellationReasons") or []
                    raise _Cancelled([str(r.get("Code", "None")) for r in reasons]) from None
                if service == "dynamodb" and schema and _is_schema_error(code, message):
                    if self.auto_schema and attempt == 0:
                        await self._ensure_schema(run_id)
                        continue
                    raise self._schema_missing(run_id, message) from exc
                if code == "ValidationException" and "maximum allowed size" in message:
                    raise PayloadTooLarge(
                        f"{what or 'an item'} of run {run_id!r} is over DynamoDB's 400 KB item "
                        f"limit ({message}); set payload_bucket= to offload large values to S3"
                    ) from exc
                self._fail(operation, run_id, exc)
            except botocore_error as exc:
                self._fail(operation, run_id, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _fail(self, operation: str, run_id: str | None, exc: Exception) -> NoReturn:
        what = f"run {run_id!r}, " if run_id is not None else ""
        raise StoreError(
            f"DynamoDB store {operation} failed: {exc} ({what}store {self.url})", run_id=run_id
        ) from exc

    def _schema_missing(self, run_id: str | None, message: str) -> SchemaMissing:
        return SchemaMissing(
            f"DynamoDB table {self.table!r} does not exist or lacks an index ({message}; store "
            f"URL {self.url}); create it with `heron schema ensure` or "
            "DynamoDBStore.ensure_schema()",
            run_id=run_id,
        )

    # -- schema and lifecycle ------------------------------------------------------------------

    async def ensure_schema(self) -> None:
        """Create the table, its indexes and TTL (and the payload bucket) if missing.

        Idempotent; for development, tests and deploy steps. In production the table comes
        from the deployment template (built from :data:`TABLE`) and ``auto_schema=False``.
        """
        await self._ensure_schema(None)

    async def _ensure_schema(self, run_id: str | None) -> None:
        await self._clients()
        assert self._lock is not None
        async with self._lock:
            await self._create_table(run_id)
            if self.payload_bucket is not None:
                await self._create_bucket(run_id)

    async def _create_table(self, run_id: str | None) -> None:
        await self._call(  # in use: it exists, or another store is creating it right now
            "create_table",
            run_id,
            schema=False,
            allow=("ResourceInUseException",),
            **TABLE.create_table_request(self.table),
        )
        description = await self._wait_active(run_id)
        keys = {k["AttributeName"]: k["KeyType"] for k in description.get("KeySchema", [])}
        if keys != {_PK: "HASH", _SK: "RANGE"}:
            raise StoreError(
                f"DynamoDB table {self.table!r} has keys {keys}, not {_PK} (HASH) and {_SK} "
                f"(RANGE): it is not a Heron table (store {self.url})",
                run_id=run_id,
            )
        present = {i["IndexName"] for i in description.get("GlobalSecondaryIndexes") or []}
        for index in TABLE.indexes:
            if index.name not in present:  # a table from an older template: add what is missing
                await self._call(
                    "update_table",
                    run_id,
                    schema=False,
                    TableName=self.table,
                    AttributeDefinitions=TABLE.attribute_definitions(),
                    GlobalSecondaryIndexUpdates=[{"Create": index.definition()}],
                )
                await self._wait_active(run_id)
        ttl = await self._call("describe_time_to_live", run_id, schema=False, TableName=self.table)
        status = ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
        if status not in ("ENABLED", "ENABLING"):
            await self._call(
                "update_time_to_live",
                run_id,
                schema=False,
                TableName=self.table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": _TTL},
            )

    async def _wait_active(self, run_id: str | None, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            described = await self._call(  # not found: just created, not visible yet
                "describe_table",
                run_id,
                schema=False,
                allow=("ResourceNotFoundException",),
                TableName=self.table,
            )
            table: dict[str, Any] = described.get("Table") or {"TableStatus": "CREATING"}
            indexes = table.get("GlobalSecondaryIndexes") or []
            if table.get("TableStatus") == "ACTIVE" and all(
                index.get("IndexStatus", "ACTIVE") == "ACTIVE" for index in indexes
            ):
                return table
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"DynamoDB table {self.table!r} not ACTIVE after {timeout:g}s "
                    f"(store {self.url})",
                    run_id=run_id,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _create_bucket(self, run_id: str | None) -> None:
        params: dict[str, Any] = {"Bucket": self.payload_bucket}
        if self.region and self.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        await self._call(
            "create_bucket", run_id, service="s3", allow=("BucketAlreadyOwnedByYou",), **params
        )

    async def close(self) -> None:
        self._closed = True
        await self._own.aclose()

    # -- incarnations ----------------------------------------------------------------------------

    def _remember(self, run_id: str, known: _Incarnation) -> None:
        cache = self._incarnations
        if run_id not in cache and len(cache) >= _INCARNATIONS_KEPT:
            del cache[next(iter(cache))]
        cache[run_id] = known

    async def _incarnation(self, run_id: str) -> _Incarnation | None:
        known = self._incarnations.get(run_id)
        if known is None:
            found = await self._call(
                "get_item",
                run_id,
                TableName=self.table,
                Key=self._header_key(run_id),
                ConsistentRead=True,
                ProjectionExpression="#inc, #hinc, #gone",
                ExpressionAttributeNames={"#inc": "inc", "#hinc": "hinc", "#gone": _GONE},
            )
            if "Item" not in found or _GONE in found["Item"]:
                return None
            known = _Incarnation.of(found["Item"])
            self._remember(run_id, known)
        return known

    # -- items -----------------------------------------------------------------------------------

    def _shard(self, run_id: str) -> str:
        return str(zlib.crc32(run_id.encode()) % self.shards)

    @staticmethod
    def _header_key(run_id: str) -> Item:
        return {_PK: _s(run_id), _SK: _s(HEADER_SK)}

    def _header_item(self, run: Run) -> Item:
        """The header as an item: every attribute but the incarnations, the lease and the
        pending-signal counter (which only the store's own writes touch)."""
        fields = run.header_fields()
        shard = self._shard(run.id)
        item: Item = {
            **self._header_key(run.id),
            "workflow": _s(run.workflow),
            "version": _s(run.version),
            "status": _s(run.status),
            "input": _s(fields["input"]),
            "output": _s(fields["output"]),
            "error": _s(fields["error"]),
            "engine": _s(fields["engine"]),
            "tags": _s(fields["tags"]),
            "created_at": _n(run.created_at),
            "updated_at": _n(run.updated_at),
            "revision": _n(run.revision),
            "shard": _s(shard),
            "status_shard": _s(f"{run.status}#{shard}"),
            "workflow_shard": _s(f"{run.workflow}#{shard}"),
            "created_key": _s(_created_key(run.created_at, run.id)),
        }
        if run.parent_id is not None:
            item["parent_id"] = _s(run.parent_id)
            item["ref_shard"] = _s(f"parent:{run.parent_id}#{shard}")
        if tags := _tags(run):
            item["tag_set"] = {"SS": tags}
        if run.wake_at is not None:
            item["wake_at"] = _n(run.wake_at)
            item["due_shard"] = _s(shard)
        if run.terminal and self.retention_days is not None:
            # TTL runs on the wall clock, whatever clock the runtime passes around.
            item[_TTL] = _n(int(time.time() + self.retention_days * 86400))
        return item

    def _tag_items(self, run: Run) -> list[Item]:
        """One small item per tag, in the ``by_ref`` index under ``tag:<tag>#<shard>``; it copies
        the header's ``created_key`` (the index's order) and ``workflow`` (a filter)."""
        tags = _tags(run)
        if len(tags) >= _TRANSACT_ITEMS:
            raise ValueError(
                f"run {run.id!r} has {len(tags)} tags; the DynamoDB store keeps at most "
                f"{_TRANSACT_ITEMS - 1}, which its header and tag items fit one transaction"
            )
        shard = self._shard(run.id)
        created = _s(_created_key(run.created_at, run.id))
        return [
            {
                _PK: _s(run.id),
                _SK: _s(_tag_sk(tag)),
                "ref_shard": _s(f"tag:{tag}#{shard}"),
                "created_key": created,
                "workflow": _s(run.workflow),
            }
            for tag in tags
        ]

    def _retag(self, run: Run, item: Item, old: Item, room: int) -> tuple[list[Any], list[Item]]:
        """The writes that move the tag items from header ``old`` to header ``item``: none when
        the attributes they copy are unchanged (the steady state). Puts of the tag items and
        of the retired ones (tags the run lost) that fit in ``room`` transaction items, and the
        keys of the lost tags that do not (retired after)."""
        if all(item.get(name) == old.get(name) for name in _RETAGGED):
            return [], []
        puts = [{"Put": {"TableName": self.table, "Item": tag}} for tag in self._tag_items(run)]
        lost = sorted(set(old.get("tag_set", {}).get("SS", [])) - set(_tags(run)))
        keys = [{_PK: _s(run.id), _SK: _s(_tag_sk(tag))} for tag in lost]
        fits = max(0, room - len(puts))
        now = _wall_second()
        retired = [self._retire_op(key, now) for key in keys[:fits]]
        return [*puts, *retired], keys[fits:]

    async def _run(self, item: Item, run_id: str | None = None) -> Run:
        run_id = run_id or item[_PK]["S"]
        texts = await self._texts(item, run_id, _HEADER_BLOBS)
        return Run.from_fields(
            {
                "id": run_id,
                "workflow": item["workflow"]["S"],
                "version": item["version"]["S"],
                "status": item["status"]["S"],
                **texts,
                "parent_id": item["parent_id"]["S"] if "parent_id" in item else None,
                "created_at": _number(item, "created_at"),
                "updated_at": _number(item, "updated_at"),
                "wake_at": _number(item, "wake_at"),
                "revision": int(item["revision"]["N"]),
                "lease_token": item["lease_token"]["S"] if "lease_token" in item else None,
                "lease_expires_at": _number(item, "lease_expires_at"),
            }
        )

    async def _summary(self, item: Item) -> RunSummary:
        run_id = item[_PK]["S"]
        texts = await self._texts(item, run_id, ("error", "tags"))
        return RunSummary(
            id=run_id,
            workflow=item["workflow"]["S"],
            version=item["version"]["S"],
            status=item["status"]["S"],
            error=loads(texts["error"]),
            parent_id=item["parent_id"]["S"] if "parent_id" in item else None,
            tags=loads(texts["tags"]) or [],
            created_at=float(item["created_at"]["N"]),
            updated_at=float(item["updated_at"]["N"]),
            wake_at=_number(item, "wake_at"),
        )

    @staticmethod
    def _saved(run: Run, stored: Item) -> Run:
        """``run`` as a header write left it: revision bumped, the stored lease."""
        result = run.copy()
        result.revision = run.revision + 1
        result.lease_token = stored["lease_token"]["S"] if "lease_token" in stored else None
        result.lease_expires_at = _number(stored, "lease_expires_at")
        return result

    # -- S3 offload ------------------------------------------------------------------------------

    async def _fit(self, item: Item, run_id: str, what: str, blobs: Sequence[str]) -> Item:
        """``item`` if it fits; else with its largest ``blobs`` moved to S3, or PayloadTooLarge.

        Objects are content-addressed (their key is a hash of their bytes) and never rewritten,
        so a writer that loses its conditional write, or retries it, can leave an unreferenced
        object but never change one that another item references.
        """
        size = item_size(item)
        limit = self.offload_threshold if self.payload_bucket else ITEM_LIMIT
        if size <= limit:
            return item
        if self.payload_bucket is None:
            raise PayloadTooLarge(
                f"{what} of run {run_id!r} is {size:,} bytes as a DynamoDB item, over "
                f"DynamoDB's {ITEM_LIMIT:,}-byte item limit; set payload_bucket= (store URL "
                f"?payload_bucket=...) to offload large values to S3"
            )
        item = dict(item)
        inline = [name for name in blobs if "S" in item.get(name, {})]
        for name in sorted(inline, key=lambda name: -_value_size(item[name])):
            text: str = item[name]["S"]
            data = text.encode()
            key = (
                f"{self.payload_prefix}{quote(run_id, safe='')}/"
                f"{hashlib.sha256(data).hexdigest()}.json"
            )
            await self._call(
                "put_object",
                run_id,
                service="s3",
                Bucket=self.payload_bucket,
                Key=key,
                Body=data,
                ContentType="application/json",
            )
            item[name] = {"M": {"s3": _s(key)}}
            size = item_size(item)
            if size <= limit:
                return item
        raise PayloadTooLarge(
            f"{what} of run {run_id!r} is {size:,} bytes as a DynamoDB item even with its values "
            f"in S3, over the {limit:,}-byte limit"
        )

    async def _texts(self, item: Item, run_id: str, blobs: Iterable[str]) -> dict[str, str | None]:
        """The JSON text of each of ``blobs`` (absent: ``None``), fetched from S3 if offloaded."""
        texts: dict[str, str | None] = {}
        offloaded: list[tuple[str, str]] = []
        for name in blobs:
            value = item.get(name)
            if value is None:
                texts[name] = None
            elif "S" in value:
                texts[name] = value["S"]
            else:
                offloaded.append((name, value["M"]["s3"]["S"]))
        if offloaded:
            fetched = await _all(*(self._fetch(run_id, key) for _, key in offloaded))
            texts.update((name, text) for (name, _), text in zip(offloaded, fetched, strict=True))
        return texts

    async def _fetch(self, run_id: str, key: str) -> str:
        if self.payload_bucket is None:
            raise StoreError(
                f"run {run_id!r} has a value in S3 ({key}) but the store has no payload_bucket "
                f"(store {self.url})",
                run_id=run_id,
            )
        got = await self._call(
            "get_object", run_id, service="s3", Bucket=self.payload_bucket, Key=key
        )
        async with got["Body"] as body:
            data: bytes = await body.read()
        return data.decode()

    async def _bodies(self, run_id: str, items: Sequence[Item], attribute: str) -> list[str]:
        """Each item's JSON text in ``attribute``: inline, or fetched from S3 (all at once)."""
        texts: list[str] = [item[attribute].get("S", "") for item in items]
        offloaded = [i for i, item in enumerate(items) if "M" in item[attribute]]
        fetched = await _all(
            *(self._fetch(run_id, items[i][attribute]["M"]["s3"]["S"]) for i in offloaded)
        )
        for i, text in zip(offloaded, fetched, strict=True):
            texts[i] = text
        return texts

    # -- transactions ----------------------------------------------------------------------------

    async def _transact(
        self, run_id: str, items: list[dict[str, Any]], *, what: str | None = None
    ) -> None:
        """One ``TransactWriteItems``, all of it or nothing.

        DynamoDB cancels a transaction that meets another one in flight on one of its items
        (``TransactionConflict``) or is throttled; nothing was written, so it is sent again,
        with back-off, a few times. Any other cancellation raises :class:`_Cancelled`, whose
        codes (one per item) tell the caller which condition failed.
        """
        delay = _BACKOFF_FIRST
        attempt = 0
        while True:
            try:
                await self._call(
                    "transact_write_items",
                    run_id,
                    what=what,
                    ClientRequestToken=secrets.token_hex(16),
                    TransactItems=items,
                )
                return
            except _Cancelled as exc:
                reasons = set(exc.codes) - {"None"}
                if not reasons or not reasons <= _TRANSIENT:
                    raise
                attempt += 1
                if attempt >= _TRANSACT_ATTEMPTS:
                    raise StoreError(
                        f"run {run_id!r}: a DynamoDB transaction was cancelled {attempt} times "
                        f"({', '.join(sorted(reasons))}) (store {self.url})",
                        run_id=run_id,
                    ) from None
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, _BACKOFF_MAX)

    def _cancelled(self, operation: str, run_id: str, exc: _Cancelled) -> StoreError:
        return StoreError(
            f"DynamoDB store {operation} on run {run_id!r} was cancelled: "
            f"{', '.join(exc.codes)} (store {self.url})",
            run_id=run_id,
        )

    # -- runs ------------------------------------------------------------------------------------

    async def create(self, run: Run) -> bool:
        inc = secrets.token_urlsafe(6)
        item = await self._fit(
            {**self._header_item(run), "inc": _s(inc)}, run.id, "the header", _HEADER_BLOBS
        )
        tags = self._tag_items(run)
        put: dict[str, Any] = {
            "TableName": self.table,
            "Item": item,
            "ConditionExpression": _ABSENT,
            "ExpressionAttributeNames": {"#pk": _PK, "#gone": _GONE},
        }
        # Create-only: two starts of one run id race, and exactly one header is written:
        #   A: PutItem if no item (R)  -> written      B: PutItem if no item (R)  -> condition false
        # B then returns False and reads A's run, as an idempotent start should. A deleted
        # run's tombstone counts as no item: the Put replaces it whole, and the new incarnation
        # hides whatever the old run left until the reaper removes it. A run with tags writes
        # its tag items in the same transaction: it is listed under each tag from the moment it
        # exists, and the loser of the race writes no tag item onto A's run.
        try:
            if not tags:
                await self._call("put_item", run.id, what="the header", **put)
            else:
                await self._transact(
                    run.id,
                    [{"Put": put}, *({"Put": {"TableName": self.table, "Item": t}} for t in tags)],
                    what="the header",
                )
        except _ConditionFailed:
            return False
        except _Cancelled as exc:
            if exc.failed(0):
                return False
            raise self._cancelled("create", run.id, exc) from None
        self._remember(run.id, _Incarnation(inc, inc))
        return True

    async def load(self, run_id: str) -> Loaded | None:
        # One Query reads the run: every item it needs sorts before the tag items (T#...), and
        # DynamoDB drops consumed signals (tombstones) and retired items (a deleted run's
        # header among them) before they are sent back.
        items = [
            item
            async for item in self._query(
                run_id,
                KeyConditionExpression="#pk = :id AND #sk < :tags",
                FilterExpression="attribute_not_exists(#consumed) AND attribute_not_exists(#gone)",
                ProjectionExpression=_LOAD_PROJECTION,
                ExpressionAttributeNames={
                    "#pk": _PK,
                    "#consumed": "consumed_by",
                    "#gone": _GONE,
                    **_LOAD_NAMES,
                },
                ExpressionAttributeValues={":id": _s(run_id), ":tags": _s(_TAGS_FROM)},
                ConsistentRead=True,
            )
        ]
        header = next((item for item in items if item[_SK]["S"] == HEADER_SK), None)
        if header is None:
            return None
        known = _Incarnation.of(header)
        self._remember(run_id, known)
        # Only the items of the header's incarnations count: a history a rewind replaced, or
        # what a zombie wrote for a run deleted since, is never read back.
        steps, markers = f"C#{known.history}#", f"P#{known.history}#"
        buffered = f"S#{known.run}#"
        history: list[tuple[int, Item]] = []
        pending: list[Item] = []
        for item in items:
            sk = item[_SK]["S"]
            if sk.startswith(steps):
                history.append((int(sk[len(steps) :]), item))
            elif sk.startswith(markers):
                history.append((-int(sk[len(markers) :]), item))
            elif sk.startswith(buffered):
                if "name" not in item:
                    # Heron 0.2 kept the whole signal in ``body`` and never marked one consumed:
                    # which of them the run has seen is the old engine's to know, not the
                    # store's, so refuse rather than deliver them again.
                    raise StoreError(
                        f"run {run_id!r} holds signals in Heron 0.2's format; finish or delete "
                        f"the runs started before the upgrade (store {self.url})",
                        run_id=run_id,
                    )
                pending.append(item)
        run = await self._run(header, run_id)
        bodies, payloads = await _all(
            self._bodies(run_id, [item for _, item in history], "body"),
            self._bodies(run_id, pending, "payload"),
        )
        checkpoints = [
            _checkpoint_of(seq, body) for (seq, _), body in zip(history, bodies, strict=True)
        ]
        signals = [
            Signal(
                id=item[_SK]["S"][len(buffered) :],
                name=item["name"]["S"],
                payload=loads(payload),
                at=float(item["at"]["N"]),
            )
            for item, payload in zip(pending, payloads, strict=True)
        ]
        checkpoints.sort(key=lambda cp: cp.seq)
        signals.sort(key=lambda s: (s.at, s.id))
        return Loaded(run=run, checkpoints=checkpoints, signals=signals)

    async def append(
        self, run_id: str, checkpoint: Checkpoint, *, consumes: str | None = None
    ) -> None:
        cp = checkpoint
        known = await self._incarnation(run_id)
        if known is None:
            raise Conflict(f"run {run_id!r} does not exist", run_id=run_id)
        what = f"checkpoint seq {cp.seq} ({cp.kind} {cp.name!r})"
        item: Item = {
            _PK: _s(run_id),
            _SK: _s(_checkpoint_sk(known.history, cp.seq)),
            "body": _s(_checkpoint_body(cp)),
        }
        if (decided := _decided(cp)) is not None:
            item["decided"] = _n(decided)
        put: dict[str, Any] = {
            "TableName": self.table,
            "Item": await self._fit(item, run_id, what, ("body",)),
            "ConditionExpression": _ABSENT,
            "ExpressionAttributeNames": {"#pk": _PK, "#gone": _GONE},
        }
        if consumes is not None:
            await self._consume(run_id, known, cp.seq, put, consumes, what)
            return
        # Create-only: two executors that both ran step `seq` (a lease lapsed under a slow one)
        # race to commit it, and the condition lets exactly one write the item:
        #   A: PutItem C#seq if absent -> written    B: PutItem C#seq if absent -> Conflict
        # B reloads and replays A's value; a plain put would let B overwrite a committed step.
        # A checkpoint a rewind retired counts as absent (the rerun step writes over it), and
        # the first Put makes it a live item again, so the second still conflicts.
        try:
            await self._call("put_item", run_id, what=what, **put)
        except _ConditionFailed:
            raise Conflict(f"run {run_id!r} already has {what}", run_id=run_id) from None

    async def _consume(
        self,
        run_id: str,
        known: _Incarnation,
        seq: int,
        put: dict[str, Any],
        signal_id: str,
        what: str,
    ) -> None:
        """Commit the checkpoint in ``put`` and mark signal ``signal_id`` consumed by it."""
        # One transaction of three writes, so a signal is consumed exactly when the checkpoint
        # that records it commits:
        #  - the checkpoint, create-only, as in append: one of two executors commits seq;
        #  - the signal, if it exists and nothing consumed it. Two executors that recorded the
        #    same signal at different seqs (a lease that lapsed under a slow one)
        #      A: put seq 7 + consume s1 -> written    B: put seq 8 + consume s1 -> cancelled
        #    deliver it once. Its payload is removed (the checkpoint holds it now); the
        #    tombstone keeps its id (a duplicate send is still a no-op), name and time, and
        #    records which history (consumed_in) and seq (consumed_by) consumed it, for rewind;
        #  - the header, if its history is still the one this executor loaded. A zombie that
        #    loaded the run before a continue_as_new (a rewind to 0) would otherwise consume a
        #    signal into a history nobody reads, and the signal would be lost:
        #      zombie:   load (history h1) ............ consume s2 if history = h1 -> cancelled
        #      executor:        rewind to 0 (history h2)
        #    The same write takes one off the header's count of pending signals.
        items = [
            {"Put": put},
            {
                "Update": {
                    "TableName": self.table,
                    "Key": {_PK: _s(run_id), _SK: _s(_signal_sk(known.run, signal_id))},
                    "UpdateExpression": "SET #by = :seq, #in = :hinc REMOVE #payload",
                    "ConditionExpression": "attribute_exists(#pk) AND attribute_not_exists(#by)",
                    "ExpressionAttributeNames": {
                        "#pk": _PK,
                        "#by": "consumed_by",
                        "#in": "consumed_in",
                        "#payload": "payload",
                    },
                    "ExpressionAttributeValues": {":seq": _n(seq), ":hinc": _s(known.history)},
                }
            },
            {
                "Update": {
                    "TableName": self.table,
                    "Key": self._header_key(run_id),
                    "UpdateExpression": "ADD #pending :minus",
                    "ConditionExpression": _SAME_HISTORY,
                    "ExpressionAttributeNames": {
                        "#pending": "pending",
                        "#hinc": "hinc",
                        "#inc": "inc",
                    },
                    "ExpressionAttributeValues": {":minus": _n(-1), ":hinc": _s(known.history)},
                }
            },
        ]
        try:
            await self._transact(run_id, items, what=what)
        except _Cancelled as exc:
            if exc.failed(0):
                raise Conflict(f"run {run_id!r} already has {what}", run_id=run_id) from None
            if exc.failed(1):
                raise Conflict(
                    f"run {run_id!r} has no pending signal {signal_id!r} for {what}", run_id=run_id
                ) from None
            if exc.failed(2):
                self._incarnations.pop(run_id, None)  # the next append reads the header again
                raise Conflict(
                    f"run {run_id!r} is gone or its history was rewound since it was loaded "
                    f"({what} not written)",
                    run_id=run_id,
                ) from None
            raise self._cancelled("append", run_id, exc) from None

    async def save(self, run: Run) -> Run:
        item = await self._fit(self._header_item(run), run.id, "the header", _HEADER_BLOBS)
        update = _header_update(item, run.revision)
        # The tag items copy created_key and workflow, and exist one per tag_set member. The
        # engine sets those at start and never changes them, so the save also checks that they
        # are unchanged and stays one UpdateItem; a save that changes them fails that part of
        # the condition and goes through _save_retagged instead.
        unchanged = []
        for i, name in enumerate(_RETAGGED):
            update.names[f"#t{i}"] = name
            if name in item:
                update.values[f":t{i}"] = item[name]
                unchanged.append(f"#t{i} = :t{i}")
            else:
                unchanged.append(f"attribute_not_exists(#t{i})")
        # Conditional on the revision the executor loaded. A signal or a cancel that landed
        # after that load bumped it, so this save fails instead of overwriting the wake:
        #   executor: load (rev 4) ........................ save if rev = 4 -> Conflict
        #   signal:          store S, wake_at = now, rev 5
        # and the executor reloads, sees the signal, and suspends again with it. The header
        # must exist too, so a save never brings a deleted run back.
        try:
            saved = await self._call(
                "update_item",
                run.id,
                what="the header",
                TableName=self.table,
                Key=self._header_key(run.id),
                **update.params(
                    f"attribute_exists(#pk) AND #rev = :rev AND {' AND '.join(unchanged)}"
                ),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            stored: Item = saved["Attributes"]
        except _ConditionFailed as failed:
            old = failed.item
            if old is None or _GONE in old or int(old["revision"]["N"]) != run.revision:
                raise Conflict(
                    f"run {run.id!r} changed since revision {run.revision}", run_id=run.id
                ) from None
            stored = await self._save_retagged(run, item, old)
        self._remember(run.id, _Incarnation.of(stored))
        return self._saved(run, stored)

    async def _save_retagged(self, run: Run, item: Item, old: Item) -> Item:
        """Save a header whose tags (or creation time, or workflow) changed, with its tag items.

        One transaction on the revision, as ``save``: the header and the tag items move
        together, so the ``by_ref`` index never lists a run under a tag it lacks nor misses
        one. Tag items to retire that do not fit one transaction (more than 49 tags replaced at
        once) go after it: a stale tag item only costs a listing one header it drops. Returns
        ``old``, for its incarnations and lease.
        """
        update = _header_update(item, run.revision)
        head = {
            "Update": {
                "TableName": self.table,
                "Key": self._header_key(run.id),
                **update.params("attribute_exists(#pk) AND #rev = :rev"),
            }
        }
        writes, later = self._retag(run, item, old, _TRANSACT_ITEMS - 1)
        try:
            await self._transact(run.id, [head, *writes], what="the header")
        except _Cancelled as exc:
            if exc.failed(0):
                raise Conflict(
                    f"run {run.id!r} changed since revision {run.revision}", run_id=run.id
                ) from None
            raise self._cancelled("save", run.id, exc) from None
        await self._retire_quietly(run.id, later)
        return old

    async def signal(
        self, run_id: str, signal: Signal, *, max_pending: int = MAX_PENDING_SIGNALS
    ) -> bool:
        delay = _BACKOFF_FIRST
        what = f"signal {signal.name!r} ({signal.id})"
        for attempt in range(_SIGNAL_ATTEMPTS):
            found = await self._call(
                "get_item",
                run_id,
                TableName=self.table,
                Key=self._header_key(run_id),
                ConsistentRead=True,
                ProjectionExpression="#inc, #hinc, #rev, #wake, #status, #pending, #gone",
                ExpressionAttributeNames={
                    "#inc": "inc",
                    "#hinc": "hinc",
                    "#rev": "revision",
                    "#wake": "wake_at",
                    "#status": "status",
                    "#pending": "pending",
                    "#gone": _GONE,
                },
            )
            head = found.get("Item")
            if head is None or _GONE in head:  # no run, or a deleted one's tombstone
                return False
            known = _Incarnation.of(head)
            self._remember(run_id, known)
            key = {_PK: _s(run_id), _SK: _s(_signal_sk(known.run, signal.id))}
            if (int(head["pending"]["N"]) if "pending" in head else 0) >= max_pending:
                # Full, as of the header just read. A signal id the run has seen (buffered or
                # consumed) is still a no-op, so look for it before refusing: a signal item
                # only ever goes with its run, and one stored since the read is found now.
                seen = await self._call(
                    "get_item",
                    run_id,
                    TableName=self.table,
                    Key=key,
                    ConsistentRead=True,
                    ProjectionExpression="#pk",
                    ExpressionAttributeNames={"#pk": _PK},
                )
                if "Item" in seen:
                    return True
                raise TooManySignals(run_id, max_pending)
            item = await self._fit(
                {
                    **key,
                    "name": _s(signal.name),
                    "at": _n(signal.at),
                    "payload": _s(dumps(signal.payload)),
                },
                run_id,
                what,
                ("payload",),
            )
            revision = int(head["revision"]["N"])
            update = _Update(
                sets=["#rev = :next"],
                adds=["#pending :one"],
                names={"#rev": "revision", "#inc": "inc", "#pending": "pending"},
                values={
                    ":rev": _n(revision),
                    ":next": _n(revision + 1),
                    ":inc": _s(known.run),
                    ":one": _n(1),
                    ":max": _n(max_pending),
                },
            )
            if head["status"]["S"] not in TERMINAL_STATUSES:
                wake = _number(head, "wake_at")
                update.values[":wake"] = _n(signal.at if wake is None else min(wake, signal.at))
                update.values[":shard"] = _s(self._shard(run_id))
                update.names.update({"#wake": "wake_at", "#due": "due_shard"})
                update.sets.append("#wake = :wake, #due = :shard")
            # One transaction: the signal is stored, counted and the run made due together, or
            # none of it.
            #  - Put if absent: a signal id already buffered (or consumed: its tombstone stays)
            #    cancels the whole transaction, so a duplicate changes nothing (not the payload,
            #    the revision, wake_at or the count).
            #  - Update if the revision is still the one read above: min(wake_at, at), the
            #    terminal check and the count come from that read. A save that slipped in
            #    between may have set an earlier wake_at or a terminal status, which this update
            #    must not overwrite:
            #      signal:   read rev 4 (wake 100) ............. update if rev = 4 -> cancelled
            #      executor:          save rev 4 -> 5 (wake 10)
            #    so the signal reads again (rev 5, wake 10) and retries. The revision it bumps
            #    in turn fails an executor's save of a header loaded before the signal, and that
            #    executor reloads and sees it.
            #  - pending < max: two signals racing for the last place both read 99 of 100, and
            #      A: put + pending 99 -> 100 if rev = 4 -> written
            #      B: put + pending 99 -> 100 if rev = 4 -> cancelled; reads 100: TooManySignals
            #    Every signal bumps the revision, and only signals and rewinds (which bump it
            #    too) raise the count, so the revision alone already serializes them; the
            #    count's own condition states the cap where it is enforced. A consuming append
            #    lowers the count without touching the revision: ADD, not a value computed
            #    from the read, keeps that decrement.
            try:
                await self._transact(
                    run_id,
                    [
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": item,
                                "ConditionExpression": "attribute_not_exists(#pk)",
                                "ExpressionAttributeNames": {"#pk": _PK},
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": self._header_key(run_id),
                                **update.params(
                                    "#rev = :rev AND #inc = :inc AND "
                                    "(attribute_not_exists(#pending) OR #pending < :max)"
                                ),
                            }
                        },
                    ],
                    what=what,
                )
                return True
            except _Cancelled as exc:
                if exc.failed(0):
                    return True  # already seen; the transaction wrote nothing
                if not exc.failed(1):
                    raise self._cancelled("signal", run_id, exc) from None
            # Another writer got in first and made progress: read again at once, and back off
            # only when that keeps happening.
            if attempt:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _BACKOFF_MAX)
        raise StoreError(
            f"run {run_id!r}: gave up delivering signal {signal.id!r} after {_SIGNAL_ATTEMPTS} "
            f"attempts, the header kept changing (store {self.url})",
            run_id=run_id,
        )

    async def due(self, now: float, limit: int) -> list[str]:
        if limit <= 0 or math.isnan(now) or now == -math.inf:
            return []
        condition = "#shard = :shard"
        values: dict[str, AttributeValue] = {}
        if now != math.inf:
            condition += " AND #wake <= :now"
            values[":now"] = _n(float(now))
        streams = [
            _Shard(
                self,
                None,
                IndexName="due",
                KeyConditionExpression=condition,
                ExpressionAttributeNames={"#shard": "due_shard", "#wake": "wake_at"}
                if ":now" in values
                else {"#shard": "due_shard"},
                ExpressionAttributeValues={**values, ":shard": _s(str(shard))},
                ScanIndexForward=True,
                Limit=limit,
            )
            for shard in range(self.shards)
        ]
        merged, _ = await _merge(
            streams, limit, lambda item: (float(item["wake_at"]["N"]), item[_PK]["S"])
        )
        return [item[_PK]["S"] for item in merged]

    async def delete(self, run_id: str) -> None:
        """Delete the run as far as every reader is concerned, and leave its items to the reaper.

        Writes only (``PutItem``, ``UpdateItem``): the API's role may not delete. The run is
        gone from the tombstone's write on (see Deleting, in the module docstring); DynamoDB's
        TTL and the reaper (:meth:`reap`) remove its items later. Deleting a missing or deleted
        run does nothing. Raises ``StoreError``.
        """
        for _ in range(_DELETE_ATTEMPTS):
            found = await self._call(
                "get_item",
                run_id,
                TableName=self.table,
                Key=self._header_key(run_id),
                ConsistentRead=True,
                ProjectionExpression="#inc, #gone, #tags, #created",
                ExpressionAttributeNames={
                    "#inc": "inc",
                    "#gone": _GONE,
                    "#tags": "tag_set",
                    "#created": "created_key",
                },
            )
            head = found.get("Item")
            self._incarnations.pop(run_id, None)
            if head is None or _GONE in head:
                return
            inc = head["inc"]["S"]
            now = _wall_second()
            # The reap request first, then the tombstone. A crash in between leaves the run as
            # it was (a reap request alone removes nothing a live header owns), and the caller,
            # told of the failure, deletes again; the other order could leave a tombstone that
            # no reaper ever hears of.
            await self._call(
                "put_item",
                run_id,
                TableName=self.table,
                Item={_PK: _s(run_id), _SK: _s(f"{_REAP_PREFIX}{inc}"), _TTL: _n(now)},
            )
            # The tombstone replaces the header of the incarnation read above, and only that:
            #   delete: read inc a ................................ tombstone if inc = a -> fails
            #   other:        tombstone a, create run (inc b)
            # so this delete reads again and deletes run b, with a reap request of b's own (the
            # one for a is written). A tombstone has no index key and no revision: the run
            # leaves due and the listings, and every conditional write to it fails from here on.
            try:
                await self._call(
                    "put_item",
                    run_id,
                    TableName=self.table,
                    Item={**self._header_key(run_id), _GONE: _n(now)},
                    ConditionExpression="#inc = :inc AND attribute_not_exists(#gone)",
                    ExpressionAttributeNames={"#inc": "inc", "#gone": _GONE},
                    ExpressionAttributeValues={":inc": _s(inc)},
                )
            except _ConditionFailed:
                continue
            await self._retire_tags(run_id, head, now)
            return
        raise StoreError(
            f"run {run_id!r}: gave up deleting it after {_DELETE_ATTEMPTS} attempts, it kept "
            f"being started again (store {self.url})",
            run_id=run_id,
        )

    async def _retire_tags(self, run_id: str, head: Item, now: int) -> None:
        """Retire a deleted run's tag items, so ``by_ref`` drops them now rather than when the
        reaper comes; best-effort (the listing's header check drops them meanwhile)."""
        created = head.get("created_key")
        tags = head.get("tag_set", {}).get("SS", [])
        if created is None or not tags:
            return

        async def retire(tag: str) -> None:
            # Only the deleted run's item: one started again under the id since (a created_key
            # of its own) may have written this tag's item already.
            try:
                await self._call(
                    "put_item",
                    run_id,
                    TableName=self.table,
                    Item=_retired({_PK: _s(run_id), _SK: _s(_tag_sk(tag))}, now),
                    ConditionExpression="#created = :created",
                    ExpressionAttributeNames={"#created": "created_key"},
                    ExpressionAttributeValues={":created": created},
                )
            except _ConditionFailed:
                pass

        try:
            await _bounded(retire(tag) for tag in tags)
        except StoreError as exc:
            _log.warning("run %r: tag items left for the reaper: %s", run_id, exc)

    async def reap(self, run_id: str) -> None:
        """Delete, for good, what a deleted or expired run left: for the reaper only.

        Every item of the run's partition that no live header owns, then the run's S3
        objects. A live header (one not retired: a run started again under the id, or one
        whose TTL removal has not happened yet) keeps what belongs to its incarnations,
        retired items included (TTL removes those, at no cost), so reaping a run that is there
        changes nothing any read returns, and reaping twice is harmless. Items whose key a new
        run may write (the header, the tag items) are deleted only in the state they were read
        in. The one store method that deletes: it needs ``DeleteItem`` and ``BatchWriteItem``,
        which only the reaper's role has. Raises ``StoreError``.
        """
        names = {
            "#pk": _PK,
            "#sk": _SK,
            "#inc": "inc",
            "#hinc": "hinc",
            "#gone": _GONE,
            "#created": "created_key",
        }
        found = [
            item
            async for item in self._query(
                run_id,
                KeyConditionExpression="#pk = :id",
                ProjectionExpression=", ".join(names),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={":id": _s(run_id)},
                ConsistentRead=True,
            )
        ]
        header = next((item for item in found if item[_SK]["S"] == HEADER_SK), None)
        live = header if header is not None and _GONE not in header else None
        owned: tuple[str, ...] = ()
        if live is not None:
            known = _Incarnation.of(live)
            owned = (
                f"C#{known.history}#",
                f"P#{known.history}#",
                f"S#{known.run}#",
                f"{_REAP_PREFIX}{known.run}",
            )
        keys: list[Item] = []
        guarded: list[tuple[Item, AttributeValue | None]] = []  # (key, created_key or None)
        tombstone: Item | None = None
        for item in found:
            sk = item[_SK]["S"]
            key = {_PK: item[_PK], _SK: item[_SK]}
            if sk == HEADER_SK:
                if live is None:
                    tombstone = key
            elif sk.startswith(f"{_TAGS_FROM}#"):
                created = item.get("created_key")
                if live is not None and created is not None and created == live.get("created_key"):
                    continue  # the live run's
                guarded.append((key, created))  # another run's, or retired
            elif not (live is not None and sk.startswith(owned)):
                # Keyed by an incarnation no live header has: nobody writes these keys again.
                keys.append(key)
        await self._delete_keys(run_id, keys)
        # A tag item's key is the same for every run under this id: a run started again since
        # the Query may have put its own there, which these conditions keep.
        await _bounded(self._delete_if(run_id, key, created) for key, created in guarded)
        if tombstone is not None:
            # The tombstone last, and only if it still is one: a run started again since the
            # Query has replaced it.
            await self._delete_if(run_id, tombstone, None)
        if self.payload_bucket is not None and live is None:
            # Objects are shared by content under the run's prefix: a live run may use them.
            await self._delete_objects(run_id)

    async def _delete_if(self, run_id: str, key: Item, created: AttributeValue | None) -> None:
        """Delete the item at ``key`` if it is still what the reaper read: retired (``created``
        is ``None``), or carrying that ``created_key``."""
        condition: dict[str, Any]
        if created is None:
            condition = {
                "ConditionExpression": "attribute_exists(#gone)",
                "ExpressionAttributeNames": {"#gone": _GONE},
            }
        else:
            condition = {
                "ConditionExpression": "#created = :created",
                "ExpressionAttributeNames": {"#created": "created_key"},
                "ExpressionAttributeValues": {":created": created},
            }
        try:
            await self._call("delete_item", run_id, TableName=self.table, Key=key, **condition)
        except _ConditionFailed:
            pass

    async def _delete_keys(self, run_id: str, keys: Sequence[Item]) -> None:
        """Delete items by key, 25 a ``BatchWriteItem``, a few batches in flight at once."""
        batches = [keys[i : i + _BATCH_WRITE] for i in range(0, len(keys), _BATCH_WRITE)]
        for start in range(0, len(batches), _DELETES_IN_FLIGHT):
            await _all(
                *(
                    self._batch_write(run_id, [{"DeleteRequest": {"Key": key}} for key in batch])
                    for batch in batches[start : start + _DELETES_IN_FLIGHT]
                )
            )

    async def _batch_write(self, run_id: str | None, requests: list[dict[str, Any]]) -> None:
        delay = _BACKOFF_FIRST
        pending: dict[str, Any] = {self.table: requests}
        while pending:
            result = await self._call("batch_write_item", run_id, RequestItems=pending)
            pending = result.get("UnprocessedItems") or {}
            if pending:  # throttled in part: retry the rest, with back-off
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _BACKOFF_MAX * 5)

    async def _delete_objects(self, run_id: str) -> None:
        prefix = f"{self.payload_prefix}{quote(run_id, safe='')}/"
        token: str | None = None
        while True:
            listed = await self._call(
                "list_objects_v2",
                run_id,
                service="s3",
                Bucket=self.payload_bucket,
                Prefix=prefix,
                **_present(ContinuationToken=token),
            )
            objects = [{"Key": obj["Key"]} for obj in listed.get("Contents", [])]
            if objects:
                await self._call(
                    "delete_objects",
                    run_id,
                    service="s3",
                    Bucket=self.payload_bucket,
                    Delete={"Objects": objects, "Quiet": True},
                )
            token = listed.get("NextContinuationToken")
            if not token:
                return

    async def list_runs(self, query: RunQuery) -> RunPage:
        after = decode_cursor(query.cursor) if query.cursor else None
        if query.limit <= 0:
            return RunPage(runs=[])
        index, key, prefix, filters = _listing(query)
        names = {"#key": key}
        values: dict[str, AttributeValue] = {}
        tests = []
        for attribute, value, test in filters:
            names[f"#{attribute}"] = attribute
            values[f":{attribute}"] = _s(value)
            tests.append(test.format(attribute))
        # Bounds on created_key. created_before and the cursor are exclusive: a bare float key
        # sorts before every "<float key>#<id>" of that instant; the cursor's own entry is
        # dropped below. created_after is inclusive for the same reason.
        upper = [] if query.created_before is None else [_float_key(query.created_before)]
        if after is not None:
            upper.append(_created_key(*after))
        high = min(upper) if upper else None
        low = None if query.created_after is None else _float_key(query.created_after)
        condition = "#key = :key"
        if low is not None and high is not None:
            if low > high:
                return RunPage(runs=[])
            condition += " AND #created BETWEEN :low AND :high"
        elif low is not None:
            condition += " AND #created >= :low"
        elif high is not None:
            condition += " AND #created <= :high"
        if low is not None:
            values[":low"] = _s(low)
        if high is not None:
            values[":high"] = _s(high)
        if low is not None or high is not None:
            names["#created"] = "created_key"
        # Without a filter every entry an index returns is on the page, so each shard reads at
        # most limit + 1. A filter may drop entries, so the shards read more at a time, and
        # the merge stops after _LIST_ROUNDS queries per shard: it then returns the matches
        # found so far (perhaps fewer than limit) and a cursor where every shard has been read
        # up to. Either way a page costs O(limit x shards) index entries, however many runs
        # the table holds.
        streams = [
            _Shard(
                self,
                None,
                IndexName=index,
                KeyConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={**values, ":key": _s(f"{prefix}{shard}")},
                ScanIndexForward=False,
                Limit=query.limit + 1 if not tests else max(query.limit + 1, _FILTERED_PAGE),
                **_present(FilterExpression=" AND ".join(tests)),
            )
            for shard in range(self.shards)
        ]
        entries, resume = await _merge(
            streams,
            query.limit + 1,
            lambda item: item["created_key"]["S"],
            newest_first=True,
            skip=(lambda item: item["created_key"]["S"] >= high) if high is not None else None,
            budget=_LIST_ROUNDS * self.shards,
        )
        page = entries[: query.limit]
        # The page's headers, one BatchGetItem, read for a summary's attributes only (never
        # input, output or engine state).
        headers = {
            header[_PK]["S"]: header
            for header in await self._batch_get(
                None,
                [self._header_key(entry[_PK]["S"]) for entry in page],
                _SUMMARY_NAMES,
            )
        }
        found = [
            header
            for entry in page
            if (header := headers.get(entry[_PK]["S"])) is not None and _GONE not in header
        ]
        summaries = await _all(*(self._summary(header) for header in found))
        # A run deleted since the index was read has no header, or a tombstone; the index lags
        # the table a little, so the header, not the index entry, decides whether the run
        # matches.
        runs = [summary for summary in summaries if query.matches(summary)]
        cursor = None
        if len(entries) > query.limit:
            last = page[-1]
            cursor = encode_cursor(_float_of_key(last["created_key"]["S"]), last[_PK]["S"])
        elif resume is not None:
            cursor = encode_cursor(_float_of_key(resume), resume[17:])
        return RunPage(runs=runs, next_cursor=cursor)

    async def _batch_get(
        self, run_id: str | None, keys: Sequence[Item], names: Mapping[str, str]
    ) -> list[Item]:
        """The items at ``keys`` that exist (consistent reads), with the attributes ``names``
        (placeholder -> attribute) only."""
        found: list[Item] = []
        for start in range(0, len(keys), _BATCH_GET):
            pending: dict[str, Any] = {
                self.table: {
                    "Keys": list(keys[start : start + _BATCH_GET]),
                    "ConsistentRead": True,
                    "ProjectionExpression": ", ".join(names),
                    "ExpressionAttributeNames": dict(names),
                }
            }
            delay = _BACKOFF_FIRST
            while pending:
                result = await self._call("batch_get_item", run_id, RequestItems=pending)
                found.extend(result.get("Responses", {}).get(self.table, []))
                pending = result.get("UnprocessedKeys") or {}
                if pending:
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, _BACKOFF_MAX * 5)
        return found

    async def _query(self, run_id: str | None, **params: Any) -> AsyncIterator[Item]:
        """Every item a Query returns, page after page."""
        start: dict[str, Any] | None = None
        while True:
            page = await self._call(
                "query",
                run_id,
                TableName=self.table,
                **params,
                **_present(ExclusiveStartKey=start),
            )
            for item in page.get("Items", []):
                yield item
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    # -- rewind ------------------------------------------------------------------------------------

    async def rewind(self, run: Run, seq: int, *, restore_signals: bool = True) -> Run:
        if seq < 0:
            raise ValueError(f"cannot rewind run {run.id!r} to seq {seq}: seqs start at 0")
        item = await self._fit(self._header_item(run), run.id, "the header", _HEADER_BLOBS)
        found = await self._call(
            "get_item",
            run.id,
            TableName=self.table,
            Key=self._header_key(run.id),
            ConsistentRead=True,
            ProjectionExpression=", ".join(_REWIND_NAMES),
            ExpressionAttributeNames=_REWIND_NAMES,
        )
        old = found.get("Item")
        if old is None or _GONE in old or int(old["revision"]["N"]) != run.revision:
            raise Conflict(f"run {run.id!r} changed since revision {run.revision}", run_id=run.id)
        known = _Incarnation.of(old)
        units, stale = await self._rewind_plan(run.id, known, seq, restore_signals)
        final = _header_update(item, run.revision, with_input=True)
        history = known.history
        if seq == 0:
            # The whole history goes, however long: the header takes a new history
            # incarnation, and every checkpoint and marker of the old one is invisible from
            # the moment this write lands (then retired, below).
            history = secrets.token_urlsafe(6)
            final.names["#hinc"] = "hinc"
            final.values[":hinc"] = _s(history)
            final.sets.append("#hinc = :hinc")
        retag, later = self._retag(run, item, old, _TRANSACT_ITEMS - 1)
        chunks = _chunks(units, _TRANSACT_ITEMS - 1 - len(retag))
        # Every write below is conditional on the revision the caller loaded, and only the last
        # one bumps it. The first guards the rest: a stale caller changes nothing at all.
        #   rewind: read rev 7 ..... chunk 1 if rev = 7 -> cancelled: Conflict, nothing written
        #   signal:        store S, rev 8
        # A history too long for one transaction (100 writes) goes in chunks, the highest
        # seqs first, each signal restored in the same transaction as the retirement of the
        # checkpoint that consumed it: after any chunk, the run is a shorter history of itself
        # (its signals each consumed once or pending once), so an interrupted rewind, or one
        # whose later chunk met a new revision, is simply done again from where it stopped.
        condition = "attribute_exists(#pk) AND #rev = :rev"
        for chunk in chunks[:-1]:
            guard = _Update(
                adds=["#pending :restored"],
                names={"#pk": _PK, "#rev": "revision", "#pending": "pending"},
                values={":rev": _n(run.revision), ":restored": _n(sum(u.restored for u in chunk))},
            )
            await self._rewind_write(run, [self._header_op(run.id, guard, condition), *_ops(chunk)])
        restored = sum(unit.restored for unit in chunks[-1])
        if restored:
            final.names["#pending"] = "pending"
            final.values[":restored"] = _n(restored)
            final.adds.append("#pending :restored")
        writes = [*_ops(chunks[-1]), *retag]
        if writes:
            await self._rewind_write(run, [self._header_op(run.id, final, condition), *writes])
            stored = old
        else:  # nothing but the header (a continue_as_new): one conditional UpdateItem
            try:
                result = await self._call(
                    "update_item",
                    run.id,
                    what="the header",
                    TableName=self.table,
                    Key=self._header_key(run.id),
                    **final.params(condition),
                    ReturnValues="ALL_NEW",
                )
            except _ConditionFailed:
                raise Conflict(
                    f"run {run.id!r} changed since revision {run.revision}", run_id=run.id
                ) from None
            stored = result["Attributes"]
        self._remember(run.id, _Incarnation(known.run, history))
        await self._retire_quietly(run.id, later)
        await self._retire_quietly(run.id, stale, keep=history if seq == 0 else None)
        return self._saved(run, stored)

    def _header_op(self, run_id: str, update: _Update, condition: str) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self.table,
                "Key": self._header_key(run_id),
                **update.params(condition),
            }
        }

    async def _rewind_write(self, run: Run, items: list[dict[str, Any]]) -> None:
        """One transaction of a rewind; ``items[0]`` is the header's, on the revision."""
        try:
            await self._transact(run.id, items, what="the header")
        except _Cancelled as exc:
            if exc.failed(0):
                raise Conflict(
                    f"run {run.id!r} changed since revision {run.revision}", run_id=run.id
                ) from None
            raise self._cancelled("rewind", run.id, exc) from None

    async def _rewind_plan(
        self, run_id: str, known: _Incarnation, seq: int, restore_signals: bool
    ) -> tuple[list[_Unit], list[Item]]:
        """What a rewind to ``seq`` writes besides the header, as units (each undoing what was
        recorded at one seq), and the keys of items older histories left behind."""
        steps, markers = f"C#{known.history}#", f"P#{known.history}#"
        dropped: set[int] = set()
        units: list[_Unit] = []
        stale: list[Item] = []
        now = _wall_second()
        if seq > 0:  # a rewind to 0 drops the whole history at once, by its incarnation
            async for entry in self._query(
                run_id,
                KeyConditionExpression="#pk = :id AND #sk < :header",
                FilterExpression="attribute_not_exists(#gone)",  # retired already
                ProjectionExpression="#pk, #sk, #decided",
                ExpressionAttributeNames={
                    "#pk": _PK,
                    "#sk": _SK,
                    "#decided": "decided",
                    "#gone": _GONE,
                },
                ExpressionAttributeValues={":id": _s(run_id), ":header": _s(HEADER_SK)},
                ConsistentRead=True,
            ):
                sk = entry[_SK]["S"]
                key = {_PK: entry[_PK], _SK: entry[_SK]}
                if sk.startswith(steps):
                    if (at := int(sk[len(steps) :])) >= seq:
                        dropped.add(at)
                elif sk.startswith(markers):
                    decided = _number(entry, "decided")
                    if decided is not None and decided >= seq:
                        units.append(_Unit(int(decided), [self._retire_op(key, now)]))
                else:
                    stale.append(key)
        restores = await self._restores(run_id, known, seq) if restore_signals else {}
        # A restored signal goes with the retirement of the checkpoint that consumed it (at 0
        # too, where the new incarnation would hide that checkpoint anyway), so no chunk of a
        # long rewind ever leaves a signal both pending and recorded.
        for position in dropped | set(restores):
            key = {_PK: _s(run_id), _SK: _s(_checkpoint_sk(known.history, position))}
            unit = _Unit(position, [self._retire_op(key, now)])
            if position in restores:
                op, size = restores[position]
                unit.ops.append(op)
                unit.restored, unit.size = 1, size
            units.append(unit)
        return units, stale

    def _retire_op(self, key: Item, now: int) -> dict[str, Any]:
        """A transaction's write that retires the item at ``key`` (where a ``Delete`` would
        need ``DeleteItem``, which the API's and resume's roles lack)."""
        return {"Put": {"TableName": self.table, "Item": _retired(key, now)}}

    async def _restores(
        self, run_id: str, known: _Incarnation, seq: int
    ) -> dict[int, tuple[dict[str, Any], int]]:
        """The writes that make the signals this history consumed at ``seq`` or later pending
        again, by the seq that consumed each, with the restored item's size. The payload comes
        back from the checkpoint that recorded it (its value is ``{"id": ..., "payload": ...}``).
        """
        tombstones = [
            tombstone
            async for tombstone in self._query(
                run_id,
                KeyConditionExpression="#pk = :id AND begins_with(#sk, :signals)",
                FilterExpression="#in = :hinc AND #by >= :seq",
                ProjectionExpression="#sk, #name, #at, #by",
                ExpressionAttributeNames={
                    "#pk": _PK,
                    "#sk": _SK,
                    "#in": "consumed_in",
                    "#by": "consumed_by",
                    "#name": "name",
                    "#at": "at",
                },
                ExpressionAttributeValues={
                    ":id": _s(run_id),
                    ":signals": _s(f"S#{known.run}#"),
                    ":hinc": _s(known.history),
                    ":seq": _n(seq),
                },
                ConsistentRead=True,
            )
        ]
        if not tombstones:
            return {}
        consumers = [int(tombstone["consumed_by"]["N"]) for tombstone in tombstones]
        recorded = await self._batch_get(
            run_id,
            [{_PK: _s(run_id), _SK: _s(_checkpoint_sk(known.history, by))} for by in consumers],
            {"#sk": _SK, "#body": "body"},
        )
        # A checkpoint retired by an earlier rewind that kept its signals consumed has no body.
        recorded = [item for item in recorded if "body" in item]
        texts = await self._bodies(run_id, recorded, "body")
        values = {
            int(item[_SK]["S"].rsplit("#", 1)[1]): loads(text).get("value")
            for item, text in zip(recorded, texts, strict=True)
        }
        restores: dict[int, tuple[dict[str, Any], int]] = {}
        prefix = len(f"S#{known.run}#")
        for tombstone, by in zip(tombstones, consumers, strict=True):
            value = values.get(by)
            # A recording checkpoint that is gone (a hand edit) restores the signal without its
            # payload, rather than leave it consumed by nothing.
            payload = value.get("payload") if isinstance(value, dict) else None
            what = f"signal {tombstone['name']['S']!r} ({tombstone[_SK]['S'][prefix:]})"
            item = await self._fit(
                {
                    _PK: _s(run_id),
                    _SK: tombstone[_SK],
                    "name": tombstone["name"],
                    "at": tombstone["at"],
                    "payload": _s(dumps(payload)),
                },
                run_id,
                what,
                ("payload",),
            )
            op = {
                "Update": {
                    "TableName": self.table,
                    "Key": {_PK: _s(run_id), _SK: tombstone[_SK]},
                    "UpdateExpression": "SET #payload = :payload REMOVE #by, #in",
                    # As the plan read it: consumed at that seq of this history.
                    "ConditionExpression": "#by = :by AND #in = :hinc",
                    "ExpressionAttributeNames": {
                        "#payload": "payload",
                        "#by": "consumed_by",
                        "#in": "consumed_in",
                    },
                    "ExpressionAttributeValues": {
                        ":payload": item["payload"],
                        ":by": _n(by),
                        ":hinc": _s(known.history),
                    },
                }
            }
            restores[by] = (op, item_size(item))
        return restores

    async def _retire_quietly(
        self, run_id: str, keys: Sequence[Item], *, keep: str | None = None
    ) -> None:
        """Retire items nothing reads any more, best-effort: ``keys``, and with ``keep`` every
        checkpoint and marker of a history other than ``keep`` that is not retired yet.

        They are invisible already (an old history, a tag the run lost), and the write that
        made them so has succeeded: a failure here must not report it failed. The next rewind
        and the reaper remove whatever is left. Plain Puts, a few dozen in flight: no
        ``BatchWriteItem``, which the roles that call this may not use (it can delete).
        """
        try:
            if keep is not None:
                mine = (f"C#{keep}#", f"P#{keep}#")
                keys = [
                    *keys,
                    *[
                        {_PK: item[_PK], _SK: item[_SK]}
                        async for item in self._query(
                            run_id,
                            KeyConditionExpression="#pk = :id AND #sk < :header",
                            FilterExpression="attribute_not_exists(#gone)",
                            ProjectionExpression="#pk, #sk",
                            ExpressionAttributeNames={"#pk": _PK, "#sk": _SK, "#gone": _GONE},
                            ExpressionAttributeValues={
                                ":id": _s(run_id),
                                ":header": _s(HEADER_SK),
                            },
                            ConsistentRead=True,
                        )
                        if not item[_SK]["S"].startswith(mine)
                    ],
                ]
            now = _wall_second()
            await _bounded(
                self._call("put_item", run_id, TableName=self.table, Item=_retired(key, now))
                for key in keys
            )
        except StoreError as exc:
            _log.warning("run %r: unreachable items left for a later cleanup: %s", run_id, exc)

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
        expires = now + ttl
        # Check-and-set in one conditional update. Two executors may try at the same moment:
        #   A: update if lease free/expired/mine -> taken    B: same update -> condition false
        # DynamoDB applies writes to one item one at a time and evaluates B's condition on the
        # item A left, whose lease is live and not B's. Reading the lease first and writing it
        # after would let both see it free and both win. The run must exist (a header, not a
        # deleted run's tombstone) and not be terminal, or a crashed executor's renewal could
        # resurrect a cancelled or deleted run's wake.
        # With due_only the run must also be due, checked in the same step: an executor that
        # read "due" earlier cannot take a run another executor has since put to sleep. The
        # previous holder comes back with the write (UPDATED_OLD), from the same moment.
        try:
            result = await self._call(
                "update_item",
                run_id,
                TableName=self.table,
                Key=self._header_key(run_id),
                UpdateExpression="SET #token = :token, #expires = :expires, #wake = :expires, "
                "#due = :shard",
                ConditionExpression="attribute_exists(#pk) AND attribute_not_exists(#gone) "
                "AND NOT (#status IN (:t0, :t1, :t2)) "
                "AND (attribute_not_exists(#expires) OR #expires <= :now OR #token = :token)"
                + (" AND #wake <= :now" if due_only else ""),
                ExpressionAttributeNames={
                    "#pk": _PK,
                    "#gone": _GONE,
                    "#token": "lease_token",
                    "#expires": "lease_expires_at",
                    "#wake": "wake_at",
                    "#due": "due_shard",
                    "#status": "status",
                },
                ExpressionAttributeValues={
                    ":token": _s(token),
                    ":expires": _n(float(expires)),
                    ":shard": _s(self._shard(run_id)),
                    ":now": _n(float(now)),
                    **{f":t{i}": _s(status) for i, status in enumerate(_TERMINAL)},
                },
                ReturnValues="UPDATED_OLD",
            )
        except _ConditionFailed:
            return Acquired.NO
        old = result.get("Attributes") or {}
        previous: str | None = None
        if "lease_token" in old:
            previous = old["lease_token"]["S"]
        elif "lease_expires_at" in old:
            # DynamoDB returns every attribute the update sets; moto only those whose value
            # changed, so a renewal there returns the old expiry without the (same) token.
            # Token and expiry are set and removed together: an expiry means a holder. (On
            # moto, a renewal to the very same expiry returns neither and reads as FREE.)
            previous = token
        if previous is None:
            return Acquired.FREE
        return Acquired.RENEWED if previous == token else Acquired.TAKEN_OVER

    async def release(self, run_id: str, token: str) -> None:
        # Only the holder may drop the lease: an executor whose lease lapsed and was taken by
        # another must not release the new holder's lease on its way out.
        try:
            await self._call(
                "update_item",
                run_id,
                TableName=self.table,
                Key={_PK: _s(run_id), _SK: _s(HEADER_SK)},
                UpdateExpression="REMOVE #token, #expires",
                ConditionExpression="#token = :token",
                ExpressionAttributeNames={"#token": "lease_token", "#expires": "lease_expires_at"},
                ExpressionAttributeValues={":token": _s(token)},
            )
        except _ConditionFailed:
            pass


async def _all(*calls: Awaitable[T]) -> list[T]:
    """``asyncio.gather`` that lets every call finish before it raises the first error, so no
    call is left running against a store that its caller may close next."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


async def _bounded(calls: Iterable[Awaitable[Any]], limit: int = _WRITES_IN_FLIGHT) -> None:
    """Await ``calls``, at most ``limit`` at once (made lazily: a batch is started only when
    the one before has finished); raises the first error once its batch has finished."""
    batch: list[Awaitable[Any]] = []
    for call in calls:
        batch.append(call)
        if len(batch) == limit:
            await _all(*batch)
            batch = []
    if batch:
        await _all(*batch)


def _present(**params: Any) -> dict[str, Any]:
    """The parameters that have a value (botocore refuses ``None`` and empty strings)."""
    return {name: value for name, value in params.items() if value}


def _number(item: Mapping[str, AttributeValue], name: str) -> float | None:
    value = item.get(name)
    return None if value is None else float(value["N"])


def _is_schema_error(code: str, message: str) -> bool:
    """A missing table (ResourceNotFound) or index (ValidationException on DynamoDB)."""
    if code == "ResourceNotFoundException":
        return True
    return code == "ValidationException" and "specified index" in message


def _listing(query: RunQuery) -> tuple[str, str, str, list[tuple[str, str, str]]]:
    """The index that answers ``query``: its name, partition key attribute and key prefix (the
    shard number follows it), and the filters left for the attributes it projects.

    Each index answers one filter exactly, newest first: ``by_status`` a status, ``by_ref`` a
    parent or a tag, ``by_workflow`` a workflow, ``by_created`` none. A query naming several
    uses the first of status, parent, tag, workflow; the others are tested on the index entry
    (``by_status`` projects workflow, parent and tags; ``by_ref`` workflow and, on a child's
    header, tags). The header read for the page checks them all again.
    """
    if query.status is not None:
        index, key, prefix = "by_status", "status_shard", f"{query.status}#"
    elif query.parent_id is not None:
        index, key, prefix = "by_ref", "ref_shard", f"parent:{query.parent_id}#"
    elif query.tag is not None:
        index, key, prefix = "by_ref", "ref_shard", f"tag:{query.tag}#"
    elif query.workflow is not None:
        index, key, prefix = "by_workflow", "workflow_shard", f"{query.workflow}#"
    else:
        index, key, prefix = "by_created", "shard", ""
    filters = []
    if query.workflow is not None and index != "by_workflow":
        filters.append(("workflow", query.workflow, "#{0} = :{0}"))
    if query.tag is not None and not prefix.startswith("tag:"):
        filters.append(("tag_set", query.tag, "contains(#{0}, :{0})"))
    if query.parent_id is not None and index == "by_status":
        filters.append(("parent_id", query.parent_id, "#{0} = :{0}"))
    return index, key, prefix, filters


@dataclass(slots=True)
class _Unit:
    """Writes of a rewind that belong together: they undo what was recorded at ``position``
    (a seq), restore ``restored`` signals and hold ``size`` bytes of restored items."""

    position: int
    ops: list[dict[str, Any]]
    restored: int = 0
    size: int = 0


def _chunks(units: Sequence[_Unit], room: int) -> list[list[_Unit]]:
    """``units`` in transactions, to be written in the order returned: the highest positions
    first, at most 99 writes besides the header's and ``_TRANSACT_BYTES`` each; the last one,
    which also carries the header (and the tag writes), at most ``room``."""
    chunks: list[list[_Unit]] = [[]]
    count = size = 0
    limit = room
    for unit in sorted(units, key=lambda unit: unit.position):  # the lowest go with the header
        cost = unit.size + 100 * len(unit.ops)
        fits = count + len(unit.ops) <= limit and size + cost <= _TRANSACT_BYTES
        if not fits and (chunks[-1] or len(chunks) == 1):
            chunks.append([])
            count = size = 0
            limit = _TRANSACT_ITEMS - 1
        chunks[-1].append(unit)
        count += len(unit.ops)
        size += cost
    return chunks[::-1]


def _ops(units: Iterable[_Unit]) -> list[dict[str, Any]]:
    return [op for unit in units for op in unit.ops]


class _Shard:
    """One shard's Query, read a page at a time as the merge consumes it."""

    def __init__(self, store: DynamoDBStore, run_id: str | None, **params: Any) -> None:
        self.store = store
        self.run_id = run_id
        self.params = params
        self.items: deque[Item] = deque()
        #: The LastEvaluatedKey of the last page: everything up to it has been read.
        self.start: Item | None = None
        self.done = False

    async def fill(self) -> None:
        """Read one more page (it may hold no item: a filter can drop all it read)."""
        page = await self.store._call(
            "query",
            self.run_id,
            TableName=self.store.table,
            **self.params,
            **_present(ExclusiveStartKey=self.start),
        )
        self.items.extend(page.get("Items", []))
        self.start = page.get("LastEvaluatedKey")
        self.done = not self.start


async def _merge(
    shards: Sequence[_Shard],
    count: int,
    key: Callable[[Item], Any],
    *,
    newest_first: bool = False,
    skip: Callable[[Item], bool] | None = None,
    budget: int | None = None,
) -> tuple[list[Item], Any]:
    """The first ``count`` items of the shards' sorted streams, merged (queries in parallel).

    A shard whose page is used up is read again only when its next entries could come before
    the best item at hand (they come after its ``LastEvaluatedKey``). With a ``budget`` of
    queries, the merge stops when the next reads would pass it, and also returns the key up to
    which every shard has been read and every match merged: the next page starts after it.
    Otherwise (or when the merge ended before the budget) that key is ``None``.
    """
    pick = max if newest_first else min

    def ahead(a: Any, b: Any) -> bool:
        return bool(a > b) if newest_first else bool(a < b)

    queries = len(shards)
    await _all(*(shard.fill() for shard in shards))
    merged: list[Item] = []
    while len(merged) < count:
        heads = [shard for shard in shards if shard.items]
        best = pick(heads, key=lambda shard: key(shard.items[0])) if heads else None
        behind = [
            shard
            for shard in shards
            if not shard.items
            and shard.start is not None
            and (best is None or not ahead(key(best.items[0]), key(shard.start)))
        ]
        if behind:
            if budget is not None and queries + len(behind) > budget:
                return merged, pick(key(shard.start) for shard in behind if shard.start)
            queries += len(behind)
            await _all(*(shard.fill() for shard in behind))
            continue
        if best is None:
            break
        item = best.items.popleft()
        if skip is None or not skip(item):
            merged.append(item)
    return merged, None


def expired_run_ids(event: Mapping[str, Any]) -> list[str]:
    """The runs to reap, from a DynamoDB Streams event: those whose header (a finished run past
    its retention) or reap request (a deleted run) DynamoDB's TTL just removed.

    The records :data:`REAPER_FILTER` passes, checked again here: a removal by TTL (the
    ``dynamodb.amazonaws.com`` service, not anyone's DeleteItem) of an item whose sort key is
    the header's or a reap request's. TTL's removals of retired items, and the reaper's own
    deletes, are none of them. The reaper calls ``store.reap(run_id)`` for each id returned.
    """
    ids = []
    for record in event.get("Records", []):
        identity = record.get("userIdentity") or {}
        keys = (record.get("dynamodb") or {}).get("Keys") or {}
        sk = keys.get(_SK, {}).get("S", "")
        if (
            record.get("eventName") == "REMOVE"
            and identity.get("type") == "Service"
            and identity.get("principalId") == "dynamodb.amazonaws.com"
            and (sk == HEADER_SK or sk.startswith(_REAP_PREFIX))
        ):
            ids.append(keys[_PK]["S"])
    return ids
