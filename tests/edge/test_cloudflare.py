"""The Worker's configuration, dispatchers and handlers on CPython (``heron.functions._cloudflare``:
the code the Worker runs, over doubles of what the Workers SDK hands Python: ``scenario.py``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from heron.functions._cloudflare import (
    QUEUES_MAX_DELAY,
    BindingMissing,
    HeronWorker,
    InvocationDispatcher,
    QueueDispatcher,
    WorkerConfig,
    WorkerConfigError,
    error_body,
)
from heron.runtime import Context, Runtime
from heron.stores import Run, StoreError
from heron.stores.memory import MemoryStore
from tests.backends.d1 import D1Binding
from tests.edge.scenario import TOKEN, Batch, CPythonWorker, Message, QueueDouble, load_app

# -- configuration ---------------------------------------------------------------------------------


def test_the_configuration_is_read_from_the_env_once_with_defaults() -> None:
    config = WorkerConfig.from_env({"HERON_STORE": "d1://DB", "HERON_API_TOKEN": "s3cret"})

    assert (config.store, config.queue, config.sweep_page, config.time_budget) == (
        "d1://DB",
        None,
        100,
        30.0,
    )
    assert config.api_env == {"HERON_API_TOKEN": "s3cret"}
    assert "s3cret" not in repr(config)  # secrets never in a repr


def test_secrets_for_the_stores_are_read_and_never_shown() -> None:
    config = WorkerConfig.from_env(
        {"TURSO_AUTH_TOKEN": "jwt-turso", "UPSTASH_REDIS_REST_TOKEN": "tok-upstash"}
    )

    assert (config.turso_token, config.upstash_token) == ("jwt-turso", "tok-upstash")
    assert "jwt-turso" not in repr(config) and "tok-upstash" not in repr(config)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"HERON_SWEEP_PAGE": "many"}, "HERON_SWEEP_PAGE"),
        ({"HERON_SWEEP_PAGE": "9007199254740993"}, "HERON_SWEEP_PAGE must be above 0 and at most"),
        ({"HERON_TIME_BUDGET": "86400"}, "HERON_TIME_BUDGET must be above 0 and at most 900"),
        ({"HERON_TIME_BUDGET": "-1"}, "HERON_TIME_BUDGET"),
        ({"HERON_QUEUE": "my-queue"}, "HERON_QUEUE"),
        ({"HERON_LOG_LEVEL": "LOUD"}, "HERON_LOG_LEVEL"),
        ({"HERON_API_AUTH": "iam"}, "HERON_API_TOKEN"),
    ],
)
def test_a_wrong_variable_is_named(env: dict[str, str], names: str) -> None:
    with pytest.raises(WorkerConfigError, match=names):
        WorkerConfig.from_env(env)


class JsEnv:
    """Like the SDK's env: attributes; a missing one raises AttributeError."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def test_an_env_with_attributes_reads_like_the_workers_env() -> None:
    config = WorkerConfig.from_env(JsEnv(HERON_STORE="d1://DB", HERON_QUEUE="RESUME"))

    assert (config.store, config.queue) == ("d1://DB", "RESUME")


def test_a_binding_where_a_var_is_expected_is_refused() -> None:
    with pytest.raises(WorkerConfigError, match="HERON_STORE must be a text var"):
        WorkerConfig.from_env({"HERON_STORE": D1Binding()})


# -- the isolate: store, dispatcher, bindings ------------------------------------------------------


def test_a_missing_d1_binding_is_named_with_the_wrangler_lines_that_add_it() -> None:
    worker = HeronWorker(load_app())

    with pytest.raises(BindingMissing) as caught:
        worker.setup({"HERON_STORE": "d1://DB"})

    assert caught.value.binding == "DB"
    assert "HERON_STORE names the binding 'DB'" in str(caught.value)
    assert '[[d1_databases]] binding = "DB"' in str(caught.value)
    assert error_body(caught.value)["error"] == "BindingMissing"


def test_a_missing_queue_binding_is_named() -> None:
    worker = HeronWorker(load_app())

    with pytest.raises(BindingMissing, match=r"HERON_QUEUE names the binding 'RESUME'.*queues"):
        worker.setup({"HERON_STORE": "d1://DB", "DB": D1Binding(), "HERON_QUEUE": "RESUME"})


def test_a_queue_var_naming_another_kind_of_binding_is_refused() -> None:
    worker = HeronWorker(load_app())

    with pytest.raises(WorkerConfigError, match="'DB', which is not a queue producer"):
        worker.setup({"HERON_STORE": "d1://DB", "DB": D1Binding(), "HERON_QUEUE": "DB"})


def test_toml_numbers_and_booleans_in_vars_read_as_their_text() -> None:
    # wrangler.toml: [vars] HERON_SWEEP_PAGE = 50, HERON_TIME_BUDGET = 12.5, HERON_API_OPEN = false
    env = {"HERON_SWEEP_PAGE": 50, "HERON_TIME_BUDGET": 12.5, "HERON_API_OPEN": False}

    config = WorkerConfig.from_env(env)

    assert (config.sweep_page, config.time_budget) == (50, 12.5)
    assert config.api_env["HERON_API_OPEN"] == "0"


