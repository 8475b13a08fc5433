"""``Runtime``: registers workflows and steps, starts runs and drives them, one resume at a time.

One resume is one invocation's worth of work::

    load run ─► due? ─► acquire lease ─► replay the workflow function ─► run new steps live,
    one checkpoint each ─► suspend or finish ─► save the header (conditional on revision) ─►
    release the lease ─► dispatch a precise wake if it is soon

A save that loses to a signal or a cancel (``Conflict``) reloads and replays, so a signal that
lands while a run is suspending is consumed, never overwritten.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from heron.runtime._clock import Clock, SystemClock
from heron.runtime._context import CHILD_SIGNAL, Context, Lease, StepKey
from heron.runtime._dispatch import Dispatcher, InProcessDispatcher, dispatcher_from_env
from heron.runtime._errors import (
    NonDeterminismError,
    PayloadTooLarge,
    RunNotFound,
    Suspend,
    WorkflowFailed,
    WorkflowNotFound,
    describe,
)
from heron.runtime._retry import DEFAULT_RETRY, RetryPolicy
from heron.runtime._serde import (
    decoder_for,
    encode,
    encoded_size,
    parameter_annotation,
    return_annotation,
)
from heron.stores.contract import (
    TERMINAL_STATUSES,
    Checkpoint,
    Conflict,
    Loaded,
    Run,
    RunQuery,
    Signal,
    StoreError,
    WorkflowStore,
)

__all__ = ["RunInfo", "Runtime"]

log = logging.getLogger("heron")

F = TypeVar("F", bound=Callable[..., Any])
#: ``observer(event, data)``: see :meth:`Runtime.observe`.
Observer = Callable[[str, Mapping[str, Any]], None]
#: A run suspending with a wake closer than this gets a precise (delayed) dispatch.
PRECISE_WAKE_WINDOW = 900.0
_MAX_REPLAYS = 20


@dataclass(frozen=True, slots=True)
class StepSpec:
    name: str
    retry: RetryPolicy
    is_async: bool
    decoder: Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    version: str
    fn: Callable[..., Awaitable[Any]]
    input_decoder: Callable[[Any], Any] | None
    decoder: Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What ``Runtime.get`` returns: the run and its timeline (``steps``, in ``seq`` order)."""

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

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class Runtime:
    """The engine. ``Runtime(store=open_store(url), lease_ttl=30.0)``.

    Without a store it opens ``HERON_STORE``, else ``sqlite:///.heron/heron.db``, on first use.
    ``dispatcher`` defaults to :func:`~heron.runtime.dispatcher_from_env` (SQS when
    ``HERON_QUEUE_URL`` is set, else in-process tasks); ``clock`` to the wall clock. ``max_payload``
    caps any stored value (256 KB); a step back-off longer than ``inline_retry_limit`` seconds
    suspends the run rather than sleeping in the invocation.
    """

    def __init__(
        self,
        store: WorkflowStore | None = None,
        *,
        lease_ttl: float = 30.0,
        dispatcher: Dispatcher | None = None,
        clock: Clock | None = None,
        max_payload: int = 256 * 1024,
        inline_retry_limit: float = 2.0,
    ) -> None:
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be > 0, got {lease_ttl}")
        self._store = store
        self.lease_ttl = lease_ttl
        self.clock: Clock = clock or SystemClock()
        self.max_payload = max_payload
        self.inline_retry_limit = inline_retry_limit
        if dispatcher is None:
            dispatcher = dispatcher_from_env()
        if isinstance(dispatcher, InProcessDispatcher):
            dispatcher.bind(self.resume)
        self.dispatcher: Dispatcher = dispatcher
        self._workflows: dict[str, dict[str, WorkflowSpec]] = {}
        self._steps: dict[Callable[..., Any], StepSpec] = {}
        self._last_signal_at = 0.0
        self._observers: list[Observer] = []
        #: Called with (step name, key) before each attempt; raising fails the attempt.
        self._before_attempt: Callable[[str, StepKey], None] | None = None

    @property
    def store(self) -> WorkflowStore:
        """The store; opened from ``HERON_STORE`` (or the default) on first use if not given."""
        if self._store is None:
            from heron.stores import DEFAULT_STORE_URL, open_store

            self._store = open_store(os.environ.get("HERON_STORE") or DEFAULT_STORE_URL)
        return self._store

    @store.setter
    def store(self, store: WorkflowStore) -> None:
        self._store = store

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
        except Exception:
            log.exception(
                "dispatch of %d run(s) failed; the sweep will wake them",
                len(run_ids),
                extra={"run_id": run_ids[0] if run_ids else None},
            )

    # -- registration --------------------------------------------------------------------------

    @overload
    def workflow(self, name: F, /) -> F: ...
    @overload
    def workflow(self, name: str | None = None, /, *, version: str = "1") -> Callable[[F], F]: ...
    def workflow(self, name: Any = None, /, *, version: str = "1") -> Any:
        """Register a workflow: ``@rt.workflow``, ``@rt.workflow("name", version="2")``.

        Registering a new version of a name keeps the old one: runs resume on the version they
        started with while it is registered; new runs start on the latest.
        """

        def register(fn: F) -> F:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"workflow {fn.__qualname__!r} must be an async function")
            wf_name = name if isinstance(name, str) else fn.__name__
            spec = WorkflowSpec(
                name=wf_name,
                version=str(version),
                fn=fn,
                input_decoder=decoder_for(parameter_annotation(fn, 1)),
                decoder=decoder_for(return_annotation(fn)),
            )
            versions = self._workflows.setdefault(wf_name, {})
            versions.pop(spec.version, None)
            versions[spec.version] = spec  # the last registered is the latest
            return fn

        if callable(name):
            return register(name)
        return register

    @overload
    def step(self, fn: F, /) -> F: ...
    @overload
    def step(
        self, fn: None = None, /, *, name: str | None = None, retry: RetryPolicy | None = None
    ) -> Callable[[F], F]: ...
    def step(
        self, fn: Any = None, /, *, name: str | None = None, retry: RetryPolicy | None = None
    ) -> Any:
        """Register a step: ``@rt.step`` or ``@rt.step(retry=RetryPolicy(...), name=...)``.

        The function is returned unchanged (call it directly in tests); ``ctx.step(fn, ...)``
        runs it durably. A bare ``@rt.step`` retries 3 times, 1 s then 2 s apart.
        """

        def register(f: F) -> F:
            self._steps[f] = self._make_step_spec(f, name, retry)
            return f

        return register(fn) if fn is not None else register

    def _make_step_spec(
        self, fn: Callable[..., Any], name: str | None, retry: RetryPolicy | None
    ) -> StepSpec:
        return StepSpec(
            name=name or str(getattr(fn, "__qualname__", repr(fn))),
            retry=retry or DEFAULT_RETRY,
            is_async=inspect.iscoroutinefunction(fn),
            decoder=decoder_for(return_annotation(fn)),
        )

    def _step_spec(self, fn: Callable[..., Any]) -> StepSpec:
        spec = self._steps.get(fn)
        if spec is None:  # an unregistered function is a step with the default policy
            spec = self._steps[fn] = self._make_step_spec(fn, None, None)
        return spec

    def _workflow_or_none(self, name: str, version: str | None = None) -> WorkflowSpec | None:
        versions = self._workflows.get(name)
        if not versions:
            return None
        if version is not None and version in versions:
            return versions[version]
        return next(reversed(versions.values()))

    def _workflow(self, name: str, version: str | None = None) -> WorkflowSpec:
        spec = self._workflow_or_none(name, version)
        if spec is None:
            known = ", ".join(sorted(self._workflows)) or "none"
            raise WorkflowNotFound(f"no workflow named {name!r} is registered (known: {known})")
        return spec

    @property
    def workflows(self) -> list[str]:
        return sorted(self._workflows)

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
        run; with another workflow or input it raises ``Conflict``.
        """
        spec = self._workflow(workflow)
        run_id = _check_id(run_id) if run_id is not None else uuid.uuid4().hex
        tag_list = list(tags)
        if not all(isinstance(t, str) and t for t in tag_list):
            raise ValueError(f"tags of run {run_id!r} must be non-empty strings, got {tag_list!r}")
        value = self._checked(input, f"input of workflow {workflow!r} (run {run_id!r})")
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

    async def _start_child(self, ctx: Context, child_id: str, workflow: str, input: Any) -> None:
        spec = self._workflow(workflow)
        value = self._checked(input, f"input of child workflow {workflow!r} (run {child_id!r})")
        now = self.clock.now()
        run = Run(
            id=child_id,
            workflow=workflow,
            input=value,
            version=spec.version,
            status="pending",
            parent_id=ctx.run_id,
            created_at=now,
            updated_at=now,
            wake_at=now,
        )
        await self.store.create(run)  # False: an earlier invocation created it already

    async def signal(
        self, run_id: str, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> str:
        """Send signal ``name`` to a run; buffered until the run waits for it.

        ``signal_id`` deduplicates (sending it again does nothing). Returns the signal id.
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"signal name for run {run_id!r} must be a non-empty string")
        value = self._checked(payload, f"payload of signal {name!r} (run {run_id!r})")
        # Signals load in (at, id) order: keep this runtime's send times strictly increasing so
        # two signals sent within one clock tick are consumed in the order they were sent.
        at = max(self.clock.now(), self._last_signal_at + 1e-6)
        self._last_signal_at = at
        signal = Signal(id=signal_id or uuid.uuid4().hex, name=name, payload=value, at=at)
        if not await self.store.signal(run_id, signal):
            raise RunNotFound(run_id)
        await self._dispatch([run_id])
        return signal.id

    async def cancel(self, run_id: str, reason: str = "cancelled") -> None:
        """Mark a run cancelled (and its active children). An executor stops at its next save."""
        while True:
            loaded = await self._load(run_id)
            run = loaded.run
            if run.terminal:
                return
            run.status = "cancelled"
            run.error = {"type": "Cancelled", "message": reason}
            self._mark_finished(run)
            try:
                saved = await self.store.save(run)
                break
            except Conflict:
                continue
        for child in run.engine.get("children", []):
            try:
                await self.cancel(child, f"parent run {run_id!r} was cancelled")
            except RunNotFound:
                pass
        await self._settle_terminal(saved)

    async def retry(self, run_id: str) -> None:
        """Give a failed or cancelled run another go from its last good checkpoint.

        Checkpoints recorded as failed stay failed; what failed outside a checkpoint (a crash, a
        value too large, non-determinism after a fix) runs again.
        """
        while True:
            run = (await self._load(run_id)).run
            if run.status not in ("failed", "cancelled"):
                raise Conflict(
                    f"run {run_id!r} is {run.status}; only failed or cancelled runs can be retried",
                    run_id=run_id,
                )
            run.status, run.error, run.output = "pending", None, None
            run.wake_at = self.clock.now()
            run.engine.pop("notify_parent", None)
            try:
                await self.store.save(run)
                break
            except Conflict:
                continue
        await self._dispatch([run_id])

    async def get(self, run_id: str) -> RunInfo:
        """The run, its status and its timeline. Raises ``RunNotFound``."""
        loaded = await self._load(run_id)
        run = loaded.run
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
            signals=loaded.signals,
        )

    async def list_runs(
        self, query: RunQuery | None = None, **filters: Any
    ) -> tuple[list[Run], str | None]:
        """Runs newest first: ``list_runs(workflow="checkout", status="failed", limit=20)``."""
        page = await self.store.list_runs(query or RunQuery(**filters))
        return page.runs, page.next_cursor

    async def delete(self, run_id: str) -> None:
        await self.store.delete(run_id)

    # -- driving runs --------------------------------------------------------------------------

    async def resume(self, run_id: str, *, deadline: float | None = None) -> Run | None:
        """Do one invocation's worth of work on a run; return its saved header.

        Returns ``None`` when there was nothing to do: the run is not due, or another executor
        holds its lease. ``deadline`` (clock time) is when to stop starting new steps; the run
        then suspends with ``wake_at = now`` and the next invocation carries on.
        """
        now = self.clock.now()
        lease = Lease(uuid.uuid4().hex)
        if not await self.store.acquire(
            run_id, lease.token, self.lease_ttl, now=now, due_only=True
        ):
            loaded = await self._load(run_id)  # not due, leased, terminal or missing
            if loaded.run.terminal:
                return await self._settle_terminal(loaded.run)
            return None
        renewal = asyncio.ensure_future(self._renew(run_id, lease))
        try:
            # Read the history only under the lease: a history loaded earlier could predate a
            # whole invocation of another executor, and replaying it would re-run its steps.
            current = await self.store.load(run_id)
            if current is not None and self._observers:
                self._notify("run.resumed", run=current.run, now=now)
            for _ in range(_MAX_REPLAYS):
                if current is None:
                    return None
                if current.run.terminal:
                    return await self._settle_terminal(current.run)
                if lease.lost:  # the run belongs to another executor now
                    return None
                saved = await self._execute(current, lease, deadline)
                if saved is not None:
                    return saved
                current = await self.store.load(run_id)  # a race: reload and replay
            raise StoreError(
                f"run {run_id!r}: gave up after {_MAX_REPLAYS} conflicting saves", run_id=run_id
            )
        finally:
            renewal.cancel()
            await self.store.release(run_id, lease.token)

    async def _renew(self, run_id: str, lease: Lease) -> None:
        """Keep the lease while a long step runs: renew every third of its ttl."""
        expires = self.clock.now() + self.lease_ttl
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            now = self.clock.now()
            try:
                ok = await self.store.acquire(run_id, lease.token, self.lease_ttl, now=now)
            except Exception:  # a blip: retry unless the lease lapsed meanwhile
                if self.clock.now() >= expires:
                    lease.lost = True
                    return
                continue
            expires = now + self.lease_ttl
            if not ok:  # lost it (expired and taken) or the run was cancelled: start nothing new
                lease.lost = True
                return

    async def _execute(self, loaded: Loaded, lease: Lease, deadline: float | None) -> Run | None:
        """Replay once. Returns the saved header, or ``None`` if a race calls for a reload."""
        run = loaded.run
        spec = self._workflow_or_none(run.workflow, run.version)
        if spec is None:
            run.status = "failed"
            run.error = {
                "type": "WorkflowNotFound",
                "message": f"no workflow named {run.workflow!r} is registered in this deployment",
            }
            return await self._finish(run)
        ctx = Context(self, loaded, lease=lease, deadline=deadline)
        outcome: BaseException | None = None
        output: Any = None
        try:
            arg = (
                run.input
                if spec.input_decoder is None or run.input is None
                else spec.input_decoder(run.input)
            )
            output = await asyncio.ensure_future(spec.fn(ctx, arg))
        except Suspend:
            pass
        except Exception as exc:
            outcome = exc
        ctx.stopped = True  # whatever is still running may finish its step but start no new one
        await ctx.settle()
        if self._observers:
            for cp in sorted(ctx.committed, key=lambda cp: cp.seq):
                self._notify("checkpoint", run=run, checkpoint=cp)
        if ctx.store_error is not None:  # the invocation fails; a later one retries
            raise ctx.store_error
        if ctx.conflict or lease.lost:  # never write the run's end without the lease
            return None
        try:
            await ctx.flush_patches()
        except Conflict:
            return None
        now = self.clock.now()
        run.engine = ctx.engine
        if ctx.failure is not None:
            run.status, run.error = "failed", describe(ctx.failure)
        elif ctx.suspended is not None:
            run.status = ctx.suspended
            run.wake_at = min(ctx.wakes) if ctx.wakes else None
        elif outcome is not None:
            run.status, run.error = "failed", describe(outcome)
        elif unvisited := ctx.unvisited():
            error = NonDeterminismError(
                f"run {run.id!r} finished without reaching recorded seq {unvisited}; "
                "the code changed under a running workflow"
            )
            run.status, run.error = "failed", describe(error)
        else:
            try:
                run.output = self._checked(
                    output, f"output of workflow {run.workflow!r} (run {run.id!r})"
                )
                run.status = "completed"
            except (PayloadTooLarge, TypeError) as exc:
                run.status, run.error = "failed", describe(exc)
        run.updated_at = now
        if run.terminal:
            return await self._finish(run)
        try:
            saved = await self.store.save(run)
        except Conflict:
            return None
        await self._after_suspend(saved, ctx.new_children, now)
        return saved

    async def _after_suspend(self, run: Run, children: Sequence[str], now: float) -> None:
        if children:
            await self._dispatch(children)
        if run.wake_at is not None and run.wake_at - now < PRECISE_WAKE_WINDOW:
            await self._dispatch([run.id], delay=max(0.0, run.wake_at - now))

    def _mark_finished(self, run: Run) -> None:
        """A finished child stays due until its parent has been told (the sweep repairs a crash)."""
        run.updated_at = self.clock.now()
        run.engine.pop("timers", None)
        run.engine.pop("retries", None)
        if run.parent_id is not None:
            run.engine["notify_parent"] = True
            run.wake_at = run.updated_at
        else:
            run.wake_at = None

    async def _finish(self, run: Run) -> Run | None:
        self._mark_finished(run)
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
        """Finish the bookkeeping of a terminal run: tell its parent, stop it being due."""
        if run.wake_at is None:
            return run
        if run.engine.get("notify_parent") and run.parent_id is not None:
            outcome = {"status": run.status, "output": run.output, "error": run.error}
            signal = Signal(
                id=f"child:{run.id}",
                name=CHILD_SIGNAL + run.id,
                payload=outcome,
                at=self.clock.now(),
            )
            if await self.store.signal(run.parent_id, signal):
                await self._dispatch([run.parent_id])
        run.engine.pop("notify_parent", None)
        run.wake_at = None
        try:
            return await self.store.save(run)
        except Conflict:  # someone else settled it; the parent signal is idempotent anyway
            return run

    async def sweep(self, limit: int = 100, *, deadline: float | None = None) -> int:
        """Dispatch every run that is due, ``limit`` at a time; returns how many were sent."""
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
        dispatcher. Raises ``WorkflowFailed`` if the run fails or is cancelled, ``TimeoutError``
        after ``timeout`` real seconds.
        """
        loop = asyncio.get_running_loop()
        give_up = None if timeout is None else loop.time() + timeout
        while True:
            run = (await self._load(run_id)).run
            if run.terminal and run.wake_at is None:
                return self._outcome(run)
            if give_up is not None and loop.time() >= give_up:
                raise TimeoutError(f"run {run_id!r} still {run.status} after {timeout}s")
            now = self.clock.now()
            due = await self.store.due(now, 100)
            for due_id in due:
                await self.resume(due_id)
            if due:
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
        spec = self._workflow_or_none(run.workflow, run.version)
        if spec is None or spec.decoder is None or run.output is None:
            return run.output
        return spec.decoder(run.output)

    async def close(self) -> None:
        """Stop background dispatches and close the store."""
        close = getattr(self.dispatcher, "close", None)
        if close is not None:
            await close()
        if self._store is not None:
            await self._store.close()

    # -- helpers -------------------------------------------------------------------------------

    async def _load(self, run_id: str) -> Loaded:
        loaded = await self.store.load(run_id)
        if loaded is None:
            raise RunNotFound(run_id)
        return loaded

    def _checked(self, value: Any, what: str) -> Any:
        encoded = encode(value, what)
        size = encoded_size(encoded)
        if size > self.max_payload:
            raise PayloadTooLarge(f"{what}: {size} bytes, over the {self.max_payload}-byte limit")
        return encoded


def _canonical(value: Any) -> str:
    """JSON with sorted keys: equal inputs in any key order compare equal, 1 and 1.0 do not."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _check_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not run_id or len(run_id) > 200:
        raise ValueError(f"run_id must be a string of 1 to 200 characters, got {run_id!r}")
    if any(c in run_id for c in "/?#") or not run_id.isprintable():
        raise ValueError(f"run_id {run_id!r} may not contain '/', '?', '#' or control characters")
    return run_id
