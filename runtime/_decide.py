"""What a run becomes after an invocation: one pure function of what the invocation saw.

The executor gathers the facts (:class:`Facts`); :func:`decide` turns them into the run's next
header values (:class:`Decision`) or says the invocation must not write one at all. No I/O,
no clock, no engine state: every rule about the outcome of a replay is in this file::

    a store call failed ............................ raise it: the invocation fails, the run does
                                                     not (a later invocation tries again)
    a write raced another executor, lease lost ..... write nothing: reload and replay, or leave
                                                     the run to the executor that holds it
    ctx.continue_as_new(input) ..................... a fresh history with ``input``
    a failure recorded (non-determinism, a value
      that cannot be stored, a cancelled step) ..... failed, with it
    the engine unwound a quiet workflow ............ suspended: sleeping / waiting / pending,
                                                     waking at the earliest deadline
    the workflow raised ............................ failed, with what it raised
    it returned, skipping recorded seqs ............ failed: non-determinism
    it returned ..................................... completed, with its output
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from heron.runtime._errors import ErrorRecord, NonDeterminismError
from heron.runtime._lease import suspend_wake
from heron.runtime._serde import Encoded

__all__ = ["Decision", "Facts", "decide"]


@dataclass(frozen=True, slots=True)
class Facts:
    """What an invocation saw, once the workflow function has stopped."""

    run_id: str
    store_error: BaseException | None = None
    raced: bool = False  # a conditional write lost (reload), or the lease is gone
    continued: Encoded | None = None
    failure: BaseException | None = None
    quiet: bool = False  # the engine unwound the workflow
    suspended_status: str = "waiting"
    deadlines: list[float] = field(default_factory=list)
    raised: BaseException | None = None  # what escaped the workflow function
    unreached: list[int] = field(default_factory=list)
    output: Any = None  # what the workflow function returned


@dataclass(frozen=True, slots=True)
class Decision:
    """The run's next state: ``kind`` says which; the other fields fill the header."""

    kind: Literal["reload", "continue", "failed", "suspended", "completed"]
    status: str = "pending"
    wake_at: float | None = None
    error: dict[str, Any] | None = None
    output: Any = None
    input: Any = None


def decide(facts: Facts) -> Decision:
    """The run's next state after one invocation (the table in the module docstring).

    Raises the store error the invocation met: the invocation failed, not the run."""
    if facts.store_error is not None:
        raise facts.store_error
    if facts.raced:
        return Decision("reload")
    if facts.continued is not None:
        return Decision("continue", input=facts.continued.value)
    if facts.failure is not None:
        return Decision("failed", status="failed", error=ErrorRecord.of(facts.failure).to_dict())
    if facts.quiet:
        return Decision(
            "suspended", status=facts.suspended_status, wake_at=suspend_wake(facts.deadlines)
        )
    if facts.raised is not None:
        return Decision("failed", status="failed", error=ErrorRecord.of(facts.raised).to_dict())
    if facts.unreached:
        error = NonDeterminismError(
            f"run {facts.run_id!r} finished without reaching recorded seq {facts.unreached}; "
            "the code changed under a running workflow"
        )
        return Decision("failed", status="failed", error=ErrorRecord.of(error).to_dict())
    return Decision("completed", status="completed", output=facts.output)
