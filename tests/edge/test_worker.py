"""Heron as a Cloudflare Python Worker: ``examples/worker`` on Pyodide 314.0.6 in Node, through
Cloudflare's Python SDK, its handlers called the way workerd calls them (``harness.mjs``), and the
same workflow module on CPython (``scenario.py``).

Pyodide is loaded once per configuration and kept for the module (``conftest.made``):

``d1``      HERON_STORE=d1://DB, the D1 binding a DOUBLE (SQLite inside the same Pyodide)
``turso``   HERON_STORE=http://127.0.0.1:PORT: the real sqld over Hrana, through Pyodide's fetch
``upstash`` HERON_STORE=kv+upstash://127.0.0.1:PORT: the Upstash REST protocol DOUBLE (forwarding
            to a real redis-server), through Pyodide's fetch
``noqueue`` HERON_STORE=d1://DB (a DOUBLE) and no queue: runs resume after the response
``broken``  HERON_STORE=d1://DB and HERON_QUEUE=RESUME without either binding
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.edge import scenario
from tests.edge.conftest import Edge, made
from tests.edge.scenario import QUEUE, TOKEN, CPythonWorker, QueueDouble

pytestmark = pytest.mark.timeout(115)

BASE_VARS = {"HERON_QUEUE": "RESUME", "HERON_API_TOKEN": TOKEN}
QUEUES = {"queueProducers": {"RESUME": QUEUE}, "queueConsumers": {QUEUE: {"maxRetries": 3}}}


class PyodideWorker:
    """The scenario's platform on the harness: each call is one event of the Worker."""

    def __init__(self, edge: Edge, name: str) -> None:
        self.edge, self.name = edge, name

    async def fetch(
        self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        answer = self.edge.call(
            "fetch", name=self.name, url=path, method=method, headers=headers, body=body
        )
        text = answer["text"]
        return answer["status"], json.loads(text) if text else None

    async def scheduled(self) -> None:
        answer = self.edge.call("scheduled", name=self.name)
        assert answer["outcome"] == "ok", answer

    async def deliver(self) -> int:
        batches = self.edge.call("queue", name=self.name, queue=QUEUE)
        for batch in batches:
            assert not batch["retried"] and not batch["deadLettered"], batch
        return sum(batch["delivered"] for batch in batches)

    async def delays(self) -> list[int]:
        sent = self.edge.call("broker", name=self.name, queue=QUEUE)["sent"]
        return [message["delaySeconds"] for message in sent]

    def python(self, code: str) -> Any:
        return self.edge.call("python", name=self.name, code=code)


def d1_worker(edge: Edge) -> PyodideWorker:
    made(edge, "d1", vars={**BASE_VARS, "HERON_STORE": "d1://DB"}, d1=["DB"], **QUEUES)
    return PyodideWorker(edge, "d1")


# -- the scenario, on Pyodide ----------------------------------------------------------------------


async def test_the_order_workflow_completes_on_pyodide_with_d1(edge: Edge) -> None:
    # given: the example Worker, its store a D1 binding (a DOUBLE), its dispatcher a queue
    worker = d1_worker(edge)
    info = edge.made["d1"]
    assert (info["pyodide"], info["python"][:4]) == ("314.0.6", "3.14")
    # importing the worker module used no randomness beyond what the SDK's patches allow
    assert info["snapshotNotes"] == []

    # when / then (scenario.py): start over fetch, sweep, resume from the queue, signal
    run = await scenario.run_order(worker)
    scenario.check_output(run)


async def test_the_order_workflow_completes_on_pyodide_with_turso_over_fetch(
    edge: Edge, sqld: Any
) -> None:
    from tests.backends.libsql import drop_heron_tables

    # given: the store is a real sqld, reached through Pyodide's fetch (Node's, on 127.0.0.1)
    await drop_heron_tables(sqld.url)
    made(edge, "turso", vars={**BASE_VARS, "HERON_STORE": sqld.url}, **QUEUES)
    worker = PyodideWorker(edge, "turso")

    run = await scenario.run_order(worker, run_id="t-1")

    scenario.check_output(run, run_id="t-1")
    transport = worker.python(
        "import app; s = app.rt.store; f'{type(s).__name__} {type(s._client._transport).__name__}'"
    )
    assert transport == "LibSQLStore FetchTransport"


async def test_the_order_workflow_completes_on_pyodide_with_upstash_over_fetch(
    edge: Edge, upstash_double: Any
) -> None:
    import uuid

    # given: the KV store's Upstash driver, through Pyodide's fetch, to the REST protocol DOUBLE
    # (tests/backends/kv.py), which forwards every command to a real redis-server; the token is
    # the Worker's secret, not part of the URL
    prefix = f"edge-{uuid.uuid4().hex[:8]}"
    url = f"kv+upstash://127.0.0.1:{upstash_double.port}?tls=0&prefix={prefix}"
    store_vars = {"HERON_STORE": url, "UPSTASH_REDIS_REST_TOKEN": upstash_double.token}
    made(edge, "upstash", vars={**BASE_VARS, **store_vars}, **QUEUES)
    worker = PyodideWorker(edge, "upstash")

    run = await scenario.run_order(worker, run_id="u-1")

    scenario.check_output(run, run_id="u-1")
    driver = worker.python("import app; type(app.rt.store.driver).__name__")
    assert driver == "UpstashDriver"


@pytest.mark.parametrize("store", ["memory", "d1"])
async def test_the_same_workflow_module_completes_on_cpython(store: str) -> None:
    from tests.backends.d1 import D1Binding

    # given: the same example module, the same handler code, on CPython (doubles of the SDK's
    # env and queue; the D1 binding a DOUBLE)
    env: dict[str, Any] = {**BASE_VARS, "RESUME": QueueDouble()}
    if store == "d1":
        env.update(HERON_STORE="d1://DB", DB=D1Binding())
    else:
        env.update(HERON_STORE="memory://")
    worker = CPythonWorker(env)

    run = await scenario.run_order(worker)

    scenario.check_output(run)


# -- what Pyodide changes --------------------------------------------------------------------------


async def test_on_pyodide_sync_steps_run_inline_and_fastapi_runs_no_threads(edge: Edge) -> None:
    worker = d1_worker(edge)
    facts = worker.python(
        "import threading, anyio.to_thread\n"
        "{'threads': threading.active_count(),\n"
        " 'anyio_run_sync': anyio.to_thread.run_sync.__module__}"
    )
    # the Workers SDK's own patch (applied through its .pth loader while the worker module was
    # imported) runs FastAPI's sync dependencies inline: no thread was ever started
    assert facts == {"threads": 1, "anyio_run_sync": "_workers_sdk_package_patches"}


async def test_a_step_that_starts_a_thread_fails_with_an_error_naming_the_step(
    edge: Edge,
) -> None:
    worker = d1_worker(edge)
    worker.python(
        "import threading, app\n"
        "from heron import Context, RetryPolicy\n"
        "@app.rt.step(name='spawn', retry=RetryPolicy(max_attempts=3, initial_delay=0.5))\n"
        "def spawn() -> int:\n"
        "    threading.Thread(target=print).start()\n"
        "    return 1\n"
        "@app.rt.workflow('threads')\n"
        "async def threads(ctx: Context, _: None) -> int:\n"
        "    return await ctx.step(spawn)\n"
    )
    status, _ = await worker.fetch("POST", "/workflows/threads/runs", {"run_id": "th-1"})
    assert status == 201
    await worker.deliver()

    status, run = await worker.fetch("GET", "/runs/th-1")

    # once: every attempt would fail the same way, so it is not retried
    assert run["status"] == "failed", run
    message = run["error"]["message"]
    assert "step 'spawn'" in message and "seq 0" in message, run["error"]
    assert "has no threads" in message and "can't start new thread" in message
    assert [(s["name"], s["attempts"]) for s in run["steps"]] == [("spawn", 1)]


async def test_a_raw_js_d1_binding_works_too(edge: Edge) -> None:
    worker = d1_worker(edge)
    found = worker.python(
        "from heron.stores.d1 import D1Store\n"
        "from heron.stores.contract import Run\n"
        "store = D1Store('DB', binding=env.DB)  # the JavaScript binding, not the SDK's wrapper\n"
        "assert await store.create(Run(id='raw-1', workflow='w', tags=['a', 'c']))\n"
        "loaded = await store.load('raw-1')\n"
        "[type(store._resolve()).__name__, loaded.run.id, loaded.run.tags, loaded.run.wake_at]"
    )
    assert found == ["_JsBinding", "raw-1", ["a", "c"], None]


async def test_a_d1_store_opened_at_import_finds_its_binding_in_workers_env(edge: Edge) -> None:
    worker = d1_worker(edge)
    found = worker.python(
        "from heron.stores import Run, open_store\n"
        "store = open_store('d1://DB')  # no binding: looked up in workers.env on first use\n"
        "await store.create(Run(id='import-1', workflow='order', input='null'))\n"
        "loaded = await store.load('import-1')\n"
        "[type(store._resolve()).__name__, loaded.run.id]"
    )
    assert found == ["_BindingWrapper", "import-1"]


async def test_without_a_queue_runs_resume_after_the_response(edge: Edge) -> None:
    vars = {"HERON_STORE": "d1://DB", "HERON_API_TOKEN": TOKEN}
    made(edge, "noqueue", vars=vars, d1=["DB"])
    worker = PyodideWorker(edge, "noqueue")
    start = {"input": {"id": "n-1", "items": ["pen"]}, "run_id": "n-1"}

    status, body = await worker.fetch("POST", "/workflows/order/runs", start)
    assert (status, body["status"]) == (201, "pending")

    # the harness waits for ctx.waitUntil, as workerd keeps the invocation alive for it
    _, run = await worker.fetch("GET", "/runs/n-1")
    assert run["status"] == "sleeping", run
    assert [s["name"] for s in run["steps"]] == ["quote", "reserve"]


# -- bad configuration -----------------------------------------------------------------------------


async def test_a_missing_binding_is_a_clear_error_at_the_first_request(edge: Edge) -> None:
    vars = {**BASE_VARS, "HERON_STORE": "d1://DB"}
    made(edge, "broken", vars=vars)  # neither the D1 binding DB nor the queue RESUME
    worker = PyodideWorker(edge, "broken")

    status, body = await worker.fetch("GET", "/runs")

    assert status == 500
    assert body["error"] == "BindingMissing"
    assert "'DB'" in body["message"] and "[[d1_databases]]" in body["message"], body
    answer = edge.call("scheduled", name="broken")
    assert answer["outcome"] == "exception" and "'DB'" in answer["error"], answer
