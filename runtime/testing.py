"""Helpers for testing workflows: run an app's own ``Runtime`` on a memory store with a clock
that skips time, inject failures, kill the executor, replay recorded histories.

```python
from heron.testing import environment
from myapp import rt                      # your app's Runtime, workflows already registered

async def test_checkout() -> None:
    async with environment(rt) as env:    # rt now runs on a MemoryStore and a virtual clock
        env.fail_step("charge", times=2)  # the first two attempts of `charge` raise
        run_id = await env.start("checkout", {"id": "o-1", "total": 1800})
        await env.signal(run_id, "approved", {"by": "ops"})
        assert (await env.run(run_id))["status"] == "shipped"   # a 3-day sleep takes no time
        assert ("step", "charge") in [(k, n) for _, k, n in await env.timeline(run_id)]
```

``test_runtime()`` makes a fresh runtime for workflows registered in the test itself;
``CountingStore`` counts a store's round trips.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from heron.runtime._dispatch import NoopDispatcher
from heron.runtime._errors import RunNotFound
from heron.runtime._operations import StepKey
from heron.runtime._runtime import RunInfo, Runtime
from heron.stores.contract import (
    MAX_PENDING_SIGNALS,
    Acquired,
    Checkpoint,
    Loaded,
    Run,
    RunPage,
    RunQuery,
    Signal,
    WorkflowStore,
)

__all__ = [
    "CountingStore",
    "Environment",
    "ExecutorKilled",
    "FakeClock",
    "environment",
    "test_runtime",
]


class FakeClock:
    """A clock that only moves when told to, or when someone sleeps on it (time-skipping)."""

    skips_time = True

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward; ``ValueError`` for a negative, NaN or infinite step."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(
                f"the clock moves forward by a finite number of seconds, got {seconds}"
            )
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


def test_runtime(
    store: WorkflowStore | None = None, *, lease_ttl: float = 30.0
) -> tuple[Runtime, FakeClock]:
    """A runtime on ``store`` (a fresh ``MemoryStore`` by default) with a ``FakeClock`` and no
    background dispatch: ``rt.wait`` drives the runs, deterministically."""
    if store is None:
        from heron.stores.memory import MemoryStore

        store = MemoryStore()
    clock = FakeClock()
    return Runtime(store, lease_ttl=lease_ttl, clock=clock, dispatcher=NoopDispatcher()), clock


test_runtime.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


WRITES = ("create", "append", "save", "signal", "acquire", "release", "delete", "rewind")
READS = ("load", "due", "list_runs")

T = TypeVar("T")


class CountingStore(WorkflowStore):
    """Wraps any store and counts the calls the engine makes, by method, in ``calls``.

    ``writes`` and ``reads`` sum them up: assert that a workflow costs what you expect, or see
    where an invocation's store round trips go (``bench/steps.py`` uses it). Every call goes
    through :meth:`_call`, the one place a subclass hooks into."""

    def __init__(self, inner: WorkflowStore) -> None:
        self.inner = inner
        self.atomic_lease = inner.atomic_lease
        self.calls: Counter[str] = Counter()

    def reset(self) -> None:
        self.calls.clear()

    @property
    def writes(self) -> int:
        return sum(self.calls[m] for m in WRITES)

    @property
    def reads(self) -> int:
        return sum(self.calls[m] for m in READS)

    async def _call(self, op: str, call: Callable[[], Awaitable[T]], *args: Any) -> T:
        """Count ``op`` and run ``call`` (the inner store's method); ``args`` are its arguments."""
        self.calls[op] += 1
        return await call()

    async def create(self, run: Run) -> bool:
        return await self._call("create", lambda: self.inner.create(run), run)

    async def load(self, run_id: str) -> Loaded | None:
        return await self._call("load", lambda: self.inner.load(run_id), run_id)

    async def append(
        self, run_id: str, checkpoint: Checkpoint, *, consumes: str | None = None
    ) -> None:
        await self._call(
            "append",
            lambda: self.inner.append(run_id, checkpoint, consumes=consumes),
            run_id,
            checkpoint,
        )

    async def save(self, run: Run) -> Run:
        return await self._call("save", lambda: self.inner.save(run), run)

    async def signal(
        self, run_id: str, signal: Signal, *, max_pending: int = MAX_PENDING_SIGNALS
    ) -> bool:
        return await self._call(
            "signal",
            lambda: self.inner.signal(run_id, signal, max_pending=max_pending),
            run_id,
            signal,
        )

    async def due(self, now: float, limit: int) -> list[str]:
        return await self._call("due", lambda: self.inner.due(now, limit))

    async def delete(self, run_id: str) -> None:
        await self._call("delete", lambda: self.inner.delete(run_id), run_id)

    async def list_runs(self, query: RunQuery) -> RunPage:
        return await self._call("list_runs", lambda: self.inner.list_runs(query))

    async def acquire(
        self,
        run_id: str,
        token: str,
        ttl: float,
        *,
        now: float | None = None,
        due_only: bool = False,
    ) -> Acquired:
        return await self._call(
            "acquire",
            lambda: self.inner.acquire(run_id, token, ttl, now=now, due_only=due_only),
            run_id,
        )

    async def release(self, run_id: str, token: str) -> None:
        await self._call("release", lambda: self.inner.release(run_id, token), run_id)

    async def rewind(self, run: Run, seq: int, *, restore_signals: bool = True) -> Run:
        return await self._call(
            "rewind", lambda: self.inner.rewind(run, seq, restore_signals=restore_signals), run
        )

    async def ensure_schema(self) -> None:
        await self.inner.ensure_schema()

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:  # anything backend-specific (path, synchronous...)
        return getattr(self.inner, name)


# -- testing an app's own runtime ----------------------------------------------------------------


class ExecutorKilled(BaseException):  # noqa: N818 - it stands for a kill -9, not an error
    """The executor was killed (what :meth:`Environment.kill_after` arranges): nothing it does
    after this reaches the store, as with a Lambda timeout or an out-of-memory kill."""


class _KillSwitch(CountingStore):
    """Counts like :class:`CountingStore`; once armed for ``(run, seq)``, the executor "dies" the
    moment that checkpoint is committed: that call and every write after it in the same
    invocation raise :class:`ExecutorKilled` without reaching the store, until revived."""

    def __init__(self, inner: WorkflowStore) -> None:
        super().__init__(inner)
        self.kills: list[tuple[str | None, int]] = []
        self.dead = False

    async def _call(self, op: str, call: Callable[[], Awaitable[T]], *args: Any) -> T:
        if self.dead and op in WRITES:
            raise ExecutorKilled(f"the executor is dead: {op} never reached the store")
        result = await super()._call(op, call, *args)
        if op == "append" and self.kills:
            run_id, checkpoint = args
            for i, (target, seq) in enumerate(self.kills):
                if checkpoint.seq == seq and target in (None, run_id):
                    del self.kills[i]
                    self.dead = True
                    raise ExecutorKilled(f"killed after committing seq {seq} of run {run_id!r}")
        return result


class Environment:
    """A test environment around an app's ``Runtime`` (see :func:`environment`).

    ``rt`` is the app's own runtime, rewired to ``store`` (a fresh ``MemoryStore`` unless
    given, wrapped to count calls) and ``clock`` (a :class:`FakeClock`); nothing is dispatched
    in the background, so :meth:`run` and :meth:`skip` drive the runs, deterministically.
    """

    def __init__(self, rt: Runtime, store: _KillSwitch, clock: FakeClock) -> None:
        self.rt = rt
        self.store = store
        self.clock = clock
        self.killed = 0  # executors killed so far
        self._failures: dict[str, list[BaseException]] = {}

    # -- driving runs ----------------------------------------------------------------------------

    async def start(self, workflow: str, input: Any = None, **options: Any) -> str:
        """``rt.start``: create a run (nothing runs until :meth:`run`, :meth:`skip`...)."""
        return await self.rt.start(workflow, input, **options)

    async def signal(self, run_id: str, name: str, payload: Any = None, **options: Any) -> str:
        """``rt.signal``: buffer a signal for a run."""
        return await self.rt.signal(run_id, name, payload, **options)

    async def run(self, run_id: str, *, max_resumes: int = 1000) -> Any:
        """Drive every run that becomes due, skipping time to each wake, until ``run_id`` ends;
        return its output. Raises ``WorkflowFailed`` if it fails or is cancelled, and
        ``TimeoutError`` if it waits for a signal nobody sends (it would never end)."""
        for _ in range(max_resumes):
            info = await self.rt.get(run_id)
            if info.terminal and info.wake_at is None:
                return self.rt._outcome(await self._header(run_id))
            if not await self._resume_due():
                wake = await self._next_wake()
                if wake is None:
                    raise TimeoutError(
                        f"run {run_id!r} is {info.status} and nothing will wake it "
                        "(send the signal it waits for)"
                    )
                self.clock.advance(max(0.0, wake - self.clock.now()))
        raise TimeoutError(f"run {run_id!r} did not end within {max_resumes} resumes")

    async def run_until_idle(self) -> None:
        """Resume whatever is due now, again and again, without moving the clock."""
        while await self._resume_due():
            pass

    async def skip(self, duration: float | dt.timedelta) -> None:
        """Move the clock forward by ``duration`` and run what became due on the way, each run
        at its own wake time (so a 3-day sleep passes in no time)."""
        seconds = duration.total_seconds() if isinstance(duration, dt.timedelta) else duration
        until = self.clock.now() + seconds
        while True:
            await self.run_until_idle()
            wake = await self._next_wake()
            if wake is None or wake > until:
                break
            self.clock.advance(max(0.0, wake - self.clock.now()))
        self.clock.advance(max(0.0, until - self.clock.now()))
        await self.run_until_idle()

    # -- faults ------------------------------------------------------------------------------------

    def fail_step(self, step: Any, times: int = 1, error: BaseException | None = None) -> None:
        """Make the next ``times`` attempts of ``step`` (its function or its name) raise
        ``error`` (by default a ``ConnectionError``, which the step's policy retries) before the
        step's body runs."""
        name = step if isinstance(step, str) else self.rt.registry.step(step).name
        failures = self._failures.setdefault(name, [])
        for _ in range(times):
            failures.append(error or ConnectionError(f"injected failure of step {name!r}"))

    def kill_after(self, seq: int, run_id: str | None = None) -> None:
        """Kill the executor right after it commits checkpoint ``seq`` (of ``run_id``, or of any
        run): nothing else it would do reaches the store; its lease lapses and the next resume
        takes over, as after a Lambda timeout."""
        self.store.kills.append((run_id, seq))

    def _before_attempt(self, name: str, key: StepKey) -> None:
        failures = self._failures.get(name)
        if failures:
            raise failures.pop(0)

    # -- looking at runs ---------------------------------------------------------------------------

    async def get(self, run_id: str) -> RunInfo:
        return await self.rt.get(run_id)

    async def timeline(self, run_id: str) -> list[tuple[int, str, str]]:
        """``(seq, kind, name)`` of every checkpoint of the run, in ``seq`` order."""
        return [(cp.seq, cp.kind, cp.name) for cp in (await self.rt.get(run_id)).steps]

    async def replay(self, history: Mapping[str, Any] | str | os.PathLike[str]) -> RunInfo:
        """Load a recorded history into the store and resume it with today's code.

        ``history`` is a mapping, or the path of a JSON file, with the run's header under
        ``run`` (``id``, ``workflow``, ``input``, ``version``, ``created_at``) and its checkpoints
        under ``checkpoints`` or ``steps`` (what ``GET /runs/{id}`` and ``heron inspect --json``
        print, at the top level, work too). Returns the run after one resume: ``failed`` with a
        ``NonDeterminismError`` if the code no longer matches the history.
        """
        recorded: Mapping[str, Any] = (
            history
            if isinstance(history, Mapping)
            else json.loads(Path(history).read_text(encoding="utf-8"))
        )
        header = recorded.get("run", recorded)
        records = recorded.get("checkpoints", recorded.get("steps", []))
        created = float(header.get("created_at", self.clock.now()))
        run = Run(
            id=str(header["id"]),
            workflow=str(header["workflow"]),
            input=header.get("input"),
            version=str(header.get("version", "1")),
            created_at=created,
            updated_at=created,
            wake_at=self.clock.now(),
        )
        await self.store.delete(run.id)
        await self.store.create(run)
        for record in records:
            await self.store.append(run.id, Checkpoint.from_json(json.dumps(record)))
        await self.rt.resume(run.id)
        return await self.rt.get(run.id)

    # -- plumbing ----------------------------------------------------------------------------------

    async def _header(self, run_id: str) -> Run:
        loaded = await self.store.load(run_id)
        if loaded is None:
            raise RunNotFound(run_id)
        return loaded.run

    async def _resume_due(self) -> bool:
        """Resume every run due now, once; a killed executor's lease is left to lapse."""
        due = await self.store.due(self.clock.now(), 100)
        for run_id in due:
            try:
                await self.rt.resume(run_id)
            except ExecutorKilled:
                self.killed += 1
                self.store.dead = False
                self.clock.advance(self.rt.lease_ttl)  # let the dead executor's lease lapse
        return bool(due)

    async def _next_wake(self) -> float | None:
        nxt = await self.store.due(float("inf"), 1)
        if not nxt:
            return None
        return (await self._header(nxt[0])).wake_at


@asynccontextmanager
async def environment(
    rt: Runtime, *, store: WorkflowStore | None = None, clock: FakeClock | None = None
) -> AsyncIterator[Environment]:
    """Run ``rt`` (an app's own runtime, its workflows and steps registered as they are) on
    ``store`` (a fresh ``MemoryStore`` by default) with a virtual ``clock`` and no background
    dispatch, for the duration of the ``async with``; ``rt``'s own store, clock and dispatcher
    come back afterwards. Code under test that calls ``rt`` directly sees the test store too.
    """
    if store is None:
        from heron.stores.memory import MemoryStore

        switch = _KillSwitch(MemoryStore())
    else:
        switch = _KillSwitch(store)
    env = Environment(rt, switch, clock or FakeClock())
    saved = (rt._store, rt.clock, rt.dispatcher, rt._before_attempt)
    rt._store, rt.clock, rt.dispatcher = switch, env.clock, NoopDispatcher()
    rt._before_attempt = env._before_attempt
    try:
        yield env
    finally:
        rt._store, rt.clock, rt.dispatcher, rt._before_attempt = saved
