"""Heron's public errors and the engine's private control flow.

::

    HeronError
     ├── StoreError (heron.stores.contract)  a store failed; carries the run id
     │    ├── Conflict                       a create-only/conditional write lost a race
     │    └── SchemaMissing                  no schema and auto_schema is off
     ├── FatalError                          raised by a step: never retried
     ├── StepFailed                          raised into a workflow when a step gives up
     ├── NonDeterminismError                 code no longer matches a run's recorded history
     ├── WorkflowNotFound                    no workflow registered under that name
     ├── RunNotFound                         no run with that id
     ├── PayloadTooLarge                     a value is over the store's size limit
     ├── SerializationError                  a value is not JSON-serializable
     └── WorkflowFailed                      a run ended failed or cancelled (``Runtime.wait``)

    BaseException
     └── Suspend (private)                   unwinds a workflow that has to stop for now;
                                             a BaseException so ``except Exception`` cannot eat it

Messages name the run id, and the step name and seq where there is one.
"""

from __future__ import annotations

from typing import Any

from heron.stores.contract import Conflict, HeronError, PayloadTooLarge, SchemaMissing, StoreError

__all__ = [
    "Conflict",
    "FatalError",
    "HeronError",
    "NonDeterminismError",
    "PayloadTooLarge",
    "RunNotFound",
    "SchemaMissing",
    "SerializationError",
    "StepFailed",
    "StoreError",
    "WorkflowFailed",
    "WorkflowNotFound",
]


class FatalError(HeronError):
    """Raise from a step to fail it at once, without retries."""


class StepFailed(HeronError):
    """A step failed for good: it raised ``FatalError`` or ran out of retries.

    ``error_type`` and ``error_message`` carry the original exception's type name and message,
    also when the failure is replayed from history in a later invocation.
    """

    def __init__(
        self,
        step: str,
        error_type: str,
        error_message: str,
        *,
        run_id: str | None = None,
        seq: int | None = None,
        attempts: int = 1,
    ) -> None:
        where = f" (run {run_id!r}, seq {seq})" if run_id is not None else ""
        tries = f"{attempts} attempt(s)"
        super().__init__(
            f"step {step!r}{where} failed after {tries}: {error_type}: {error_message}"
        )
        self.step = step
        self.error_type = error_type
        self.error_message = error_message
        self.run_id = run_id
        self.seq = seq
        self.attempts = attempts


class NonDeterminismError(HeronError):
    """The workflow code no longer replays its recorded history (a step moved or renamed)."""


class WorkflowNotFound(HeronError, LookupError):
    """No workflow is registered under the name asked for."""


class RunNotFound(HeronError, LookupError):
    """No run has the id asked for."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found")
        self.run_id = run_id


class SerializationError(HeronError, TypeError):
    """A value crossing a step or workflow boundary is not JSON-serializable."""


class WorkflowFailed(HeronError):
    """A run ended without completing. ``status`` is ``failed`` or ``cancelled``."""

    def __init__(self, run_id: str, status: str, error: dict[str, Any] | None) -> None:
        detail = f": {error.get('type')}: {error.get('message')}" if error else ""
        super().__init__(f"run {run_id!r} {status}{detail}")
        self.run_id = run_id
        self.status = status
        self.error = error


class Suspend(BaseException):  # noqa: N818 - control flow, not an error
    """Unwinds the workflow function when the run has to stop for now (private)."""


def describe(exc: BaseException) -> dict[str, Any]:
    """The JSON form of an error that a run or checkpoint records."""
    if isinstance(exc, StepFailed):
        return {
            "type": "StepFailed",
            "message": str(exc),
            "step": exc.step,
            "cause": exc.error_type,
        }
    return {"type": type(exc).__name__, "message": str(exc)}
