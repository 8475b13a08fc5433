"""``DynamoDBStore``: every run in one DynamoDB table, through aioboto3's low-level client.

One table. :data:`TABLE` is the single source of truth for its keys, indexes, TTL attribute and
stream: ``ensure_schema`` and the deployment template are built from it. The partition key
``pk`` is the run id, so one run is one item collection and ``load`` is one Query::

    pk       sk                          what
    run id   R                           the header: native attributes for what conditions and
                                         indexes need, JSON strings for the rest
    run id   C#<inc>#<seq:010d>          one checkpoint per step (seq >= 0)
    run id   P#<inc>#<-seq:010d>         one patch marker (seq < 0, a key space of its own)
    run id   S#<inc>#<signal id>         one buffered signal

``inc`` is the run's incarnation, a random token the header gets when it is created. A
checkpoint or signal counts only under the incarnation of the header it was written for, so a
zombie executor that writes to a run after it was deleted (and perhaps started again under the
same id) leaves an item that no ``load`` will ever return, instead of history in the new run.

Costs. A small step is one ``PutItem`` of one item under 1 KB: 1 write request unit, no
transaction, no header write, and no index write (checkpoints carry no index keys). The store
remembers the incarnation of each run it created or loaded, so ``append`` reads nothing in the
steady state (an executor always loads the run before it runs steps); an append to a run this
instance has not seen reads the header once first, which is also how an append to a missing
run fails with ``Conflict``. Header writes (suspend, finish, lease) cost 1 unit per KB plus the
index entries they move. A signal is a read and a two-item transaction (4 units).

``due``: a sparse, sharded global secondary index. Only a header with a ``wake_at`` carries the
index keys ``due_shard`` (a stable hash of the run id modulo ``shards``) and ``wake_at``; every
other item is absent from the index. ``due`` queries the ``shards`` partitions of the index in
parallel (``wake_at <= now``, ascending, ``Limit=limit``) and merges them by ``(wake_at, id)``,
so its cost is the due entries it reads, whatever the number of idle runs, and it never scans.
The shards spread index writes (every suspend and lease renewal moves ``wake_at``) over several
partitions, where one constant key would cap them at one partition's 1,000 writes a second.
GSIs are eventually consistent: a run just made due may show up in ``due`` a moment later (the
dispatch that comes with a signal, and the next sweep, cover that).

``list_runs`` reads one of three sharded indexes, ``by_status``, ``by_workflow`` or
``by_created`` (sort key ``created_key``, newest first), filters on the attributes they project
(``workflow``, ``parent_id``, ``tag_set``) and fetches whole headers with ``BatchGetItem``.

Races. Each write that can race is a conditional write, and the condition is evaluated by
DynamoDB on the item at the moment of the write; the comment next to each one says which
interleaving it prevents. A failed condition maps to ``Conflict``/``False``; a failed
transaction has written nothing.

Large items. An item over DynamoDB's 400 KB limit is refused with ``PayloadTooLarge`` naming the
run (and the step and seq), or, with ``payload_bucket`` set, its largest JSON values move to S3
(content-addressed, immutable objects under ``<run id>/``) and the item keeps a reference.
Nothing is ever truncated.

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
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from heron.stores.contract import (
    TERMINAL_STATUSES,
    Checkpoint,
    Conflict,
    Loaded,
    PayloadTooLarge,
    Run,
    RunPage,
    RunQuery,
    SchemaMissing,
    Signal,
    StoreError,
    WorkflowStore,
    decode_cursor,
    encode_cursor,
)

__all__ = ["TABLE", "DynamoDBStore", "IndexSpec", "TableSpec", "expired_run_ids", "item_size"]

#: An attribute value as the low-level client takes and returns it: ``{"S": "..."}``, ...
AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]
#: An aiobotocore client; aioboto3 ships no type information.
Client = Any
T = TypeVar("T")

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


#: What the listing indexes project, for the filters ``list_runs`` applies on the index. All
#: three are fixed when a run is created, so a header save never rewrites those index entries.
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
    ),
)

_PK: Final = TABLE.partition_key
_SK: Final = TABLE.sort_key
_TTL: Final = TABLE.ttl_attribute
HEADER_SK: Final = "R"

#: DynamoDB's hard limit on one item (attribute names and values).
ITEM_LIMIT: Final = 400 * 1024
DEFAULT_OFFLOAD_THRESHOLD: Final = 350_000
DEFAULT_SHARDS: Final = 8

#: The header's JSON parts, largest first when some must move to S3.
_HEADER_BLOBS: Final = ("input", "output", "engine", "error", "tags")
#: Header attributes that are absent (REMOVE'd on save) when they have no value.
_OPTIONAL: Final = ("parent_id", "tag_set", "wake_at", "due_shard", _TTL)
#: Written once by create, never by save: the keys, the incarnation, the shard, the lease.
_NOT_SAVED: Final = frozenset({_PK, _SK, "inc", "shard", "lease_token", "lease_expires_at"})
_TERMINAL: Final = tuple(sorted(TERMINAL_STATUSES))
#: What ``load`` reads of each item: the header's fields, the incarnation, a record's body; not
#: the keys it already knows, nor the index keys.
_LOAD_NAMES: Final = {
    f"#l{i}": name
    for i, name in enumerate(
        (_SK, "inc", "body", *_HEADER_BLOBS, "workflow", "version", "status", "parent_id")
        + ("created_at", "updated_at", "wake_at", "revision", "lease_token", "lease_expires_at")
    )
}
_LOAD_PROJECTION: Final = ", ".join(_LOAD_NAMES)

_TABLE_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_SIGNAL_ATTEMPTS: Final = 64
_BACKOFF_FIRST: Final = 0.005
_BACKOFF_MAX: Final = 0.2
_INCARNATIONS_KEPT: Final = 4096
_BATCH_WRITE: Final = 25
_BATCH_GET: Final = 100


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


def _checkpoint_sk(inc: str, seq: int) -> str:
    return f"C#{inc}#{seq:010d}" if seq >= 0 else f"P#{inc}#{-seq:010d}"


def _signal_sk(inc: str, signal_id: str) -> str:
    return f"S#{inc}#{signal_id}"


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
    """A ConditionExpression was false: the race this write guards against happened."""


class _Cancelled(Exception):
    """A transaction was cancelled; ``codes`` has one reason per item, ``"None"`` if fine."""

    def __init__(self, codes: list[str]) -> None:
        super().__init__(", ".join(codes))
        self.codes = codes


def _parse_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"dynamodb store URL option {name}={text!r} is not a boolean")


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
    "auto_schema": _parse_bool,
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
        #: run id -> incarnation, for the runs this instance created or loaded (bounded).
        self._incarnations: dict[str, str] = {}

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
                    raise _ConditionFailed() from None
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

    def _remember(self, run_id: str, inc: str) -> None:
        known = self._incarnations
        if run_id not in known and len(known) >= _INCARNATIONS_KEPT:
            del known[next(iter(known))]
        known[run_id] = inc

    async def _incarnation(self, run_id: str) -> str | None:
        inc = self._incarnations.get(run_id)
        if inc is None:
            found = await self._call(
                "get_item",
                run_id,
                TableName=self.table,
                Key={_PK: _s(run_id), _SK: _s(HEADER_SK)},
                ConsistentRead=True,
                ProjectionExpression="inc",
            )
            if "Item" not in found:
                return None
            inc = found["Item"]["inc"]["S"]
            self._remember(run_id, inc)
        return inc

    # -- items -----------------------------------------------------------------------------------

    def _shard(self, run_id: str) -> str:
        return str(zlib.crc32(run_id.encode()) % self.shards)

    def _header_item(self, run: Run) -> Item:
        """The header as an item: every attribute but ``inc`` and the lease."""
        fields = run.header_fields()
        shard = self._shard(run.id)
        item: Item = {
            _PK: _s(run.id),
            _SK: _s(HEADER_SK),
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
        if tags := sorted({tag for tag in run.tags if tag}):  # a set holds no empty string
            item["tag_set"] = {"SS": tags}
        if run.wake_at is not None:
            item["wake_at"] = _n(run.wake_at)
            item["due_shard"] = _s(shard)
        if run.terminal and self.retention_days is not None:
            # TTL runs on the wall clock, whatever clock the runtime passes around.
            item[_TTL] = _n(int(time.time() + self.retention_days * 86400))
        return item

    async def _run(self, item: Item, run_id: str | None = None) -> Run:
        run_id = run_id or item[_PK]["S"]
        texts = await self._texts(item, run_id, _HEADER_BLOBS)

        def number(name: str) -> float | None:
            value = item.get(name)
            return None if value is None else float(value["N"])

        return Run.from_fields(
            {
                "id": run_id,
                "workflow": item["workflow"]["S"],
                "version": item["version"]["S"],
                "status": item["status"]["S"],
                **texts,
                "parent_id": item["parent_id"]["S"] if "parent_id" in item else None,
                "created_at": number("created_at"),
                "updated_at": number("updated_at"),
                "wake_at": number("wake_at"),
                "revision": int(item["revision"]["N"]),
                "lease_token": item["lease_token"]["S"] if "lease_token" in item else None,
                "lease_expires_at": number("lease_expires_at"),
            }
        )

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

    # -- runs ------------------------------------------------------------------------------------

    async def create(self, run: Run) -> bool:
        inc = secrets.token_urlsafe(6)
        item = await self._fit(
            {**self._header_item(run), "inc": _s(inc)}, run.id, "the header", _HEADER_BLOBS
        )
        # Create-only: two starts of one run id race, and exactly one header is written:
        #   A: PutItem if no item (R)  -> written      B: PutItem if no item (R)  -> condition false
        # B then returns False and reads A's run, as an idempotent start should.
        try:
            await self._call(
                "put_item",
                run.id,
                what="the header",
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": _PK},
            )
        except _ConditionFailed:
            return False
        self._remember(run.id, inc)
        return True

    async def load(self, run_id: str) -> Loaded | None:
        items = [
            item
            async for item in self._query(
                run_id,
                KeyConditionExpression="#pk = :id",
                ProjectionExpression=_LOAD_PROJECTION,
                ExpressionAttributeNames={"#pk": _PK, **_LOAD_NAMES},
                ExpressionAttributeValues={":id": _s(run_id)},
                ConsistentRead=True,
            )
        ]
        header = next((item for item in items if item[_SK]["S"] == HEADER_SK), None)
        if header is None:
            return None
        inc = header["inc"]["S"]
        self._remember(run_id, inc)
        mine = (f"C#{inc}#", f"P#{inc}#", f"S#{inc}#")  # older incarnations' items: never
        records = [item for item in items if item[_SK]["S"].startswith(mine)]
        run = await self._run(header, run_id)
        # Bodies are inline JSON, or (offloaded) a reference fetched from S3, all at once.
        bodies: list[str] = [item["body"].get("S", "") for item in records]
        offloaded = [i for i, item in enumerate(records) if "M" in item["body"]]
        fetched = await _all(
            *(self._fetch(run_id, records[i]["body"]["M"]["s3"]["S"]) for i in offloaded)
        )
        for i, text in zip(offloaded, fetched, strict=True):
            bodies[i] = text
        checkpoints: list[Checkpoint] = []
        signals: list[Signal] = []
        for item, body in zip(records, bodies, strict=True):
            if item[_SK]["S"].startswith("S#"):
                signals.append(Signal.from_json(body))
            else:
                checkpoints.append(Checkpoint.from_json(body))
        checkpoints.sort(key=lambda cp: cp.seq)
        signals.sort(key=lambda s: (s.at, s.id))
        return Loaded(run=run, checkpoints=checkpoints, signals=signals)

    async def append(self, run_id: str, checkpoint: Checkpoint) -> None:
        cp = checkpoint
        inc = await self._incarnation(run_id)
        if inc is None:
            raise Conflict(f"run {run_id!r} does not exist", run_id=run_id)
        what = f"checkpoint seq {cp.seq} ({cp.kind} {cp.name!r})"
        item = await self._fit(
            {
                _PK: _s(run_id),
                _SK: _s(_checkpoint_sk(inc, cp.seq)),
                "body": _s(cp.to_json()),
            },
            run_id,
            what,
            ("body",),
        )
        # Create-only: two executors that both ran step `seq` (a lease lapsed under a slow one)
        # race to commit it, and the condition lets exactly one write the item:
        #   A: PutItem C#seq if absent -> written    B: PutItem C#seq if absent -> Conflict
        # B reloads and replays A's value; a plain put would let B overwrite a committed step.
        try:
            await self._call(
                "put_item",
                run_id,
                what=what,
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": _PK},
            )
        except _ConditionFailed:
            raise Conflict(f"run {run_id!r} already has {what}", run_id=run_id) from None

    async def save(self, run: Run) -> Run:
        item = await self._fit(self._header_item(run), run.id, "the header", _HEADER_BLOBS)
        names: dict[str, str] = {"#pk": _PK, "#rev": "revision"}
        values: dict[str, AttributeValue] = {
            ":rev": _n(run.revision),
            ":next": _n(run.revision + 1),
        }
        sets = ["#rev = :next"]
        for i, (name, value) in enumerate(item.items()):
            if name not in _NOT_SAVED and name != "revision":
                names[f"#a{i}"] = name
                values[f":a{i}"] = value
                sets.append(f"#a{i} = :a{i}")
        removes = []
        for i, name in enumerate(_OPTIONAL):
            if name not in item:
                names[f"#r{i}"] = name
                removes.append(f"#r{i}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
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
                Key={_PK: item[_PK], _SK: item[_SK]},
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(#pk) AND #rev = :rev",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except _ConditionFailed:
            raise Conflict(
                f"run {run.id!r} changed since revision {run.revision}", run_id=run.id
            ) from None
        stored = saved["Attributes"]
        self._remember(run.id, stored["inc"]["S"])
        result = run.copy()
        result.revision = run.revision + 1
        result.lease_token = stored["lease_token"]["S"] if "lease_token" in stored else None
        expires = stored.get("lease_expires_at")
        result.lease_expires_at = None if expires is None else float(expires["N"])
        return result

    async def signal(self, run_id: str, signal: Signal) -> bool:
        delay = _BACKOFF_FIRST
        codes: list[str] = []
        for attempt in range(_SIGNAL_ATTEMPTS):
            found = await self._call(
                "get_item",
                run_id,
                TableName=self.table,
                Key={_PK: _s(run_id), _SK: _s(HEADER_SK)},
                ConsistentRead=True,
                ProjectionExpression="#inc, #rev, #wake, #status",
                ExpressionAttributeNames={
                    "#inc": "inc",
                    "#rev": "revision",
                    "#wake": "wake_at",
                    "#status": "status",
                },
            )
            head = found.get("Item")
            if head is None:
                return False
            inc = head["inc"]["S"]
            self._remember(run_id, inc)
            what = f"signal {signal.name!r} ({signal.id})"
            item = await self._fit(
                {
                    _PK: _s(run_id),
                    _SK: _s(_signal_sk(inc, signal.id)),
                    "body": _s(signal.to_json()),
                },
                run_id,
                what,
                ("body",),
            )
            revision = int(head["revision"]["N"])
            values: dict[str, AttributeValue] = {
                ":rev": _n(revision),
                ":next": _n(revision + 1),
                ":inc": _s(inc),
            }
            update = "SET #rev = :next"
            if head["status"]["S"] not in TERMINAL_STATUSES:
                wake = float(head["wake_at"]["N"]) if "wake_at" in head else None
                values[":wake"] = _n(signal.at if wake is None else min(wake, signal.at))
                values[":shard"] = _s(self._shard(run_id))
                update += ", #wake = :wake, #due = :shard"
            # One transaction: the signal is stored and the run made due together, or neither.
            #  - Put if absent: a signal id already buffered cancels the whole transaction, so
            #    a duplicate changes nothing (not the payload, the revision or wake_at).
            #  - Update if the revision is still the one read above: min(wake_at, at) and the
            #    terminal check come from that read. A save that slipped in between may have set
            #    an earlier wake_at or a terminal status, which this update must not overwrite:
            #      signal:   read rev 4 (wake 100) ............. update if rev = 4 -> cancelled
            #      executor:          save rev 4 -> 5 (wake 10)
            #    so the signal reads again (rev 5, wake 10) and retries. The revision it bumps
            #    in turn fails an executor's save of a header loaded before the signal, and that
            #    executor reloads and sees it.
            try:
                await self._call(
                    "transact_write_items",
                    run_id,
                    what=what,
                    ClientRequestToken=secrets.token_hex(16),
                    TransactItems=[
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
                                "Key": {_PK: _s(run_id), _SK: _s(HEADER_SK)},
                                "UpdateExpression": update,
                                "ConditionExpression": "#rev = :rev AND #inc = :inc",
                                "ExpressionAttributeNames": {
                                    "#rev": "revision",
                                    "#inc": "inc",
                                    **(
                                        {"#wake": "wake_at", "#due": "due_shard"}
                                        if ":wake" in values
                                        else {}
                                    ),
                                },
                                "ExpressionAttributeValues": values,
                            }
                        },
                    ],
                )
                return True
            except _Cancelled as exc:
                codes = exc.codes
                put, header = (codes + ["None", "None"])[:2]
                if put == "ConditionalCheckFailed":
                    return True  # already buffered; the transaction wrote nothing
                if header != "ConditionalCheckFailed" and "TransactionConflict" not in codes:
                    raise StoreError(
                        f"DynamoDB store signal to run {run_id!r} was cancelled: "
                        f"{', '.join(codes)} (store {self.url})",
                        run_id=run_id,
                    ) from None
            # Another writer got in first and made progress: read again at once, and back off
            # only when that keeps happening (or DynamoDB reports a transaction conflict).
            if attempt or "TransactionConflict" in codes:
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
        merged = await _merge(
            streams, limit, lambda item: (float(item["wake_at"]["N"]), item[_PK]["S"])
        )
        return [item[_PK]["S"] for item in merged]

    async def delete(self, run_id: str) -> None:
        # The header goes first: from then on the run is gone for everyone (load is None, a
        # signal is False, an append that must read the header conflicts), and whatever a
        # crash leaves of the rest belongs to no header and is never read again.
        await self._call(
            "delete_item", run_id, TableName=self.table, Key={_PK: _s(run_id), _SK: _s(HEADER_SK)}
        )
        self._incarnations.pop(run_id, None)
        keys = [
            {_PK: item[_PK], _SK: item[_SK]}
            async for item in self._query(
                run_id,
                KeyConditionExpression="#pk = :id",
                ExpressionAttributeNames={"#pk": _PK, "#sk": _SK},
                ExpressionAttributeValues={":id": _s(run_id)},
                ProjectionExpression="#pk, #sk",
                ConsistentRead=True,
            )
        ]
        for start in range(0, len(keys), _BATCH_WRITE):
            chunk = keys[start : start + _BATCH_WRITE]
            await self._batch_write(run_id, [{"DeleteRequest": {"Key": key}} for key in chunk])
        if self.payload_bucket is not None:
            await self._delete_objects(run_id)

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
        # The most selective index the query names; the rest are filters on what it projects.
        if query.status is not None:
            index, key, prefix = "by_status", "status_shard", f"{query.status}#"
        elif query.workflow is not None:
            index, key, prefix = "by_workflow", "workflow_shard", f"{query.workflow}#"
        else:
            index, key, prefix = "by_created", "shard", ""
        names = {"#key": key}
        values: dict[str, AttributeValue] = {}
        filters = []
        for attribute, value, test in (
            ("workflow", query.workflow if index == "by_status" else None, "#{0} = :{0}"),
            ("tag_set", query.tag, "contains(#{0}, :{0})"),
            ("parent_id", query.parent_id, "#{0} = :{0}"),
        ):
            if value is not None:
                names[f"#{attribute}"] = attribute
                values[f":{attribute}"] = _s(value)
                filters.append(test.format(attribute))
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
        page_size = query.limit + 1 if not filters else max(query.limit + 1, 100)
        streams = [
            _Shard(
                self,
                None,
                IndexName=index,
                KeyConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={**values, ":key": _s(f"{prefix}{shard}")},
                ScanIndexForward=False,
                Limit=page_size,
                **_present(FilterExpression=" AND ".join(filters)),
            )
            for shard in range(self.shards)
        ]
        entries = await _merge(
            streams,
            query.limit + 1,
            lambda item: item["created_key"]["S"],
            newest_first=True,
            skip=(lambda item: item["created_key"]["S"] >= high) if high is not None else None,
        )
        page = entries[: query.limit]
        headers = await self._headers([entry[_PK]["S"] for entry in page])
        runs = []
        for entry in page:
            header = headers.get(entry[_PK]["S"])
            if header is not None:  # deleted since the index was read
                run = await self._run(header)
                if query.matches(run):  # the index lags the table a little; the header rules
                    runs.append(run)
        cursor = None
        if len(entries) > query.limit:
            last = page[-1]
            cursor = encode_cursor(_float_of_key(last["created_key"]["S"]), last[_PK]["S"])
        return RunPage(runs=runs, next_cursor=cursor)

    async def _headers(self, run_ids: list[str]) -> dict[str, Item]:
        found: dict[str, Item] = {}
        for start in range(0, len(run_ids), _BATCH_GET):
            keys = [{_PK: _s(i), _SK: _s(HEADER_SK)} for i in run_ids[start : start + _BATCH_GET]]
            pending: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            delay = _BACKOFF_FIRST
            while pending:
                result = await self._call("batch_get_item", None, RequestItems=pending)
                for item in result.get("Responses", {}).get(self.table, []):
                    found[item[_PK]["S"]] = item
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

    # -- the lease -------------------------------------------------------------------------------

    async def acquire(
        self,
        run_id: str,
        token: str,
        ttl: float,
        *,
        now: float | None = None,
        due_only: bool = False,
    ) -> bool:
        now = self._now(now)
        expires = now + ttl
        # Check-and-set in one conditional update. Two executors may try at the same moment:
        #   A: update if lease free/expired/mine -> taken    B: same update -> condition false
        # DynamoDB applies writes to one item one at a time and evaluates B's condition on the
        # item A left, whose lease is live and not B's. Reading the lease first and writing it
        # after would let both see it free and both win. The run must exist and not be
        # terminal, or a crashed executor's renewal could resurrect a cancelled run's wake.
        # With due_only the run must also be due, checked in the same step: an executor that
        # read "due" earlier cannot take a run another executor has since put to sleep.
        try:
            await self._call(
                "update_item",
                run_id,
                TableName=self.table,
                Key={_PK: _s(run_id), _SK: _s(HEADER_SK)},
                UpdateExpression="SET #token = :token, #expires = :expires, #wake = :expires, "
                "#due = :shard",
                ConditionExpression="attribute_exists(#pk) AND NOT (#status IN (:t0, :t1, :t2)) "
                "AND (attribute_not_exists(#expires) OR #expires <= :now OR #token = :token)"
                + (" AND #wake <= :now" if due_only else ""),
                ExpressionAttributeNames={
                    "#pk": _PK,
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
            )
        except _ConditionFailed:
            return False
        return True

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


def _present(**params: Any) -> dict[str, Any]:
    """The parameters that have a value (botocore refuses ``None`` and empty strings)."""
    return {name: value for name, value in params.items() if value}


def _is_schema_error(code: str, message: str) -> bool:
    """A missing table (ResourceNotFound) or index (ValidationException on DynamoDB)."""
    if code == "ResourceNotFoundException":
        return True
    return code == "ValidationException" and "specified index" in message


class _Shard:
    """One shard's Query, read a page at a time as the merge consumes it."""

    def __init__(self, store: DynamoDBStore, run_id: str | None, **params: Any) -> None:
        self.store = store
        self.run_id = run_id
        self.params = params
        self.items: deque[Item] = deque()
        self.start: dict[str, Any] | None = None
        self.done = False

    async def fill(self) -> None:
        while not self.items and not self.done:
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
) -> list[Item]:
    """The first ``count`` items of the shards' sorted streams, merged (queries in parallel)."""
    await _all(*(shard.fill() for shard in shards))
    pick = max if newest_first else min
    merged: list[Item] = []
    while len(merged) < count:
        live = [shard for shard in shards if shard.items]
        if not live:
            break
        best = pick(live, key=lambda shard: key(shard.items[0]))
        item = best.items.popleft()
        if not best.items:
            await best.fill()
        if skip is None or not skip(item):
            merged.append(item)
    return merged


def expired_run_ids(event: Mapping[str, Any]) -> list[str]:
    """The runs whose header DynamoDB's TTL just deleted, from a DynamoDB Streams event.

    TTL deletes items one by one and only those that carry the TTL attribute: the header. A
    stream consumer (a Lambda on the table's stream) calls ``store.delete(run_id)`` for each id
    returned here to remove the run's checkpoints, signals and S3 objects too.
    """
    ids = []
    for record in event.get("Records", []):
        identity = record.get("userIdentity") or {}
        keys = (record.get("dynamodb") or {}).get("Keys") or {}
        if (
            record.get("eventName") == "REMOVE"
            and identity.get("type") == "Service"
            and identity.get("principalId") == "dynamodb.amazonaws.com"
            and keys.get(_SK, {}).get("S") == HEADER_SK
        ):
            ids.append(keys[_PK]["S"])
    return ids
