"""Heron's public errors, the engine's private control flow, and the error records a run keeps.

::

    HeronError                                (heron.stores.contract: the bottom layer)
     ├── StoreError (heron.stores.contract)   a store failed; carries the run id
     │    ├── Conflict                        a create-only or conditional write lost a race
     │    ├── SchemaMissing                   no schema and auto_schema is off
     │    └── TooManySignals                  a run holds the most unconsumed signals it may
     ├── PayloadTooLarge (contract)           a value over the runtime's or the store's limit
     ├── FatalError                           raised by a step: never retried
     ├── StepFailed                           raised into a workflow when a step gives up
     ├── NonDeterminismError                  code no longer matches a run's recorded history
     ├── WorkflowNotFound                     no workflow registered under that name
     ├── RunNotFound                          no run with that id
     ├── SerializationError                   a value cannot be stored as JSON
     └── WorkflowFailed                       a run ended failed or cancelled

    BaseException
     ├── Suspend (private)                    unwinds a workflow that has to stop for now
     └── ContinueAsNew (private)              ctx.continue_as_new(): a fresh history

Control flow derives from ``BaseException``, so a workflow's ``except Exception`` cannot eat it.
Messages name the run id, and the step name and seq where there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from heron.stores.contract import (
    Conflict,
    HeronError,
    PayloadTooLarge,
    SchemaMissing,
    StoreError,
    TooManySignals,
)

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
    "TooManySignals",
    "WorkflowFailed",
    "WorkflowNotFound",
]

#: Characters of an error message a run or checkpoint keeps (the rest is cut, marked "…").
MAX_MESSAGE = 2000


class FatalError(HeronError):
    """Raise from a step to fail it at once, without retries."""


class StepFailed(HeronError):
    """A step failed for good: it raised ``FatalError``, ran out of retries, or its attempts
    never came back (the executor was lost each time).

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
        super().__init__(
            f"step {step!r}{where} failed after {attempts} attempt(s): "
            f"{error_type}: {error_message}"
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
    """A value crossing a step or workflow boundary cannot be stored as JSON: not JSON at all,
    nested too deep, an integer too long, text that is not valid Unicode. Names the value."""


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


class ContinueAsNew(BaseException):  # noqa: N818 - control flow, not an error
    """Raised by ``ctx.continue_as_new(input)``: the run starts a fresh history (private)."""

    def __init__(self, input: Any) -> None:
        super().__init__("continue as new")
        self.input = input


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """An error as a run or a checkpoint records it (``to_dict`` is what is stored).

    ``type`` and ``message`` always; ``step`` and ``cause`` (the original exception's type) for
    a failed step; ``run_id`` and ``status`` for a failed child.
    """

    type: str
    message: str
    step: str | None = None
    cause: str | None = None
    run_id: str | None = None
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"type": self.type, "message": self.message}
        for name in ("step", "cause", "run_id", "status"):
            value = getattr(self, name)
            if value is not None:
                record[name] = value
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any] | None) -> ErrorRecord:
        record = record or {}

        def text(name: str) -> str | None:
            value = record.get(name)
            return None if value is None else str(value)

        return cls(
            type=str(record.get("type", "Error")),
            message=str(record.get("message", "")),
            step=text("step"),
            cause=text("cause"),
            run_id=text("run_id"),
            status=text("status"),
        )

    @classmethod
    def of(cls, exc: BaseException) -> ErrorRecord:
        """The record of ``exc``: its type name and a message that can always be stored (cut to
        :data:`MAX_MESSAGE` characters, invalid Unicode escaped; an exception whose ``str()``
        raises is described, not re-raised)."""
        if isinstance(exc, StepFailed):
            return cls(
                type="StepFailed", message=safe_text(exc), step=exc.step, cause=exc.error_type
            )
        return cls(type=type(exc).__name__, message=safe_text(exc))


def describe(exc: BaseException) -> dict[str, Any]:
    """The JSON form of an error that a run or checkpoint records."""
    return ErrorRecord.of(exc).to_dict()


def safe_text(exc: BaseException) -> str:
    """``str(exc)``, made storable: never raises, valid UTF-8, at most :data:`MAX_MESSAGE`."""
    try:
        text = str(exc)
    except Exception as broken:  # a user's __str__ that raises
        text = f"<{type(exc).__name__} whose str() raised {type(broken).__name__}>"
    return clip(text)


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters and made valid UTF-8 (lone surrogates escaped)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"
