# examples/shop.py (python examples/shop.py runs it)
import asyncio

from heron import Context, RetryPolicy, Runtime, open_store, step_key

rt = Runtime(store=open_store("sqlite:///shop.db"))


@rt.step(retry=RetryPolicy(max_attempts=5, initial_delay=1.0))
async def charge(order_id: str, cents: int) -> dict:
    # str(step_key()) is the same for every retry of this step: an idempotency key
    return {"charge": f"ch_{order_id}", "key": str(step_key())}


@rt.step
def pack(sku: str) -> str:               # sync steps run in a thread
    return f"label-{sku}"


@rt.workflow("checkout")
async def checkout(ctx: Context, order: dict) -> dict:
    payment = await ctx.step(charge, order["id"], order["total"])
    await ctx.sleep(2)                        # durable: a long sleep ends the invocation
    approval = await ctx.wait_for_signal("approved", timeout=86400)
    labels = await asyncio.gather(*(ctx.step(pack, sku) for sku in order["items"]))
    return {"payment": payment, "approved_by": approval["by"], "labels": labels}


async def main() -> None:
    run_id = await rt.start("checkout", {"id": "o-1", "total": 1800, "items": ["mug", "tee"]},
                            run_id="o-1")                # idempotent on run_id
    await rt.signal(run_id, "approved", {"by": "ops"})   # buffered until the run waits for it
    print(await rt.wait(run_id, timeout=30))             # drives the run in this process
    for cp in (await rt.get(run_id)).steps:              # the timeline
        print(cp.seq, cp.kind, cp.name, cp.value)


if __name__ == "__main__":
    asyncio.run(main())