def test_a_text_var_named_like_the_binding_is_not_a_binding() -> None:
    worker = HeronWorker(load_app())

    with pytest.raises(BindingMissing, match="has a text var 'DB'"):
        worker.setup({"HERON_STORE": "d1://DB", "DB": "oops"})


def test_a_configuration_error_is_raised_at_every_event_until_fixed() -> None:
    worker = HeronWorker(load_app())
    for _ in range(2):
        with pytest.raises(BindingMissing):
            worker.setup({"HERON_STORE": "d1://DB"})

    rt = worker.setup({"HERON_STORE": "d1://DB", "DB": D1Binding()})

    assert type(rt.store).__name__ == "D1Store"


@pytest.mark.parametrize("url", [None, "sqlite:///heron.db", "redis://localhost", "kv+file:///x"])
def test_a_store_a_worker_cannot_reach_is_refused(url: str | None) -> None:
    env = {} if url is None else {"HERON_STORE": url}

    with pytest.raises(WorkerConfigError, match="HERON_STORE"):
        HeronWorker(load_app()).setup(env)


def test_http_stores_get_the_fetch_transport_and_their_secret() -> None:
    rt = HeronWorker(load_app()).setup(
        {"HERON_STORE": "libsql://db.example.turso.io", "TURSO_AUTH_TOKEN": "jwt"}
    )

    store: Any = rt.store
    assert type(store).__name__ == "LibSQLStore"
    assert type(store._transport).__name__ == "FetchTransport"
    assert store._token == "jwt"

    rt = HeronWorker(load_app()).setup(
        {"HERON_STORE": "kv+upstash://db.upstash.io", "UPSTASH_REDIS_REST_TOKEN": "tok"}
    )
    driver: Any = rt.store.driver  # type: ignore[attr-defined]
    assert type(driver._transport).__name__ == "FetchTransport"
    assert driver._token == "tok"


def test_an_app_that_pins_its_store_keeps_it(caplog: pytest.LogCaptureFixture) -> None:
    from heron.stores.memory import MemoryStore

    store = MemoryStore()
    rt = Runtime(store=store)
    caplog.set_level(logging.WARNING, logger="heron")

    configured = HeronWorker(rt).setup({"HERON_STORE": "d1://DB", "DB": D1Binding()})

    assert configured.store is store
    assert "pins its own store" in caplog.text


def test_the_app_can_be_named_by_heron_app(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    module = types.ModuleType("heron_edge_named_app")
    module.rt = Runtime()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)

    rt = HeronWorker().setup({"HERON_APP": f"{module.__name__}:rt", "HERON_STORE": "memory://"})

    assert rt is module.rt  # type: ignore[attr-defined]


def test_without_an_app_the_error_says_how_to_name_one() -> None:
    with pytest.raises(WorkerConfigError, match="HERON_APP"):
        HeronWorker().setup({"HERON_STORE": "memory://"})


# -- dispatch ------------------------------------------------------------------------------------


async def test_the_queue_dispatcher_sends_100_to_a_batch_with_a_capped_delay() -> None:
    queue = QueueDouble()
    dispatcher = QueueDispatcher(queue, name="RESUME")

    await dispatcher.dispatch([f"r-{i}" for i in range(250)])
    await dispatcher.dispatch(["soon"], delay=0.2)
    await dispatcher.dispatch(["much-later"], delay=10 * 86_400)

    assert len(queue.sent) == 252 and dispatcher.sent == 252
    assert queue.sent[0] == {"delaySeconds": 0, "body": {"run_id": "r-0"}}
    assert queue.sent[-2] == {"delaySeconds": 1, "body": {"run_id": "soon"}}  # rounded up
    assert queue.sent[-1]["delaySeconds"] == QUEUES_MAX_DELAY == 43_200


async def test_the_invocation_dispatcher_drops_timers_for_the_sweep() -> None:
    resumed: list[str] = []

    async def resume(run_id: str) -> None:
        resumed.append(run_id)

    dispatcher = InvocationDispatcher(resume)
    await dispatcher.dispatch(["now"])
    await dispatcher.dispatch(["later"], delay=5)
    await dispatcher.drain()

    assert resumed == ["now"]


async def test_without_a_queue_a_started_run_resumes_after_the_response() -> None:
    # given: no HERON_QUEUE: runs resume in the invocation, after the response (waitUntil)
    env: dict[str, Any] = {"HERON_STORE": "memory://", "HERON_API_TOKEN": TOKEN}
    env["RESUME"] = QueueDouble()  # (unused: the platform double wants one)
    worker = CPythonWorker(env)

    status, _ = await worker.fetch(
        "POST", "/workflows/order/runs", {"input": {"id": "x", "items": []}, "run_id": "x"}
    )

    assert status == 201
    assert isinstance(worker.worker.setup(env).dispatcher, InvocationDispatcher)
    _, run = await worker.fetch("GET", "/runs/x")
    assert run["status"] == "sleeping"  # quote and reserve ran; the timer is the sweep's now
    assert worker.queue.sent == []


