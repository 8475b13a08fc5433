"""``Runtime``: registers workflows and steps, starts runs and drives them, one resume at a time.

One resume is one invocation's worth of work::

    take the lease if the run is due ─► load ─► replay the workflow (_executor) ─► decide
    ─► save the header (conditional on revision) ─► release the lease
    ─► dispatch its new children, and a precise wake if it is soon

A save that loses to a signal or a cancel (``Conflict``) reloads and replays, so a signal that
lands while a run is suspending is consumed, never overwritten. The runtime reads no
environment: the edges (``heron.functions``: the CLI, the Lambda handlers, ``heron dev``) read
``HERON_*`` and hand it a store and a dispatcher.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, overload

from heron.runtime._clock import Clock, SystemClock
from heron.runtime._decide import Decision
from heron.runtime._dispatch import Dispatcher, InProcessDispatcher
from heron.runtime._errors import (
    Conflict,
    ErrorRecord,
    PayloadTooLarge,
    RunNotFound,
    SerializationError,
    StoreError,
    WorkflowFailed,
)
from heron.runtime._executor import Engine, execute
from heron.runtime._invocation import Invocation, Limits
from heron.runtime._lease import Lease, finished_wake
from heron.runtime._operations import CHILD_SIGNAL, RESERVED_PREFIX, StepKey
from heron.runtime._registry import Registry
from heron.runtime._retry import RetryPolicy
from heron.runtime._serde import encode
from heron.runtime._state import EngineState, Wait
from heron.stores.contract import (
    MAX_PENDING_SIGNALS,
    TERMINAL_STATUSES,
    Checkpoint,
    Loaded,
    Run,
    RunQuery,
    RunSummary,
    Signal,
    WorkflowStore,
)

__all__ = [
    "MAX_RUN_ID",
    "RESERVED_PREFIX",
    "RunInfo",
    "Runtime",
    "check_run_id",
    "check_signal_name",
]

log = logging.getLogger("heron")

F = TypeVar("F", bound=Callable[..., Any])
#: ``observer(event, data)``: see :meth:`Runtime.observe`.
Observer = Callable[[str, Mapping[str, Any]], None]
#: A run suspending with a wake closer than this gets a precise (delayed) dispatch: the most
#: an SQS message can be delayed (15 minutes); the sweep wakes everything later.
PRECISE_WAKE_WINDOW: Final = 900.0
#: Replays of one resume that may each lose a race before the resume gives up.
_MAX_REPLAYS: Final = 20
#: The embedded store a runtime opens when it is used directly without one.
DEFAULT_STORE_URL: Final = "sqlite:///.heron/heron.db"
#: Characters a run id may have.
MAX_RUN_ID: Final = 200
#: Tags a run may have (each 1 to 100 printable characters).
MAX_TAGS: Final = 50
#: Engine signals (a child telling its parent it ended) may exceed the pending cap.
_ENGINE_SIGNALS: Final = 1 << 30


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What ``Runtime.get`` returns: the run, its timeline (``steps``, in ``seq`` order) and the
    signals it holds that no checkpoint consumed yet."""

    id: str
    workflow: str
    version: str
    status: str
    input: Any
    output: Any
    error: dict[str, Any] | None
    parent_id: str | None
    tags: list[str]
    created_at: float
    updated_at: float
    wake_at: float | None
    steps: list[Checkpoint] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    #: What a suspended run waits for (a sleep, a signal, a child, a retry), with deadlines.
    waiting_for: list[Wait] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class Runtime:
    """The engine. ``Runtime(store=open_store(url), lease_ttl=30.0)``.

    ``store``: where runs live; without one, the edges (CLI, handlers, ``heron dev``) give it
    the store ``HERON_STORE`` names, and used directly it opens the embedded default
    (``sqlite:///.heron/heron.db``) on first use. ``dispatcher``: how a due run gets an
    executor (in-process tasks by default). ``clock``: the wall clock by default.
    ``max_payload`` caps any stored value (256 KiB); a run's input and output together may not
    exceed ``max_header`` (380 KiB, under DynamoDB's 400 KB item). A step back-off longer than
    ``inline_retry_limit`` seconds suspends the run. A run holds at most
    ``max_pending_signals`` unconsumed signals. After ``max_lost_invocations`` invocations in a
    row lost at the same point (their executor died) the run fails. ``log_messages`` lets
    error messages into the logs (by default only error types: a message can carry user data).
    Raises ``ValueError`` for an option out of range.
    """

    def __init__(
        self,
        store: WorkflowStore | None = None,
        *,
        lease_ttl: float = 30.0,
        dispatcher: Dispatcher | None = None,
        clock: Clock | None = None,
        max_payload: int = 256 * 1024,
        max_header: int = 380 * 1024,
        inline_retry_limit: float = 2.0,
        max_pending_signals: int = MAX_PENDING_SIGNALS,
        max_lost_invocations: int = 10,
        log_messages: bool = False,
    ) -> None:
        if not lease_ttl > 0 or not math.isfinite(lease_ttl):
            raise ValueError(f"lease_ttl must be a finite number > 0, got {lease_ttl}")
        if max_lost_invocations < 2:
            raise ValueError(f"max_lost_invocations must be >= 2, got {max_lost_invocations}")
        self._store = store
        #: Whether the app chose its store (the edges then leave it alone, or say it is pinned).
        self.store_pinned = store is not None
        self.lease_ttl = lease_ttl
        self.clock: Clock = clock or SystemClock()
        self.limits = Limits(
            max_payload=max_payload,
            max_header=max_header,
            inline_retry_limit=inline_retry_limit,
            max_pending_signals=max_pending_signals,
            max_lost_invocations=max_lost_invocations,
            log_messages=log_messages,
        )
        self.registry = Registry()
        self.dispatcher: Dispatcher = dispatcher or InProcessDispatcher()
        if isinstance(self.dispatcher, InProcessDispatcher):
            self.dispatcher.bind(self.resume)
        self._last_signal_at = 0.0
        self._observers: list[Observer] = []
        #: Called with (step name, key) before each attempt; raising fails the attempt (tests).
        self._before_attempt: Callable[[str, StepKey], None] | None = None

    # -- configuration --------------------------------------------------------------------------

    @property
    def store(self) -> WorkflowStore:
        """The store; the embedded default is opened on first use if none was given."""
        if self._store is None:
            from heron.stores import open_store

            self._store = open_store(DEFAULT_STORE_URL)
        return self._store

    @store.setter
    def store(self, store: WorkflowStore) -> None:
        self._store = store

    @property
    def max_payload(self) -> int:
        return self.limits.max_payload

    @property
    def inline_retry_limit(self) -> float:
        return self.limits.inline_retry_limit

    def observe(self, observer: Observer) -> Observer:
        """Call ``observer(event, data)`` as runs progress (metrics, logs); returns it.

        Events: ``run.started`` (``run``: a new run was created), ``run.resumed`` (``run``,
        ``now``: an executor took the run's lease and loaded it), ``checkpoint`` (``run``,
        ``checkpoint``: one this invocation committed), ``run.finished`` (``run``: it ended
        completed or failed). Observers run inline and must be quick; one that raises is logged
        and otherwise ignored.
        """
        self._observers.append(observer)
        return observer

    def _notify(self, event: str, **data: Any) -> None:
        for observer in self._observers:
            try:
                observer(event, data)
            except Exception:
                log.exception("observer %r failed on %r", observer, event)

    async def _dispatch(self, run_ids: Sequence[str], *, delay: float = 0.0) -> None:
        """Best effort: a run handed to no executor stays due, and the sweep dispatches it."""
        try:
            await self.dispatcher.dispatch(run_ids, delay=delay)
        except Exception as exc:
            log.warning(
                "dispatch of %d run(s) failed (%s); the sweep will wake them",
                len(run_ids),
                type(exc).__name__,
                extra={"run_id": run_ids[0] if run_ids else None},
            )

    def _engine(self) -> Engine:
        return Engine(self.store, self.clock, self.registry, self.limits, self._before_attempt)

    # -- registration --------------------------------------------------------------------------

    @overload
    def workflow(self, name: F, /) -> F: ...
    @overload
    def workflow(self, name: str | None = None, /, *, version: str = "1") -> Callable[[F], F]: ...
    def workflow(self, name: Any = None, /, *, version: str = "1") -> Any:
        """Register a workflow: ``@rt.workflow``, ``@rt.workflow("name", version="2")``.

        Registering a new version of a name keeps the old one: runs resume on the version they
        started with while it is registered; new runs start on the latest. Raises
        ``TypeError`` for a function that is not async, or whose input or output annotation
        cannot be rebuilt from JSON.
        """

        def register(fn: F) -> F:
            self.registry.add_workflow(
                fn, name if isinstance(name, str) else fn.__name__, str(version)
            )
            return fn

        if callable(name):
            return register(name)
        return register

    @overload
    def step(self, fn: F, /) -> F: ...
    @overload
    def step(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]: ...
    def step(
        self,
        fn: Any = None,
        /,
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Register a step: ``@rt.step`` or ``@rt.step(retry=RetryPolicy(...), timeout=30)``.

        The function is returned unchanged (call it directly in tests); ``ctx.step(fn, ...)``
        runs it durably. A bare ``@rt.step`` retries 3 times, 1 s then 2 s apart. ``timeout``
        (seconds) makes an attempt that runs longer a failed one (``TimeoutError``; a sync
        step's thread cannot be stopped, only abandoned). Raises ``TypeError`` for a return
        annotation that cannot be rebuilt from JSON, ``ValueError`` for a bad timeout.
        """

        def register(f: F) -> F:
            self.registry.add_step(f, name=name, retry=retry, timeout=timeout)
            return f

        return register(fn) if fn is not None else register

    @property
    def workflows(self) -> list[str]:
        return self.registry.workflow_names

    # -- starting and talking to runs ----------------------------------------------------------

    async def start(
        self,
        workflow: str,
        input: Any = None,
        *,
        run_id: str | None = None,
        tags: Iterable[str] = (),
        parent_id: str | None = None,
    ) -> str:
        """Start a run of ``workflow`` and return its id.

        Idempotent on ``run_id``: the same id with the same workflow and input returns the same
        run; with another workflow or input it raises ``Conflict``. Raises
        ``WorkflowNotFound``, ``ValueError`` for a bad id (see :func:`check_run_id`), a tag
        that is not 1 to 100 printable characters, or more than :data:`MAX_TAGS` tags,
        ``SerializationError`` / ``PayloadTooLarge`` for an input that cannot be stored. Nothing
        is stored when it raises.
        """
        spec = self.registry.workflow(workflow)
        run_id = check_run_id(run_id) if run_id is not None else uuid.uuid4().hex
        tag_list = list(tags)
        if len(tag_list) > MAX_TAGS:
            raise ValueError(
                f"run {run_id!r} may have at most {MAX_TAGS} tags, got {len(tag_list)}"
            )
        for tag in tag_list:
            if not isinstance(tag, str) or not tag or len(tag) > 100 or not tag.isprintable():
                raise ValueError(
                    f"tags of run {run_id!r} must be printable strings of 1 to 100 characters, "
                    f"got {tag!r}"
                )
        what = f"input of workflow {workflow!r} (run {run_id!r})"
        value = encode(input, what, self.limits.max_payload).value
        now = self.clock.now()
        run = Run(
            id=run_id,
            workflow=workflow,
            input=value,
            version=spec.version,
            status="pending",
            parent_id=parent_id,
            tags=tag_list,
            created_at=now,
            updated_at=now,
            wake_at=now,
            engine=EngineState.new().to_json(),
        )
        if not await self.store.create(run):
            existing = await self._load(run_id)
            if existing.run.workflow != workflow or _canonical(existing.run.input) != _canonical(
                value
            ):
                raise Conflict(
                    f"run {run_id!r} already exists as workflow {existing.run.workflow!r} with "
                    f"another input; a run id can be started once",
                    run_id=run_id,
                )
            return run_id
        log.info("run started", extra={"run_id": run_id, "workflow": workflow})
        if self._observers:
            self._notify("run.started", run=run)
        await self._dispatch([run_id])
        return run_id

    async def signal(
        self, run_id: str, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> str:
        """Send signal ``name`` to a run; buffered until the run waits for it. Returns its id.

        ``signal_id`` deduplicates (sending it again does nothing). A run that has ended keeps
        the signal without waking (a retry of it can consume it); the HTTP API and the CLI
        refuse one instead (409 ``RunEnded``), since a caller there means a live run. Raises
        ``RunNotFound``,
        ``ValueError`` for a name in the engine's reserved namespace (``heron:``) or a bad id,
        ``SerializationError`` / ``PayloadTooLarge`` for a payload that cannot be stored, and
        ``TooManySignals`` when the run already holds ``max_pending_signals`` unconsumed ones.
        """
        check_signal_name(name)
        if signal_id is not None:
            check_run_id(signal_id, what="signal_id")
        what = f"payload of signal {name!r} (run {run_id!r})"
        value = encode(payload, what, self.limits.max_payload).value
        # Signals load in (at, id) order: keep this runtime's send times strictly increasing so
        # two signals sent within one clock tick are consumed in the order they were sent.
        at = max(self.clock.now(), self._last_signal_at + 1e-6)
        self._last_signal_at = at
        signal = Signal(id=signal_id or uuid.uuid4().hex, name=name, payload=value, at=at)
        if not await self.store.signal(run_id, signal, max_pending=self.limits.max_pending_signals):
            raise RunNotFound(run_id)
        await self._dispatch([run_id])
        return signal.id

    async def cancel(self, run_id: str, reason: str = "cancelled") -> None:
        """Mark a run cancelled, and its active children. An executor working on it stops at
        its next store round trip that sees the header. Raises ``RunNotFound``."""
        while True:
            run = (await self._load(run_id)).run
            if run.terminal:
                return
            run.status = "cancelled"
            run.error = ErrorRecord("Cancelled", reason).to_dict()
            state = self._finish_state(run)
            try:
                saved = await self.store.save(run)
                break
            except Conflict:
                continue
        for child in state.children:
            try:
                await self.cancel(child, f"parent run {run_id!r} was cancelled")
            except RunNotFound:
                pass
        await self._settle_terminal(saved)

    async def retry(self, run_id: str, *, from_seq: int | None = None) -> None:
        """Run a failed or cancelled run again, keeping its history before the point of failure.

        A run that failed in a step (it gave up, or raised ``FatalError``) runs that step again,
        live; what was recorded after it goes too, and the signals consumed there are pending
        again (what Temporal's reset and DBOS's fork do). A run that failed otherwise (the
        workflow raised, a value could not be stored, non-determinism after a code fix) or was
        cancelled carries on from its last checkpoint. ``from_seq`` reruns from that seq
        instead. Raises ``RunNotFound``, ``Conflict`` for a run that is not failed or
        cancelled, ``ValueError`` for a negative ``from_seq``.
        """
        if from_seq is not None and from_seq < 0:
            raise ValueError(f"from_seq must be >= 0, got {from_seq}")
        while True:
            loaded = await self._load(run_id)
            run = loaded.run
            if run.status not in ("failed", "cancelled"):
                raise Conflict(
                    f"run {run_id!r} is {run.status}; only failed or cancelled runs can be retried",
                    run_id=run_id,
                )
            seq = from_seq if from_seq is not None else _failed_step_seq(loaded)
            state = EngineState.from_json(run.engine)
            state.notify = False
            run.status, run.error, run.output = "pending", None, None
            run.wake_at = run.updated_at = self.clock.now()
            try:
                if seq is None:
                    run.engine = state.to_json()
                    await self.store.save(run)
                else:
                    state.forget_from(seq)
                    run.engine = state.to_json()
                    await self.store.rewind(run, seq, restore_signals=True)
                break
            except Conflict:
                continue
        await self._dispatch([run_id])

    async def get(self, run_id: str) -> RunInfo:
        """The run, its status and its timeline. Raises ``RunNotFound``."""
        loaded = await self._load(run_id)
        run = loaded.run
        state = EngineState.from_json(run.engine)
        status: str = run.status
        live = run.lease_expires_at is not None and run.lease_expires_at > self.clock.now()
        if not run.terminal and live:
            status = "running"
        return RunInfo(
            id=run.id,
            workflow=run.workflow,
            version=run.version,
            status=status,
            input=run.input,
            output=run.output,
            error=run.error,
            parent_id=run.parent_id,
            tags=run.tags,
            created_at=run.created_at,
            updated_at=run.updated_at,
            wake_at=run.wake_at,
            steps=loaded.checkpoints,
            signals=[s for s in loaded.signals if not s.name.startswith(RESERVED_PREFIX)],
            children=state.children,
            waiting_for=state.waits if status in ("sleeping", "waiting", "pending") else [],
        )

    async def list_runs(
        self, query: RunQuery | None = None, **filters: Any
    ) -> tuple[list[RunSummary], str | None]:
        """Run summaries, newest first: ``list_runs(workflow="checkout", status="failed",
        limit=20)``; returns the page and the cursor of the next (``None`` at the end). Raises
        ``ValueError`` for a cursor it did not issue."""
        page = await self.store.list_runs(query or RunQuery(**filters))
        return page.runs, page.next_cursor

    async def delete(self, run_id: str) -> None:
        """Remove a run and everything it owns (deleting a missing run does nothing)."""
        await self.store.delete(run_id)

    # -- driving runs --------------------------------------------------------------------------

    async def resume(self, run_id: str, *, deadline: float | None = None) -> Run | None:
        """Do one invocation's worth of work on a run; return its saved header.

        Returns ``None`` when there was nothing to do: the run is not due, or another executor
        holds its lease. ``deadline`` (clock time) is when to stop starting new steps; the run
        then suspends with ``wake_at = now`` and the next invocation carries on. Raises
        ``RunNotFound``, and ``StoreError`` when the store fails (the run is untouched: a later
        resume tries again).
        """
        store = self.store
        lease = await Lease.take(store, run_id, self.lease_ttl, self.clock)
        if lease is None:
            loaded = await self._load(run_id)  # not due, leased, terminal or missing
            if loaded.run.terminal:
                return await self._settle_terminal(loaded.run)
            return None
        lease.keep()
        try:
            # Read the history only under the lease: a history loaded earlier could predate a
            # whole invocation of another executor, and replaying it would re-run its steps.
            current = await store.load(run_id)
            if current is not None and self._observers:
                self._notify("run.resumed", run=current.run, now=self.clock.now())
            for _ in range(_MAX_REPLAYS):
                if current is None:
                    return None
                if current.run.terminal:
                    return await self._settle_terminal(current.run)
                if lease.lost:  # the run belongs to another executor now
                    return None
                saved = await self._replay(current, lease, deadline)
                if isinstance(saved, Run):
                    return saved
                current = await store.load(run_id)  # a race, or a fresh history: replay again
            raise StoreError(
                f"run {run_id!r}: gave up after {_MAX_REPLAYS} conflicting saves", run_id=run_id
            )
        finally:
            await lease.release()

    async def _replay(self, loaded: Loaded, lease: Lease, deadline: float | None) -> Run | None:
        """One replay and its header write; ``None`` to load again and replay once more."""
        run = loaded.run
        spec = self.registry.workflow_or_none(run.workflow, run.version)
        if spec is None:
            run.status = "failed"
            run.error = ErrorRecord(
                "WorkflowNotFound",
                f"no workflow named {run.workflow!r} is registered in this deployment",
            ).to_dict()
            return await self._finish(run, EngineState.from_json(run.engine))
        decision, inv = await execute(self._engine(), loaded, spec, lease, deadline)
        if self._observers:
            for cp in sorted(inv.committed, key=lambda cp: cp.seq):
                self._notify("checkpoint", run=run, checkpoint=cp)
        if decision.kind == "reload" or lease.lost:
            return None
        try:
            await inv.flush_patches()
        except Conflict:
            return None
        return await self._write(decision, inv)

    async def _write(self, decision: Decision, inv: Invocation) -> Run | None:
        run, state, now = inv.run, inv.state, self.clock.now()
        run.updated_at = now
        state.lost = state.live = None  # this invocation ended cleanly
        if decision.kind == "continue":  # a fresh history, started at once in this resume
            run.input, run.output, run.error = decision.input, None, None
            run.status, run.wake_at = "pending", now
            run.engine = EngineState(nonce=state.nonce, children=state.children).to_json()
            try:
                await self.store.rewind(run, 0, restore_signals=False)
            except Conflict:
                pass
            return None
        if decision.kind == "suspended":
            run.status = decision.status  # type: ignore[assignment]
            run.wake_at = decision.wake_at
            run.engine = state.to_json()
            try:
                saved = await self.store.save(run)
            except Conflict:
                return None
            if inv.new_children:
                await self._dispatch(inv.new_children)
            if saved.wake_at is not None and saved.wake_at - now < PRECISE_WAKE_WINDOW:
                await self._dispatch([saved.id], delay=max(0.0, saved.wake_at - now))
            return saved
        if decision.kind == "completed":
            try:
                run.output = self._output(run, decision.output)
                run.status = "completed"
            except (SerializationError, PayloadTooLarge) as exc:
                run.status, run.error = "failed", ErrorRecord.of(exc).to_dict()
        else:
            run.status, run.error = "failed", decision.error
        return await self._finish(run, state)

    def _output(self, run: Run, output: Any) -> Any:
        """The workflow's output as stored; the run's header must hold input and output."""
        what = f"output of workflow {run.workflow!r} (run {run.id!r})"
        encoded = encode(output, what, self.limits.max_payload)
        input_size = len(json.dumps(run.input, ensure_ascii=False).encode("utf-8", "replace"))
        if input_size + encoded.size > self.limits.max_header:
            raise PayloadTooLarge(
                f"{what}: {encoded.size} bytes; with its {input_size}-byte input the run's "
                f"header would hold {input_size + encoded.size} bytes, over the "
                f"{self.limits.max_header} a header may hold"
            )
        return encoded.value

    def _finish_state(self, run: Run) -> EngineState:
        """A run ends: timers and retries go; a child stays due until its parent is told."""
        state = EngineState.from_json(run.engine)
        state.timers.clear()
        state.retries.clear()
        state.waits.clear()
        state.lost = state.live = None
        state.notify = run.parent_id is not None
        run.updated_at = self.clock.now()
        run.wake_at = finished_wake(state.notify, run.updated_at)
        run.engine = state.to_json()
        return state

    async def _finish(self, run: Run, state: EngineState) -> Run | None:
        run.engine = state.to_json()
        self._finish_state(run)
        try:
            saved = await self.store.save(run)
        except Conflict:
            return None
        log.info(
            "run finished", extra={"run_id": run.id, "workflow": run.workflow, "status": run.status}
        )
        if self._observers:
            self._notify("run.finished", run=saved)
        return await self._settle_terminal(saved)

    async def _settle_terminal(self, run: Run) -> Run:
        """Finish the bookkeeping of a terminal run: wake its parent, stop it being due."""
        if run.wake_at is None:
            return run
        state = EngineState.from_json(run.engine)
        if state.notify and run.parent_id is not None:
            # Only a wake-up: the parent reads the outcome from this run itself.
            signal = Signal(
                id=f"child:{run.id}",
                name=CHILD_SIGNAL + run.id,
                payload={"status": run.status},
                at=self.clock.now(),
            )
            if await self.store.signal(run.parent_id, signal, max_pending=_ENGINE_SIGNALS):
                await self._dispatch([run.parent_id])
        state.notify = False
        run.engine = state.to_json()
        run.wake_at = None
        try:
            return await self.store.save(run)
        except Conflict:  # someone else settled it; the parent signal is idempotent anyway
            return run

    async def sweep(self, limit: int = 100, *, deadline: float | None = None) -> int:
        """Dispatch every run that is due, ``limit`` at a time; returns how many were sent.
        ``deadline`` (clock time): stop paging then."""
        seen: set[str] = set()
        while True:
            # Dispatched runs stay due until an executor takes them, so each page asks for
            # everything seen so far plus one more page, and keeps only what is new.
            want = len(seen) + limit
            ids = await self.store.due(self.clock.now(), want)
            fresh = [i for i in ids if i not in seen]
            if fresh:
                seen.update(fresh)
                await self.dispatcher.dispatch(fresh)
            if len(ids) < want or not fresh:
                break
            if deadline is not None and self.clock.now() >= deadline:
                break
        return len(seen)

    async def wait(self, run_id: str, timeout: float | None = None, *, poll: float = 0.05) -> Any:
        """Drive runs in this process until ``run_id`` ends; return its output.

        Resumes whatever is due (the run and its children) itself, so it works with any
        dispatcher. Raises ``WorkflowFailed`` if the run fails or is cancelled,
        ``TimeoutError`` after ``timeout`` real seconds (a step still running then is left to
        finish or lapse, never committed half-way), ``RunNotFound``.
        """
        if timeout is None:
            return await self._drive(run_id, poll)
        try:
            return await asyncio.wait_for(self._drive(run_id, poll), timeout)
        except TimeoutError:
            status = (await self._load(run_id)).run.status
            raise TimeoutError(f"run {run_id!r} still {status} after {timeout}s") from None

    async def _drive(self, run_id: str, poll: float) -> Any:
        while True:
            run = (await self._load(run_id)).run
            if run.terminal and run.wake_at is None:
                return self._outcome(run)
            now = self.clock.now()
            due = await self.store.due(now, 100)
            moved = False
            for due_id in due:
                moved = await self.resume(due_id) is not None or moved
            await asyncio.sleep(0)
            if moved:
                continue
            if due:  # due but leased by another executor: give its lease time to end
                await self.clock.sleep(poll)
                continue
            nxt = await self.store.due(math.inf, 1)
            wake = (await self._load(nxt[0])).run.wake_at if nxt else None
            delay = poll if wake is None else max(0.0, wake - now)
            if not getattr(self.clock, "skips_time", False):
                delay = min(delay, poll)
            await self.clock.sleep(delay)
            await asyncio.sleep(0)

    def _outcome(self, run: Run) -> Any:
        if run.status != "completed":
            raise WorkflowFailed(run.id, run.status, run.error)
        spec = self.registry.workflow_or_none(run.workflow, run.version)
        if spec is None or spec.decoder is None or run.output is None:
            return run.output
        return spec.decoder(run.output)

    async def close(self) -> None:
        """Stop background dispatches and close the store."""
        await self.dispatcher.close()
        if self._store is not None:
            await self._store.close()

    # -- helpers -------------------------------------------------------------------------------

    async def _load(self, run_id: str) -> Loaded:
        loaded = await self.store.load(run_id)
        if loaded is None:
            raise RunNotFound(run_id)
        return loaded


def check_run_id(run_id: Any, *, what: str = "run_id") -> str:
    """``run_id`` if it can name a run everywhere (a URL path, a header, a terminal), else
    ``ValueError`` saying why (docs/security.md). Refused: not a string, empty, more than
    :data:`MAX_RUN_ID` characters, leading or trailing whitespace, the dot segments ``.`` and
    ``..``, control characters, ``/``, ``?`` and ``#``, and lone surrogates. Anything else,
    any script included, is accepted, and percent-encoded wherever it goes into a URL."""
    if not isinstance(run_id, str):
        raise ValueError(f"{what} must be a string, got {type(run_id).__name__}")
    if not run_id:
        raise ValueError(f"{what} may not be empty")
    if len(run_id) > MAX_RUN_ID:
        raise ValueError(f"{what} may have at most {MAX_RUN_ID} characters, got {len(run_id)}")
    if run_id != run_id.strip():
        raise ValueError(f"{what} {run_id!r} may not start or end with whitespace")
    if run_id in (".", ".."):
        raise ValueError(f"{what} {run_id!r} is a dot segment, which URLs cannot address")
    if not run_id.isprintable():
        raise ValueError(f"{what} {run_id!r} may not contain control characters")
    bad = sorted({c for c in run_id if c in "/?#"})
    if bad:
        raise ValueError(f"{what} {run_id!r} may not contain {', '.join(map(repr, bad))}")
    try:
        run_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {run_id!r} is not valid Unicode (a lone surrogate)") from None
    return run_id


def check_signal_name(name: Any) -> str:
    """``name`` if a caller may send a signal by that name, else ``ValueError`` saying why.
    Refused: not a string, empty, more than 200 characters, control characters, and names under
    :data:`RESERVED_PREFIX` (``heron:``), which carry the engine's own messages (a child's
    outcome to its parent) and are never accepted from outside (docs/security.md)."""
    if not isinstance(name, str) or not name or len(name) > 200 or not name.isprintable():
        raise ValueError(
            f"signal name must be a printable string of 1 to 200 characters, got {name!r}"
        )
    if name.startswith(RESERVED_PREFIX):
        raise ValueError(
            f"signal name {name!r} is reserved: names starting with {RESERVED_PREFIX!r} are the "
            "engine's own messages (a child's outcome to its parent)"
        )
    return name


def _failed_step_seq(loaded: Loaded) -> int | None:
    """The seq to rerun from: the step whose failure failed the run (the latest failed step
    checkpoint, when the run failed with ``StepFailed``), else ``None`` (carry on)."""
    error = loaded.run.error or {}
    if loaded.run.status != "failed" or error.get("type") != "StepFailed":
        return None
    name = error.get("step")
    failed = [
        cp.seq
        for cp in loaded.checkpoints
        if cp.seq >= 0 and cp.kind == "step" and cp.error is not None and cp.name == name
    ]
    return max(failed) if failed else None


def _canonical(value: Any) -> str:
    """JSON with sorted keys: equal inputs in any key order compare equal, 1 and 1.0 do not."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
