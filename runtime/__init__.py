"""Heron's engine: durable workflows written as plain async Python.

```python
from heron.runtime import Runtime, Context, RetryPolicy

rt = Runtime()

@rt.step(retry=RetryPolicy(max_attempts=5))
async def charge(order_id: str) -> dict: ...

@rt.workflow("checkout")
async def checkout(ctx: Context, order: dict) -> dict:
    return await ctx.step(charge, order["id"])
```
"""

import logging

from heron.runtime._clock import Clock, SystemClock
from heron.runtime._context import Context, StepKey, step_key
from heron.runtime._dispatch import (
    Dispatcher,
    DispatchError,
    InProcessDispatcher,
    NoopDispatcher,
    SQSDispatcher,
    dispatcher_from_env,
)
from heron.runtime._errors import (
    Conflict,
    FatalError,
    HeronError,
    NonDeterminismError,
    PayloadTooLarge,
    RunNotFound,
    SchemaMissing,
    SerializationError,
    StepFailed,
    StoreError,
    WorkflowFailed,
    WorkflowNotFound,
)
from heron.runtime._retry import RetryPolicy
from heron.runtime._runtime import RunInfo, Runtime

# A library logs, the application decides where to: nothing reaches stderr unless configured.
logging.getLogger("heron").addHandler(logging.NullHandler())

__all__ = [
    "Clock",
    "Conflict",
    "Context",
    "DispatchError",
    "Dispatcher",
    "FatalError",
    "HeronError",
    "InProcessDispatcher",
    "NonDeterminismError",
    "NoopDispatcher",
    "PayloadTooLarge",
    "RetryPolicy",
    "RunInfo",
    "RunNotFound",
    "Runtime",
    "SQSDispatcher",
    "SchemaMissing",
    "SerializationError",
    "StepFailed",
    "StepKey",
    "StoreError",
    "SystemClock",
    "WorkflowFailed",
    "WorkflowNotFound",
    "dispatcher_from_env",
    "step_key",
]
