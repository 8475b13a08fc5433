"""schemathesis against the API's own OpenAPI document: no generated request gets a 5xx.

Every operation, valid and invalid requests alike (schemathesis' positive and negative
generation), through the ASGI app on a memory store, with the bearer token; a waiting and a
failed run exist, so generated ids meet real runs now and then, missing ones mostly. Examples
per operation are bounded to keep this quick.
"""

from __future__ import annotations

import asyncio
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from heron.functions.asgi import ApiSettings, create_app
from heron.runtime import Context
from heron.runtime.testing import test_runtime

TOKEN = "schemathesis-token"

rt, clock = test_runtime()


@rt.workflow("order")
async def order(ctx: Context, request: Any) -> Any:
    await ctx.wait_for_signal("approved")
    return request


@rt.workflow("failing")
async def failing(ctx: Context, request: Any) -> Any:
    raise RuntimeError("fails on purpose")


async def _seed() -> None:
    await rt.start("order", {"id": "o-1"}, run_id="o-1")
    await rt.resume("o-1")
    await rt.start("failing", None, run_id="f-1")
    await rt.resume("f-1")


_seeded: list[bool] = []


def seed_once() -> None:
    """A waiting run ``o-1`` and a failed run ``f-1``, made before the first request."""
    if not _seeded:
        asyncio.run(_seed())
        _seeded.append(True)


app = create_app(rt, ApiSettings(token=TOKEN))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_request_gets_a_server_error(case: schemathesis.Case[Any]) -> None:
    seed_once()
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error]
    )
