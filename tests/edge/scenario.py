"""One scenario, two platforms: the example's order workflow (``examples/worker/src/app.py``)
driven through a Worker's three handlers, on Pyodide (the harness) and on CPython (doubles).

    fetch  POST /workflows/order/runs        (no token: 401; with it: 201, pending)
    scheduled                                 the sweep sends the due run to the queue
    queue                                     resume: quote (sync step), reserve, the 1 s timer
                                              suspends the run and sends a delayed message
    (1 s later) queue                         resume: the timer is done, the run waits
    fetch  POST /runs/o-1/signals/approved    202; the run is made due and sent to the queue
    queue                                     resume: the signal is consumed, the run completes
    fetch  GET /runs/o-1                      completed, the output below

The CPython side here: doubles of what the Workers SDK hands Python (the env, a Cloudflare
Queues producer binding and its batches), and :class:`CPythonWorker`, which runs
``HeronWorker``, the same handler code the Worker runs, over them, with the HTTP API through
httpx's ASGI transport instead of the SDK's ASGI adapter.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from heron.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "examples" / "worker" / "src" / "app.py"
TOKEN = "edge-test-token"
QUEUE = "heron-resume"
ORDER = {"id": "o-1", "items": ["book", "pen"]}
EXPECTED = {"order": "o-1", "cents": 1350, "approved_by": "ops"}


class Platform(Protocol):
    async def fetch(
        self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN
    ) -> tuple[int, Any]: ...

    async def scheduled(self) -> None: ...

    async def deliver(self) -> int:
        """Deliver every message that is due now; how many were delivered."""
        ...

    async def delays(self) -> list[int]:
        """The ``delaySeconds`` of every message sent so far."""
        ...


async def run_order(platform: Platform, run_id: str = "o-1") -> dict[str, Any]:
    """The scenario (module docstring); returns the completed run."""
    start = {"input": {**ORDER, "id": run_id}, "run_id": run_id}
    status, body = await platform.fetch("POST", "/workflows/order/runs", start, token=None)
    assert status == 401, body
    status, body = await platform.fetch("POST", "/workflows/order/runs", start)
    assert (status, body["status"]) == (201, "pending"), body

    await platform.scheduled()
    assert await platform.deliver() >= 1
    status, run = await platform.fetch("GET", f"/runs/{run_id}")
    assert status == 200 and run["status"] == "sleeping", run
    assert [s["name"] for s in run["steps"]] == ["quote", "reserve"], run["steps"]
    assert 1 in await platform.delays()  # the timer is a delayed message, not the sweep

    # the delayed message comes due a whole second after it was sent (delaySeconds is an
    # integer, rounded up), so up to a second after wake_at on a slow store: poll for it
    await asyncio.sleep(max(0.0, run["wake_at"] - time.time()))
    assert await deliver_within(platform, seconds=3.0) == 1
    status, run = await platform.fetch("GET", f"/runs/{run_id}")
    assert run["status"] == "waiting", run
    assert [s["kind"] for s in run["steps"]] == ["step", "step", "sleep"], run["steps"]

    signal = {"payload": {"by": "ops"}}
    status, body = await platform.fetch("POST", f"/runs/{run_id}/signals/approved", signal)
    assert status == 202, body
    assert await platform.deliver() == 1
    status, run = await platform.fetch("GET", f"/runs/{run_id}")
    assert status == 200 and run["status"] == "completed", run
    return dict(run)


async def deliver_within(platform: Platform, seconds: float) -> int:
    """Deliver the queue's messages as soon as any is due, waiting at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (delivered := await platform.deliver()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return delivered


def check_output(run: dict[str, Any], run_id: str = "o-1") -> None:
    output = run["output"]
    assert {k: output[k] for k in EXPECTED} == {**EXPECTED, "order": run_id}
    assert output["reservation"] == {"order": run_id, "cents": 1350, "key": f"{run_id}:1"}


# -- CPython: doubles of what the Workers SDK hands Python -----------------------------------------


def load_app() -> Runtime:
    """A fresh copy of the example's module (a new ``Runtime``), as a new isolate imports it."""
    name = f"heron_example_app_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rt: Runtime = module.rt
    return rt


