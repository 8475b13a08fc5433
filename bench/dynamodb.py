"""What a step costs on DynamoDB, and what ``due()`` reads, on a moto server this script starts.

    python bench/dynamodb.py            # 1,000-step workflow; due() with 10 and 100,000 idle runs
    python bench/dynamodb.py --quick    # 200 steps; 10 and 10,000 idle runs

Everything goes over real HTTP through aioboto3 to a moto server on 127.0.0.1 (fake
credentials, nothing leaves the machine). Figures only, never pass/fail.

Write cost. One ``Runtime.resume`` runs a sequential workflow of N trivial steps on a
``DynamoDBStore``. Every AWS write the store makes is recorded, and the item it wrote is read
back before and after (those reads are the benchmark's, not the store's) to price it as
DynamoDB does: write units = ceil(max(item size before, after) / 1 KB), doubled inside a
transaction, where item size = attribute names + values in UTF-8 bytes (``item_size``); plus
one write unit per index entry written (two when an index key moves), from the table layout in
``heron.stores.dynamodb.TABLE``.

Price. DynamoDB on-demand, us-east-1: $0.625 per million write request units
(https://aws.amazon.com/dynamodb/pricing/on-demand/). Compared with $8 per million durable
operations for AWS Lambda durable functions, the figure issue 3 states (one step = one
operation), not re-checked here.

due(). ``due(now, 100)`` with 10 due runs in a table that also holds 10, then 100,000 idle
runs (headers with no ``wake_at``, written straight with BatchWriteItem), then 10,000 more runs
sleeping into the future. The column that carries over to DynamoDB is "index entries read": a
Query costs and takes what it reads from the index. moto answers a GSI Query by looping over
every item of the table in Python, so its wall time grows with the table even though the query
reads the same 10 entries; that column measures moto, not DynamoDB.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/dynamodb.py` from anywhere
    sys.path.insert(0, str(ROOT))

os.environ.update(  # moto's fake account, before any AWS client exists
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)

from bench._workload import make_runtime  # noqa: E402
from heron.stores.contract import Run  # noqa: E402
from heron.stores.dynamodb import TABLE, DynamoDBStore, item_size  # noqa: E402
from tests.moto_server import MotoServer  # noqa: E402

PRICE_PER_MILLION_WRU = 0.625  # USD, DynamoDB on-demand, us-east-1
PRICE_SOURCE = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
LAMBDA_DURABLE_PER_MILLION = 8.0  # USD per million durable operations, as issue 3 states it
REGION = "us-east-1"
WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")

# -- pricing one write ------------------------------------------------------------------------


def units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def index_entry(index: Any, item: dict[str, Any] | None) -> dict[str, Any] | None:
    """The entry ``item`` has in ``index`` (None: not in it, the index is sparse)."""
    if item is None or index.partition_key not in item or index.sort_key not in item:
        return None
    names = {TABLE.partition_key, TABLE.sort_key, index.partition_key, index.sort_key}
    return {name: item[name] for name in (*names, *index.projected) if name in item}


def index_units(before: dict[str, Any] | None, after: dict[str, Any] | None) -> int:
    """Write units the table's indexes cost for one item changing from ``before`` to ``after``."""
    total = 0
    for index in TABLE.indexes:
        old, new = index_entry(index, before), index_entry(index, after)
        if old == new:
            continue
        moved = old is not None and new is not None
        keys = (index.partition_key, index.sort_key)
        if moved and all(old[k] == new[k] for k in keys):  # type: ignore[index]
            total += units(item_size(new))  # type: ignore[arg-type]  # projected values changed
        else:  # put, delete, or a key that moved (a delete and a put)
            total += sum(units(item_size(entry)) for entry in (old, new) if entry is not None)
    return total


@dataclass
class Meter:
    """Every write a store makes, priced; and what its Queries read."""

    raw: Any
    table: str
    calls: Counter[str] = field(default_factory=Counter)
    table_units: int = 0
    index_units: int = 0
    query_calls: int = 0
    entries_read: int = 0
    read_units: float = 0.0

    def reset(self) -> None:
        self.calls.clear()
        self.table_units = self.index_units = self.query_calls = self.entries_read = 0
        self.read_units = 0.0

    async def read(self, key: dict[str, Any]) -> dict[str, Any] | None:
        found = await self.raw.get_item(TableName=self.table, Key=key, ConsistentRead=True)
        item: dict[str, Any] | None = found.get("Item")
        return item

    def install(self, store: DynamoDBStore) -> None:
        inner = store._call

        async def metered(operation: str, run_id: str | None, **params: Any) -> dict[str, Any]:
            if operation not in WRITES:
                result = await inner(operation, run_id, **params)
                if operation == "query":
                    self.query_calls += 1
                    self.entries_read += int(result.get("ScannedCount", 0))
                    size = sum(item_size(item) for item in result.get("Items", []))
                    factor = 1.0 if params.get("ConsistentRead") else 0.5
                    self.read_units += factor * max(1, math.ceil(size / 4096))
                return result
            self.calls[operation] += 1
            writes = _writes(operation, params)
            before = [await self.read(key) for key, _ in writes]
            result = await inner(operation, run_id, **params)
            for (key, factor), old in zip(writes, before, strict=True):
                new = await self.read(key)
                size = max(item_size(old or {}), item_size(new or {}))
                self.table_units += factor * units(size)
                self.index_units += index_units(old, new)
            return result

        store._call = metered  # type: ignore[method-assign]


