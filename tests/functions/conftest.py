"""Fixtures for the Lambda handler tests.

``container``   a fresh Lambda container for ``heron.functions.api``/``sweep``/``resume``: the test
                app (``tests.functions.lambda_app:rt``) on a SQLite file in ``tmp_path``, the
                in-process dispatcher (no queue), the API's bearer token set; the container's
                loop and runtime are dropped before and after, as a new container would be.
``context``     a Lambda context object with a minute to go.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functions.kit import APP, TOKEN, LambdaContext
from tests.functions.lambda_app import BROKEN


@pytest.fixture
def container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from heron.functions import _lambda, asgi

    monkeypatch.setenv("HERON_APP", APP)
    monkeypatch.setenv("HERON_STORE", f"sqlite:///{tmp_path / 'heron.db'}")
    for name in ("HERON_QUEUE_URL", "HERON_SAFETY_MARGIN", BROKEN):
        monkeypatch.delenv(name, raising=False)
    saved = asgi.app.state.settings  # (monkeypatch cannot restore a State attribute)
    asgi.app.state.settings = asgi.ApiSettings(token=TOKEN)
    _lambda.reset()
    try:
        yield tmp_path
    finally:
        _lambda.reset()
        asgi.app.state.settings = saved


@pytest.fixture
def context() -> LambdaContext:
    return LambdaContext()
