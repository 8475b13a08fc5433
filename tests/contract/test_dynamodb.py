"""What the contract suite cannot see of ``DynamoDBStore``: its items, indexes and costs.

Everything runs over HTTP against the session's moto server (``moto_endpoint``), through
aioboto3, with a fresh table per test. AWS calls are counted by wrapping the store's own
``_call`` (the one method every call goes through), never by mocking botocore; items are read
back with a plain client, as an operator would in the console.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from heron import runtime
from heron.runtime import Context
from heron.runtime.testing import test_runtime
from heron.stores import open_store
from heron.stores.contract import (
    Acquired,
    Checkpoint,
    Conflict,
    PayloadTooLarge,
    Run,
    RunQuery,
    SchemaMissing,
    Signal,
    StoreError,
    TooManySignals,
)
from heron.stores.dynamodb import TABLE, DynamoDBStore, expired_run_ids, item_size
from tests.moto_server import free_port

T0 = 1_700_000_000.0
REGION = "us-east-1"

OpenStore = Callable[..., Awaitable[DynamoDBStore]]


class Calls:
    """Records every AWS call a store makes: ``(operation, parameters)``, in order, and the
    replies of those that succeeded."""

    def __init__(self, store: DynamoDBStore) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.replies: list[tuple[str, dict[str, Any]]] = []
        inner = store._call

        async def counted(operation: str, run_id: str | None, **params: Any) -> dict[str, Any]:
            self.log.append((operation, params))
            reply = await inner(operation, run_id, **params)
            self.replies.append((operation, reply))
            return reply

        store._call = counted  # type: ignore[method-assign]

    @property
    def ops(self) -> Counter[str]:
        return Counter(operation for operation, _ in self.log)

    @property
    def index_entries_read(self) -> int:
        """Index (and table) entries the queries evaluated, before any filter: what DynamoDB
        charges a Query for."""
        return sum(reply.get("ScannedCount", 0) for op, reply in self.replies if op == "query")

    def reset(self) -> None:
        self.log.clear()
        self.replies.clear()


@pytest.fixture
def table() -> str:
    return f"heron-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def open_ddb(moto_endpoint: str, aws_session: Any, table: str) -> AsyncIterator[OpenStore]:
    """Opens stores on this test's table; keyword options go to ``DynamoDBStore``."""
    opened: list[DynamoDBStore] = []

    async def open_(**options: Any) -> DynamoDBStore:
        options.setdefault("region", REGION)
        options.setdefault("endpoint_url", moto_endpoint)
        options.setdefault("session", aws_session)
        store = DynamoDBStore(options.pop("table", table), **options)
        opened.append(store)
        return store

    try:
        yield open_
    finally:
        for store in opened:
            await store.close()


@pytest.fixture
async def raw(moto_endpoint: str, aws_session: Any) -> AsyncIterator[Any]:
    """A plain DynamoDB client on the moto server: what an operator sees."""
    async with aws_session.client("dynamodb", region_name=REGION, endpoint_url=moto_endpoint) as c:
        yield c


@pytest.fixture
async def s3(moto_endpoint: str, aws_session: Any) -> AsyncIterator[Any]:
    async with aws_session.client("s3", region_name=REGION, endpoint_url=moto_endpoint) as c:
        yield c


def make_run(run_id: str = "run-1", **fields: Any) -> Run:
    fields.setdefault("workflow", "order")
    fields.setdefault("created_at", T0)
    fields.setdefault("updated_at", T0)
    return Run(id=run_id, **fields)


def step(seq: int, name: str = "step", **fields: Any) -> Checkpoint:
    fields.setdefault("kind", "step")
    fields.setdefault("at", T0 + seq)
    return Checkpoint(seq=seq, name=name, **fields)


