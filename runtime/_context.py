"""``Context``: what a workflow function may call, and nothing else.

A workflow gets a ``Context`` as its first argument. Every durable operation goes through it;
the replay machinery behind it (``_invocation.py``, ``_operations.py``) stays out of sight, so
a workflow's autocomplete shows only what a workflow may do.
"""

from __future__ import annotations

import datetime as dt
import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, ParamSpec, TypeVar, overload

from heron.runtime import _operations as ops
from heron.runtime._errors import ContinueAsNew
from heron.runtime._invocation import Invocation
from heron.runtime._operations import StepKey, step_key
from heron.runtime._retry import check_seconds
from heron.runtime._serde import encode
from heron.stores.contract import Checkpoint

__all__ = ["Context", "StepKey", "step_key"]

T = TypeVar("T")
P = ParamSpec("P")
_NAMESPACE = _uuid.UUID("6f1c1b0e-6f8e-4c53-9a57-1c1f2b6d7a10")


class Context:
    """The handle a workflow function gets as its first argument: ``run_id``, ``workflow``, and
    the durable operations. Each operation takes the next sequence number when it is *called*,
    so ``asyncio.gather(ctx.step(a), ctx.step(b))`` numbers them the same way on every replay.
    """

    __slots__ = ("_inv", "_local", "run_id", "workflow")

    def __init__(self, invocation: Invocation, workflow: str) -> None:
        self._inv = invocation
        self._local: dict[int, int] = {}  # per-seq counters for uuid() and random()
        self.run_id: str = invocation.run_id
        self.workflow: str = workflow

    # -- operations --------------------------------------------------------------------------------

    @overload
    def step(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[T]: ...
    @overload
    def step(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]: ...
    def step(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Run ``fn(*args, **kwargs)`` as a checkpointed step, retried per its policy.

        The workflow gets its result (rebuilt per ``fn``'s return annotation), or
        ``StepFailed`` once it gave up. Raises ``RuntimeError`` when called inside a step.
        """
        inv = self._inv
        if ops.current_step.get() is not None:  # the prologue of every operation, inlined
            ops.begin(inv, "step")  # (raises: an operation inside a step)
        seq = inv.next_seq
        inv.next_seq = seq + 1
        return ops.step(inv, seq, fn, args, kwargs)

    def sleep(self, duration: float | dt.timedelta) -> Awaitable[None]:
        """Sleep durably for ``duration`` (seconds or a ``timedelta``); a sleep longer than the
        invocation ends it, and the run wakes when it is due. ``ValueError`` for a negative,
        NaN or infinite duration."""
        if isinstance(duration, dt.timedelta):
            duration = duration.total_seconds()
        seconds = check_seconds(duration, "ctx.sleep() duration")
        seq = ops.begin(self._inv, "sleep")
        return ops.timer(self._inv, seq, lambda now: now + seconds)

    def sleep_until(self, when: dt.datetime) -> Awaitable[None]:
        """Sleep durably until ``when`` (a naive datetime is taken as UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        target = when.timestamp()
        seq = ops.begin(self._inv, "sleep_until")
        return ops.timer(self._inv, seq, lambda now: target)

    def wait_for_signal(
        self, name: str, *, timeout: float | dt.timedelta | None = None
    ) -> Awaitable[Any]:
        """The payload of the next signal ``name`` (buffered ones first, in the order sent);
        ``TimeoutError`` after ``timeout`` seconds. ``ValueError`` for a bad timeout."""
        seconds = _timeout(timeout)
        seq = ops.begin(self._inv, "wait_for_signal")
        return ops.wait_signal(self._inv, seq, (_signal_name(name),), seconds, pair=False)

    def wait_for_any_signal(
        self, *names: str, timeout: float | dt.timedelta | None = None
    ) -> Awaitable[tuple[str, Any]]:
        """``(name, payload)`` of the first signal to come among ``names``;
        ``TimeoutError`` after ``timeout`` seconds. One durable operation, so exactly one
        signal is consumed, whichever came first."""
        if not names:
            raise ValueError("ctx.wait_for_any_signal() needs at least one signal name")
        seconds = _timeout(timeout)
        seq = ops.begin(self._inv, "wait_for_any_signal")
        chosen = tuple(_signal_name(name) for name in names)
        return ops.wait_signal(self._inv, seq, chosen, seconds, pair=True)

    def child(self, workflow: str, input: Any = None) -> Awaitable[Any]:
        """Start workflow ``workflow`` as a child run and await its output.

        A child that fails or is cancelled raises ``WorkflowFailed`` here.
        """
        seq = ops.begin(self._inv, "child")
        return ops.child(self._inv, seq, workflow, input)

    def side_effect(self, fn: Callable[..., Any], /, *args: Any) -> Awaitable[Any]:
        """Call ``fn`` once and record its value (a random number, a fresh id, ...)."""
        seq = ops.begin(self._inv, "side_effect")
        return ops.side_effect(self._inv, seq, fn, args)

    def continue_as_new(self, input: Any = None) -> NoReturn:
        """End this history and start the run again with ``input``, on a fresh history.

        For long-lived loops (a run that consumes signals for ever): replay stays short. The run
        keeps its id; signals it has not consumed carry over. Raises ``SerializationError`` or
        ``PayloadTooLarge`` (to the workflow) when ``input`` cannot be stored.
        """
        inv = self._inv
        encoded = encode(
            input,
            f"input of workflow {self.workflow!r} continued as new (run {self.run_id!r})",
            inv.limits.max_payload,
        )
        inv.continued = encoded
        inv.stop()
        raise ContinueAsNew(encoded.value)

    # -- deterministic values -------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The run's logical time: when the latest checkpoint before this point was written
        (the run's start before any). It replays to the same value and costs no write."""
        inv = self._inv
        at = inv.run.created_at
        for seq in range(min(inv.next_seq - 1, inv.max_seq), -1, -1):
            cp = inv.history.get(seq)
            if cp is not None:
                at = cp.at
                break
        return dt.datetime.fromtimestamp(at, dt.UTC)

    def uuid(self) -> _uuid.UUID:
        """A UUID derived from the run id and the position in the workflow: same on replay."""
        return _uuid.uuid5(_NAMESPACE, self._local_key())

    def random(self) -> float:
        """A float in [0, 1) derived from the run id and the position: same on replay."""
        return _random.Random(self._local_key()).random()

    def patched(self, change_id: str) -> bool:
        """Whether this run takes the new code path of change ``change_id``.

        True for runs that reach this point after the change was deployed, False for runs whose
        recorded history already went past it on the old path. The answer is recorded (a marker
        in a key space of its own, with the seq at which it was decided) so every later replay
        gets the same one.
        """
        inv = self._inv
        answer = inv.patch_answers.get(change_id)
        if answer is not None:  # the first answer holds for the whole run
            return answer
        if change_id in inv.patches:
            answer = True
        elif inv.next_seq <= inv.max_seq:  # replaying a history that went past here without it
            answer = False
        else:
            answer = True
            inv.patches.add(change_id)
            inv.patch_seq -= 1
            marker = Checkpoint(
                seq=inv.patch_seq,
                kind="patch",
                name=change_id,
                value=inv.next_seq,
                at=inv.clock.now(),
            )
            inv.pending_patches.append(marker)
        inv.patch_answers[change_id] = answer
        return answer

    def _local_key(self) -> str:
        seq = self._inv.next_seq
        n = self._local.get(seq, 0)
        self._local[seq] = n + 1
        return f"{self.run_id}:{seq}:{n}"


def _timeout(timeout: float | dt.timedelta | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, dt.timedelta):
        timeout = timeout.total_seconds()
    return check_seconds(timeout, "signal timeout")


def _signal_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a signal name must be a non-empty string, got {name!r}")
    return name
