"""Fixtures shared by every test level.

Each level lives in its own directory (``unit/``, ``contract/``, ``functions/``, ``infra/``,
``e2e/``, ``reliability/``) with a ``conftest.py`` for what only it needs. The store fixtures
(``store_kind``, ``backend``, ``store_factory``, ``capabilities``), parametrized over every
store in the one registry (``tests/stores.py``), are here, so the contract, unit and reliability
suites share them; each store's module in ``tests/backends/`` is loaded as a plugin, for the
fixture that starts its server.

``moto_endpoint``  the URL of a moto server (DynamoDB, S3, ...) on a free 127.0.0.1 port,
                   started once per session on first use and reached over real HTTP. While it
                   runs, the AWS environment holds fake credentials and ``us-east-1`` (inherited
                   by the processes tests start) and never points at a real account.
``aws_session``    one ``aioboto3.Session`` for the session's stores: a store makes its clients
                   from it in a few milliseconds, where a fresh session loads the service
                   models again (about 80 ms a store).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from heron.stores.contract import WorkflowStore
from tests.stores import CAPABILITIES, Backend, backend_modules, stores

pytest_plugins = backend_modules()

StoreFactory = Callable[..., Awaitable[WorkflowStore]]

#: The AWS environment of the tests: fake credentials, one region, no profile, no IMDS.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/heron-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/heron-tests/aws-credentials",
}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from tests.moto_server import MotoServer

    env = pytest.MonkeyPatch()
    for name, value in AWS_TEST_ENV.items():
        env.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        env.delenv(name, raising=False)
    server = MotoServer()
    server.start()
    try:
        yield server.endpoint
    finally:
        server.stop()
        env.undo()


@pytest.fixture(scope="session")
def aws_session(moto_endpoint: str) -> Any:
    import aioboto3

    return aioboto3.Session()


# -- the stores under test ---------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stores",
        default=None,
        help="comma-separated store kinds to run the store-parametrized tests on (default: "
        "every store in tests/stores.py); for a quick local loop, e.g. --stores=memory,sqlite",
    )


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
    unknown = needed - CAPABILITIES
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown capability {unknown}")
    chosen = metafunc.config.getoption("--stores")
    only = set(chosen.split(",")) if chosen else None
    if only is not None and not only <= set(stores()):
        raise pytest.UsageError(f"--stores: unknown store kinds {sorted(only - set(stores()))}")
    names = [
        name
        for name, kind in stores().items()
        if needed <= kind.capabilities and (only is None or name in only)
    ]
    metafunc.parametrize("store_kind", names, ids=names, indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def capabilities(store_kind: str) -> frozenset[str]:
    return stores()[store_kind].capabilities


@pytest.fixture
async def backend(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Backend]:
    kind = stores()[store_kind]
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
