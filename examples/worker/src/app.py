"""The example's workflows: plain Heron, nothing in it knows it runs on Cloudflare.

The same module runs on a laptop (``heron dev``), on AWS Lambda (``HERON_APP=app:rt``) and in a
Cloudflare Python Worker (``worker.py`` beside it); ``tests/edge/`` runs it on CPython and on
Pyodide and checks that the runs end the same.
"""

from __future__ import annotations

from typing import Any

from heron import Context, Runtime, step_key

rt = Runtime()

PRICES = {"book": 1200, "pen": 150}


@rt.step
def quote(items: list[str]) -> int:
    """A plain (sync) function: a worker thread on CPython, run inline on Pyodide."""
    return sum(PRICES.get(item, 500) for item in items)


@rt.step
async def reserve(order_id: str, cents: int) -> dict[str, Any]:
    """An async step; ``step_key()`` is the idempotency key to hand a payment API."""
    return {"order": order_id, "cents": cents, "key": str(step_key())}


@rt.workflow("order")
async def order(ctx: Context, order: dict[str, Any]) -> dict[str, Any]:
    cents = await ctx.step(quote, order["items"])
    reservation = await ctx.step(reserve, order["id"], cents)
    await ctx.sleep(1)  # a timer: on Workers, a delayed queue message wakes the run
    approval = await ctx.wait_for_signal("approved", timeout=3600)
    return {
        "order": order["id"],
        "cents": cents,
        "reservation": reservation,
        "approved_by": approval["by"],
    }
