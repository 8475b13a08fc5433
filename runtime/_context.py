"""``Context``: what a workflow uses to do durable things, and the replay that backs it.

Every operation takes the next sequence number ``seq`` when it is *called*, before any await,
so ``asyncio.gather(ctx.step(a), ctx.step(b))`` numbers its steps the same way on every replay.
An operation whose ``seq`` is in the history returns (or raises) what was recorded; otherwise it
runs live and appends one checkpoint.

When the run cannot go on now (a timer, a signal that has not come, a long retry back-off, the
invocation running out of time) the operation records why and raises ``Suspend``, a
``BaseException``. The engine reads that record after the workflow function returns, so a
workflow that swallows the exception (``except BaseException``, ``gather(...,
return_exceptions=True)``) still suspends. Non-determinism is recorded the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import heapq
import inspect
import logging
import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn, ParamSpec, TypeVar, overload

from heron.runtime._errors import (
    HeronError,
    NonDeterminismError,
    PayloadTooLarge,
    StepFailed,
    Suspend,
    WorkflowFailed,
    describe,
)
from heron.runtime._serde import decoder_for, encode, encoded_size, return_annotation
from heron.stores.contract import Checkpoint, Conflict, Loaded, Signal, StoreError

if TYPE_CHECKING:
    from heron.runtime._runtime import Runtime

__all__ = ["Context", "StepKey", "step_key"]

log = logging.getLogger("heron")
T = TypeVar("T")
P = ParamSpec("P")
_NAMESPACE = _uuid.UUID("6f1c1b0e-6f8e-4c53-9a57-1c1f2b6d7a10")
#: Name prefix of the signal a finished child sends its parent (``heron:child:<child id>``).
CHILD_SIGNAL = "heron:child:"

SuspendKind = Literal["pending", "sleeping", "waiting"]


@dataclass(frozen=True, slots=True)
class StepKey:
    """Identifies one execution of a step. ``str(key)`` (``"run:seq"``) is stable across
    retries of the step, so it makes a good idempotency key for an external API."""

    run_id: str
    seq: int
    attempt: int

    def __str__(self) -> str:
        return f"{self.run_id}:{self.seq}"


_current_step: contextvars.ContextVar[StepKey | None] = contextvars.ContextVar(
    "heron_step", default=None
)


def step_key() -> StepKey:
    """The running step's key. Raises ``RuntimeError`` outside a step."""
    key = _current_step.get()
    if key is None:
        raise RuntimeError("heron.step_key() called outside a running step")
    return key


class Lease:
    """The executor's hold on a run, shared with the background renewal."""

    __slots__ = ("lost", "token")

    def __init__(self, token: str) -> None:
        self.token = token
        self.lost = False


