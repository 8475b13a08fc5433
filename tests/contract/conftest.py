"""The store contract suite runs every test once per store in the one registry
(``tests/stores.py``; the fixtures ``store_kind``, ``backend``, ``store_factory`` and
``capabilities`` are in ``tests/conftest.py``).

``store``  the first instance of the store under test.
``peer``   a second instance on the same data: another executor.
"""

from __future__ import annotations

import pytest

from heron.stores.contract import WorkflowStore
from tests.conftest import StoreFactory
from tests.stores import ATOMIC_LEASE, SCHEMA, URL, Backend

__all__ = ["ATOMIC_LEASE", "SCHEMA", "URL", "Backend", "StoreFactory"]


@pytest.fixture
async def store(store_factory: StoreFactory) -> WorkflowStore:
    return await store_factory()


@pytest.fixture
async def peer(store_factory: StoreFactory, store: WorkflowStore) -> WorkflowStore:
    return await store_factory()
