"""One invocation's work on one run: its history, its sequence numbers, the ordered hand-back of
outcomes, the operations that wait, and the commit of each new checkpoint.

Replay rests on three rules.

1. **Numbering.** Every operation takes the next ``seq`` when it is *called*, before any await,
   so concurrent branches number their operations the same way on every replay.

2. **Ordered hand-back.** An operation's outcome goes back to the workflow in the order the
   outcomes were *committed*, which each checkpoint records (``order``), and only after the
   tasks that are ready have run (no ``seq`` was taken during a pass of the event loop).
   Replayed outcomes are ready at once while live ones take time; handing them back in
   recorded order makes every branch take its next ``seq`` at the same point as it did live::

       live:    fetch#0 (slow) ──────────────┐ commit, order 1      ─► branch A takes #3
                fetch#1 (fast) ──┐ commit, order 0 ─► branch B takes #2
       replay:  fetch#0 ┐ order 1: waits for order 0 ─────────────────► branch A takes #3
                fetch#1 ┘ order 0: handed back first ─► branch B takes #2

3. **Waiting is blocking.** An operation that cannot finish now (a timer not due, a signal not
   here, a child still running, a retry back-off, the invocation out of time) does not unwind
   the workflow: it blocks. The executor suspends the run only when the workflow is quiet
   (nothing running, nothing ready: every branch waits on Heron), so every pending operation,
   wherever it sits (nested helper coroutines inside ``gather`` included), has registered its
   deadline, and the run wakes at the earliest. Only then are the blocked operations released
   with ``Suspend`` (a ``BaseException``) to unwind the workflow. A blocked timer or wait that
   the workflow cancels through asyncio stops counting (and the cancellation is recorded, so a
   replay cancels it at the same point); a blocked operation never holds back another's
   outcome.

The executor (``_executor.py``) builds an invocation and the workflow's ``Context`` on it, and
reads what the invocation recorded (``failure``, ``conflict``, ``store_error``, the blocked
operations) after the workflow function returns or goes quiet.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn, TypeVar

from heron.runtime._clock import Clock
from heron.runtime._errors import NonDeterminismError, Suspend
from heron.runtime._lease import Lease
from heron.runtime._registry import Registry
from heron.runtime._serde import Encoded
from heron.runtime._state import EngineState, Wait
from heron.stores.contract import (
    MAX_PENDING_SIGNALS,
    Checkpoint,
    Conflict,
    Loaded,
    Run,
    Signal,
    WorkflowStore,
)

__all__ = ["BlockKind", "Blocked", "Invocation", "Limits"]

log = logging.getLogger("heron")
T = TypeVar("T")

#: Why an operation waits: for time (``sleeping``), for a signal or a child (``waiting``),
#: for the next invocation (``pending``: out of time), for a cancellation that history says
#: comes (``cancelled``), or for nothing: the invocation is stopping (``stopped``).
BlockKind = Literal["sleeping", "waiting", "pending", "cancelled", "stopped"]
_STATUS_RANK: Final = {"waiting": 0, "cancelled": 0, "stopped": 0, "sleeping": 1, "pending": 2}


@dataclass(frozen=True, slots=True)
class Limits:
    """The runtime's knobs an invocation needs (see ``Runtime``)."""

    max_payload: int = 256 * 1024
    max_header: int = 380 * 1024
    inline_retry_limit: float = 2.0
    max_pending_signals: int = MAX_PENDING_SIGNALS
    max_lost_invocations: int = 10
    log_messages: bool = False


