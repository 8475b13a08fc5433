"""The store contract suite runs every test once per store in :data:`STORES`.

Fixtures:

``store_factory``  an async callable; each call opens one more instance on the same data (the
                   same file, server or table), so two instances are two executors and races
                   between them are real. Keyword options go to the store (``auto_schema=False``).
``store``          the first instance.
``peer``           a second instance on the same data: another executor.
``backend``        the :class:`Backend` of this test (its ``url`` for other processes).
``capabilities``   what the store under test can do (see the constants below).

A test that only applies to some stores asks for their capabilities with
``@pytest.mark.stores(SCHEMA)``: it is generated only for the stores that have them, never
generated-and-skipped (a skipped test counts as a defect in CI).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from heron.stores.contract import WorkflowStore

# =============================================================================================
# THE STORES UNDER TEST. To check a new backend (DynamoDB on a moto server, Redis on a
# redis-server, libSQL on a file), write a setup below and add ONE entry to STORES: every test in
# tests/contract/ then runs against it too. A setup is an async context manager that, for one
# test, prepares fresh, empty data (a file in tmp_path, a new table, a new key prefix or database
# number) and yields a Backend; a server shared by many tests is started once per session, by a
# session fixture the entry names in `fixtures` (DynamoDB: `moto_endpoint` in tests/conftest.py)
# or by the setup itself. Import the backend's module inside the setup, so one missing driver
# fails only its own tests.
# =============================================================================================

#: The store has a schema: it honours ``auto_schema=False`` and ``ensure_schema()``.
SCHEMA = "schema"
#: ``Backend.url`` opens the same data, through ``heron.stores.open_store``, from any process.
URL = "url"
#: The lease is atomic (``WorkflowStore.atomic_lease``): racing acquires have one winner.
ATOMIC_LEASE = "atomic_lease"


@dataclass(frozen=True)
class Backend:
    """One backend, set up for one test."""

    #: Opens an instance on this test's data; keyword options go to the store's constructor.
    open: Callable[..., Awaitable[WorkflowStore]]
    #: The URL another process passes to ``open_store`` to reach the same data (``URL`` stores).
    url: str | None = None


@dataclass(frozen=True)
class StoreKind:
    #: ``setup(tmp_path, **fixtures)``: the fixtures named in ``fixtures`` come as keywords.
    setup: Callable[..., AbstractAsyncContextManager[Backend]]
    capabilities: frozenset[str] = field(default_factory=frozenset)
    #: Session fixtures the setup needs, such as a server (``moto_endpoint``).
    fixtures: tuple[str, ...] = ()


@asynccontextmanager
async def _memory(tmp_path: Path) -> AsyncIterator[Backend]:
    from heron.stores.memory import MemoryStore

    store = MemoryStore()

    async def open_(**options: Any) -> WorkflowStore:
        return store  # one process, one instance: every "executor" shares it

    yield Backend(open=open_)


@asynccontextmanager
async def _sqlite(tmp_path: Path) -> AsyncIterator[Backend]:
    from heron.stores.sqlite import SqliteStore

    path = tmp_path / "heron.db"

    async def open_(**options: Any) -> WorkflowStore:
        return SqliteStore(str(path), **options)

    yield Backend(open=open_, url=f"sqlite:///{path}")  # absolute: sqlite:////tmp/...


@asynccontextmanager
async def _dynamodb(tmp_path: Path, moto_endpoint: str, aws_session: Any) -> AsyncIterator[Backend]:
    """A fresh table per test (created on first use) on the session's moto server, over HTTP."""
    from heron.stores import open_store

    table = f"heron-{uuid.uuid4().hex[:12]}"
    url = f"dynamodb://{table}?region=us-east-1&endpoint_url={moto_endpoint}"

    async def open_(**options: Any) -> WorkflowStore:
        return open_store(url, session=aws_session, **options)

    yield Backend(open=open_, url=url)


STORES: dict[str, StoreKind] = {
    "memory": StoreKind(_memory, frozenset({ATOMIC_LEASE})),
    "sqlite": StoreKind(_sqlite, frozenset({ATOMIC_LEASE, SCHEMA, URL})),
    "dynamodb": StoreKind(
        _dynamodb, frozenset({ATOMIC_LEASE, SCHEMA, URL}), fixtures=("moto_endpoint", "aws_session")
    ),
}

# =============================================================================================

StoreFactory = Callable[..., Awaitable[WorkflowStore]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stores(*capabilities): run only against the stores that have them"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" not in metafunc.fixturenames:
        return
    needed: set[str] = set()
    for marker in metafunc.definition.iter_markers("stores"):
        needed.update(marker.args)
    unknown = needed - {SCHEMA, URL, ATOMIC_LEASE}
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown capability {unknown}")
    names = [name for name, kind in STORES.items() if needed <= kind.capabilities]
    metafunc.parametrize("store_kind", names, ids=names, indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def capabilities(store_kind: str) -> frozenset[str]:
    return STORES[store_kind].capabilities


@pytest.fixture
async def backend(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Backend]:
    kind = STORES[store_kind]
    fixtures = {name: request.getfixturevalue(name) for name in kind.fixtures}
    async with kind.setup(tmp_path, **fixtures) as backend:
        yield backend


@pytest.fixture
async def store_factory(backend: Backend) -> AsyncIterator[StoreFactory]:
    opened: list[WorkflowStore] = []

    async def open_store(**options: Any) -> WorkflowStore:
        store = await backend.open(**options)
        if all(store is not seen for seen in opened):
            opened.append(store)
        return store

    try:
        yield open_store
    finally:
        for store in reversed(opened):
            await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> WorkflowStore:
    return await store_factory()


@pytest.fixture
async def peer(store_factory: StoreFactory, store: WorkflowStore) -> WorkflowStore:
    return await store_factory()
