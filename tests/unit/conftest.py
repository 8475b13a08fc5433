"""Fixtures for the engine's unit tests.

``rt``/``clock``/``store``  a ``Runtime`` on a ``MemoryStore`` with a ``FakeClock`` and no
                            background dispatch (``heron.testing.test_runtime``): ``rt.wait`` and
                            ``rt.resume`` drive the runs, deterministically.
``any_store``               a fresh store of each kind (memory, sqlite in ``tmp_path``, dynamodb: a
                            new table on the session's moto server).
``CountingStore``           (from ``heron.testing``) counts every store call.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from heron.runtime import Runtime
from heron.runtime.testing import FakeClock, test_runtime
from heron.stores.contract import WorkflowStore
from heron.stores.memory import MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def harness(store: MemoryStore) -> tuple[Runtime, FakeClock]:
    return test_runtime(store)


@pytest.fixture
def rt(harness: tuple[Runtime, FakeClock]) -> Runtime:
    return harness[0]


@pytest.fixture
def clock(harness: tuple[Runtime, FakeClock]) -> FakeClock:
    return harness[1]


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorkflowStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    store: WorkflowStore
    if request.param == "dynamodb":
        from heron.stores.dynamodb import DynamoDBStore

        endpoint = request.getfixturevalue("moto_endpoint")
        session = request.getfixturevalue("aws_session")
        table = f"heron-{uuid.uuid4().hex[:12]}"
        store = DynamoDBStore(table, region="us-east-1", endpoint_url=endpoint, session=session)
    else:
        from heron.stores.sqlite import SqliteStore

        store = SqliteStore(str(tmp_path / "heron.db"))
    try:
        yield store
    finally:
        await store.close()
