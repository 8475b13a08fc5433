"""The workload every benchmark times: a sequential workflow of trivial steps.

``bench-seq`` runs ``n`` steps, each a trivial async function returning a small dict;
``bench-replay`` runs the same and one final step, for timing a resume that replays a
recorded history and runs one step live. One definition, so the figures of ``steps.py``,
``redis.py``, ``libsql.py`` and ``dynamodb.py`` measure the same thing.
"""

from __future__ import annotations

from typing import Any

from heron.runtime import Context, NoopDispatcher, Runtime
from heron.stores.contract import WorkflowStore


async def tiny(i: int) -> dict[str, Any]:
    """The step: trivial work, a small dict back."""
    return {"i": i, "ok": True, "tag": "bench"}


async def final() -> dict[str, Any]:
    return {"done": True}


def make_runtime(store: WorkflowStore) -> Runtime:
    """A runtime on ``store`` with the two benchmark workflows and no dispatcher."""
    rt = Runtime(store, dispatcher=NoopDispatcher())
    rt.step(tiny)
    rt.step(final)

    # (the annotated targets: mypy cannot infer Context.step's T from an async function alone)
    @rt.workflow("bench-seq")
    async def sequential(ctx: Context, n: int) -> int:
        for i in range(n):
            _: dict[str, Any] = await ctx.step(tiny, i)
        return n

    @rt.workflow("bench-replay")
    async def replay(ctx: Context, n: int) -> int:
        for i in range(n):
            _: dict[str, Any] = await ctx.step(tiny, i)
        _end: dict[str, Any] = await ctx.step(final)
        return n

    return rt
