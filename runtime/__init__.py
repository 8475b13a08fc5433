"""Heron's engine: durable workflows written as plain async Python.

```python
from heron import Context, RetryPolicy, Runtime

rt = Runtime()

@rt.step(retry=RetryPolicy(max_attempts=5))
async def charge(order_id: str) -> dict: ...

@rt.workflow("checkout")
async def checkout(ctx: Context, order: dict) -> dict:
    return await ctx.step(charge, order["id"])
```

The modules, from the bottom up: ``_errors`` (every error, the tree drawn), ``_clock``,
``_retry``, ``_serde`` (JSON in, typed values out), ``_state`` (the engine's part of a run
header), ``_registry`` (workflows and steps), ``_lease`` (the lease and every rule for
``wake_at``), ``_invocation`` (one replay: history, seq, ordered hand-back, blocking, commits),
``_operations`` (the durable operations on it), ``_context`` (what a workflow may call),
``_decide`` (what a run becomes: a pure function), ``_executor`` (one replay, start to end),
``_dispatch``, and ``_runtime`` (``Runtime``: the only module that uses them all).
"""

import logging

from heron.runtime._clock import Clock, SystemClock
from heron.runtime._context import Context, StepKey, step_key
from heron.runtime._dispatch import Dispatcher, DispatchError, InProcessDispatcher, NoopDispatcher
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
    TooManySignals,
    WorkflowFailed,
    WorkflowNotFound,
)
from heron.runtime._retry import RetryPolicy
from heron.runtime._runtime import (
    MAX_RUN_ID,
    RESERVED_PREFIX,
    RunInfo,
    Runtime,
    check_run_id,
    check_signal_name,
)
from heron.runtime._serde import MAX_DEPTH
from heron.runtime._state import Wait

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
    "MAX_DEPTH",
    "MAX_RUN_ID",
    "NonDeterminismError",
    "NoopDispatcher",
    "PayloadTooLarge",
    "RESERVED_PREFIX",
    "RetryPolicy",
    "RunInfo",
    "RunNotFound",
    "Runtime",
    "SchemaMissing",
    "SerializationError",
    "StepFailed",
    "StepKey",
    "StoreError",
    "SystemClock",
    "TooManySignals",
    "Wait",
    "WorkflowFailed",
    "WorkflowNotFound",
    "check_run_id",
    "check_signal_name",
    "step_key",
]
