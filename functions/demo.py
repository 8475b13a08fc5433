"""An order, from payment to invoice: the example the README, the docs and ``heron demo`` quote.

The ``order`` workflow uses every durable operation Heron has::

    order ─► charge (fails once, retried) ─► sleep 1 s ─► wait for "approved"
          ─► pack every item (in parallel) ─► child workflow "invoice" ─► summary

Run it with ``heron demo``, or by hand (``HERON_APP`` defaults to ``heron.functions.demo:rt``)::

    heron start order '{"id": "o-1", "items": [{"sku": "mug", "qty": 2}], "total": 1800}' \\
        --run-id o-1                               # charges, then sleeps
    heron signal o-1 approved '{"by": "ops"}'      # buffered while the run sleeps
    heron sweep                                    # a second later: wakes it, it finishes
    heron inspect o-1                              # the timeline

The workflow functions only decide what happens next, so they replay the same way every time;
everything that touches the world is a step, which runs once and is checkpointed.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from heron.runtime import Context, RetryPolicy, Runtime, StepFailed, step_key

__all__ = [
    "APPROVAL_TIMEOUT",
    "Item",
    "Order",
    "PaymentGatewayTimeout",
    "charge",
    "invoice",
    "pack",
    "place_order",
    "refund",
    "render_invoice",
    "rt",
]

#: The store comes from ``HERON_STORE`` (default ``sqlite:///.heron/heron.db``), opened on first
#: use, so importing this module touches nothing.
rt = Runtime()

#: How long an order waits for a person to approve it before it is refunded.
APPROVAL_TIMEOUT = 24 * 3600.0


class Item(TypedDict):
    sku: str
    qty: int


class Order(TypedDict):
    id: str
    items: list[Item]
    total: int  # cents


class PaymentGatewayTimeout(ConnectionError):
    """The payment provider did not answer in time: transient, so the step is retried."""


# -- steps: the only code that talks to the world -------------------------------------------------


@rt.step(retry=RetryPolicy(max_attempts=3, initial_delay=0.2))
async def charge(order_id: str, cents: int) -> dict[str, Any]:
    """Charge the customer. The first attempt of every run times out, to show a retry.

    ``str(step_key())`` is ``"<run id>:<seq>"``, the same on every attempt: it is what a real
    payment API takes as its idempotency key, so a retried charge is never charged twice.
    """
    key = step_key()
    if key.attempt == 1:
        raise PaymentGatewayTimeout(f"payment gateway timed out charging order {order_id!r}")
    return {"charge_id": f"ch_{key}", "amount": cents, "attempts": key.attempt}


@rt.step
async def refund(charge_id: str, cents: int) -> dict[str, Any]:
    """Give the money back (an order that nobody approved)."""
    return {"refund_id": f"re_{charge_id}", "amount": cents}


@rt.step
def pack(item: Item) -> str:
    """Pack one item and return its shipping label (a plain function runs in a thread)."""
    return f"{item['sku']}x{item['qty']}"


@rt.step
async def render_invoice(order_id: str, cents: int) -> dict[str, Any]:
    """Render the invoice document."""
    number = f"INV-{order_id.upper()}"
    return {"number": number, "total": f"{cents / 100:.2f}", "url": f"/invoices/{number}.pdf"}


# -- workflows: plain async functions that decide what happens next -------------------------------


@rt.workflow("invoice", version="1")
async def invoice(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    """A child workflow: run by ``ctx.child("invoice", ...)`` with its own timeline."""
    document: dict[str, Any] = await ctx.step(render_invoice, request["order"], request["total"])
    return {**document, "issued_at": ctx.now().isoformat()}


@rt.workflow("order", version="1")
async def place_order(ctx: Context, order: Order) -> dict[str, Any]:
    """Charge, hold for a second, wait for approval, pack in parallel, invoice."""
    try:
        payment: dict[str, Any] = await ctx.step(charge, order["id"], order["total"])
    except StepFailed as failed:  # every retry failed: the order ends here, as a result
        return {"order": order["id"], "status": "payment_failed", "reason": failed.error_message}

    await ctx.sleep(1)  # a durable timer: long ones end the invocation and wake it up later

    try:
        approval = await ctx.wait_for_signal("approved", timeout=APPROVAL_TIMEOUT)
    except TimeoutError:
        receipt: dict[str, Any] = await ctx.step(refund, payment["charge_id"], order["total"])
        return {"order": order["id"], "status": "refunded", "refund": receipt["refund_id"]}

    labels = await asyncio.gather(*(ctx.step(pack, item) for item in order["items"]))
    document = await ctx.child("invoice", {"order": order["id"], "total": order["total"]})
    return {
        "order": order["id"],
        "status": "shipped",
        "charge": payment["charge_id"],
        "approved_by": approval.get("by") if isinstance(approval, dict) else approval,
        "labels": list(labels),
        "invoice": document["number"],
    }
