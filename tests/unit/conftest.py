"""Fixtures for the engine's unit tests, which run on every store in the registry
(``tests/stores.py``): the engine's behaviour must not depend on where runs live.

``store``           a fresh store of the kind under test (``store_kind``)
``rt``/``clock``    a ``Runtime`` on it with a ``FakeClock`` and no background dispatch
                    (``heron.testing.test_runtime``): ``rt.wait`` and ``rt.resume`` drive the
                    runs, deterministically
``CountingStore``   (from ``heron.testing``) counts every store call
"""

from __future__ import annotations

import pytest

from heron.runtime import Runtime
from heron.stores.contract import WorkflowStore
from heron.testing import FakeClock, test_runtime
from tests.conftest import StoreFactory


@pytest.fixture
async def store(store_factory: StoreFactory) -> WorkflowStore:
    return await store_factory()


@pytest.fixture
def harness(store: WorkflowStore) -> tuple[Runtime, FakeClock]:
    return test_runtime(store)


@pytest.fixture
def rt(harness: tuple[Runtime, FakeClock]) -> Runtime:
    return harness[0]


@pytest.fixture
def clock(harness: tuple[Runtime, FakeClock]) -> FakeClock:
    return harness[1]