def _writes(operation: str, params: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """The keys one write call touches, with its unit factor (2 in a transaction)."""
    pk, sk = TABLE.partition_key, TABLE.sort_key
    if operation == "put_item":
        return [({pk: params["Item"][pk], sk: params["Item"][sk]}, 1)]
    if operation in ("update_item", "delete_item"):
        return [(params["Key"], 1)]
    if operation == "transact_write_items":
        keys = []
        for entry in params["TransactItems"]:
            (kind, body), *_ = entry.items()
            key = body["Key"] if "Key" in body else {pk: body["Item"][pk], sk: body["Item"][sk]}
            keys.append((key, 2))
        return keys
    requests = next(iter(params["RequestItems"].values()))
    return [
        (r["DeleteRequest"]["Key"] if "DeleteRequest" in r else r["PutRequest"]["Item"], 1)
        for r in requests
    ]


# -- the workload ----------------------------------------------------------------------------


@dataclass
class StepCost:
    steps: int
    seconds: float
    calls: Counter[str]
    table_units: int
    index_units: int
    step_units: int
    step_item_bytes: int


async def measure_steps(endpoint: str, session: Any, raw: Any, steps: int) -> StepCost:
    table = f"bench-steps-{uuid.uuid4().hex[:8]}"
    store = DynamoDBStore(table, region=REGION, endpoint_url=endpoint, session=session)
    await store.ensure_schema()
    meter = Meter(raw, table)
    meter.install(store)
    rt = make_runtime(store)
    try:
        run_id = await rt.start("bench-seq", steps, run_id="bench")
        started = time.perf_counter()
        saved = await rt.resume(run_id)
        seconds = time.perf_counter() - started
        assert saved is not None and saved.status == "completed", saved
        # the step items alone: what one more step costs
        page = await raw.query(
            TableName=table,
            KeyConditionExpression="pk = :id AND begins_with(sk, :c)",
            ExpressionAttributeValues={":id": {"S": run_id}, ":c": {"S": "C#"}},
        )
        sizes = [item_size(item) for item in page["Items"]]
        return StepCost(
            steps=steps,
            seconds=seconds,
            calls=Counter(meter.calls),
            table_units=meter.table_units,
            index_units=meter.index_units,
            step_units=sum(units(size) for size in sizes),
            step_item_bytes=max(sizes),
        )
    finally:
        await store.close()


# -- due() ------------------------------------------------------------------------------------


@dataclass
class DueCase:
    label: str
    items: int
    median_ms: float
    queries: int
    entries_read: int
    read_units: float


async def fill(
    store: DynamoDBStore, raw: Any, table: str, count: int, prefix: str, wake_at: float | None
) -> None:
    """``count`` run headers as the store writes them, 25 to a BatchWriteItem."""
    now = time.time()
    gate = asyncio.Semaphore(8)

    async def batch(start: int) -> None:
        requests = []
        for i in range(start, min(start + 25, count)):
            run = Run(
                id=f"{prefix}-{i:06}",
                workflow="idle",
                status="sleeping" if wake_at is not None else "waiting",
                input={"order": i},
                created_at=now,
                updated_at=now,
                wake_at=wake_at,
            )
            item = {**store._header_item(run), "inc": {"S": secrets.token_urlsafe(6)}}
            requests.append({"PutRequest": {"Item": item}})
        pending: dict[str, Any] = {table: requests}
        async with gate:
            while pending:
                done = await raw.batch_write_item(RequestItems=pending)
                pending = done.get("UnprocessedItems") or {}

    await asyncio.gather(*(batch(start) for start in range(0, count, 25)))


async def time_due(
    store: DynamoDBStore, meter: Meter, label: str, items: int, repeats: int
) -> DueCase:
    now = time.time()
    samples = []
    for _ in range(repeats):
        meter.reset()
        started = time.perf_counter()
        due = await store.due(now, 100)
        samples.append(time.perf_counter() - started)
        assert len(due) == 10, due
    median = statistics.median(samples) * 1000
    return DueCase(label, items, median, meter.query_calls, meter.entries_read, meter.read_units)


async def measure_due(
    endpoint: str, session: Any, raw: Any, idle: int, future: int, repeats: int
) -> list[DueCase]:
    table = f"bench-due-{uuid.uuid4().hex[:8]}"
    store = DynamoDBStore(table, region=REGION, endpoint_url=endpoint, session=session)
    await store.ensure_schema()
    meter = Meter(raw, table)
    meter.install(store)
    cases = []
    try:
        await fill(store, raw, table, 10, "due", time.time() - 60)
        await fill(store, raw, table, 10, "idle", None)
        cases.append(await time_due(store, meter, "10 due + 10 idle", 20, repeats))
        print(f"  filling {idle:,} idle runs ...", file=sys.stderr, flush=True)
        await fill(store, raw, table, idle - 10, "idle-more", None)
        label = f"10 due + {idle:,} idle"
        cases.append(await time_due(store, meter, label, 10 + idle, max(3, repeats // 4)))
        print(f"  filling {future:,} runs due later ...", file=sys.stderr, flush=True)
        await fill(store, raw, table, future, "later", time.time() + 86400)
        label = f"10 due + {idle:,} idle + {future:,} sleeping"
        items = 10 + idle + future
        cases.append(await time_due(store, meter, label, items, max(3, repeats // 4)))
    finally:
        await store.close()
    return cases


# -- report -----------------------------------------------------------------------------------


def report(cost: StepCost, cases: list[DueCase], shards: int) -> None:
    writes = sum(cost.calls.values())
    total_units = cost.table_units + cost.index_units
    per_step = cost.step_units / cost.steps
    amortized = total_units / cost.steps
    print(f"## Write cost of a {cost.steps:,}-step sequential workflow (one resume)\n")
    print("| figure | value |")
    print("| --- | --- |")
    print(f"| AWS write calls | {writes:,} ({dict(cost.calls)}) |")
    print(f"| write calls per step | {writes / cost.steps:.3f} |")
    print(f"| largest step item | {cost.step_item_bytes} bytes |")
    print(f"| write units per step (its one PutItem) | {per_step:.3f} |")
    print(f"| write units, whole run: table + indexes | {cost.table_units} + {cost.index_units} |")
    print(f"| write units per step, run overhead included | {amortized:.3f} |")
    print(f"| wall time on moto (not DynamoDB's) | {cost.seconds:.2f} s |")
    print()
    print("## Storage-write cost per million sequential steps\n")
    print(f"DynamoDB on-demand, us-east-1: ${PRICE_PER_MILLION_WRU} per million write request")
    print(f"units ({PRICE_SOURCE}).\n")
    print("| | $ per million steps |")
    print("| --- | --- |")
    print(f"| Heron on DynamoDB, the steps' writes | {per_step * PRICE_PER_MILLION_WRU:.3f} |")
    print(
        f"| Heron on DynamoDB, with each {cost.steps:,}-step run's header, lease and index "
        f"writes | {amortized * PRICE_PER_MILLION_WRU:.3f} |"
    )
    print(
        f"| AWS Lambda durable functions, ${LAMBDA_DURABLE_PER_MILLION:g} per million durable "
        f"operations (as issue 3 states it) | {LAMBDA_DURABLE_PER_MILLION:.3f} |"
    )
    print()
    print(f"## due(now, 100) on a table of {shards} due shards\n")
    print(
        "| table holds | items | queries | index entries read | read units "
        "| median latency on moto |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for case in cases:
        print(
            f"| {case.label} | {case.items:,} | {case.queries} | {case.entries_read} "
            f"| {case.read_units:g} | {case.median_ms:.1f} ms |"
        )
    print()
    print(
        "Index entries read (and the read units they cost: 0.5 per 4 KB per Query, eventually "
        "consistent) are what a DynamoDB Query is billed for and spends its time on: they stay "
        "at the 10 due runs however many idle or sleeping runs the table holds. moto answers a "
        "GSI Query by looping over every item of the table in Python, so its latency column "
        "grows with the table: it measures moto, not the index."
    )


async def main(quick: bool) -> None:
    import aioboto3

    steps, idle, future, repeats = (200, 10_000, 2_000, 8) if quick else (1000, 100_000, 10_000, 20)
    server = MotoServer()
    server.start()
    session = aioboto3.Session()
    try:
        async with session.client(
            "dynamodb", region_name=REGION, endpoint_url=server.endpoint
        ) as raw:
            print(f"  {steps:,}-step workflow ...", file=sys.stderr, flush=True)
            cost = await measure_steps(server.endpoint, session, raw, steps)
            cases = await measure_due(server.endpoint, session, raw, idle, future, repeats)
    finally:
        server.stop()
    report(cost, cases, DynamoDBStore("bench-shards").shards)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and runs")
    asyncio.run(main(parser.parse_args().quick))
