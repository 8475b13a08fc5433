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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from heron import runtime
from heron.runtime import Context
from heron.runtime.testing import test_runtime
from heron.stores import open_store
from heron.stores.contract import (
    Checkpoint,
    PayloadTooLarge,
    Run,
    SchemaMissing,
    Signal,
    StoreError,
)
from heron.stores.dynamodb import TABLE, DynamoDBStore, expired_run_ids, item_size
from tests.moto_server import free_port

T0 = 1_700_000_000.0
REGION = "us-east-1"

OpenStore = Callable[..., Awaitable[DynamoDBStore]]


class Calls:
    """Records every AWS call a store makes: ``(operation, parameters)``, in order."""

    def __init__(self, store: DynamoDBStore) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []
        inner = store._call

        async def counted(operation: str, run_id: str | None, **params: Any) -> dict[str, Any]:
            self.log.append((operation, params))
            return await inner(operation, run_id, **params)

        store._call = counted  # type: ignore[method-assign]

    @property
    def ops(self) -> Counter[str]:
        return Counter(operation for operation, _ in self.log)

    def reset(self) -> None:
        self.log.clear()


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
    refs = {sk: item for sk, item in stored.items() if "M" in item.get("body", {})}
    assert len(refs) == 2 and "M" in stored["R"]["input"]
    assert all(item_size(item) < 2048 for item in stored.values())
    listed = await s3.list_objects_v2(Bucket=bucket, Prefix="run-1/")
    assert len(listed["Contents"]) == 3  # the input, the checkpoint, the signal

    # when the run is deleted, its objects go too
    await store.delete("run-1")
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


def test_expired_run_ids_reads_ttl_deletions_of_headers_from_a_stream_event() -> None:
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
            record("REMOVE", "C#abc#0000000001", True, "a-checkpoint"),
            record("MODIFY", "R", False, "modified"),
        ]
    }

    assert expired_run_ids(event) == ["expired"]


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
