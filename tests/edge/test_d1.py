"""What only ``D1Store`` does (the contract, engine and reliability suites run on it through the
registry: ``pytest --stores=d1``): its URL, its binding, one D1 call per operation, the values D1
refuses, its errors, the schema as a script. The binding is the D1 DOUBLE of
``tests/backends/d1.py``."""

from __future__ import annotations

from typing import Any

import pytest

from heron.stores import open_store
from heron.stores._http import FetchTransport
from heron.stores.contract import Checkpoint, Conflict, Run, SchemaMissing, Signal, StoreError
from heron.stores.d1 import D1Store, schema_sql
from tests.backends.d1 import D1Binding
from tests.edge.d1_engine import D1Error, Engine


def test_the_url_names_the_binding_and_takes_auto_schema() -> None:
    binding = D1Binding()

    store = open_store("d1://HERON_DB?auto_schema=false", binding=binding)

    assert isinstance(store, D1Store)
    assert (store.binding_name, store.auto_schema, repr(store)) == (
        "HERON_DB",
        False,
        "D1Store('HERON_DB')",
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("d1://", "names no binding"),
        ("d1://my-db", "not a Worker binding name"),
        ("d1://DB?region=eu", "unknown d1 URL option 'region'"),
        ("d1://DB?auto_schema=maybe", "not a boolean"),
    ],
)
def test_a_bad_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url, binding=D1Binding())


def test_outside_a_worker_there_is_no_binding_to_find() -> None:
    with pytest.raises(
        ValueError, match=r"needs the D1 binding: pass binding= \(a Worker's env.DB"
    ):
        open_store("d1://DB")


async def test_every_operation_is_one_d1_call() -> None:
    binding = D1Binding()
    store = D1Store("DB", binding=binding)
    await store.ensure_schema()
    run = Run(id="r", workflow="w", tags=["t"])

    calls = []
    for operation in (
        lambda: store.create(run),
        lambda: store.acquire("r", "token", 30),
        lambda: store.append("r", Checkpoint(seq=0, kind="step", name="s", value=1)),
        lambda: store.signal("r", Signal(id="s1", name="go", payload=None)),
        lambda: store.load("r"),
        lambda: store.release("r", "token"),
        lambda: store.due(1e12, 10),
    ):
        before = binding.calls
        await operation()
        calls.append(binding.calls - before)

    assert calls == [1, 1, 1, 1, 1, 1, 1]


async def test_a_store_checks_the_schema_once_then_goes_straight_to_work() -> None:
    binding = D1Binding()
    store = D1Store("DB", binding=binding)

    await store.create(Run(id="r", workflow="w"))  # schema check (2 reads) + create (1 batch)
    first = binding.calls
    await store.create(Run(id="r2", workflow="w"))

    assert (first, binding.calls - first) == (4, 1)


async def test_an_integer_d1_cannot_hold_is_refused_before_anything_is_sent() -> None:
    binding = D1Binding()
    store = D1Store("DB", binding=binding)
    await store.ensure_schema()
    before = binding.calls

    with pytest.raises(StoreError, match=r"beyond 2\*\*53.*nothing was sent"):
        await store.due(2**60, 10)  # type: ignore[arg-type]

    assert binding.calls == before


async def test_a_lost_race_is_a_conflict_naming_the_binding() -> None:
    store = D1Store("DB", binding=D1Binding())
    await store.create(Run(id="r", workflow="w"))
    await store.append("r", Checkpoint(seq=0, kind="step", name="s", value=1))

    with pytest.raises(Conflict, match="already has seq 0"):
        await store.append("r", Checkpoint(seq=0, kind="step", name="s", value=2))


class FailingBinding(D1Binding):
    """A binding whose calls fail the way a lost connection to D1 does."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        self.fail = False

    async def batch(self, statements: list[Any]) -> list[dict[str, Any]]:
        if self.fail:
            raise RuntimeError(self.message)
        return await super().batch(statements)


async def test_a_failed_call_says_the_write_outcome_is_unknown() -> None:
    binding = FailingBinding("D1_ERROR: Network connection lost.")
    store = D1Store("DB", binding=binding)
    await store.create(Run(id="r", workflow="w"))
    loaded = await store.load("r")
    assert loaded is not None
    binding.fail = True

    with pytest.raises(StoreError) as caught:
        await store.save(loaded.run)

    message = str(caught.value)
    assert "D1 database (binding DB), save of run 'r'" in message
    assert "the outcome of this write is unknown" in message
    assert caught.value.run_id == "r"


async def test_without_auto_schema_a_missing_schema_is_named() -> None:
    store = D1Store("DB", binding=D1Binding(), auto_schema=False)

    with pytest.raises(SchemaMissing, match="D1 database \\(binding DB\\)"):
        await store.load("r")


async def test_the_schema_script_makes_a_database_the_store_accepts() -> None:
    # given: the script wrangler would run (wrangler d1 execute DB --file=schema.sql)
    engine = Engine()
    script = schema_sql()
    assert "PRAGMA" not in script and "BEGIN" not in script
    engine.batch([(statement, []) for statement in script.strip().splitlines()])

    # then: a store that may not create anything finds it complete
    store = D1Store("DB", binding=D1Binding(engine), auto_schema=False)
    await store.create(Run(id="r", workflow="w"))
    assert await store.load("r") is not None


def test_the_double_refuses_what_d1_refuses() -> None:
    engine = Engine()

    for sql in ("BEGIN", "PRAGMA user_version = 2", "SAVEPOINT x"):
        with pytest.raises(D1Error, match="SQLITE_AUTH"):
            engine.run(sql, [])
    with pytest.raises(D1Error, match="D1_TYPE_ERROR"):
        engine.run("SELECT ?1", [2**60])
    with pytest.raises(D1Error, match="duplicate column names"):
        engine.run("SELECT 1 AS a, 2 AS a", [])


def test_an_http_store_with_a_transport_needs_no_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from heron.stores import MissingExtra

    real = importlib.util.find_spec

    def without_httpx(name: str, *args: Any) -> Any:
        return None if name == "httpx" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_httpx)

    store = open_store("libsql://db.example.turso.io", transport=FetchTransport())
    assert type(store).__name__ == "LibSQLStore"
    with pytest.raises(MissingExtra):
        open_store("libsql://db.example.turso.io")


def test_the_fetch_transport_imports_nothing_of_pyodide_until_used() -> None:
    import sys

    transport = FetchTransport(timeout=5)

    assert repr(transport) == "FetchTransport(timeout=5)"
    assert "js" not in sys.modules and "pyodide" not in sys.modules
