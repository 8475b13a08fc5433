"""The reaper function, on the table's DynamoDB stream: the TTL removal from ``events/``
(keys only, as Lambda delivers it) against DynamoDB on the moto server. moto runs no TTL: a test
removes what TTL would, as TTL would, and hands the reaper the record."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from heron.functions import _lambda, reaper
from tests.functions.kit import LambdaContext, load_event
from tests.functions.test_sweep import Recorder

pytestmark = pytest.mark.usefixtures("container")


@pytest.fixture
def table(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The container's store on a fresh table of the moto server; yields a boto3 client."""
    name = f"heron-reaper-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(
        "HERON_STORE", f"dynamodb://{name}?region=us-east-1&endpoint_url={moto_endpoint}"
    )
    _lambda.reset()
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=moto_endpoint)
    client.name = name
    yield client
    _lambda.reset()
    client.delete_table(TableName=name)


def items(table: Any, run_id: str) -> list[str]:
    """The sort keys of the run's items."""
    found = table.query(
        TableName=table.name,
        KeyConditionExpression="pk = :id",
        ExpressionAttributeValues={":id": {"S": run_id}},
        ConsistentRead=True,
    )
    return [item["sk"]["S"] for item in found["Items"]]


def expired(table: Any, run_id: str) -> None:
    """A run with a checkpoint and a buffered signal, whose header TTL has just deleted."""
    rt = _lambda.get_runtime()
    rt.dispatcher = Recorder()
    _lambda.run(rt.start("greet", "ada", run_id=run_id))
    _lambda.run(rt.resume(run_id))  # the step's checkpoint; then it waits for "reply"
    _lambda.run(rt.signal(run_id, "later", {"n": 1}))  # buffered: a signal item
    assert len(items(table, run_id)) >= 3
    table.delete_item(TableName=table.name, Key={"pk": {"S": run_id}, "sk": {"S": "R"}})


def ttl_event(*run_ids: str, sk: str = "R") -> dict[str, Any]:
    """``events/dynamodb_ttl_remove.json``, one record per run, with sequence numbers 1, 2 ...
    (TTL's removal of the item at ``sk``: the header by default)."""
    records = []
    for i, run_id in enumerate(run_ids, start=1):
        record = load_event("dynamodb_ttl_remove")["Records"][0]
        record["dynamodb"]["Keys"]["pk"]["S"] = run_id
        record["dynamodb"]["Keys"]["sk"]["S"] = sk
        record["dynamodb"]["SequenceNumber"] = str(i)
        records.append(record)
    return {"Records": records}


def test_the_sample_ttl_removal_deletes_the_rest_of_its_run(table: Any) -> None:
    expired(table, "o-1")  # the sample's run

    response = reaper.handler(load_event("dynamodb_ttl_remove"), LambdaContext())

    assert response == {"batchItemFailures": []}
    assert items(table, "o-1") == []


def test_a_deleted_runs_reap_request_deletes_all_of_it(table: Any) -> None:
    # given a run deleted through the runtime (the API's path): retired, nothing deleted
    rt = _lambda.get_runtime()
    rt.dispatcher = Recorder()
    _lambda.run(rt.start("greet", "ada", run_id="d-1", tags=["vip"]))
    _lambda.run(rt.resume("d-1"))
    _lambda.run(rt.signal("d-1", "later", {"n": 1}))
    _lambda.run(rt.delete("d-1"))
    left = items(table, "d-1")
    (request,) = [sk for sk in left if sk.startswith("X#")]
    assert len(left) >= 5  # header (a tombstone), checkpoint, signal, tag item, reap request

    # when TTL removes the reap request and the stream hands the removal to the reaper
    table.delete_item(TableName=table.name, Key={"pk": {"S": "d-1"}, "sk": {"S": request}})
    response = reaper.handler(ttl_event("d-1", sk=request), LambdaContext())

    # then nothing of the run is left
    assert response == {"batchItemFailures": []}
    assert items(table, "d-1") == []


def test_other_records_are_ignored(table: Any) -> None:
    expired(table, "o-1")
    by_the_store = ttl_event("o-1")["Records"][0]
    by_the_store.pop("userIdentity")  # a delete the store made, not TTL
    insert = ttl_event("o-1")["Records"][0]
    insert["eventName"] = "INSERT"
    checkpoint = ttl_event("o-1", sk="C#abc#0000000001")["Records"][0]  # a retired item's
    tag = ttl_event("o-1", sk="T#vip")["Records"][0]

    response = reaper.handler({"Records": [by_the_store, insert, checkpoint, tag]}, LambdaContext())

    assert response == {"batchItemFailures": []}
    assert len(items(table, "o-1")) >= 2  # untouched


def test_a_failing_reap_is_reported_by_its_sequence_number(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for run_id in ("a", "boom", "c"):
        expired(table, run_id)
    store = _lambda.get_runtime().store
    real = store.reap  # type: ignore[attr-defined]

    async def flaky(run_id: str) -> None:
        if run_id == "boom":
            raise ConnectionError("the table is unreachable")
        await real(run_id)

    monkeypatch.setattr(store, "reap", flaky)

    response = reaper.handler(ttl_event("a", "boom", "c"), LambdaContext())

    assert response == {"batchItemFailures": [{"itemIdentifier": "2"}]}
    assert items(table, "a") == items(table, "c") == []
    assert items(table, "boom") != []  # retried from its record


def test_on_another_store_it_refuses_to_guess(container: Path) -> None:
    # the container's store is SQLite here: the reaper only ever follows a DynamoDB table
    with pytest.raises(TypeError, match="DynamoDB"):
        reaper.handler(ttl_event("o-1"), LambdaContext())
    assert reaper.handler({"Records": []}, LambdaContext()) == {"batchItemFailures": []}
