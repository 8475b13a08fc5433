"""The durable operations, each a coroutine on an :class:`~heron.runtime._invocation.Invocation`.

Every operation follows one shape:

1. the prologue, at call time (:func:`begin`): refuse misuse (an operation inside a step), take
   the next ``seq``;
2. replay: if the history holds ``seq``, wait for the recorded outcome's turn and return it (or
   raise the recorded error); a checkpoint of another kind or name there is non-determinism;
3. live: do the work, or block until a later invocation (a timer not due, a signal not here);
   commit one checkpoint; wait for its turn; return.

A step's attempts are counted in the run header before they start wherever that costs nothing
in the steady state: the first live attempt of an invocation (one header write per
invocation), and every retry (which first renews the lease, so the run still belongs to this
executor and is not cancelled). So an attempt that never comes back (the executor was killed:
a Lambda timeout, an out-of-memory kill) still counts against the step's policy; one lost at a
later step of an invocation is charged by its successor, which finds the lease taken over
(``_executor``). A step out of attempts fails with ``StepFailed`` without running again.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from heron.runtime._errors import (
    ErrorRecord,
    FatalError,
    HeronError,
    StepFailed,
    StoreError,
    WorkflowFailed,
)
from heron.runtime._invocation import Invocation
from heron.runtime._registry import StepSpec
from heron.runtime._serde import decoder_for, encode, return_annotation
from heron.runtime._state import RetryState
from heron.stores.contract import Checkpoint, Run

__all__ = [
    "CHILD_SIGNAL",
    "RESERVED_PREFIX",
    "StepKey",
    "begin",
    "child",
    "current_step",
    "side_effect",
    "step",
    "step_key",
    "timer",
    "wait_signal",
]

#: Signal names that start with this are the engine's own; callers may not send them.
RESERVED_PREFIX = "heron:"
#: The name of the signal that wakes a parent when its child ``<child id>`` ends.
CHILD_SIGNAL = RESERVED_PREFIX + "child:"

#: (run id, seq, attempt, step name) of the step running in this context, if any.
current_step: contextvars.ContextVar[tuple[str, int, int, str] | None] = contextvars.ContextVar(
    "heron_step", default=None
)


@dataclass(frozen=True, slots=True)
class StepKey:
    """Identifies one execution of a step. ``str(key)`` (``"run:seq"``) is stable across
    retries of the step, so it makes a good idempotency key for an external API."""

    run_id: str
    seq: int
    attempt: int

    def __str__(self) -> str:
        return f"{self.run_id}:{self.seq}"


def step_key() -> StepKey:
    """The running step's key. Raises ``RuntimeError`` outside a step."""
    running = current_step.get()
    if running is None:
        raise RuntimeError("heron.step_key() called outside a running step")
    return StepKey(running[0], running[1], running[2])


def begin(inv: Invocation, operation: str) -> int:
    """The prologue of every operation, at call time: refuse an operation started inside a
    step (``FatalError``, so the step fails at once: it would wait on itself), then take the
    next ``seq``."""
    running = current_step.get()
    if running is not None:
        run_id, seq, _, name = running
        raise FatalError(
            f"ctx.{operation}() called inside step {name!r} (run {run_id!r}, seq {seq}): a step "
            "cannot start durable operations; call it from the workflow function instead"
        )
    return inv.take_seq()


def _decode(value: Any, decoder: Callable[[Any], Any] | None) -> Any:
    return value if decoder is None or value is None else decoder(value)


async def _cancelled(inv: Invocation, seq: int, kind: str, name: str) -> None:
    """The workflow cancelled a waiting operation through asyncio: it stops counting, and the
    cancellation is recorded so that a replay cancels it at the same point, whatever the time
    (a timer that is due by then must not fire instead)."""
    inv.state.timers.pop(seq, None)
    if inv.unwinding:  # the engine's own unwinding, not the workflow's doing
        return
    record = ErrorRecord("Cancelled", "cancelled by the workflow (asyncio)").to_dict()
    cp = await inv.commit(seq, kind, name, error=record)
    await inv.turn(cp.order or 0)


