"""Lambda plumbing for the handler tests: a context object and the sample events in ``events/``.

The events were made with ``sam local generate-event`` (see ``events/README.md``); the helpers
load one and patch what a test needs (method, path, body, ids) in memory.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
TOKEN = "test-token-4f1c"
APP = "tests.functions.lambda_app:rt"


@dataclass
class LambdaContext:
    """What the Lambda runtime hands a handler, as far as the handlers and Powertools read it."""

    function_name: str = "heron-test"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:heron-test"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/heron-test"
    log_stream_name: str = "2026/01/01/[$LATEST]0123456789abcdef"
    remaining_ms: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@cache
def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of ``events/<name>.json``."""
    return copy.deepcopy(_load(name))


def api_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    query: str = "",
    raw_body: bytes | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for ``method path``, from the SAM sample."""
    event = load_event("api_start_run")
    event["rawPath"] = path
    event["rawQueryString"] = query
    event.pop("queryStringParameters", None)
    if query:
        params: dict[str, str] = {}
        for pair in query.split("&"):
            key, _, value = pair.partition("=")
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    event["requestContext"]["requestId"] = request_id or f"req-{uuid.uuid4().hex[:12]}"
    event["headers"] = {"content-type": "application/json"}
    if token is not None:
        event["headers"]["authorization"] = f"Bearer {token}"
    event["headers"].update(headers or {})
    data = raw_body if raw_body is not None else None
    if data is None and body is not None:
        data = json.dumps(body).encode()
    if data is None:
        event.pop("body", None)
        event["isBase64Encoded"] = False
    else:
        event["body"] = base64.b64encode(data).decode()
        event["isBase64Encoded"] = True
    return event


def with_iam(event: dict[str, Any]) -> dict[str, Any]:
    """The event as API Gateway sends it after its IAM authorizer accepted the caller."""
    event["requestContext"]["authorizer"] = {
        "iam": {
            "accessKey": "AKIAEXAMPLE",
            "accountId": "123456789012",
            "callerId": "AIDAEXAMPLE",
            "principalOrgId": None,
            "userArn": "arn:aws:iam::123456789012:user/ops",
            "userId": "AIDAEXAMPLE",
        }
    }
    return event


def response_json(response: dict[str, Any]) -> Any:
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return json.loads(body)


def sqs_event(bodies: list[Any], *, message_ids: list[str] | None = None) -> dict[str, Any]:
    """An SQS batch for the resume function, one record per body (dicts are sent as JSON)."""
    template = load_event("sqs_resume")["Records"][0]
    records = []
    for i, body in enumerate(bodies):
        record = copy.deepcopy(template)
        text = body if isinstance(body, str) else json.dumps(body)
        record["body"] = text
        record["md5OfBody"] = hashlib.md5(text.encode()).hexdigest()
        record["messageId"] = message_ids[i] if message_ids else str(uuid.uuid4())
        record["receiptHandle"] = f"handle-{record['messageId']}"
        records.append(record)
    return {"Records": records}


def scheduled_event() -> dict[str, Any]:
    return load_event("cloudwatch_scheduled_event")


def emf_lines(output: str) -> list[dict[str, Any]]:
    """The CloudWatch EMF documents (metrics) among stdout's JSON lines."""
    return [doc for doc in json_lines(output) if "_aws" in doc]


def log_lines(output: str) -> list[dict[str, Any]]:
    return [doc for doc in json_lines(output) if "_aws" not in doc and "level" in doc]


def json_lines(output: str) -> list[dict[str, Any]]:
    docs = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                docs.append(json.loads(line))
            except ValueError:
                continue
    return docs


def metric_totals(output: str) -> dict[str, float]:
    """Each metric's values summed over every EMF document in ``output``."""
    totals: dict[str, float] = {}
    for doc in emf_lines(output):
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                name = metric["Name"]
                values = doc[name] if isinstance(doc[name], list) else [doc[name]]
                totals[name] = totals.get(name, 0.0) + sum(values)
    return totals