@dataclass(slots=True)
class Blocked:
    """An operation that cannot finish in this invocation: what it waits for, until when."""

    kind: BlockKind
    deadline: float | None
    future: asyncio.Future[None]
    #: What it waits for, for people (``Wait.kind``, ``Wait.name``); ``None``: nothing to show.
    what: tuple[str, str] | None = None


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class Invocation:
    """The engine's side of one replay (see the module docstring). Not thread-safe; one per
    resume."""

    def __init__(
        self,
        loaded: Loaded,
        *,
        store: WorkflowStore,
        clock: Clock,
        registry: Registry,
        limits: Limits,
        lease: Lease,
        deadline: float | None,
        state: EngineState,
        before_attempt: Callable[[str, Any], None] | None = None,
    ) -> None:
        run = loaded.run
        self.run: Run = run
        self.run_id = run.id
        self.store = store
        self.clock = clock
        self.registry = registry
        self.limits = limits
        self.lease = lease
        self.deadline = deadline
        self.state = state
        self.before_attempt = before_attempt
        self.loop = asyncio.get_running_loop()
        self._ready_queue = getattr(self.loop, "_ready", None)  # CPython's; None elsewhere

        # the history
        self.history: dict[int, Checkpoint] = {}
        self.patches: set[str] = set()
        self.patch_answers: dict[str, bool] = {}
        self.patch_seq = 0
        self.pending_patches: list[Checkpoint] = []
        self.max_seq = -1
        self._outstanding: list[int] = []  # heap of orders not handed back yet
        self._seq_of_order: dict[int, int] = {}
        next_order = 0
        for cp in loaded.checkpoints:
            if cp.seq < 0:
                self.patches.add(cp.name)
                self.patch_seq = min(self.patch_seq, cp.seq)
                continue
            self.history[cp.seq] = cp
            self.max_seq = max(self.max_seq, cp.seq)
            order = cp.seq if cp.order is None else cp.order
            heapq.heappush(self._outstanding, order)
            self._seq_of_order[order] = cp.seq
            next_order = max(next_order, order + 1)
        self.next_order = next_order
        self.recorded = len(self.history)  # checkpoints before this invocation
        self.signals: list[Signal] = loaded.signals
        self.taken_signals: set[str] = set()

        # numbering, hand-back, blocking
        self.next_seq = 0
        self.visited: set[int] = set()
        self._turns: dict[int, asyncio.Future[None]] = {}
        self.blocked: dict[int, Blocked] = {}
        self.blocked_tasks: set[asyncio.Task[Any]] = set()  # tasks that ever blocked here
        self.busy = 0
        self.progress = 0
        self._changed = asyncio.Event()

        # what the executor reads afterwards
        self.unwinding = False
        self.stopping = False  # no new live work: the lease is gone, a race or a failure
        self.conflict = False  # a write raced another executor: reload and replay
        self.store_error: BaseException | None = None
        self.failure: BaseException | None = None  # fail the run with this, history intact
        self.lost_charge = 0  # an attempt that never came back, owed by the first live step
        self.lost_live: int | None = None  # where the lost invocation's first live step was
        self.started_live = False  # a step ran live in this invocation
        self._saving = asyncio.Lock()
        self.committed: list[Checkpoint] = []
        self.new_children: list[str] = []
        self.continued: Encoded | None = None  # ctx.continue_as_new(input), recorded

    # -- numbering and replay -----------------------------------------------------------------

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq = seq + 1
        self.progress += 1
        return seq

    def replayed(self, seq: int, kind: str, name: str) -> Checkpoint | None:
        """The recorded outcome at ``seq``, if any; ``NonDeterminismError`` (recorded as the
        run's failure) when the code now calls another operation there."""
        self.visited.add(seq)
        cp = self.history.get(seq)
        if cp is None:
            return None
        if cp.kind != kind or cp.name != name:
            error = NonDeterminismError(
                f"run {self.run_id!r} at seq {seq}: the history has {cp.kind} {cp.name!r} but "
                f"the workflow now calls {kind} {name!r}; the code changed under a running "
                "workflow (guard the change with ctx.patched())"
            )
            self.fail(error)
            raise error
        return cp

    def unreached(self) -> list[int]:
        """Recorded seqs the code never reached (meaningful once the workflow is done)."""
        return sorted(seq for seq in self.history if seq not in self.visited)

    def stalled_seq(self) -> int | None:
        """When quiet: the seq of a recorded outcome that must be handed back before any other
        and that the code has not reached (it went another way), else ``None``."""
        if not self._outstanding:
            return None
        seq = self._seq_of_order.get(self._outstanding[0])
        return seq if seq is not None and seq not in self.visited else None

    def fail(self, error: BaseException) -> None:
        """Fail the run with ``error`` once the workflow stops (the first failure wins)."""
        if self.failure is None:
            self.failure = error
        self.stop()

    def stop(self) -> None:
        """Start no new live work: what runs finishes, what would start blocks."""
        self.stopping = True
        self._poke()

    # -- the ordered hand-back ----------------------------------------------------------------

    async def turn(self, order: int) -> None:
        """Wait until the outcome committed as ``order`` is next to go back to the workflow,
        and the ready tasks have settled (see rule 2); then mark it handed back."""
        while True:
            if self._outstanding and self._outstanding[0] != order:
                waiter = self._turns[order] = self.loop.create_future()
                try:
                    await waiter
                finally:
                    self._turns.pop(order, None)
                continue
            ready = self._ready_queue
            if ready is not None and not ready:  # nothing else can run first: hand back now
                break
            before = self.next_seq
            await asyncio.sleep(0)
            if self.next_seq == before and (not self._outstanding or self._outstanding[0] == order):
                break
        self.handed(order)

    def hand_back_now(self, order: int) -> bool:
        """The fast path of :meth:`turn`, without a coroutine: ``order`` is next and nothing
        else is ready to run, so it goes back at once (marked handed). ``False``: await
        :meth:`turn`."""
        ready = self._ready_queue
        if ready is None or ready or not self._outstanding or self._outstanding[0] != order:
            return False
        self.handed(order)
        return True

    def handed(self, order: int) -> None:
        """``order`` left the queue (handed back, or cancelled while waiting for its turn)."""
        if self._outstanding and self._outstanding[0] == order:
            heapq.heappop(self._outstanding)
        elif order in self._outstanding:
            self._outstanding.remove(order)
            heapq.heapify(self._outstanding)
        self.progress += 1
        if self._outstanding:
            waiter = self._turns.get(self._outstanding[0])
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def recorded_order(self, cp: Checkpoint) -> int:
        return cp.seq if cp.order is None else cp.order

    # -- blocking -----------------------------------------------------------------------------

    async def block(
        self,
        seq: int,
        kind: BlockKind,
        deadline: float | None,
        what: tuple[str, str] | None = None,
    ) -> NoReturn:
        """Wait, in this invocation, for what only a later one can give; registers ``deadline``
        (when the run must wake for it) and ``what`` it waits for (shown to people). Never
        returns: raises ``Suspend`` when the executor unwinds the workflow; a cancellation from
        the workflow raises ``CancelledError``."""
        if self.unwinding:
            raise Suspend()
        future: asyncio.Future[None] = self.loop.create_future()
        self.blocked[seq] = Blocked(kind, deadline, future, what)
        task = asyncio.current_task()
        if task is not None:
            self.blocked_tasks.add(task)
        self._poke()
        try:
            await future
        finally:
            self.blocked.pop(seq, None)
            self._poke()
        raise Suspend()  # nothing resolves a blocked future but with an exception

    def unwind(self) -> None:
        """Release every blocked operation and every turn with ``Suspend``: the workflow
        unwinds. New operations raise ``Suspend`` at once from here on."""
        self.unwinding = True
        self.stopping = True
        for blocked in list(self.blocked.values()):
            if not blocked.future.done():
                blocked.future.set_exception(Suspend())
        for waiter in list(self._turns.values()):
            if not waiter.done():
                waiter.set_exception(Suspend())
        for task in self.blocked_tasks:  # a branch nobody awaits any more: no "never retrieved"
            task.add_done_callback(_retrieve)

    def deadlines(self) -> list[float]:
        return [b.deadline for b in self.blocked.values() if b.deadline is not None]

    def waits(self) -> list[Wait]:
        """What the blocked operations wait for, in seq order (for people: the header keeps it
        while the run is suspended)."""
        return [
            Wait(seq, b.what[0], b.what[1], b.deadline)
            for seq, b in sorted(self.blocked.items())
            if b.what is not None
        ]

    def suspended_status(self) -> str:
        """``sleeping`` / ``waiting`` / ``pending``: what the blocked operations wait for."""
        kinds = [b.kind for b in self.blocked.values()] or ["waiting"]
        kind = max(kinds, key=_STATUS_RANK.__getitem__)
        return "waiting" if kind in ("cancelled", "stopped") else kind

    def out_of_time(self, at: float | None = None) -> bool:
        return (
            self.deadline is not None and (self.clock.now() if at is None else at) >= self.deadline
        )

    async def gate(self, seq: int) -> None:
        """Before any live work: block if the invocation is stopping or out of time."""
        if self.unwinding:
            raise Suspend()
        if self.stopping or self.lease.lost:
            self.stopping = True
            await self.block(seq, "stopped", None)
        if self.out_of_time():
            await self.block(seq, "pending", self.clock.now(), ("time", "the next invocation"))

    # -- quiet ----------------------------------------------------------------------------------

    def _poke(self) -> None:
        """Something the executor's quiet check cares about changed (only while an operation
        waits or the invocation stops: a steady run of steps never wakes the executor)."""
        self.progress += 1
        self._changed.set()

    def others_ready(self) -> bool:
        ready = self._ready_queue
        return True if ready is None else bool(ready)

    def mark(self) -> None:
        """Start watching for changes: :meth:`changed` returns once something changed since."""
        self._changed.clear()

    async def changed(self) -> None:
        """Wait until something changed since :meth:`mark` (an operation blocked, unblocked,
        finished its work, or the invocation began to stop)."""
        await self._changed.wait()

    def work_started(self) -> None:
        self.busy += 1

    def work_done(self) -> None:
        self.busy -= 1
        if not self.busy and (self.blocked or self.stopping):
            self._poke()

    # -- commits ------------------------------------------------------------------------------

    async def commit(
        self,
        seq: int,
        kind: str,
        name: str,
        *,
        value: Any = None,
        error: dict[str, Any] | None = None,
        attempts: int = 1,
        encoded: str | None = None,
        consumes: str | None = None,
    ) -> Checkpoint:
        """Append the checkpoint of ``seq`` (create-only) with the next ``order``; return it.

        Two executors replaying one run can both reach ``seq`` live (the lease lapsed under a
        slow one). The store lets exactly one append win; the loser stops here, reloads and
        replays the winner's value, so a step commits once even when it ran twice::

            A: run step 7 ─────────────── append(7) ✓
            B:        run step 7 ──────────────────── append(7) ✗ Conflict → reload, replay

        A failed commit raises ``Suspend`` from the operation: the invocation stops, and
        ``conflict`` (reload and replay) or ``store_error`` (the invocation fails) says why.
        """
        order = self.next_order
        self.next_order = order + 1
        cp = Checkpoint(seq, kind, name, value, error, self.clock.now(), attempts, order, encoded)
        # The order is taken, and queued, before the write: appends can finish in another order
        # than they started, and an outcome must never go back before one ordered ahead of it.
        heapq.heappush(self._outstanding, order)
        self._seq_of_order[order] = seq
        self.busy += 1  # a write in flight: the workflow is not quiet
        try:
            if self.pending_patches:
                await self.flush_patches()
            await self.store.append(self.run_id, cp, consumes=consumes)
        except Conflict:
            self.conflict = True
            self.stop()
            raise Suspend() from None
        except Exception as exc:  # a store failure: fail this invocation, not the run
            self.store_failed(exc)
            raise Suspend() from exc
        finally:
            self.work_done()
        self.history[seq] = cp
        if seq > self.max_seq:
            self.max_seq = seq
        self.committed.append(cp)
        return cp

    def store_failed(self, exc: BaseException) -> None:
        """A store call failed: this invocation fails (a later one retries), not the run."""
        if self.store_error is None:
            self.store_error = exc
        self.stop()

    async def flush_patches(self) -> None:
        """Write the patch markers decided live (before any later checkpoint, and at the end)."""
        while self.pending_patches:
            marker = self.pending_patches[0]
            await self.store.append(self.run_id, marker)
            self.pending_patches.pop(0)

    async def save_state(self) -> None:
        """Write the header now, with the engine state as it is (before a retry attempt, or a
        step charged with attempts that never came back: so a crash during it counts). A race
        stops the invocation (reload and replay); so does a store failure."""
        self.busy += 1
        try:
            async with self._saving:
                if self.stopping:
                    return
                self.run.engine = self.state.to_json()
                try:
                    self.run = await self.store.save(self.run)
                except Conflict:
                    self.conflict = True
                    self.stop()
                except Exception as exc:
                    self.store_failed(exc)
        finally:
            self.work_done()

    # -- signals --------------------------------------------------------------------------------

    async def io(self, call: Awaitable[T]) -> T:
        """Await a store call as work in flight (so the workflow is not taken for quiet)."""
        self.busy += 1
        try:
            return await call
        finally:
            self.work_done()

    def take_back(self, signal: Signal | None) -> None:
        if signal is not None:
            self.taken_signals.discard(signal.id)

    def log_retry(
        self, step: str, seq: int, attempt: int, exc: BaseException, delay: float
    ) -> None:
        """One line per failed attempt: the error's type, never its message unless the runtime
        was told to (``log_messages``): a message can carry user data (docs/security.md)."""
        extra = {"run_id": self.run_id, "seq": seq, "step": step, "error_type": type(exc).__name__}
        if self.limits.log_messages:
            from heron.runtime._errors import safe_text

            extra["error"] = safe_text(exc)
        log.warning(
            "step %r attempt %d failed (%s); retrying in %.1fs",
            step,
            attempt,
            type(exc).__name__,
            delay,
            extra=extra,
        )

    def take_signal(self, names: tuple[str, ...]) -> Signal | None:
        """The first pending signal (in ``(at, id)`` order) with one of ``names``."""
        for signal in self.signals:
            if signal.name in names and signal.id not in self.taken_signals:
                self.taken_signals.add(signal.id)
                return signal
        return None