async def items(raw: Any, table: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Every item of a run, by sort key, as DynamoDB holds them."""
    page = await raw.query(
        TableName=table,
        KeyConditionExpression="pk = :id",
        ExpressionAttributeValues={":id": {"S": run_id}},
        ConsistentRead=True,
    )
    return {item["sk"]["S"]: item for item in page["Items"]}


#: What a retired item holds: its key, when it was retired, and a TTL that has come.
RETIRED = {"pk", "sk", "gone", TABLE.ttl_attribute}


def retired_now(item: dict[str, Any], *, gone: bool = True) -> bool:
    """Whether ``item`` holds its key, a TTL that has come (DynamoDB's TTL will remove it) and,
    with ``gone``, the retired mark, and nothing else: ``RETIRED``."""
    expires = int(item[TABLE.ttl_attribute]["N"]) if TABLE.ttl_attribute in item else None
    shape = RETIRED if gone else RETIRED - {"gone"}
    return set(item) == shape and expires is not None and expires <= time.time()


async def header_item(raw: Any, table: str, run_id: str = "run-1") -> dict[str, Any]:
    found = await raw.get_item(
        TableName=table, Key={"pk": {"S": run_id}, "sk": {"S": "R"}}, ConsistentRead=True
    )
    item: dict[str, Any] = found["Item"]
    return item


# -- the item layout and what a step costs ---------------------------------------------------------


async def test_a_step_is_one_put_item_of_one_write_unit(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a run an executor has loaded
    store = await open_ddb()
    await store.create(make_run(status="running"))
    await store.load("run-1")
    calls = Calls(store)

    # when it commits a small step
    await store.append("run-1", step(0, "charge", value={"id": "ch_1", "cents": 4700}))

    # then that is one PutItem, of one item under 1 KB (1 WCU) that no index holds
    assert calls.ops == {"put_item": 1}
    (checkpoint,) = [item for sk, item in (await items(raw, table, "run-1")).items() if sk != "R"]
    assert set(checkpoint) == {"pk", "sk", "body"}
    assert checkpoint["sk"]["S"].startswith("C#") and checkpoint["sk"]["S"].endswith("#0000000000")
    assert item_size(checkpoint) <= 1024


async def test_a_workflow_costs_one_put_item_per_step(open_ddb: OpenStore) -> None:
    # given sequential workflows of 10 and 40 steps on one store
    store = await open_ddb()
    calls = Calls(store)
    rt, _ = test_runtime(store)

    @rt.step
    async def inc(i: int) -> int:
        return i + 1

    @rt.workflow("chain")
    async def chain(ctx: Context, n: int) -> int:
        value = 0
        for _ in range(n):
            value = await ctx.step(inc, value)
        return value

    await rt.start("chain", 1, run_id="warm-up")  # the table is created on first use
    await rt.resume("warm-up")
    cost: dict[int, Counter[str]] = {}
    for n in (10, 40):
        calls.reset()
        run_id = await rt.start("chain", n, run_id=f"chain-{n}")
        saved = await rt.resume(run_id)
        assert saved is not None and saved.output == n
        cost[n] = calls.ops

    # then 30 more steps cost exactly 30 more PutItems and nothing else: no read, no header
    # write, no transaction per step
    extra = cost[40] - cost[10]
    assert extra == Counter({"put_item": 30})
    assert cost[10]["put_item"] == 10 + 1  # the steps and the create
    assert cost[10]["get_item"] == 0  # the load told append the run's incarnation
    assert cost[10]["transact_write_items"] == 0


# -- due: a sparse, sharded index ------------------------------------------------------------------


async def test_due_queries_each_shard_of_the_sparse_index(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given idle, future and due runs
    store = await open_ddb(shards=4)
    await store.create(make_run("idle", status="waiting"))
    await store.create(make_run("later", status="sleeping", wake_at=T0 + 60))
    for i in range(6):
        await store.create(make_run(f"due-{i}", status="sleeping", wake_at=T0 - i))
    calls = Calls(store)

    # when
    due = await store.due(T0, 10)

    # then only due runs, earliest first, from one Query per shard of the "due" index
    assert due == [f"due-{i}" for i in reversed(range(6))]
    assert calls.ops == {"query": 4}
    assert {params["IndexName"] for _, params in calls.log} == {"due"}
    shards = sorted(params["ExpressionAttributeValues"][":shard"]["S"] for _, params in calls.log)
    assert shards == ["0", "1", "2", "3"]

    # and a run without a wake_at carries no index key at all: it is not in the index
    idle = await header_item(raw, table, "idle")
    assert "due_shard" not in idle and "wake_at" not in idle
    later = await header_item(raw, table, "later")
    assert later["wake_at"] == {"N": repr(T0 + 60)} and "due_shard" in later


async def test_the_due_index_is_sparse_keys_only_and_as_declared(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    await (await open_ddb()).ensure_schema()

    described = (await raw.describe_table(TableName=table))["Table"]

    indexes = {index["IndexName"]: index for index in described["GlobalSecondaryIndexes"]}
    assert set(indexes) == {index.name for index in TABLE.indexes}
    due = indexes["due"]
    assert due["KeySchema"] == [
        {"AttributeName": "due_shard", "KeyType": "HASH"},
        {"AttributeName": "wake_at", "KeyType": "RANGE"},
    ]
    assert due["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    for spec in TABLE.indexes:  # the table is what TABLE says, index by index
        assert indexes[spec.name]["KeySchema"] == spec.definition()["KeySchema"]
    assert described["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = await raw.describe_time_to_live(TableName=table)
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": TABLE.ttl_attribute,
    }


async def test_a_save_without_wake_at_takes_the_run_out_of_the_index(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    store = await open_ddb()
    await store.create(make_run(status="sleeping", wake_at=T0))
    run = (await store.load("run-1")).run  # type: ignore[union-attr]

    await store.save(replace(run, status="waiting", wake_at=None))

    stored = await header_item(raw, table)
    assert "due_shard" not in stored and "wake_at" not in stored
    assert await store.due(T0 + 10**6, 10) == []


@pytest.mark.parametrize("shards", [1, 3, 8])
async def test_due_merges_the_shards_in_wake_order(open_ddb: OpenStore, shards: int) -> None:
    store = await open_ddb(shards=shards)
    wakes = {f"run-{i:02}": T0 + (i * 7919) % 23 for i in range(30)}  # ties included
    for run_id, wake in wakes.items():
        await store.create(make_run(run_id, status="sleeping", wake_at=wake))

    expected = sorted(wakes, key=lambda run_id: (wakes[run_id], run_id))
    assert await store.due(T0 + 100, 30) == expected
    assert await store.due(T0 + 100, 7) == expected[:7]
    assert await store.due(T0 + 5, 30) == [r for r in expected if wakes[r] <= T0 + 5]


# -- large values ----------------------------------------------------------------------------------


async def test_values_over_the_item_limit_go_to_s3_and_come_back(
    open_ddb: OpenStore, raw: Any, s3: Any, table: str
) -> None:
    # given a store with a payload bucket (ensure_schema creates it on moto)
    bucket = f"heron-payloads-{uuid.uuid4().hex[:8]}"
    store = await open_ddb(payload_bucket=bucket)
    await store.ensure_schema()
    big = {"blob": "é" * 250_000}  # 500 KB of UTF-8

    # when a run's input, a step's value and a signal's payload are each over 400 KB
    await store.create(make_run(status="running", input=big))
    await store.append("run-1", step(0, "fetch", value=big))
    await store.append("run-1", step(1, "small", value=1))
    assert await store.signal("run-1", Signal(id="s1", name="doc", payload=big, at=T0))

    # then each comes back whole
    loaded = await store.load("run-1")
    assert loaded is not None
    assert loaded.run.input == big
    assert loaded.checkpoints == [step(0, "fetch", value=big), step(1, "small", value=1)]
    assert loaded.signals == [Signal(id="s1", name="doc", payload=big, at=T0)]
    assert await (await open_ddb(payload_bucket=bucket)).load("run-1") == loaded

    # and the items hold references to S3 objects, the small step stays inline
    stored = await items(raw, table, "run-1")
    refs = {
        sk: item
        for sk, item in stored.items()
        if any("M" in item.get(name, {}) for name in ("body", "payload"))
    }
    assert len(refs) == 2 and "M" in stored["R"]["input"]
    assert all(item_size(item) < 2048 for item in stored.values())
    listed = await s3.list_objects_v2(Bucket=bucket, Prefix="run-1/")
    # the checkpoint's, and one for the input and the signal's payload: the same JSON text,
    # so the same content-addressed object
    assert len(listed["Contents"]) == 2

    # when the run is deleted, its objects stay until the reaper comes, and then go too
    await store.delete("run-1")
    assert (await s3.list_objects_v2(Bucket=bucket, Prefix="run-1/")).get("KeyCount") == 2
    await store.reap("run-1")
    assert (await s3.list_objects_v2(Bucket=bucket, Prefix="run-1/")).get("KeyCount") == 0


async def test_without_a_bucket_a_value_over_the_limit_is_refused_naming_the_step(
    open_ddb: OpenStore,
) -> None:
    store = await open_ddb()
    await store.create(make_run(status="running"))
    huge = "x" * 450_000

    with pytest.raises(PayloadTooLarge) as raised:
        await store.append("run-1", step(3, "render_pdf", value=huge))

    message = str(raised.value)
    assert "seq 3" in message and "render_pdf" in message and "'run-1'" in message
    assert "payload_bucket" in message
    assert raised.value.__class__ is runtime.PayloadTooLarge
    loaded = await store.load("run-1")
    assert loaded is not None and loaded.checkpoints == []  # nothing written, nothing cut

    with pytest.raises(PayloadTooLarge, match="header of run 'big'"):
        await store.create(make_run("big", input=huge))
    assert await store.load("big") is None


# -- schema, retention, errors ---------------------------------------------------------------------


async def test_without_auto_schema_a_missing_table_names_itself_and_the_fix(
    open_ddb: OpenStore, table: str
) -> None:
    store = await open_ddb(auto_schema=False)

    with pytest.raises(SchemaMissing) as raised:
        await store.load("run-1")

    message = str(raised.value)
    assert repr(table) in message
    assert "heron schema ensure" in message
    assert store.url in message


def test_heron_schema_ensure_creates_the_table(
    moto_endpoint: str,
    aws_session: Any,
    table: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from heron.functions.cli import app

    # given an app whose runtime opens the store from --store, and a table nobody created
    module = f"heron_schema_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("from runtime import Runtime\n\nrt = Runtime()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"dynamodb://{table}?region={REGION}&endpoint_url={moto_endpoint}&auto_schema=false"

    # when
    try:
        args = ["--app", f"{module}:rt", "--store", url, "schema", "ensure"]
        result = CliRunner().invoke(app, args)
    finally:
        sys.modules.pop(module, None)

    # then the table is there, and a store that may not create it uses it
    assert result.exit_code == 0, result.output
    assert "schema ready" in result.stdout and table in result.stdout

    async def use() -> tuple[str, bool]:
        async with aws_session.client(
            "dynamodb", region_name=REGION, endpoint_url=moto_endpoint
        ) as raw:
            status = (await raw.describe_table(TableName=table))["Table"]["TableStatus"]
        store = open_store(url, session=aws_session)
        try:
            return status, await store.create(make_run())
        finally:
            await store.close()

    assert asyncio.run(use()) == ("ACTIVE", True)


async def test_ensure_schema_adds_indexes_a_table_lacks(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a table with Heron's keys but no index (an older or hand-made template)
    await raw.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
    )
    store = await open_ddb(auto_schema=False)
    with pytest.raises(SchemaMissing, match="ensure"):
        await store.due(T0, 10)

    await store.ensure_schema()

    described = (await raw.describe_table(TableName=table))["Table"]
    assert {i["IndexName"] for i in described["GlobalSecondaryIndexes"]} == {
        index.name for index in TABLE.indexes
    }
    assert await store.due(T0, 10) == []


async def test_a_table_with_other_keys_is_refused(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    await raw.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )

    with pytest.raises(StoreError, match="not a Heron table"):
        await (await open_ddb()).ensure_schema()


async def test_finished_runs_get_a_ttl_and_lose_it_when_retried(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a store that keeps finished runs for 7 days
    store = await open_ddb(retention_days=7)
    await store.create(make_run(status="running"))
    assert TABLE.ttl_attribute not in await header_item(raw, table)
    run = (await store.load("run-1")).run  # type: ignore[union-attr]

    # when the run fails
    before = time.time()
    run = await store.save(replace(run, status="failed", error={"type": "X", "message": "y"}))

    # then its header expires 7 days from now (epoch seconds, wall clock)
    expires = int((await header_item(raw, table))[TABLE.ttl_attribute]["N"])
    assert before + 7 * 86400 - 1 <= expires <= time.time() + 7 * 86400 + 1

    # and when it is retried, it is kept again
    await store.save(replace(run, status="pending", wake_at=T0))
    assert TABLE.ttl_attribute not in await header_item(raw, table)


async def test_without_retention_finished_runs_are_kept(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    store = await open_ddb()
    await store.create(make_run(status="completed"))
    assert TABLE.ttl_attribute not in await header_item(raw, table)


def test_expired_run_ids_reads_ttl_removals_of_headers_and_reap_requests() -> None:
    def record(name: str, sk: str, by_ttl: bool, run_id: str = "r1") -> dict[str, Any]:
        rec: dict[str, Any] = {
            "eventName": name,
            "dynamodb": {"Keys": {"pk": {"S": run_id}, "sk": {"S": sk}}},
        }
        if by_ttl:
            rec["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
        return rec

    event = {
        "Records": [
            record("REMOVE", "R", True, "expired"),
            record("REMOVE", "R", False, "deleted-by-someone"),
            record("REMOVE", "C#abc#0000000001", True, "a-retired-checkpoint"),
            record("REMOVE", "T#vip", True, "a-retired-tag-item"),
            record("REMOVE", "X#abc", True, "deleted"),
            record("REMOVE", "X#abc", False, "reaped"),
            record("MODIFY", "R", False, "modified"),
        ]
    }

    assert expired_run_ids(event) == ["expired", "deleted"]


async def test_an_unreachable_endpoint_names_the_store_url(open_ddb: OpenStore) -> None:
    store = await open_ddb(endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1)

    with pytest.raises(StoreError) as raised:
        await store.load("run-1")

    message = str(raised.value)
    assert store.url in message and "endpoint_url=http://127.0.0.1" in message
    assert "Could not connect" in message  # botocore's own words
    assert raised.value.run_id == "run-1"


async def test_no_region_names_the_store_url(
    open_ddb: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    import aioboto3

    store = await open_ddb(region=None, endpoint_url=None, session=aioboto3.Session())

    with pytest.raises(StoreError) as raised:
        await store.load("run-1")

    assert "region" in str(raised.value) and store.url in str(raised.value)


# -- races and atomicity ---------------------------------------------------------------------------


async def test_a_failed_signal_transaction_leaves_the_run_as_it_was(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a waiting run, and a store whose signal transaction DynamoDB will reject in its
    # second half (the header update refers to a value that does not exist)
    store = await open_ddb()
    await store.create(make_run(status="waiting"))
    before = await store.load("run-1")
    inner = store._call

    async def broken(operation: str, run_id: str | None, **params: Any) -> dict[str, Any]:
        if operation == "transact_write_items":
            update = params["TransactItems"][1]["Update"]
            update["UpdateExpression"] += ", #rev = :missing"
        return await inner(operation, run_id, **params)

    store._call = broken  # type: ignore[method-assign]

    # when a signal is sent
    with pytest.raises(StoreError) as raised:
        await store.signal("run-1", Signal(id="s1", name="go", payload=1, at=T0 + 5))

    # then it fails naming the run, and nothing of it was written: no signal item, same header
    assert raised.value.run_id == "run-1"
    store._call = inner  # type: ignore[method-assign]
    assert await store.load("run-1") == before
    assert set(await items(raw, table, "run-1")) == {"R"}


async def test_a_zombie_append_after_delete_never_reaches_the_new_run(
    open_ddb: OpenStore,
) -> None:
    # given an executor that loaded a run, which another process then deleted and restarted
    zombie, other = await open_ddb(), await open_ddb()
    await other.create(make_run(status="running"))
    await zombie.load("run-1")
    await other.delete("run-1")
    await other.create(make_run(status="pending", input={"second": True}))

    # when the zombie commits its step (it has not seen the delete)
    await zombie.append("run-1", step(0, "stale"))

    # then the new run has no trace of it, and commits its own step 0
    reborn = await other.load("run-1")
    assert reborn is not None and reborn.checkpoints == []
    await other.append("run-1", step(0, "fresh"))
    assert [cp.name for cp in (await other.load("run-1")).checkpoints] == ["fresh"]  # type: ignore[union-attr]


# -- opening by URL --------------------------------------------------------------------------------


def test_open_store_parses_the_url() -> None:
    store = open_store(
        "dynamodb://heron-runs?region=eu-west-1&endpoint_url=http://localhost:8000"
        "&shards=16&auto_schema=false&retention_days=30&payload_bucket=heron-payloads"
        "&payload_prefix=runs/&offload_threshold=200000&max_attempts=3"
    )

    assert isinstance(store, DynamoDBStore)
    assert (store.table, store.region, store.endpoint_url) == (
        "heron-runs",
        "eu-west-1",
        "http://localhost:8000",
    )
    assert (store.shards, store.auto_schema, store.retention_days) == (16, False, 30.0)
    assert (store.payload_bucket, store.payload_prefix) == ("heron-payloads", "runs/")
    assert (store.offload_threshold, store.max_attempts) == (200_000, 3)
    assert "heron-runs" in repr(store)
    assert open_store("dynamodb://heron-runs", shards=2).shards == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("dynamodb://", "one table"),
        ("dynamodb://t", "table name"),
        ("dynamodb://heron-runs/extra", "one table"),
        ("dynamodb://heron-runs?colour=blue", "unknown dynamodb URL option 'colour'"),
        ("dynamodb://heron-runs?shards=many", "not a number"),
        ("dynamodb://heron-runs?shards=0", "shards"),
        ("dynamodb://heron-runs?auto_schema=perhaps", "not a boolean"),
    ],
)
def test_bad_urls_are_refused(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        open_store(url)


def test_importing_the_store_does_not_import_the_aws_sdk() -> None:
    code = (
        "import sys, heron.stores, heron.stores.dynamodb\n"
        "sdk = ('aioboto3', 'aiobotocore', 'botocore', 'boto3')\n"
        "loaded = [name for name in sdk if name in sys.modules]\n"
        "assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- checkpoints, signals and the pending counter --------------------------------------------------


def consumed_by(seq: int, signal: Signal) -> Checkpoint:
    """The checkpoint a workflow writes when it consumes ``signal`` at ``seq``."""
    value = {"id": signal.id, "payload": signal.payload}
    return Checkpoint(seq=seq, kind="signal", name=signal.name, value=value, at=T0 + seq)


async def test_a_checkpoint_item_holds_the_runtimes_encoding_and_no_defaults(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a checkpoint whose value the runtime has already encoded (with its own spacing)
    store = await open_ddb()
    await store.create(make_run(status="running"))
    encoded = replace(step(0, "charge", value={"x": 1}), encoded='{"x": 1}')

    # when it is appended, with a plain step and a patch marker decided at seq 4
    await store.append("run-1", encoded)
    await store.append("run-1", step(1, "plain"))
    await store.append("run-1", Checkpoint(seq=-1, kind="patch", name="fix", value=4))

    # then the stored text is that encoding, verbatim, without seq (the key has it) nor any
    # field at its default; a marker also carries the seq it was decided at, natively
    stored = {sk[:1]: item for sk, item in (await items(raw, table, "run-1")).items()}
    bodies = sorted(
        item["body"]["S"] for sk, item in (await items(raw, table, "run-1")).items() if sk != "R"
    )
    assert bodies == [
        '{"kind":"patch","name":"fix","at":0.0,"value":4}',
        '{"kind":"step","name":"charge","at":1700000000.0,"value":{"x": 1}}',
        '{"kind":"step","name":"plain","at":1700000001.0}',
    ]
    assert stored["P"]["decided"] == {"N": "4"}
    loaded = await store.load("run-1")
    assert loaded is not None and loaded.checkpoints[1].value == {"x": 1}


async def test_a_consuming_append_is_one_transaction_a_plain_append_one_put_item(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a waiting run with two buffered signals, loaded by its executor
    store = await open_ddb()
    await store.create(make_run(status="waiting"))
    signal = Signal(id="s-1", name="approved", payload={"by": "ops", "note": "x" * 500}, at=T0)
    await store.signal("run-1", signal)
    await store.signal("run-1", Signal(id="s-2", name="approved", at=T0 + 1))
    assert (await header_item(raw, table))["pending"] == {"N": "2"}
    await store.load("run-1")
    calls = Calls(store)

    # when it commits a plain step, then a checkpoint that consumes s-1
    await store.append("run-1", step(0))
    plain = calls.ops
    calls.reset()
    await store.append("run-1", consumed_by(1, signal), consumes="s-1")

    # then the plain step was one PutItem and the consuming one a single transaction of three
    # writes: the checkpoint, the signal, the header's counter
    assert plain == {"put_item": 1}
    assert calls.ops == {"transact_write_items": 1}
    (writes,) = [params["TransactItems"] for _, params in calls.log]
    assert [next(iter(write)) for write in writes] == ["Put", "Update", "Update"]
    # and the signal is a small tombstone: no payload, which history and seq consumed it
    stored = await items(raw, table, "run-1")
    tombstone = next(item for sk, item in stored.items() if sk.endswith("#s-1"))
    assert "payload" not in tombstone and tombstone["consumed_by"] == {"N": "1"}
    assert set(tombstone) == {"pk", "sk", "name", "at", "consumed_by", "consumed_in"}
    assert item_size(tombstone) < 100
    assert stored["R"]["pending"] == {"N": "1"}


async def test_racing_signals_at_the_cap_store_exactly_the_cap(open_ddb: OpenStore) -> None:
    # given two stores (two API processes) and runs that may hold 5 pending signals
    first, second = await open_ddb(), await open_ddb()
    for round_ in range(4):
        run_id = f"run-{round_}"
        await first.create(make_run(run_id, status="waiting"))
        await first.signal(run_id, Signal(id="early", name="go", at=T0), max_pending=5)

        # when 12 distinct signals race in through both stores at once
        outcomes = await asyncio.gather(
            *(
                (first if i % 2 else second).signal(
                    run_id, Signal(id=f"s-{i}", name="go", at=T0 + i), max_pending=5
                )
                for i in range(12)
            ),
            return_exceptions=True,
        )

        # then exactly 4 more were stored, the rest refused, and the counter says 5
        assert outcomes.count(True) == 4, outcomes
        assert all(isinstance(o, TooManySignals) for o in outcomes if o is not True), outcomes
        loaded = await first.load(run_id)
        assert loaded is not None and len(loaded.signals) == 5
        assert loaded.run.revision == 5


# -- list_runs: bounded pages for every filter -------------------------------------------------


async def seed(raw: Any, table: str, store: DynamoDBStore, runs: list[Run]) -> None:
    """Write ``runs`` with the items ``create`` writes, 25 to a BatchWriteItem: thousands of
    conditional creates one by one would take minutes on moto."""
    await store.ensure_schema()
    written: list[dict[str, Any]] = []
    for run in runs:
        written.append({**store._header_item(run), "inc": {"S": "seeded"}})
        written.extend(store._tag_items(run))
    for start in range(0, len(written), 25):
        requests = [{"PutRequest": {"Item": item}} for item in written[start : start + 25]]
        await raw.batch_write_item(RequestItems={table: requests})


def population(count: int, offset: int = 0) -> list[Run]:
    """Runs of other tags and other parents, newer than the runs a test looks for."""
    return [
        make_run(
            f"other-{offset + i:05}",
            tags=[f"team-{i % 7}", "prod"],
            parent_id=f"parent-{i % 13}",
            created_at=T0 + 10_000 + offset + i,
            input={"big": "x" * 2000},
        )
        for i in range(count)
    ]


@contextmanager
def recording(store: DynamoDBStore) -> Iterator[Calls]:
    """Records the store's calls while the block runs."""
    inner = store._call
    try:
        yield Calls(store)
    finally:
        store._call = inner  # type: ignore[method-assign]


async def page_cost(store: DynamoDBStore, query: RunQuery) -> tuple[list[str], Counter[str], int]:
    with recording(store) as calls:
        page = await store.list_runs(query)
    return [run.id for run in page.runs], calls.ops, calls.index_entries_read


@pytest.mark.parametrize(
    "query",
    [RunQuery(tag="vip", limit=10), RunQuery(parent_id="boss", limit=10)],
    ids=["tag", "parent"],
)
async def test_a_page_filtered_by_tag_or_parent_costs_the_same_whatever_the_table_holds(
    open_ddb: OpenStore, raw: Any, table: str, query: RunQuery
) -> None:
    # given 30 runs with the tag "vip" and the parent "boss", among 100 others
    store = await open_ddb(shards=4)
    wanted = [
        make_run(f"want-{i:02}", tags=["vip"], parent_id="boss", created_at=T0 + i)
        for i in range(30)
    ]
    await seed(raw, table, store, wanted + population(100))
    expected = [f"want-{i:02}" for i in range(29, 19, -1)]
    small = await page_cost(store, query)

    # when the table grows by 3,000 runs of other tags and parents, newer than all of them
    await seed(raw, table, store, population(3000, offset=100))
    large = await page_cost(store, query)

    # then the page, the calls and the index entries read are the same: one Query per shard
    # of by_ref, reading at most limit + 1 entries each, and one BatchGetItem
    assert small[0] == large[0] == expected
    assert small[1] == large[1] == {"query": 4, "batch_get_item": 1}
    assert small[2] == large[2] <= 4 * (query.limit + 1)


async def test_a_page_reads_summaries_only(open_ddb: OpenStore, raw: Any, table: str) -> None:
    store = await open_ddb()
    await store.create(make_run(tags=["vip"], input={"big": "x" * 5000}, output=[1]))
    calls = Calls(store)

    page = await store.list_runs(RunQuery(tag="vip"))

    assert [run.id for run in page.runs] == ["run-1"]
    ((_, params),) = [(op, params) for op, params in calls.log if op == "batch_get_item"]
    names = set(params["RequestItems"][table]["ExpressionAttributeNames"].values())
    assert not names & {"input", "output", "engine"}
    ((_, reply),) = [(op, reply) for op, reply in calls.replies if op == "batch_get_item"]
    (got,) = reply["Responses"][table]
    assert not set(got) & {"input", "output", "engine"}


async def test_a_sparse_combined_filter_pages_in_bounded_steps(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given 6 completed runs tagged "rare", spread among 900 completed runs without the tag
    store = await open_ddb(shards=2)
    runs = [
        make_run(
            f"run-{i:04}",
            status="completed",
            tags=["rare"] if i % 150 == 7 else ["common"],
            created_at=T0 + i,
        )
        for i in range(900)
    ]
    await seed(raw, table, store, runs)
    expected = [run.id for run in reversed(runs) if "rare" in run.tags]

    # when paging through status=completed and tag=rare (by_status, the tag a filter)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        with recording(store) as calls:
            page = await store.list_runs(
                RunQuery(status="completed", tag="rare", limit=10, cursor=cursor)
            )
        # then no page makes more than two queries per shard (100 entries each) ...
        assert calls.ops["query"] <= 2 * 2
        assert calls.index_entries_read <= 2 * 2 * 100
        seen.extend(run.id for run in page.runs)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
        assert pages < 20, "paging does not end"

    # ... and the pages, shorter than the limit where the filter is sparse, hold every match
    # exactly once, newest first
    assert seen == expected
    assert pages > 1


async def test_a_save_that_changes_tags_moves_the_tag_items_with_it(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a run tagged a and b
    store = await open_ddb()
    await store.create(make_run(tags=["a", "b"], status="running"))
    run = (await store.load("run-1")).run  # type: ignore[union-attr]
    calls = Calls(store)

    # when a save keeps the tags, then one changes them to b and c
    run = await store.save(replace(run, status="sleeping", wake_at=T0 + 5))
    steady = calls.ops
    calls.reset()
    await store.save(replace(run, tags=["c", "b"]))

    # then the first was one UpdateItem, the second one transaction with the tag items
    assert steady == {"update_item": 1}
    assert calls.ops == {"update_item": 1, "transact_write_items": 1}
    (_, moved), *_ = [entry for entry in calls.log if entry[0] == "transact_write_items"]
    assert not [op for op in moved["TransactItems"] if "Delete" in op]  # a lost tag is retired
    stored = {sk: item for sk, item in (await items(raw, table, "run-1")).items() if sk[0] == "T"}
    assert sorted(sk for sk, item in stored.items() if "gone" not in item) == ["T#b", "T#c"]
    assert retired_now(stored["T#a"])
    for tag, found in (("a", []), ("b", ["run-1"]), ("c", ["run-1"])):
        assert [r.id for r in (await store.list_runs(RunQuery(tag=tag))).runs] == found


# -- rewind ----------------------------------------------------------------------------------------


async def long_history(store: DynamoDBStore, length: int) -> tuple[Run, list[Signal]]:
    """A failed run: ``length`` steps, signals s-0..s-2 of which s-0 was consumed at 120 and
    s-1 at 130, patch markers decided at 5 and at 140."""
    await store.create(make_run(status="running"))
    signals = [Signal(id=f"s-{i}", name="go", payload={"i": i}, at=T0 + i) for i in range(3)]
    for signal in signals:
        await store.signal("run-1", signal)
    consumed = {120: signals[0], 130: signals[1]}
    for seq in range(length):
        if seq in consumed:
            await store.append("run-1", consumed_by(seq, consumed[seq]), consumes=consumed[seq].id)
        else:
            await store.append("run-1", step(seq, value={"i": seq}))
    await store.append("run-1", Checkpoint(seq=-1, kind="patch", name="early", value=5))
    await store.append("run-1", Checkpoint(seq=-2, kind="patch", name="late", value=140))
    loaded = await store.load("run-1")
    assert loaded is not None
    failed = replace(loaded.run, status="failed", error={"type": "Boom", "message": "no"})
    return await store.save(failed), signals


async def test_a_rewind_to_zero_switches_a_long_history_in_one_write(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a run with 150 checkpoints, whose old history's cleanup will fail once
    store = await open_ddb()
    run, signals = await long_history(store, 150)
    inner = store._call
    calls = Calls(store)
    recorded = store._call
    cleanup: list[dict[str, Any]] = []

    async def throttled(operation: str, run_id: str | None, **params: Any) -> dict[str, Any]:
        if operation == "put_item" and "gone" in params["Item"]:
            cleanup.append(params["Item"])
            raise StoreError("throttled", run_id=run_id)
        return await recorded(operation, run_id, **params)

    store._call = throttled  # type: ignore[method-assign]

    # when it continues as new: a rewind to 0 that keeps consumed signals consumed
    fresh = replace(run, status="pending", input={"n": 2}, error=None, wake_at=T0)
    saved = await store.rewind(fresh, 0, restore_signals=False)

    # then the switch was one conditional UpdateItem, no transaction, whatever the length; the
    # rest were the cleanup's Puts of retired items (which failed), and nothing deleted
    assert [op for op, _ in calls.log if op not in ("get_item", "query")] == ["update_item"]
    # (the cleanup stops at the first batch that fails: it is best-effort)
    assert 0 < len(cleanup) < 152 and all(set(item) == RETIRED for item in cleanup)
    # and the old history is invisible at once, though its items are still there
    loaded = await store.load("run-1")
    assert loaded is not None and loaded.checkpoints == [] and loaded.run == saved
    assert [s.id for s in loaded.signals] == ["s-2"]
    old = {sk: item for sk, item in (await items(raw, table, "run-1")).items() if sk[0] in "CP"}
    assert len(old) == 152 and not any("gone" in item for item in old.values())
    # and the new history starts at 0 under its own keys
    store._call = inner  # type: ignore[method-assign]
    await store.append("run-1", step(0, "again"))
    assert [cp.name for cp in (await store.load("run-1")).checkpoints] == ["again"]  # type: ignore[union-attr]

    # when the next continue_as_new comes, it retires every older history: TTL removes them
    again = await store.rewind(replace(saved, input={"n": 3}), 0, restore_signals=False)
    old = {sk: item for sk, item in (await items(raw, table, "run-1")).items() if sk[0] in "CP"}
    assert len(old) == 153 and all(retired_now(item) for item in old.values())
    assert (await store.load("run-1")).run == again  # type: ignore[union-attr]


async def test_a_rewind_of_more_than_a_transaction_goes_in_chunks_and_can_be_redone(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a failed run of 250 checkpoints, to be retried from seq 10 (240 writes to drop)
    store = await open_ddb()
    failed, signals = await long_history(store, 250)
    retry = replace(failed, status="pending", error=None, wake_at=T0 + 10)
    inner = store._call
    sizes: list[int] = []

    async def interrupted(operation: str, run_id: str | None, **params: Any) -> dict[str, Any]:
        if operation == "transact_write_items":
            sizes.append(len(params["TransactItems"]))
            if len(sizes) == 3:
                raise StoreError("the process died", run_id=run_id)
        return await inner(operation, run_id, **params)

    store._call = interrupted  # type: ignore[method-assign]

    # when the rewind is interrupted after two of its transactions
    with pytest.raises(StoreError):
        await store.rewind(retry, 10)

    # then the run is a shorter history of itself: a prefix of its checkpoints, each signal
    # either recorded or pending (never both), the header untouched
    halfway = await store.load("run-1")
    assert halfway is not None and halfway.run == failed
    seqs = [cp.seq for cp in halfway.checkpoints if cp.seq >= 0]
    assert seqs == list(range(len(seqs))) and 10 < len(seqs) < 250
    recorded = {cp.value["id"] for cp in halfway.checkpoints if cp.kind == "signal"}
    assert recorded.isdisjoint(s.id for s in halfway.signals)
    assert recorded | {s.id for s in halfway.signals} == {"s-0", "s-1", "s-2"}

    # when it is done again, to the end
    saved = await store.rewind(retry, 10)

    # then it took several transactions in all, each within DynamoDB's 100 items
    assert len(sizes) >= 4 and max(sizes) <= 100
    loaded = await store.load("run-1")
    assert loaded is not None and loaded.run == saved
    assert saved.revision == failed.revision + 1
    assert [(cp.seq, cp.name) for cp in loaded.checkpoints] == [(-1, "early")] + [
        (seq, "step") for seq in range(10)
    ]
    assert loaded.signals == signals
    assert (await header_item(raw, table))["pending"] == {"N": "3"}


async def test_a_rewind_with_a_stale_revision_writes_nothing(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    store = await open_ddb()
    failed, _ = await long_history(store, 120)
    await store.signal("run-1", Signal(id="late", name="go", at=T0))  # bumps the revision
    before = await items(raw, table, "run-1")

    with pytest.raises(Conflict):
        await store.rewind(replace(failed, status="pending"), 5)

    assert await items(raw, table, "run-1") == before


# -- the lease -------------------------------------------------------------------------------------


async def test_acquire_learns_the_previous_holder_from_its_one_write(open_ddb: OpenStore) -> None:
    store = await open_ddb()
    await store.create(make_run(status="pending", wake_at=T0))
    calls = Calls(store)

    got = [
        await store.acquire("run-1", "a", 30, now=T0),
        await store.acquire("run-1", "a", 30, now=T0 + 10),
        await store.acquire("run-1", "b", 30, now=T0 + 100),
    ]

    assert got == [Acquired.FREE, Acquired.RENEWED, Acquired.TAKEN_OVER]
    assert calls.ops == {"update_item": 3}
    assert {params["ReturnValues"] for _, params in calls.log} == {"UPDATED_OLD"}


async def test_the_reaper_removes_tag_items_tombstones_and_old_histories(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a run with tags, a consumed signal and a history a rewind left behind
    store = await open_ddb()
    await store.create(make_run(status="running", tags=["a", "b"], parent_id="p"))
    signal = Signal(id="s", name="go", at=T0)
    await store.signal("run-1", signal)
    await store.load("run-1")
    await store.append("run-1", consumed_by(0, signal), consumes="s")
    run = (await store.load("run-1")).run  # type: ignore[union-attr]
    inner = store._call

    async def no_cleanup(operation: str, run_id: str | None, **params: Any) -> dict[str, Any]:
        if operation == "put_item" and "gone" in params["Item"]:
            return {}
        return await inner(operation, run_id, **params)

    store._call = no_cleanup  # type: ignore[method-assign]
    await store.rewind(run, 0, restore_signals=False)
    store._call = inner  # type: ignore[method-assign]
    assert len(await items(raw, table, "run-1")) == 5  # header, 2 tags, tombstone, old step

    # when it is deleted: gone at once for every reader, its items left to TTL and the reaper
    await store.delete("run-1")
    assert await store.load("run-1") is None
    assert (await store.list_runs(RunQuery(tag="a"))).runs == []
    assert (await store.list_runs(RunQuery(parent_id="p"))).runs == []
    left = await items(raw, table, "run-1")
    assert set(left["R"]) == {"pk", "sk", "gone"}  # the tombstone: no index key
    (request,) = [sk for sk in left if sk.startswith("X#")]
    assert retired_now(left[request], gone=False)  # the reap request, expired from the start
    assert all(retired_now(left[f"T#{tag}"]) for tag in "ab")  # out of by_ref

    # when the reaper comes (after DynamoDB's TTL removed the reap request)
    del left[request]
    await raw.delete_item(TableName=table, Key={"pk": {"S": "run-1"}, "sk": {"S": request}})
    await store.reap("run-1")

    # then nothing of it is left, in the table or the listing index
    assert await items(raw, table, "run-1") == {}
    assert (await store.list_runs(RunQuery(tag="a"))).runs == []
    assert (await store.list_runs(RunQuery(parent_id="p"))).runs == []


async def test_a_retry_from_zero_restores_what_the_history_consumed_in_one_transaction(
    open_ddb: OpenStore,
) -> None:
    # given a failed run that consumed s-0 at 120 and s-1 at 130
    store = await open_ddb()
    failed, signals = await long_history(store, 140)
    calls = Calls(store)

    # when it is retried from the start
    saved = await store.rewind(replace(failed, status="pending", error=None), 0)

    # then the switch and the two restored signals were one transaction, and the run starts
    # over with all three signals pending
    assert calls.ops["transact_write_items"] == 1 and calls.ops["update_item"] == 0
    loaded = await store.load("run-1")
    assert loaded is not None and loaded.run == saved
    assert loaded.checkpoints == [] and loaded.signals == signals


async def test_signals_consumed_before_a_continue_as_new_stay_consumed_on_a_later_retry(
    open_ddb: OpenStore,
) -> None:
    # given a run that consumed s-0 at seq 2, then continued as new
    store = await open_ddb()
    await store.create(make_run(status="running"))
    signal = Signal(id="s-0", name="go", payload=1, at=T0)
    await store.signal("run-1", signal)
    for seq in range(2):
        await store.append("run-1", step(seq))
    await store.append("run-1", consumed_by(2, signal), consumes="s-0")
    run = (await store.load("run-1")).run  # type: ignore[union-attr]
    run = await store.rewind(run, 0, restore_signals=False)
    for seq in range(3):
        await store.append("run-1", step(seq, "new"))

    # when the new history fails and is retried from seq 1
    failed = await store.save(replace(run, status="failed"))
    await store.rewind(replace(failed, status="pending"), 1)

    # then s-0 stays consumed: its payload went to the old history, which carried on
    loaded = await store.load("run-1")
    assert loaded is not None
    assert loaded.signals == [] and [cp.name for cp in loaded.checkpoints] == ["new"]


async def test_a_signal_stored_by_heron_0_2_is_refused_by_name(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a run whose signal item was written by Heron 0.2 (the whole signal in "body")
    store = await open_ddb()
    await store.create(make_run(status="waiting"))
    inc = (await header_item(raw, table))["inc"]["S"]
    old = Signal(id="s-1", name="go", at=T0)
    legacy = {"pk": {"S": "run-1"}, "sk": {"S": f"S#{inc}#s-1"}, "body": {"S": old.to_json()}}
    await raw.put_item(TableName=table, Item=legacy)

    # when it is loaded, the store says what it is and what to do
    with pytest.raises(StoreError, match="0.2") as raised:
        await store.load("run-1")
    assert raised.value.run_id == "run-1"


# -- least privilege: only the reaper deletes --------------------------------------------------

#: What the API's and the resume function's roles may do on the table (template.yaml, CDK's
#: RUNS_ACTIONS; tests/infra/ holds both to it); a transaction's items need the same actions.
ROLE_ACTIONS = {"GetItem", "PutItem", "UpdateItem", "Query", "BatchGetItem"}
#: What the S3 offload may do on their paths.
ROLE_S3 = {"PutObject", "GetObject"}


class Sent:
    """Every request a store's clients send, as botocore's own event hook sees it: ``(service,
    operation, parameters)``. Below the store, so nothing the store does can bypass it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any]]] = []

    def hook(self, client: Any) -> Any:
        service = client.meta.service_model.service_name

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            self.requests.append((service, model.name, params))

        client.meta.events.register("before-parameter-build", record)
        return client

    @property
    def operations(self) -> set[str]:
        return {operation for _, operation, _ in self.requests}

    def deletes(self) -> list[str]:
        """Every delete among the requests: a DeleteItem, a BatchWriteItem (it can delete), a
        transaction's Delete, an S3 object delete, a PartiQL statement."""
        found = []
        for service, operation, params in self.requests:
            if "Delete" in operation or operation in ("BatchWriteItem", "ExecuteStatement"):
                found.append(f"{service}:{operation}")
            if operation == "TransactWriteItems":
                found += [f"Transact:{kind}" for op in params["TransactItems"] for kind in op]
        return [entry for entry in found if entry not in ("Transact:Put", "Transact:Update")]

    def clear(self) -> None:
        self.requests.clear()


@pytest.fixture
async def recorded(
    moto_endpoint: str, aws_session: Any, table: str
) -> AsyncIterator[Callable[..., Awaitable[tuple[DynamoDBStore, Sent]]]]:
    """Opens stores on this test's table (and payload bucket) whose aiobotocore clients record
    every request they send. The table and bucket exist first, as in a deployed stack."""
    bucket = f"heron-payloads-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        setup = DynamoDBStore(
            table,
            region=REGION,
            endpoint_url=moto_endpoint,
            session=aws_session,
            payload_bucket=bucket,
        )
        await setup.ensure_schema()
        await setup.close()

        async def open_(**options: Any) -> tuple[DynamoDBStore, Sent]:
            sent = Sent()
            client, s3_client = [
                sent.hook(
                    await stack.enter_async_context(
                        aws_session.client(service, region_name=REGION, endpoint_url=moto_endpoint)
                    )
                )
                for service in ("dynamodb", "s3")
            ]
            store = DynamoDBStore(
                table,
                client=client,
                s3_client=s3_client,
                payload_bucket=bucket,
                auto_schema=False,
                offload_threshold=2000,
                **options,
            )
            return store, sent

        yield open_


async def test_the_api_and_resume_paths_never_delete_and_the_reaper_deletes_everything(
    recorded: Callable[..., Awaitable[tuple[DynamoDBStore, Sent]]], raw: Any, s3: Any, table: str
) -> None:
    # given the engine on a store whose clients record every request, a workflow that consumes
    # signals, fails a step, and continues as new; values large enough to go to S3
    store, sent = await recorded()
    rt, _ = test_runtime(store)
    big = "x" * 3000
    attempts = Counter[int]()

    @rt.step(name="prepare")
    async def prepare() -> str:
        return big

    @rt.step(name="work", retry=runtime.RetryPolicy(max_attempts=1))
    async def work(round_: int, payload: Any) -> Any:
        attempts[round_] += 1
        if round_ == 0 and attempts[round_] == 1:
            raise runtime.FatalError("first time unlucky")
        return payload

    @rt.workflow("rounds")
    async def rounds(ctx: Context, state: dict[str, int]) -> Any:
        await ctx.step(prepare)  # seq 0
        payload = await ctx.wait_for_signal("go")  # seq 1: consumes a signal
        done = await ctx.step(work, state["round"], payload)  # seq 2
        if state["round"] < 2:
            ctx.continue_as_new({"round": state["round"] + 1})  # a rewind to 0
        return done

    # when a run goes through it all: started with tags, signalled, failed, retried from the
    # signal (a rewind to seq > 0 that restores it), continued as new twice, then retried from
    # 0, re-tagged (more tags than one transaction retires), and deleted
    run_id = await rt.start("rounds", {"round": 0}, run_id="r-1", tags=["a", "b"])
    for n in range(3):
        await rt.signal(run_id, "go", {"n": n, "pad": big})
    with pytest.raises(runtime.WorkflowFailed):
        await rt.wait(run_id, timeout=30)
    await rt.retry(run_id, from_seq=1)
    assert (await rt.wait(run_id, timeout=30))["n"] == 2
    loaded = await store.load(run_id)
    assert loaded is not None and loaded.run.status == "completed"
    failed = await store.save(replace(loaded.run, status="failed"))
    run = await store.rewind(replace(failed, status="pending", tags=["c"]), 0)
    run = await store.save(replace(run, tags=[f"t{i:02}" for i in range(60)]))
    await store.save(replace(run, tags=[f"u{i:02}" for i in range(60)]))
    await rt.delete(run_id)

    # then none of it deleted anything, and the roles' actions were enough for all of it
    assert await store.load(run_id) is None
    assert sent.deletes() == []
    dynamodb = {op for service, op, _ in sent.requests if service == "dynamodb"}
    assert dynamodb - {"TransactWriteItems"} <= ROLE_ACTIONS
    assert {op for service, op, _ in sent.requests if service == "s3"} <= ROLE_S3
    assert {"TransactWriteItems", "PutObject"} <= sent.operations  # the paths were taken
    # and where a delete would have been, a Put retired the item: checkpoints (in the rewinds'
    # transactions and after them), tag items, and the header (its tombstone)
    puts = [params["Item"] for _, op, params in sent.requests if op == "PutItem"]
    puts += [
        op["Put"]["Item"]
        for _, name, params in sent.requests
        if name == "TransactWriteItems"
        for op in params["TransactItems"]
        if "Put" in op
    ]
    retired = {item["sk"]["S"][0] for item in puts if "gone" in item}
    assert retired == {"C", "T", "R"}
    assert await items(raw, table, run_id)  # everything still there, retired or a tombstone

    # when the reaper comes, once DynamoDB's TTL removed the reap request
    (request,) = [sk for sk in await items(raw, table, run_id) if sk.startswith("X#")]
    await raw.delete_item(TableName=table, Key={"pk": {"S": run_id}, "sk": {"S": request}})
    reaper, reaper_sent = await recorded()
    await reaper.reap(run_id)

    # then it deleted, and nothing of the run is left: no item, retired or not, no object
    assert {"BatchWriteItem", "DeleteItem", "DeleteObjects"} <= reaper_sent.operations
    assert await items(raw, table, run_id) == {}
    listed = await s3.list_objects_v2(Bucket=reaper.payload_bucket, Prefix=f"{run_id}/")
    assert listed.get("KeyCount") == 0


async def test_a_run_deleted_and_started_again_shows_nothing_of_the_old_one(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a run with a history, a marker, a consumed and a buffered signal, tags and a parent,
    # deleted (its items retired or left for the reaper, which has not come yet)
    store = await open_ddb()
    await store.create(
        make_run(status="sleeping", wake_at=T0, tags=["old"], parent_id="p", input={"n": 1})
    )
    consumed, buffered = Signal(id="s-1", name="go", at=T0), Signal(id="s-2", name="go", at=T0)
    await store.signal("run-1", consumed)
    await store.signal("run-1", buffered)
    await store.load("run-1")
    await store.append("run-1", step(0))
    await store.append("run-1", consumed_by(1, consumed), consumes="s-1")
    await store.append("run-1", Checkpoint(seq=-1, kind="patch", name="p", value=1))
    await store.delete("run-1")
    await store.delete("run-1")  # twice: nothing more

    # then it is gone for every reader, through every index
    assert await store.load("run-1") is None
    assert await store.due(T0 + 1000, 10) == []
    for query in (
        RunQuery(),
        RunQuery(tag="old"),
        RunQuery(parent_id="p"),
        RunQuery(status="sleeping"),
        RunQuery(workflow="order"),
    ):
        assert (await store.list_runs(query)).runs == [], query
    assert await store.signal("run-1", Signal(id="s-3", name="go", at=T0)) is False
    assert await store.acquire("run-1", "executor", 30, now=T0) == Acquired.NO
    assert len(await items(raw, table, "run-1")) > 3  # its items are still there

    # when a new run starts under its id (another store, which never saw the old one)
    other = await open_ddb()
    reborn = make_run(status="pending", wake_at=T0, tags=["new"], input={"n": 2})
    assert await other.create(reborn)
    assert not await other.create(reborn)  # and only once

    # then it has none of the old run's history, signals, markers, tags or parent
    loaded = await other.load("run-1")
    assert loaded is not None
    assert (loaded.run, loaded.checkpoints, loaded.signals) == (reborn, [], [])
    assert [r.id for r in (await other.list_runs(RunQuery(tag="new"))).runs] == ["run-1"]
    assert (await other.list_runs(RunQuery(tag="old"))).runs == []
    assert (await other.list_runs(RunQuery(parent_id="p"))).runs == []
    # and it runs: its own step 0, a signal under an id the old run had consumed
    await other.append("run-1", step(0, "fresh"))
    assert await other.signal("run-1", Signal(id="s-1", name="go", payload=2, at=T0))
    assert await other.acquire("run-1", "executor", 30, now=T0) == Acquired.FREE
    run = (await other.load("run-1")).run  # type: ignore[union-attr]
    run = await other.rewind(replace(run, status="pending"), 0)  # a new history: step 0 retired
    await other.append("run-1", step(0, "again"))
    await other.append("run-1", step(1, "later"))
    await other.rewind(run, 1)  # retires step 1 of the history the run has now
    before = await other.load("run-1")
    assert before is not None and [cp.name for cp in before.checkpoints] == ["again"]
    assert [(s.id, s.payload) for s in before.signals] == [("s-1", 2)]

    # when the reaper comes for the old run (TTL removed its reap request), late, and twice
    await store.reap("run-1")
    await store.reap("run-1")

    # then the new run is untouched, and only the old run's items are gone
    assert await other.load("run-1") == before
    inc = (await header_item(raw, table))["inc"]["S"]
    hinc = (await header_item(raw, table))["hinc"]["S"]
    left = await items(raw, table, "run-1")
    assert sorted(left) == sorted(
        ["R", "T#new", f"S#{inc}#s-1", f"C#{hinc}#0000000000", f"C#{hinc}#0000000001"]
    )
    # (its own first history is gone too: nobody writes under an old history's keys; an item
    # retired in the history it has now is left to TTL, a rerun may write over it any time)
    assert retired_now(left[f"C#{hinc}#0000000001"])

    # and once the new run is deleted and reaped in turn, nothing is left
    await other.delete("run-1")
    await other.reap("run-1")
    assert await items(raw, table, "run-1") == {}


async def test_retired_items_never_show_and_a_rerun_writes_over_them(
    open_ddb: OpenStore, raw: Any, table: str
) -> None:
    # given a failed run of five steps that consumed a signal at 3, tagged a and b
    store = await open_ddb()
    await store.create(make_run(status="running", tags=["a", "b"]))
    signal = Signal(id="s", name="go", payload={"k": 1}, at=T0)
    await store.signal("run-1", signal)
    await store.load("run-1")
    for seq in range(5):
        if seq == 3:
            await store.append("run-1", consumed_by(3, signal), consumes="s")
        else:
            await store.append("run-1", step(seq))
    run = (await store.load("run-1")).run  # type: ignore[union-attr]
    failed = await store.save(replace(run, status="failed"))
    calls = Calls(store)

    # when it is retried from seq 2, dropping tag a, in one transaction
    retried = await store.rewind(replace(failed, status="pending", tags=["b"]), 2)

    # then the dropped checkpoints and the lost tag's item are retired, not deleted
    (transaction,) = [params for op, params in calls.log if op == "transact_write_items"]
    kinds = Counter(kind for op in transaction["TransactItems"] for kind in op)
    assert kinds == {"Update": 2, "Put": 5}  # header, signal; C#2..4, T#b, T#a retired
    stored = await items(raw, table, "run-1")
    dropped = [sk for sk in stored if sk.startswith("C#") and sk[-1] in "234"]
    assert len(dropped) == 3 and all(retired_now(stored[sk]) for sk in dropped)
    assert retired_now(stored["T#a"])
    # and no read returns them: not load, not a listing by the lost tag
    loaded = await store.load("run-1")
    assert loaded is not None and loaded.run == retried
    assert [cp.seq for cp in loaded.checkpoints] == [0, 1]
    assert loaded.signals == [signal]
    assert (await store.list_runs(RunQuery(tag="a"))).runs == []
    assert [r.id for r in (await store.list_runs(RunQuery(tag="b"))).runs] == ["run-1"]

    # when the rerun writes seq 2 and consumes the signal again at 3, over retired items
    await store.append("run-1", step(2, "rerun"))
    await store.append("run-1", consumed_by(3, signal), consumes="s")

    # then they are live items again (no TTL), and each seq is still written once only
    stored = await items(raw, table, "run-1")
    assert {"gone", TABLE.ttl_attribute}.isdisjoint(stored[dropped[0]])
    with pytest.raises(Conflict):
        await store.append("run-1", step(2, "zombie"))
    loaded = await store.load("run-1")
    assert loaded is not None
    assert [(cp.seq, cp.name) for cp in loaded.checkpoints] == [
        (0, "step"),
        (1, "step"),
        (2, "rerun"),
        (3, "go"),
    ]
    assert loaded.signals == []