class Context:
    """The handle a workflow function gets as its first argument."""

    def __init__(
        self,
        runtime: Runtime,
        loaded: Loaded,
        *,
        lease: Lease,
        deadline: float | None,
    ) -> None:
        run = loaded.run
        self.run_id: str = run.id
        self.workflow: str = run.workflow
        self._rt = runtime
        self._created_at = run.created_at
        self._lease = lease
        self._deadline = deadline
        self._seq = 0
        self._history: dict[int, Checkpoint] = {}
        self._patches: set[str] = set()
        self._patch_answers: dict[str, bool] = {}
        self._patch_seq = 0
        self._consumed: set[str] = set()
        self._max_seq = -1
        for cp in loaded.checkpoints:
            self._history[cp.seq] = cp
            if cp.seq < 0:
                self._patches.add(cp.name)
                self._patch_seq = min(self._patch_seq, cp.seq)
            else:
                self._max_seq = max(self._max_seq, cp.seq)
            if cp.kind == "signal" and isinstance(cp.value, dict):
                self._consumed.add(str(cp.value.get("id")))
        self._signals: list[Signal] = loaded.signals
        self.engine: dict[str, Any] = run.engine
        self.engine.setdefault("timers", {})
        self.engine.setdefault("retries", {})
        self.engine.setdefault("children", [])
        self._visited: set[int] = set()
        self._barrier: int | None = None  # first seq taken after the run began to suspend
        self._open: list[int] = []  # heap of seqs whose operation is running
        self._open_set: set[int] = set()
        self._turns: dict[int, asyncio.Future[None]] = {}
        self._pending_patches: list[Checkpoint] = []
        self._local: dict[int, int] = {}  # per-seq counters for uuid()/random()
        self._inflight = 0  # live steps running now
        self._idle: asyncio.Event | None = None  # made only when settle() has to wait
        # What the engine reads after the workflow function returns:
        self.wakes: list[float] = []
        self.suspended: SuspendKind | None = None
        self.stopped = False  # no new live operation may start
        self.conflict = False  # a checkpoint raced another executor: reload and replay
        self.store_error: BaseException | None = None
        self.failure: BaseException | None = None  # fail the run with this, history intact
        self.new_children: list[str] = []
        self.committed: list[Checkpoint] = []  # what this invocation appended (not patch markers)

    # -- public API ----------------------------------------------------------------------------

    @overload
    def step(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[T]: ...
    @overload
    def step(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]: ...
    def step(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Run ``fn(*args, **kwargs)`` as a checkpointed step (retried per its policy)."""
        seq = self._take_seq()
        return self._ordered(seq, self._step(seq, fn, args, kwargs))

    def sleep(self, duration: float | dt.timedelta) -> Awaitable[None]:
        """Sleep durably for seconds or a ``timedelta``; a long sleep ends the invocation."""
        seconds = (
            duration.total_seconds() if isinstance(duration, dt.timedelta) else float(duration)
        )
        if seconds < 0:
            raise ValueError(f"ctx.sleep() needs a duration >= 0, got {seconds}")
        seq = self._take_seq()
        return self._ordered(seq, self._timer(seq, lambda now: now + seconds))

    def sleep_until(self, when: dt.datetime) -> Awaitable[None]:
        """Sleep durably until ``when`` (a naive datetime is taken as UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        target = when.timestamp()
        seq = self._take_seq()
        return self._ordered(seq, self._timer(seq, lambda now: target))

    def wait_for_signal(
        self, name: str, *, timeout: float | dt.timedelta | None = None
    ) -> Awaitable[Any]:
        """The payload of the next signal ``name``; ``TimeoutError`` after ``timeout`` seconds."""
        if isinstance(timeout, dt.timedelta):
            timeout = timeout.total_seconds()
        seq = self._take_seq()
        return self._ordered(seq, self._wait_signal(seq, name, timeout))

    def child(self, workflow: str, input: Any = None) -> Awaitable[Any]:
        """Start workflow ``workflow`` as a child run and await its output.

        A child that fails or is cancelled raises ``WorkflowFailed`` here.
        """
        seq = self._take_seq()
        return self._ordered(seq, self._child(seq, workflow, input))

    def side_effect(self, fn: Callable[..., Any], /, *args: Any) -> Awaitable[Any]:
        """Call ``fn`` once and record its value (a random number, a fresh id, ...)."""
        seq = self._take_seq()
        return self._ordered(seq, self._side_effect(seq, fn, args))

    def now(self) -> dt.datetime:
        """The run's logical time: when the latest checkpoint before this point was written
        (the run's start before any). It replays to the same value and costs no write."""
        at = self._created_at
        for seq in range(min(self._seq - 1, self._max_seq), -1, -1):
            cp = self._history.get(seq)
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
        in a key space of its own) so every later replay gets the same one.
        """
        answer = self._patch_answers.get(change_id)
        if answer is not None:  # the first answer holds for the whole run
            return answer
        if change_id in self._patches:
            self._patch_answers[change_id] = True
            return True
        if self._seq <= self._max_seq:  # replaying a history that went past here without it
            self._patch_answers[change_id] = False
            return False
        self._patches.add(change_id)
        self._patch_answers[change_id] = True
        self._patch_seq -= 1
        self._pending_patches.append(
            Checkpoint(seq=self._patch_seq, kind="patch", name=change_id, at=self._rt.clock.now())
        )
        return True

    # -- the operations ------------------------------------------------------------------------

    async def _step(
        self, seq: int, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        spec = self._rt._step_spec(fn)
        cp = self._replayed(seq, "step", spec.name)
        if cp is not None:
            if cp.error is not None:
                raise self._step_failed(spec.name, seq, cp)
            return self._decode(cp.value, spec.decoder)
        self._gate(seq)
        policy = spec.retry
        retries: dict[str, Any] = self.engine["retries"]
        state = retries.get(str(seq))
        attempt = int(state["attempt"]) if state else 0
        if state and float(state["at"]) > self._rt.clock.now():
            self._suspend("sleeping", float(state["at"]))
        with self._tracked():
            while True:
                attempt += 1
                key = StepKey(self.run_id, seq, attempt)
                token = _current_step.set(key)
                try:
                    if self._rt._before_attempt is not None:  # heron.testing: injected faults
                        self._rt._before_attempt(spec.name, key)
                    if spec.is_async:
                        result = await fn(*args, **kwargs)
                    else:
                        result = await asyncio.to_thread(fn, *args, **kwargs)
                except Exception as exc:
                    if not policy.retryable(exc) or attempt >= policy.max_attempts:
                        error = describe(exc)
                        failed = Checkpoint(
                            seq=seq,
                            kind="step",
                            name=spec.name,
                            error=error,
                            at=self._rt.clock.now(),
                            attempts=attempt,
                        )
                        await self._commit(failed)
                        retries.pop(str(seq), None)
                        raise self._step_failed(spec.name, seq, failed) from exc
                    delay = policy.delay(attempt)
                    now = self._rt.clock.now()
                    log.warning(
                        "step %r attempt %d failed (%s: %s); retrying in %.1fs",
                        spec.name,
                        attempt,
                        type(exc).__name__,
                        exc,
                        delay,
                        extra={"run_id": self.run_id, "seq": seq, "step": spec.name},
                    )
                    if delay > self._rt.inline_retry_limit or self._out_of_time(now + delay):
                        retries[str(seq)] = {"attempt": attempt, "at": now + delay}
                        self._suspend("sleeping", now + delay)
                    await self._rt.clock.sleep(delay)
                    continue
                finally:
                    _current_step.reset(token)
                what = f"step {spec.name!r} (run {self.run_id!r}, seq {seq})"
                value = self._encode(result, what)
                await self._commit(
                    Checkpoint(
                        seq=seq,
                        kind="step",
                        name=spec.name,
                        value=value,
                        at=self._rt.clock.now(),
                        attempts=attempt,
                    )
                )
                retries.pop(str(seq), None)
                return self._decode(value, spec.decoder)

    async def _timer(self, seq: int, deadline_of: Callable[[float], float]) -> None:
        if self._replayed(seq, "sleep", "sleep") is not None:
            return
        self._gate(seq)
        now = self._rt.clock.now()
        timers: dict[str, float] = self.engine["timers"]
        deadline = timers.setdefault(str(seq), deadline_of(now))
        if now < deadline:
            self._suspend("sleeping", deadline)
        await self._commit(Checkpoint(seq=seq, kind="sleep", name="sleep", value=deadline, at=now))
        timers.pop(str(seq), None)

    async def _wait_signal(self, seq: int, name: str, timeout: float | None) -> Any:
        cp = self._replayed(seq, "signal", name)
        if cp is not None:
            if cp.error is not None:
                raise TimeoutError(cp.error.get("message", f"signal {name!r} timed out"))
            return cp.value.get("payload") if isinstance(cp.value, dict) else None
        self._gate(seq)
        now = self._rt.clock.now()
        timers: dict[str, float] = self.engine["timers"]
        signal = self._take_signal(name)
        if signal is not None:
            value = {"id": signal.id, "payload": signal.payload}
            await self._commit(Checkpoint(seq=seq, kind="signal", name=name, value=value, at=now))
            timers.pop(str(seq), None)
            return signal.payload
        if timeout is None:
            self._suspend("waiting", None)
        deadline = timers.setdefault(str(seq), now + timeout)
        if now < deadline:
            self._suspend("waiting", deadline)
        message = (
            f"signal {name!r} did not arrive within {timeout}s (run {self.run_id!r}, seq {seq})"
        )
        await self._commit(
            Checkpoint(
                seq=seq,
                kind="signal",
                name=name,
                at=now,
                error={"type": "TimeoutError", "message": message},
            )
        )
        timers.pop(str(seq), None)
        raise TimeoutError(message)

    async def _child(self, seq: int, workflow: str, input: Any) -> Any:
        cp = self._replayed(seq, "child", workflow)
        if cp is None:
            self._gate(seq)
            child_id = f"{self.run_id}-c{seq}"
            signal = self._take_signal(CHILD_SIGNAL + child_id)
            if signal is None:
                if child_id not in self.engine["children"]:
                    try:
                        await self._rt._start_child(self, child_id, workflow, input)
                    except Exception as exc:  # a store failure: fail this invocation, not the run
                        if isinstance(exc, HeronError) and not isinstance(exc, StoreError):
                            raise  # WorkflowNotFound, PayloadTooLarge: the workflow's own error
                        if self.store_error is None:
                            self.store_error = exc
                        raise Suspend() from exc
                    self.engine["children"].append(child_id)
                    self.new_children.append(child_id)
                self._suspend("waiting", None)
            outcome = signal.payload if isinstance(signal.payload, dict) else {}
            error = None
            if outcome.get("status") != "completed":
                error = {
                    "type": "WorkflowFailed",
                    "status": outcome.get("status"),
                    "message": str(outcome.get("error")),
                    "run_id": child_id,
                }
            cp = Checkpoint(
                seq=seq,
                kind="child",
                name=workflow,
                value=outcome.get("output"),
                error=error,
                at=self._rt.clock.now(),
            )
            await self._commit(cp)
        if cp.error is not None:
            raise WorkflowFailed(
                str(cp.error.get("run_id")),
                str(cp.error.get("status")),
                {"type": "ChildFailed", "message": cp.error.get("message")},
            )
        spec = self._rt._workflow_or_none(workflow)
        return self._decode(cp.value, spec.decoder if spec else None)

    async def _side_effect(self, seq: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        name = getattr(fn, "__qualname__", repr(fn))
        decoder = decoder_for(return_annotation(fn))
        cp = self._replayed(seq, "side_effect", name)
        if cp is not None:
            return self._decode(cp.value, decoder)
        self._gate(seq)
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
        value = self._encode(result, f"side effect {name!r} (run {self.run_id!r}, seq {seq})")
        await self._commit(
            Checkpoint(seq=seq, kind="side_effect", name=name, value=value, at=self._rt.clock.now())
        )
        return self._decode(value, decoder)

    # -- replay machinery ----------------------------------------------------------------------

    async def _ordered(self, seq: int, op: Coroutine[Any, Any, T]) -> T:
        """Run one operation, then hand its outcome back in ``seq`` order.

        Replayed operations finish at once while live ones take time, so if outcomes were
        handed back as they finish, concurrent branches would call their next operations (and
        take seqs) in another order on replay than live. Handing each outcome back only when it
        is the lowest operation still open, and only once the tasks that are ready have run (no
        seq was taken during a pass of the event loop), makes the interleaving the same on
        every replay::

            live:   fetch#0 ─────────────┐ save#2        replay: fetch#0 ┐ save#2
                    fetch#1 ──┐ (waits) ─┴─ save#3               fetch#1 ┴─ save#3
        """
        heapq.heappush(self._open, seq)
        self._open_set.add(seq)
        try:
            try:
                result = await op
            except (Suspend, NonDeterminismError, asyncio.CancelledError):
                raise
            except BaseException:
                await self._turn(seq)
                raise
            await self._turn(seq)
            return result
        finally:
            self._close(seq)

    async def _turn(self, seq: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = self._seq
            await asyncio.sleep(0)
            if self._seq != before:  # ready tasks are still taking seqs: let them settle
                continue
            if self._lowest_open() == seq:
                return
            turn = self._turns[seq] = loop.create_future()
            try:
                await turn
            finally:
                self._turns.pop(seq, None)

    def _lowest_open(self) -> int | None:
        while self._open and self._open[0] not in self._open_set:
            heapq.heappop(self._open)
        return self._open[0] if self._open else None

    def _close(self, seq: int) -> None:
        self._open_set.discard(seq)
        low = self._lowest_open()
        turn = self._turns.get(low) if low is not None else None
        if turn is not None and not turn.done():
            turn.set_result(None)

    def _take_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _replayed(self, seq: int, kind: str, name: str) -> Checkpoint | None:
        cp = self._history.get(seq)
        if cp is None:
            return None
        if cp.kind != kind or cp.name != name:
            error = NonDeterminismError(
                f"run {self.run_id!r} at seq {seq}: history has {cp.kind} {cp.name!r} but the "
                f"workflow now calls {kind} {name!r}; the code changed under a running workflow "
                f"(guard the change with ctx.patched())"
            )
            self._fail(error)
            raise error
        self._visited.add(seq)
        return cp

    def _gate(self, seq: int) -> None:
        """Called before any live work: refuse it once the run has to stop."""
        if self.stopped or self.conflict or self.failure is not None or self.store_error:
            raise Suspend()
        if self._barrier is not None and seq >= self._barrier:
            # numbered after the run began to suspend: code that swallowed the suspension
            raise Suspend()
        if self._lease.lost:
            self.stopped = True
            raise Suspend()
        if self._out_of_time(self._rt.clock.now()):
            self.stopped = True
            self.wakes.append(self._rt.clock.now())
            self.suspended = "pending"
            raise Suspend()

    def _out_of_time(self, at: float) -> bool:
        return self._deadline is not None and at >= self._deadline

    def _suspend(self, kind: SuspendKind, wake_at: float | None) -> NoReturn:
        if wake_at is not None:
            self.wakes.append(wake_at)
        if self._barrier is None:
            self._barrier = self._seq
        order = {"waiting": 0, "sleeping": 1, "pending": 2}
        if self.suspended is None or order[kind] > order[self.suspended]:
            self.suspended = kind
        raise Suspend()

    def _fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error

    def _take_signal(self, name: str) -> Signal | None:
        for signal in self._signals:
            if signal.name == name and signal.id not in self._consumed:
                self._consumed.add(signal.id)
                return signal
        return None

    def _local_key(self) -> str:
        n = self._local.get(self._seq, 0)
        self._local[self._seq] = n + 1
        return f"{self.run_id}:{self._seq}:{n}"

    def _encode(self, value: Any, what: str) -> Any:
        try:
            encoded = encode(value, what)
            size = encoded_size(encoded)
        except HeronError as exc:
            self._fail(exc)
            raise Suspend() from exc
        if size > self._rt.max_payload:
            error = PayloadTooLarge(
                f"{what}: result is {size} bytes, over the {self._rt.max_payload}-byte limit"
            )
            self._fail(error)
            raise Suspend() from error
        return encoded

    @staticmethod
    def _decode(value: Any, decoder: Callable[[Any], Any] | None) -> Any:
        return value if decoder is None or value is None else decoder(value)

    def _step_failed(self, name: str, seq: int, cp: Checkpoint) -> StepFailed:
        error = cp.error or {}
        return StepFailed(
            name,
            str(error.get("type")),
            str(error.get("message")),
            run_id=self.run_id,
            seq=seq,
            attempts=cp.attempts,
        )

    async def _commit(self, cp: Checkpoint) -> None:
        """Append one checkpoint, create-only.

        Two executors replaying one run can both reach ``seq`` live (the lease lapsed under a
        slow one). The store lets exactly one append win; the loser stops here, reloads and
        replays the winner's value, so a step commits once even when it ran twice::

            A: run step 7 ─────────────── append(7) ✓
            B:        run step 7 ──────────────────── append(7) ✗ Conflict → reload, replay
        """
        store = self._rt.store
        try:
            if self._pending_patches:
                await self.flush_patches()
            await store.append(self.run_id, cp)
        except Conflict:
            self.conflict = True
            raise Suspend() from None
        except Exception as exc:  # a store failure: fail this invocation, not the run
            if self.store_error is None:
                self.store_error = exc
            raise Suspend() from exc
        self._history[cp.seq] = cp
        self._visited.add(cp.seq)
        self._max_seq = max(self._max_seq, cp.seq)
        self.committed.append(cp)

    async def flush_patches(self) -> None:
        """Write the patch markers taken live (before any later checkpoint, and at the end)."""
        while self._pending_patches:
            marker = self._pending_patches[0]
            await self._rt.store.append(self.run_id, marker)
            self._pending_patches.pop(0)
            self._history[marker.seq] = marker

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        """Count a live step as in flight while inside the ``with`` block."""
        self._inflight += 1
        try:
            yield
        finally:
            self._inflight -= 1
            if not self._inflight and self._idle is not None:
                self._idle.set()

    async def settle(self) -> None:
        """After the workflow function returns: let live steps still in flight commit."""
        while self._inflight:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def unvisited(self) -> list[int]:
        """Recorded seqs the code never reached (only meaningful once the workflow finished)."""
        return sorted(s for s in self._history if s >= 0 and s not in self._visited)
