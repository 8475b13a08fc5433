"""A workflow from the HTTP start to completion through the three real Lambda handlers.

DynamoDB and SQS are a moto server reached over HTTP. The test plays the parts AWS plays:

    API Gateway   events/ samples, patched, into heron.functions.api.handler
    SQS poller    ReceiveMessage on the resume queue (delays honoured by the queue) ─►
                  heron.functions.resume.handler(SQS event) ─► DeleteMessage for what succeeded
    EventBridge   heron.functions.sweep.handler(scheduled event) every few polls

The workflow charges, sleeps a second (a delayed SQS message wakes it), waits for a signal sent
through the API, and finishes with a step. A second run of the test loses the timer's message
on the way, and the sweep wakes the run instead. Loops are bounded by count; no duration is
asserted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heron.functions import _lambda, api, asgi, resume, sweep
from tests.functions.kit import (
    APP,
    TOKEN,
    LambdaContext,
    api_event,
    response_json,
    scheduled_event,
    sqs_event,
)

#: Poll at most this many times, POLL_PAUSE apart (the run needs a few seconds).
MAX_POLLS = 400
POLL_PAUSE = 0.1
SWEEP_EVERY = 3


@pytest.fixture
def deployment(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[Any, str]]:
    """A table and a queue on moto, and a fresh container configured for them."""
    import boto3  # type: ignore[import-untyped]

    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    queue_url: str = sqs.create_queue(QueueName=f"heron-resume-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    table = f"heron-e2e-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("HERON_APP", APP)
    monkeypatch.setenv(
        "HERON_STORE", f"dynamodb://{table}?region=us-east-1&endpoint_url={moto_endpoint}"
    )
    monkeypatch.setenv("HERON_QUEUE_URL", queue_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)
    saved = asgi.app.state.settings
    asgi.app.state.settings = asgi.ApiSettings(token=TOKEN)
    _lambda.reset()
    try:
        yield sqs, queue_url
    finally:
        _lambda.reset()
        asgi.app.state.settings = saved
        sqs.delete_queue(QueueUrl=queue_url)


def call_api(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = api.handler(api_event(method, path, body), LambdaContext())
    return response["statusCode"], response_json(response)


class Poller:
    """Lambda's SQS event source mapping, in miniature."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.resumed: list[str] = []
        self.lose = 0  # messages to drop on the floor, as if they had been lost
        self.lost: list[str] = []

    def poll(self) -> int:
        reply = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30
        )
        messages = reply.get("Messages", [])
        while messages and self.lose:
            self.lose -= 1
            message = messages.pop(0)
            self.lost.append(message["Body"])
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        if not messages:
            return 0
        event = sqs_event(
            [m["Body"] for m in messages], message_ids=[m["MessageId"] for m in messages]
        )
        result = resume.handler(event, LambdaContext())
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        assert not failed, result
        for message in messages:
            self.resumed.append(message["Body"])
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)


@pytest.mark.parametrize("timer_message", ["delivered", "lost"])
def test_a_run_with_a_sleep_and_a_signal_completes_through_the_handlers(
    deployment: tuple[Any, str], timer_message: str
) -> None:
    import time

    sqs, queue_url = deployment
    poller = Poller(sqs, queue_url)
    sweeps: list[int] = []

    # HTTP start
    status, started = call_api(
        "POST", "/workflows/order/runs", {"input": {"id": "e2e-1", "sleep": 1.0}, "run_id": "e2e-1"}
    )
    assert status == 201, started

    statuses: list[str] = []
    signalled = False
    run: dict[str, Any] = {}
    for poll in range(MAX_POLLS):
        poller.poll()
        if poll % SWEEP_EVERY == SWEEP_EVERY - 1:
            sweeps.append(sweep.handler(scheduled_event(), LambdaContext())["dispatched"])
        status, run = call_api("GET", "/runs/e2e-1")
        assert status == 200
        if not statuses or statuses[-1] != run["status"]:
            statuses.append(run["status"])
            if run["status"] == "sleeping" and timer_message == "lost":
                poller.lose = 1  # the next message is the timer's: lose it
        if run["status"] == "waiting" and not signalled:
            code, sent = call_api(
                "POST", "/runs/e2e-1/signals/approved", {"payload": {"by": "ops"}}
            )
            assert code == 202, sent
            signalled = True
        if run["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(POLL_PAUSE)

    assert run["status"] == "completed", (statuses, run)
    assert run["output"] == {
        "order": "e2e-1",
        "payment": {"charge": "ch_e2e-1"},
        "label": "hello ops",
    }
    assert [(s["seq"], s["kind"], s["name"]) for s in run["steps"]] == [
        (0, "step", "charge"),
        (1, "sleep", "sleep"),
        (2, "signal", "approved"),
        (3, "step", "greet"),
    ]
    assert "sleeping" in statuses and "waiting" in statuses
    # the start, the timer's wake and the signal each sent the run to the queue
    assert len(poller.resumed) >= 3
    if timer_message == "lost":
        assert poller.lost == ['{"run_id": "e2e-1"}']
        assert sum(sweeps) >= 1  # the sweep found the run due and sent it again

    # and the API lists it, from DynamoDB
    status, page = call_api("GET", "/runs")
    assert status == 200
    assert [r["id"] for r in page["runs"]] == ["e2e-1"]
