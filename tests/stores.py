"""The one registry of test stores: the contract, engine (unit) and reliability suites all run
against every store listed here, and a new store gets all of them by being added once.

Each store lives in a module of ``tests/backends/`` that defines ``KINDS`` (name -> StoreKind)
and, where it needs one, the session fixture that starts its server (the root ``conftest.py``
loads every module there as a plugin). A setup is an async context manager that, for one test,
prepares fresh, empty data (a file in ``tmp_path``, a new table, a new key prefix, a new
database) and yields a :class:`Backend`. Import the backend's module inside the setup, so one
missing driver fails only its own tests.

Fixtures (``tests/conftest.py``):

``store_kind``     the name of the store under test; tests that ask for it (through the fixtures
                   below) are generated once per store
``backend``        the :class:`Backend` of this test (its ``url`` for other processes)
``store_factory``  an async callable; each call opens one more instance on the same data, so
                   two instances are two executors and races between them are real
``capabilities``   what the store under test can do (the constants below)

A test that only applies to some stores asks for their capabilities with
``@pytest.mark.stores(URL)``: it is generated only for the stores that have them, never
generated-and-skipped (a skipped test counts as a defect in CI).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from heron.stores.contract import WorkflowStore

#: The store has a schema: it honours ``auto_schema=False`` and ``ensure_schema()``.
SCHEMA = "schema"
#: ``Backend.url`` opens the same data, through ``heron.stores.open_store``, from any process.
URL = "url"
#: The lease is atomic (``WorkflowStore.atomic_lease``): racing acquires have one winner.
ATOMIC_LEASE = "atomic_lease"
CAPABILITIES = frozenset({SCHEMA, URL, ATOMIC_LEASE})


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


def backend_modules() -> list[str]:
    """The modules of ``tests/backends/``, by name."""
    from tests import backends

    return sorted(f"tests.backends.{m.name}" for m in pkgutil.iter_modules(backends.__path__))


@functools.cache
def stores() -> dict[str, StoreKind]:
    """Every store under test, by name, ``memory`` (the reference) first. Collected on first
    use, after pytest has loaded ``tests/backends/`` as plugins (with assertion rewriting)."""
    kinds: dict[str, StoreKind] = {}
    for name in backend_modules():
        for kind_name, kind in getattr(importlib.import_module(name), "KINDS", {}).items():
            unknown = kind.capabilities - CAPABILITIES
            if unknown or kind_name in kinds:
                raise RuntimeError(f"{name}: store {kind_name!r} is a duplicate or has {unknown}")
            kinds[kind_name] = kind
    # the reference first: a failure there says the contract suite itself is wrong
    return dict(sorted(kinds.items(), key=lambda item: item[0] != "memory"))