async def _replay_cancelled(inv: Invocation, seq: int, cp: Checkpoint) -> None:
    """A recorded cancellation: wait, as the operation did live, until the workflow cancels it
    again."""
    try:
        await inv.block(seq, "cancelled", None)
    except asyncio.CancelledError:
        await inv.turn(inv.recorded_order(cp))
        raise


def _is_cancel(cp: Checkpoint) -> bool:
    return cp.error is not None and cp.error.get("type") == "Cancelled"


# -- steps -----------------------------------------------------------------------------------------


async def step(
    inv: Invocation, seq: int, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    spec = inv.registry.step(fn)
    cp = inv.replayed(seq, "step", spec.name)
    if cp is not None:
        await inv.turn(inv.recorded_order(cp))
        if cp.error is not None:
            raise _step_failed(inv, spec.name, seq, cp)
        return _decode(cp.value, spec.decoder)
    if inv.unwinding or inv.stopping or inv.deadline is not None or inv.lease.lost:
        await inv.gate(seq)  # (the common case checks nothing more: the hot path)
    policy = spec.retry
    state = inv.state.retries.get(seq)
    attempts = state.attempts if state is not None else 0
    first = not inv.started_live
    if first:
        inv.started_live = True
        if inv.lost_charge and seq != inv.lost_live:  # the lost attempt was not counted yet
            attempts += inv.lost_charge
    if attempts >= policy.max_attempts:  # every attempt so far failed or never came back
        error = ErrorRecord(
            "AttemptLost",
            f"attempt {attempts} of step {spec.name!r} (run {inv.run_id!r}, seq {seq}) did not "
            "return: the executor was lost (a timeout, a crash or an out-of-memory kill)",
        )
        return await _give_up(inv, seq, spec, error, attempts)
    if state is not None and state.at is not None and state.at > inv.clock.now():
        # a back-off that outlived an invocation
        await inv.block(seq, "sleeping", state.at, ("retry", spec.name))
    while True:
        attempts += 1
        if first or attempts > 1:  # counted before it starts (see the module docstring)
            if not await _count_attempt(inv, seq, attempts, first):
                await inv.block(seq, "stopped", None)
            first = False
        token = current_step.set((inv.run_id, seq, attempts, spec.name))
        inv.busy += 1  # work in flight: the workflow is not quiet
        try:
            if inv.before_attempt is not None:  # heron.testing: injected faults
                inv.before_attempt(spec.name, StepKey(inv.run_id, seq, attempts))
            if spec.is_async and spec.timeout is None:
                result = await fn(*args, **kwargs)
            else:
                result = await _attempt(spec, fn, args, kwargs)
        except asyncio.CancelledError:
            inv.work_done()
            if not inv.unwinding:
                inv.fail(_cancelled_step(inv, spec.name, seq))
            raise
        except Exception as exc:
            inv.work_done()
            if _thread_refused(exc):  # Pyodide: every attempt would fail the same way
                exc = _no_threads(inv.run_id, spec.name, seq, exc)
            if not policy.retryable(exc) or attempts >= policy.max_attempts:
                return await _give_up(inv, seq, spec, ErrorRecord.of(exc), attempts, exc)
            delay = policy.delay(attempts)
            now = inv.clock.now()
            inv.state.retries[seq] = RetryState(attempts, now + delay)
            inv.log_retry(spec.name, seq, attempts, exc, delay)
            if delay > inv.limits.inline_retry_limit or inv.out_of_time(now + delay):
                await inv.block(seq, "sleeping", now + delay, ("retry", spec.name))
            await inv.clock.sleep(delay)
            continue
        finally:
            current_step.reset(token)
        break
    try:
        encoded = encode(result, _StepWhat(spec.name, inv.run_id, seq), inv.limits.max_payload)
    except HeronError as exc:  # a value that can never be stored fails the run, once
        inv.work_done()
        inv.fail(exc)
        await inv.block(seq, "stopped", None)
    try:
        cp = await inv.commit(
            seq, "step", spec.name, value=encoded.value, attempts=attempts, encoded=encoded.text
        )
    finally:
        inv.work_done()
    if inv.state.retries:
        inv.state.retries.pop(seq, None)
    if not inv.hand_back_now(cp.order or 0):
        await inv.turn(cp.order or 0)
    if spec.decoder is None:
        return result if encoded.same else encoded.value
    return spec.decoder(encoded.value)


def _thread_refused(exc: Exception) -> bool:
    """Pyodide (Cloudflare Python Workers) has no threads: ``Thread.start()`` raises this."""
    return (
        sys.platform == "emscripten"
        and isinstance(exc, RuntimeError)
        and "can't start new thread" in str(exc)
    )


def _no_threads(run_id: str, name: str, seq: int, cause: Exception) -> FatalError:
    error = FatalError(
        f"step {name!r} (run {run_id!r}, seq {seq}) tried to start a thread ({cause}): this "
        "Python (Pyodide, as on Cloudflare Python Workers) has no threads. Sync steps run "
        "inline here, so a step may block, but nothing it calls may start a thread or a "
        "thread pool; make the step async, or call a library that does not use threads"
    )
    error.__cause__ = cause
    return error


async def _attempt(
    spec: StepSpec, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    # On Pyodide asyncio.to_thread runs ``fn`` inline (the event loop's run_in_executor calls it
    # at once), so a sync step blocks the loop for its duration, and its timeout cannot cut it
    # short: the attempt is over before wait_for starts waiting.
    if spec.is_async:
        work = fn(*args, **kwargs)
    else:
        work = asyncio.to_thread(fn, *args, **kwargs)
    if spec.timeout is None:
        return await work
    try:
        return await asyncio.wait_for(work, spec.timeout)
    except TimeoutError:
        raise TimeoutError(f"the attempt took longer than its {spec.timeout:g}s timeout") from None


async def _count_attempt(inv: Invocation, seq: int, attempts: int, first: bool) -> bool:
    """Write attempt ``attempts`` of the step at ``seq`` into the header before it starts;
    before a retry, renew the lease first (the run must still be this executor's, and not
    cancelled). ``False`` when the invocation must stop instead."""
    if not first and not await inv.io(inv.lease.renew()):
        inv.stop()
        return False
    inv.state.retries[seq] = RetryState(attempts)
    if first:
        inv.state.live = seq
    await inv.save_state()
    return not inv.stopping


async def _give_up(
    inv: Invocation,
    seq: int,
    spec: StepSpec,
    error: ErrorRecord,
    attempts: int,
    cause: BaseException | None = None,
) -> Any:
    cp = await inv.commit(seq, "step", spec.name, error=error.to_dict(), attempts=attempts)
    inv.state.retries.pop(seq, None)
    await inv.turn(cp.order or 0)
    raise _step_failed(inv, spec.name, seq, cp) from cause


def _step_failed(inv: Invocation, name: str, seq: int, cp: Checkpoint) -> StepFailed:
    error = cp.error or {}
    return StepFailed(
        name,
        str(error.get("type")),
        str(error.get("message")),
        run_id=inv.run_id,
        seq=seq,
        attempts=cp.attempts,
    )


def _cancelled_step(inv: Invocation, name: str, seq: int) -> RuntimeError:
    return RuntimeError(
        f"step {name!r} (run {inv.run_id!r}, seq {seq}) was cancelled from asyncio (by "
        "asyncio.wait_for, a task's cancel() or a TaskGroup): a step's outcome must not depend on "
        "timing. Give the step a per-attempt timeout instead: @rt.step(timeout=seconds)"
    )


class _StepWhat:
    """Names a step's result in errors, formatted only when there is one (the hot path)."""

    __slots__ = ("name", "run_id", "seq")

    def __init__(self, name: str, run_id: str, seq: int) -> None:
        self.name, self.run_id, self.seq = name, run_id, seq

    def __str__(self) -> str:
        return f"result of step {self.name!r} (run {self.run_id!r}, seq {self.seq})"


# -- timers ----------------------------------------------------------------------------------------


async def timer(inv: Invocation, seq: int, deadline_of: Callable[[float], float]) -> None:
    cp = inv.replayed(seq, "sleep", "sleep")
    if cp is not None:
        if _is_cancel(cp):
            await _replay_cancelled(inv, seq, cp)
        await inv.turn(inv.recorded_order(cp))
        return
    await inv.gate(seq)
    now = inv.clock.now()
    deadline = inv.state.timers.setdefault(seq, deadline_of(now))
    if now < deadline:
        try:
            await inv.block(seq, "sleeping", deadline, ("sleep", "sleep"))
        except asyncio.CancelledError:
            await _cancelled(inv, seq, "sleep", "sleep")
            raise
    cp = await inv.commit(seq, "sleep", "sleep", value=deadline)
    inv.state.timers.pop(seq, None)
    await inv.turn(cp.order or 0)


# -- signals ---------------------------------------------------------------------------------------


async def wait_signal(
    inv: Invocation, seq: int, names: tuple[str, ...], timeout: float | None, *, pair: bool
) -> Any:
    """The payload of the first pending signal named one of ``names`` (``(name, payload)``
    with ``pair``); ``TimeoutError`` after ``timeout`` seconds."""
    recorded_name = "|".join(names)
    cp = inv.replayed(seq, "signal", recorded_name)
    if cp is not None:
        if _is_cancel(cp):
            await _replay_cancelled(inv, seq, cp)
        await inv.turn(inv.recorded_order(cp))
        if cp.error is not None:
            raise TimeoutError(cp.error.get("message", f"signal {recorded_name!r} timed out"))
        value = cp.value if isinstance(cp.value, dict) else {}
        payload = value.get("payload")
        return (value.get("name", names[0]), payload) if pair else payload
    await inv.gate(seq)
    now = inv.clock.now()
    signal = inv.take_signal(names)
    if signal is None:
        deadline = None if timeout is None else inv.state.timers.setdefault(seq, now + timeout)
        if deadline is None or now < deadline:
            try:
                await inv.block(seq, "waiting", deadline, ("signal", recorded_name))
            except asyncio.CancelledError:
                await _cancelled(inv, seq, "signal", recorded_name)
                raise
        message = (
            f"signal {recorded_name!r} did not arrive within {timeout:g}s "
            f"(run {inv.run_id!r}, seq {seq})"
        )
        error = ErrorRecord("TimeoutError", message).to_dict()
        cp = await inv.commit(seq, "signal", recorded_name, error=error)
        inv.state.timers.pop(seq, None)
        await inv.turn(cp.order or 0)
        raise TimeoutError(message)
    value = {"id": signal.id, "payload": signal.payload}
    if pair:  # which of the names came
        value["name"] = signal.name
    cp = await inv.commit(seq, "signal", recorded_name, value=value, consumes=signal.id)
    inv.state.timers.pop(seq, None)
    await inv.turn(cp.order or 0)
    return (signal.name, signal.payload) if pair else signal.payload


# -- children --------------------------------------------------------------------------------------


def child_id(inv: Invocation, seq: int) -> str:
    """The id of the child started at ``seq``: the parent's id, the seq and the parent's secret
    nonce (``<run>-c<seq>-<nonce>``), so that nobody can guess it and start a run under it
    first. (Runs started before Heron had nonces keep their ``<run>-c<seq>``.)"""
    base = f"{inv.run_id}-c{seq}"
    return f"{base}-{inv.state.nonce[:8]}" if inv.state.nonce else base


async def child(inv: Invocation, seq: int, workflow: str, input: Any) -> Any:
    cp = inv.replayed(seq, "child", workflow)
    if cp is None:
        await inv.gate(seq)
        cp = await _child_live(inv, seq, workflow, input)
    else:
        if _is_cancel(cp):
            await _replay_cancelled(inv, seq, cp)
        await inv.turn(inv.recorded_order(cp))
    if cp.error is not None:
        error = ErrorRecord.from_dict(cp.error)
        raise WorkflowFailed(
            error.run_id or "?",
            error.status or "failed",
            {"type": "ChildFailed", "message": error.message},
        )
    spec = inv.registry.workflow_or_none(workflow)
    return _decode(cp.value, spec.decoder if spec else None)


async def _child_live(inv: Invocation, seq: int, workflow: str, input: Any) -> Checkpoint:
    run_id = child_id(inv, seq)
    if run_id not in inv.state.children:
        problem = await _start_child(inv, seq, run_id, workflow, input)
        if problem is not None:  # the id is taken by a run that is not this parent's child
            cp = await inv.commit(seq, "child", workflow, error=problem.to_dict())
            await inv.turn(cp.order or 0)
            return cp
        inv.state.children.append(run_id)
        inv.new_children.append(run_id)
    signal = inv.take_signal((CHILD_SIGNAL + run_id,))
    if signal is None:
        try:
            # the child signals when it ends
            await inv.block(seq, "waiting", None, ("child", run_id))
        except asyncio.CancelledError:
            await _cancelled(inv, seq, "child", workflow)
            raise
    # The signal only wakes the parent: the outcome is read from the child run itself, and only
    # from a run that is this parent's own child.
    outcome = await _child_outcome(inv, run_id)
    if outcome is None or outcome.parent_id != inv.run_id or not outcome.terminal:
        inv.take_back(signal)
        await inv.block(seq, "waiting", None, ("child", run_id))
    error = None
    if outcome.status != "completed":
        cause = ErrorRecord.from_dict(outcome.error)
        error = ErrorRecord(
            "WorkflowFailed",
            f"{cause.type}: {cause.message}",
            run_id=run_id,
            status=outcome.status,
        ).to_dict()
    output = outcome.output if error is None else None
    cp = await inv.commit(
        seq, "child", workflow, value=output, error=error, consumes=signal.id if signal else None
    )
    await inv.turn(cp.order or 0)
    return cp


async def _start_child(
    inv: Invocation, seq: int, run_id: str, workflow: str, input: Any
) -> ErrorRecord | None:
    """Create the child run; ``None`` when it is ours (new, or made by an earlier invocation),
    an error record when the id is another run's. The workflow's own errors (an unknown
    workflow, an input that cannot be stored) are raised into it; a store failure fails the
    invocation."""
    spec = inv.registry.workflow(workflow)
    what = f"input of child workflow {workflow!r} (run {run_id!r})"
    value = encode(input, what, inv.limits.max_payload).value
    now = inv.clock.now()
    from heron.runtime._state import EngineState

    run = Run(
        id=run_id,
        workflow=workflow,
        input=value,
        version=spec.version,
        status="pending",
        parent_id=inv.run_id,
        created_at=now,
        updated_at=now,
        wake_at=now,
        engine=EngineState.new().to_json(),
    )
    try:
        if await inv.io(inv.store.create(run)):
            return None
        existing = await inv.io(inv.store.load(run_id))
    except StoreError as exc:
        inv.store_failed(exc)
        await inv.block(seq, "stopped", None)
    if (
        existing is not None
        and existing.run.parent_id == inv.run_id
        and (existing.run.workflow == workflow)
    ):
        return None
    return ErrorRecord(
        "Conflict",
        f"the child run id {run_id!r} (seq {seq}) is taken by a run that is not a child of "
        f"run {inv.run_id!r}",
        run_id=run_id,
        status="conflict",
    )


async def _child_outcome(inv: Invocation, run_id: str) -> Run | None:
    try:
        loaded = await inv.io(inv.store.load(run_id))
    except Exception as exc:
        inv.store_failed(exc)
        await inv.block(-1, "stopped", None)
    return None if loaded is None else loaded.run


# -- side effects ----------------------------------------------------------------------------------


async def side_effect(
    inv: Invocation, seq: int, fn: Callable[..., Any], args: tuple[Any, ...]
) -> Any:
    name = str(getattr(fn, "__qualname__", repr(fn)))
    decoder = decoder_for(return_annotation(fn))
    cp = inv.replayed(seq, "side_effect", name)
    if cp is not None:
        await inv.turn(inv.recorded_order(cp))
        return _decode(cp.value, decoder)
    await inv.gate(seq)
    inv.work_started()
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
        what = f"side effect {name!r} (run {inv.run_id!r}, seq {seq})"
        encoded = encode(result, what, inv.limits.max_payload)
    except HeronError as exc:
        inv.work_done()
        inv.fail(exc)
        await inv.block(seq, "stopped", None)
    except BaseException:
        inv.work_done()
        raise
    try:
        cp = await inv.commit(seq, "side_effect", name, value=encoded.value, encoded=encoded.text)
    finally:
        inv.work_done()
    await inv.turn(cp.order or 0)
    return _decode(encoded.value, decoder)
