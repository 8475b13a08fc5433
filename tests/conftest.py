"""Fixtures shared by every test level.

Each level lives in its own directory (``unit/``, ``contract/``, ``functions/``, ``infra/``,
``e2e/``, ``reliability/``) with a ``conftest.py`` for what only it needs. The store fixtures,
parametrized over every backend, are in ``tests/contract/conftest.py``; fixtures that more than
one level needs move up to this file.

``moto_endpoint``  the URL of a moto server (DynamoDB, S3, ...) on a free 127.0.0.1 port,
                   started once per session on first use and reached over real HTTP. While it
                   runs, the AWS environment holds fake credentials and ``us-east-1`` (inherited
                   by the processes tests start) and never points at a real account.
``aws_session``    one ``aioboto3.Session`` for the session's stores: a store makes its clients
                   from it in a few milliseconds, where a fresh session loads the service
                   models again (about 80 ms a store).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

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