# -- the queue handler -----------------------------------------------------------------------------


def worker_on_d1() -> tuple[HeronWorker, dict[str, Any]]:
    env: dict[str, Any] = {
        "HERON_STORE": "d1://DB",
        "DB": D1Binding(),
        "HERON_QUEUE": "RESUME",
        "RESUME": QueueDouble(),
    }
    return HeronWorker(load_app()), env


async def test_a_malformed_message_is_retried_and_a_deleted_run_is_acked() -> None:
    worker, env = worker_on_d1()
    queue: QueueDouble = env["RESUME"]
    await queue.sendBatch([{"body": {"nope": 1}}, {"body": {"run_id": "gone"}}])
    batch = Batch("heron-resume", [Message(queue, r) for r in queue.records])

    outcome = await worker.queue(batch, env)

    assert outcome == {"acked": [queue.records[1]["id"]], "retried": [queue.records[0]["id"]]}
    assert [r.get("outcome") for r in queue.records] == [("retry", 0), "ack"]


async def test_a_resume_that_raises_retries_its_message() -> None:
    worker, env = worker_on_d1()
    rt = worker.setup(env)
    run_id = await rt.start("order", {"id": "o", "items": []}, run_id="o")
    queue: QueueDouble = env["RESUME"]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("D1 is down")

    rt.resume = broken  # type: ignore[method-assign]
    batch = Batch("heron-resume", [Message(queue, r) for r in queue.records])

    outcome = await worker.queue(batch, env)

    assert outcome["retried"] == [r["id"] for r in queue.records] and run_id == "o"


async def test_the_sweep_sends_what_is_due_to_the_queue() -> None:
    worker, env = worker_on_d1()
    rt = worker.setup(env)
    for i in range(3):
        await rt.start("order", {"id": f"s{i}", "items": []}, run_id=f"s{i}")
    queue: QueueDouble = env["RESUME"]
    queue.sent.clear()

    dispatched = await worker.scheduled(env)

    assert dispatched == 3
    assert sorted(m["body"]["run_id"] for m in queue.sent) == ["s0", "s1", "s2"]


async def test_handlers_log_json_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    # given: the heron logger as the package leaves it (other tests may have configured it;
    # conftest's _heron_logging restores it afterwards)
    logging.getLogger("heron").handlers[:] = [logging.NullHandler()]
    worker, env = worker_on_d1()

    await worker.scheduled(env)

    lines = capsys.readouterr().err.strip().splitlines()
    assert any('"message": "sweep done"' in line and '"dispatched": 0' in line for line in lines)


# -- without a queue: the invocation's own resumes -------------------------------------------------


def slow_app(store: Any, steps: int) -> Runtime:
    """A runtime on ``store`` whose ``slow`` workflow runs ``steps`` steps of 50 ms each."""
    rt = Runtime(store=store)

    @rt.step(name="nap")
    async def nap(i: int) -> int:
        await asyncio.sleep(0.05)
        return i

    @rt.workflow("slow")
    async def slow(ctx: Context, _: None) -> int:
        for i in range(steps):
            await ctx.step(nap, i)
        return steps

    return rt


async def test_without_a_queue_resumes_keep_to_the_time_budget() -> None:
    # given: no queue, a budget of a tenth of a second, a run of twenty 50 ms steps
    rt = slow_app(MemoryStore(), steps=20)
    worker = HeronWorker(rt)
    env = {"HERON_TIME_BUDGET": "0.1"}
    worker.setup(env)
    await rt.start("slow", None, run_id="s-1")
    await rt.dispatcher.drain()

    # when: the cron sweep runs it in its own invocation
    await worker.scheduled(env)

    # then: it stopped starting steps when the budget ran out, to go on in the next invocation
    info = await rt.get("s-1")
    assert info.status == "pending", info.status
    assert 0 < len(info.steps) < 20


class FailingDue(MemoryStore):
    """A memory store whose second ``due`` call fails, as a store can in the middle of a sweep."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def due(self, now: float | None = None, limit: int = 100) -> list[str]:
        self.calls += 1
        if self.calls == 2:
            raise StoreError("D1_ERROR: Network connection lost.")
        return await super().due(now, limit)


async def test_a_sweep_that_fails_still_waits_for_the_resumes_it_started() -> None:
    # given: five due runs, a sweep page of two, and no queue
    store = FailingDue()
    rt = slow_app(store, steps=1)
    worker = HeronWorker(rt)
    env = {"HERON_SWEEP_PAGE": "2"}
    worker.setup(env)
    for i in range(5):
        assert await store.create(Run(id=f"r-{i}", workflow="slow", input="null", wake_at=0.0))

    # when: the store fails on the sweep's second page
    with pytest.raises(StoreError):
        await worker.scheduled(env)

    # then: the two runs of the first page were resumed to the end before the handler returned
    finished = [(await rt.get(f"r-{i}")).status for i in range(5)]
    assert finished.count("completed") == 2, finished
