"""Heron: durable workflows as plain async Python, for serverless and edge platforms.

```python
from heron import Context, RetryPolicy, Runtime, open_store

rt = Runtime(store=open_store("sqlite:///orders.db"))

@rt.step(retry=RetryPolicy(max_attempts=5))
async def charge(order_id: str) -> dict: ...

@rt.workflow("checkout")
async def checkout(ctx: Context, order: dict) -> dict:
    return await ctx.step(charge, order["id"])
```

This module is a facade: every name is imported on first use (PEP 562), so ``import heron``
costs next to nothing and a Lambda handler pays only for what it touches. The engine lives in
``heron.runtime``, the stores in ``heron.stores``, every way in (handlers, the HTTP API, the
CLI) in ``heron.functions``; ``heron.testing`` helps test workflows.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

__all__ = [
    "Checkpoint",
    "Clock",
    "Conflict",
    "Context",
    "DispatchError",
    "Dispatcher",
    "FatalError",
    "HeronError",
    "InProcessDispatcher",
    "MissingExtra",
    "NonDeterminismError",
    "NoopDispatcher",
    "PayloadTooLarge",
    "RetryPolicy",
    "Run",
    "RunInfo",
    "RunNotFound",
    "RunPage",
    "RunQuery",
    "RunSummary",
    "Runtime",
    "SchemaMissing",
    "SerializationError",
    "Signal",
    "StepFailed",
    "StepKey",
    "StoreError",
    "SystemClock",
    "TooManySignals",
    "Wait",
    "WorkflowFailed",
    "WorkflowNotFound",
    "WorkflowStore",
    "__version__",
    "open_store",
    "step_key",
]

#: Where each public name is defined (imported when the name is first used).
_STORE_NAMES = frozenset(
    {
        "Checkpoint",
        "MissingExtra",
        "Run",
        "RunPage",
        "RunQuery",
        "RunSummary",
        "Signal",
        "WorkflowStore",
        "open_store",
    }
)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports lazily
    from heron.runtime import (
        Clock,
        Conflict,
        Context,
        Dispatcher,
        DispatchError,
        FatalError,
        HeronError,
        InProcessDispatcher,
        NonDeterminismError,
        NoopDispatcher,
        PayloadTooLarge,
        RetryPolicy,
        RunInfo,
        RunNotFound,
        Runtime,
        SchemaMissing,
        SerializationError,
        StepFailed,
        StepKey,
        StoreError,
        SystemClock,
        TooManySignals,
        Wait,
        WorkflowFailed,
        WorkflowNotFound,
        step_key,
    )
    from heron.stores import (
        Checkpoint,
        MissingExtra,
        Run,
        RunPage,
        RunQuery,
        RunSummary,
        Signal,
        WorkflowStore,
        open_store,
    )


def __getattr__(name: str) -> Any:
    if name not in __all__ or name == "__version__":
        raise AttributeError(f"module 'heron' has no attribute {name!r}")
    module = "heron.stores" if name in _STORE_NAMES else "heron.runtime"
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
