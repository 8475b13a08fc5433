"""Workflows the Lambda handler tests and the end-to-end test run (``HERON_APP`` names ``rt``).

The runtime is built the way a deployed app builds it, ``Runtime()``: the store comes from
``HERON_STORE`` and the dispatcher from ``HERON_QUEUE_URL`` (SQS) or in process.
"""

from __future__ import annotations

import os
from typing import Any

from heron.runtime import Context, FatalError, Runtime

rt = Runtime(lease_ttl=10.0)

#: Set to make ``fragile`` fail after its first step (outside any checkpoint), to retry it.
BROKEN = "HERON_TEST_BROKEN"


@rt.step
async def greet(name: str) -> str:
    return f"hello {name}"


@rt.step(name="charge")
async def charge(order_id: str) -> dict[str, Any]:
    return {"charge": f"ch_{order_id}"}


@rt.step
async def refuse(reason: str) -> None:
    raise FatalError(reason)


@rt.workflow("greet")
async def greet_flow(ctx: Context, name: str) -> dict[str, Any]:
    text = await ctx.step(greet, name)
    reply = await ctx.wait_for_signal("reply")
    return {"text": text, "reply": reply}


@rt.workflow("nap")
async def nap(ctx: Context, seconds: float) -> str:
    await ctx.sleep(seconds)
    return "rested"


@rt.workflow("order")
async def order(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    """The end-to-end workflow: a step, a real sleep, a signal, a step."""
    payment = await ctx.step(charge, request["id"])
    await ctx.sleep(float(request.get("sleep", 1.0)))
    approval = await ctx.wait_for_signal("approved", timeout=600)
    label = await ctx.step(greet, approval["by"])
    return {"order": request["id"], "payment": payment, "label": label}


@rt.workflow("doomed")
async def doomed(ctx: Context, reason: str) -> None:
    await ctx.step(refuse, reason)


@rt.workflow("fragile")
async def fragile(ctx: Context, name: str) -> str:
    text: str = await ctx.step(greet, name)
    if os.environ.get(BROKEN):
        raise RuntimeError("the fragile workflow is broken")
    return text