class Message:
    """TEST DOUBLE of a Cloudflare Queues message as a consumer sees it."""

    def __init__(self, queue: QueueDouble, record: dict[str, Any]) -> None:
        self.queue, self.record = queue, record
        self.id = record["id"]
        self.body = json.loads(record["data"])
        self.attempts = record["attempts"]

    def ack(self) -> None:
        self.record.setdefault("outcome", "ack")

    def retry(self, delaySeconds: int | None = None) -> None:  # noqa: N803 - the JS name
        self.record.setdefault("outcome", ("retry", delaySeconds or 0))


class Batch:
    def __init__(self, queue: str, messages: list[Message]) -> None:
        self.queue, self.messages = queue, messages


class QueueDouble:
    """TEST DOUBLE of a Cloudflare Queue: its producer binding (``send``/``sendBatch`` with the
    limits Queues documents: 100 messages a batch, ``delaySeconds`` an integer up to 24 hours,
    JSON bodies) and the queue itself, delivered by hand."""

    MAX_DELAY = 86_400
    _ids = itertools.count(1)

    def __init__(self, name: str = QUEUE) -> None:
        self.name = name
        self.records: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []

    async def send(self, body: Any, **options: Any) -> None:
        await self.sendBatch([{"body": body, **options}])

    async def sendBatch(self, messages: list[dict[str, Any]], **options: Any) -> None:  # noqa: N802
        await asyncio.sleep(0)
        if len(messages) > 100:
            raise ValueError("sendBatch: at most 100 messages")
        for message in messages:
            delay = message.get("delaySeconds", options.get("delaySeconds", 0)) or 0
            if not isinstance(delay, int) or not 0 <= delay <= self.MAX_DELAY:
                raise ValueError(f"delaySeconds must be an integer in [0, {self.MAX_DELAY}]")
            if message.get("contentType", "json") != "json":
                raise ValueError("this double takes JSON messages only")
            record = {
                "id": f"m{next(self._ids)}",
                "data": json.dumps(message["body"]),
                "visible_at": time.time() + delay,
                "attempts": 0,
            }
            self.records.append(record)
            self.sent.append({"delaySeconds": delay, "body": message["body"]})

    def due(self) -> list[dict[str, Any]]:
        now = time.time()
        return [r for r in self.records if r["visible_at"] <= now]


class Context:
    """TEST DOUBLE of a Worker's ExecutionContext: ``waitUntil`` keeps what it is handed."""

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def waitUntil(self, awaitable: Any) -> None:  # noqa: N802 - the JS name
        self.pending.append(awaitable)

    async def drain(self) -> None:
        while self.pending:
            await self.pending.pop(0)


class CPythonWorker:
    """The Worker's handlers (``HeronWorker``) on CPython, over the doubles above."""

    def __init__(self, env: dict[str, Any], rt: Runtime | None = None) -> None:
        from heron.functions._cloudflare import HeronWorker

        self.env = env
        self.worker = HeronWorker(rt or load_app())
        self.queue: QueueDouble = env["RESUME"]

    async def fetch(
        self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        import httpx

        app = self.worker.asgi(self.env)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://worker.example") as c:
            response = await c.request(method, path, json=body, headers=headers)
        ctx = Context()
        self.worker.after_response(ctx)
        await ctx.drain()
        return response.status_code, response.json() if response.content else None

    async def scheduled(self) -> None:
        await self.worker.scheduled(self.env)

    async def deliver(self) -> int:
        delivered = 0
        while due := self.queue.due()[:10]:
            for record in due:
                record["attempts"] += 1
            batch = Batch(self.queue.name, [Message(self.queue, r) for r in due])
            await self.worker.queue(batch, self.env)
            for record in due:
                outcome = record.pop("outcome", ("retry", 0))
                if outcome == "ack":
                    self.queue.records.remove(record)
                else:
                    record["visible_at"] = time.time() + outcome[1]
            delivered += len(due)
        return delivered

    async def delays(self) -> list[int]:
        return [m["delaySeconds"] for m in self.queue.sent]
