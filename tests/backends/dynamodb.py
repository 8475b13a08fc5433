"""``DynamoDBStore`` on the session's moto server (``moto_endpoint`` in ``tests/conftest.py``),
over real HTTP, a fresh table per test (created on first use)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from heron.stores.contract import WorkflowStore
from tests.stores import ATOMIC_LEASE, SCHEMA, URL, Backend, StoreKind


@asynccontextmanager
async def setup(tmp_path: Path, moto_endpoint: str, aws_session: Any) -> AsyncIterator[Backend]:
    from heron.stores import open_store

    table = f"heron-{uuid.uuid4().hex[:12]}"
    url = f"dynamodb://{table}?region=us-east-1&endpoint_url={moto_endpoint}"

    async def open_(**options: Any) -> WorkflowStore:
        return open_store(url, session=aws_session, **options)

    yield Backend(open=open_, url=url)


KINDS = {
    "dynamodb": StoreKind(
        setup, frozenset({ATOMIC_LEASE, SCHEMA, URL}), fixtures=("moto_endpoint", "aws_session")
    )
}
