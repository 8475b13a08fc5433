"""``SQSDispatcher``: run ids onto the resume queue, against a moto server over HTTP (and a fake
client for what moto cannot show, such as a refused message)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from heron.functions import SQSDispatcher
from heron.functions._config import Config, configure
from heron.runtime import DispatchError, InProcessDispatcher, Runtime
from heron.runtime.testing import FakeClock
from heron.stores.memory import MemoryStore


@pytest.fixture
def sqs(moto_endpoint: str) -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def queue_url(sqs: Any) -> Iterator[str]:
    url: str = sqs.create_queue(QueueName=f"heron-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    yield url
    sqs.delete_queue(QueueUrl=url)


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message visible now (moto answers at once: no long polling needed)."""
    bodies: list[dict[str, Any]] = []
    while True:
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        messages = reply.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


async def test_run_ids_reach_the_queue_in_batches_of_ten(
    sqs: Any, queue_url: str, moto_endpoint: str
) -> None:
    dispatcher = SQSDispatcher(queue_url, endpoint_url=moto_endpoint, region="us-east-1")
    ids = [f"run-{i}" for i in range(25)]
    try:
        await dispatcher.dispatch(ids)
        await dispatcher.dispatch([])  # nothing to send, no call
    finally:
        await dispatcher.close()

    assert sorted(body["run_id"] for body in drain(sqs, queue_url)) == sorted(ids)


async def test_a_delayed_dispatch_stays_invisible_until_its_time(
    sqs: Any, queue_url: str, moto_endpoint: str
) -> None:
    dispatcher = SQSDispatcher(queue_url, endpoint_url=moto_endpoint, region="us-east-1")
    try:
        await dispatcher.dispatch(["later"], delay=120)
        await dispatcher.dispatch(["now"])
    finally:
        await dispatcher.close()

    assert drain(sqs, queue_url) == [{"run_id": "now"}]
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"


class FakeSQS:
    """Records ``send_message_batch`` calls; refuses the ids in ``refuse``."""

    def __init__(self, refuse: Sequence[str] = ()) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.refuse = set(refuse)

    async def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:  # noqa: N803
        self.calls.append(Entries)
        failed = [
            {"Id": e["Id"], "Code": "ThrottlingException", "SenderFault": False}
            for e in Entries
            if json.loads(e["MessageBody"])["run_id"] in self.refuse
        ]
        return {"Successful": [], "Failed": failed}


@pytest.mark.parametrize(
    ("delay", "seconds"), [(0.0, None), (0.2, 1), (29.5, 30), (30.0, 30), (5000.0, 900)]
)
async def test_delays_round_up_to_whole_seconds_and_cap_at_fifteen_minutes(
    delay: float, seconds: int | None
) -> None:
    fake = FakeSQS()
    await SQSDispatcher("https://sqs.eu-west-1.amazonaws.com/1/q", client=fake).dispatch(
        ["r"], delay=delay
    )
    [[entry]] = fake.calls
    assert entry.get("DelaySeconds") == seconds
    assert json.loads(entry["MessageBody"]) == {"run_id": "r"}


async def test_messages_sqs_refuses_raise_naming_the_runs() -> None:
    fake = FakeSQS(refuse=["b", "l"])
    dispatcher = SQSDispatcher("https://sqs.us-east-1.amazonaws.com/1/q", client=fake)
    ids = list("abcdefghijkl")

    with pytest.raises(DispatchError, match="ThrottlingException") as caught:
        await dispatcher.dispatch(ids)

    assert caught.value.run_ids == ["b", "l"]
    assert [len(call) for call in fake.calls] == [10, 2]  # every chunk was still sent


def test_the_client_is_made_on_first_use_and_the_region_read_from_the_url() -> None:
    dispatcher = SQSDispatcher("https://sqs.ap-southeast-2.amazonaws.com/123456789012/resume")
    assert dispatcher._client is None  # nothing made at construction
    assert dispatcher.region == "ap-southeast-2"
    assert SQSDispatcher("http://127.0.0.1:5000/123456789012/q").region is None
    with pytest.raises(ValueError, match="queue URL"):
        SQSDispatcher("")


def test_the_configuration_chooses_the_dispatcher() -> None:
    assert Config.from_env({}) == Config()
    sqs_env = {"HERON_QUEUE_URL": "http://localhost:4566/1/q", "AWS_ENDPOINT_URL_SQS": "http://e:1"}
    sqs = configure(Runtime(MemoryStore()), Config.from_env(sqs_env)).dispatcher
    assert isinstance(sqs, SQSDispatcher) and sqs.endpoint_url == "http://e:1"
    preferred = Config.from_env(
        {
            "HERON_QUEUE_URL": "http://localhost:4566/1/q",
            "HERON_SQS_ENDPOINT_URL": "http://heron:2",
            "AWS_ENDPOINT_URL_SQS": "http://e:1",
        }
    )
    assert preferred.sqs_endpoint == "http://heron:2"

    # the engine itself reads no environment: without a queue, it resumes in process
    assert isinstance(Runtime(MemoryStore()).dispatcher, InProcessDispatcher)
    # and a dispatcher the app chose is never replaced
    mine = SQSDispatcher("https://sqs.us-east-1.amazonaws.com/1/mine")
    kept = configure(Runtime(MemoryStore(), dispatcher=mine), Config.from_env(sqs_env))
    assert kept.dispatcher is mine


async def test_a_failed_dispatch_does_not_fail_a_start_and_the_sweep_finds_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given a runtime whose queue refuses everything
    fake = FakeSQS(refuse=["o-1"])
    store = MemoryStore()
    rt = Runtime(store, clock=FakeClock(), dispatcher=SQSDispatcher("https://q/1/q", client=fake))

    @rt.workflow("w")
    async def w(ctx: Any, x: int) -> int:
        return x

    # when a run starts, the dispatch fails: logged, and the run is still created and due
    assert await rt.start("w", 1, run_id="o-1") == "o-1"
    assert "dispatch of 1 run(s) failed (DispatchError)" in caplog.text
    assert await store.due(rt.clock.now(), 10) == ["o-1"]

    # and the sweep, the safety net, reports its own failure to dispatch
    with pytest.raises(DispatchError):
        await rt.sweep()
