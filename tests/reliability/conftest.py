"""Fixtures and store wrappers for the reliability tests.

``ProxyStore``   delegates every call to an inner store and runs hooks around the calls: it
                 counts calls and outcomes, can yield to the event loop around each call (so
                 concurrent tasks interleave at every store boundary), and can pause a call.
``FaultyStore``  a ``ProxyStore`` that raises an injected error on the ``k``-th call of one
                 write operation, ``before`` the write reaches the inner store (nothing written)
                 or ``after`` it (written, but the caller sees an error: an ambiguous outcome),
                 ``once`` (the store recovers) or ``down`` (every later write fails too).
``ShiftedClock`` the wall clock moved forward: a recovering executor for which a crashed
                 executor's lease has already lapsed, without waiting for it in real time.
``store``        a fresh store for one test, of every kind in the registry (``tests/stores.py``).
``workers``      starts ``python -m tests.reliability.worker ...`` processes and makes sure
                 none outlives its test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from heron.stores.contract import (
    MAX_PENDING_SIGNALS,
    Acquired,
    Checkpoint,
    Loaded,
    Run,
    RunPage,
    RunQuery,
    Signal,
    StoreError,
    WorkflowStore,
)
from tests.conftest import StoreFactory

ROOT = Path(__file__).resolve().parents[2]
WRITES = ("create", "append", "save", "signal", "acquire", "release", "delete")

Hook = Callable[[str, tuple[Any, ...]], Awaitable[None]]


class ProxyStore(WorkflowStore):
    """Delegates to ``inner``; records every call and its outcome; optional hooks.

    ``calls[op]`` counts calls, ``outcomes`` lists ``(op, args, result or exception)``.
    ``yield_around`` awaits ``asyncio.sleep(0)`` before and after each call. ``before`` and
    ``after`` are async hooks ``(op, args)`` run around each call (they may raise or block).
    """

    def __init__(
        self,
        inner: WorkflowStore,
        *,
        yield_around: bool = False,
        before: Hook | None = None,
        after: Hook | None = None,
    ) -> None:
        self.inner = inner
        self.atomic_lease = inner.atomic_lease
        self.yield_around = yield_around
        self.before = before
        self.after = after
        self.calls: Counter[str] = Counter()
        self.outcomes: list[tuple[str, tuple[Any, ...], Any]] = []

    async def _call(
        self, op: str, args: tuple[Any, ...], call: Callable[[], Awaitable[Any]]
    ) -> Any:
        self.calls[op] += 1
        if self.yield_around:
            await asyncio.sleep(0)
        if self.before is not None:
            await self.before(op, args)
        try:
            result = await call()
        except BaseException as exc:
            self.outcomes.append((op, args, exc))
            raise
        self.outcomes.append((op, args, result))
        if self.after is not None:
            await self.after(op, args)
        if self.yield_around:
            await asyncio.sleep(0)
        return result

    def results(self, op: str) -> list[Any]:
        return [result for o, _, result in self.outcomes if o == op]

    async def create(self, run: Run) -> bool:
        ok: bool = await self._call("create", (run,), lambda: self.inner.create(run))
        return ok

    async def load(self, run_id: str) -> Loaded | None:
        loaded: Loaded | None = await self._call("load", (run_id,), lambda: self.inner.load(run_id))
        return loaded

    async def append(
        self, run_id: str, checkpoint: Checkpoint, *, consumes: str | None = None
    ) -> None:
        await self._call(
            "append",
            (run_id, checkpoint),
            lambda: self.inner.append(run_id, checkpoint, consumes=consumes),
        )

    async def save(self, run: Run) -> Run:
        saved: Run = await self._call("save", (run,), lambda: self.inner.save(run))
        return saved

    async def signal(
        self, run_id: str, signal: Signal, *, max_pending: int = MAX_PENDING_SIGNALS
    ) -> bool:
        ok: bool = await self._call(
            "signal",
            (run_id, signal),
            lambda: self.inner.signal(run_id, signal, max_pending=max_pending),
        )
        return ok

    async def due(self, now: float, limit: int) -> list[str]:
        ids: list[str] = await self._call("due", (now, limit), lambda: self.inner.due(now, limit))
        return ids

    async def delete(self, run_id: str) -> None:
        await self._call("delete", (run_id,), lambda: self.inner.delete(run_id))

    async def list_runs(self, query: RunQuery) -> RunPage:
        page: RunPage = await self._call("list_runs", (query,), lambda: self.inner.list_runs(query))
        return page

    async def acquire(
        self, run_id: str, token: str, ttl: float, *, now: float | None = None, **options: Any
    ) -> Acquired:
        ok: Acquired = await self._call(
            "acquire",
            (run_id, token, ttl, now),
            lambda: self.inner.acquire(run_id, token, ttl, now=now, **options),
        )
        return ok

    async def release(self, run_id: str, token: str) -> None:
        await self._call("release", (run_id, token), lambda: self.inner.release(run_id, token))

    async def rewind(self, run: Run, seq: int, *, restore_signals: bool = True) -> Run:
        rewound: Run = await self._call(
            "rewind",
            (run, seq),
            lambda: self.inner.rewind(run, seq, restore_signals=restore_signals),
        )
        return rewound

    async def ensure_schema(self) -> None:
        await self.inner.ensure_schema()

    async def close(self) -> None:
        pass  # the inner store belongs to whoever opened it


class InjectedFault(StoreError):
    """The error a ``FaultyStore`` raises (a ``StoreError``, as a backend would report)."""


class FaultyStore(ProxyStore):
    """Raises ``error`` on the ``k``-th call of ``op`` (see the module docstring)."""

    def __init__(
        self,
        inner: WorkflowStore,
        *,
        op: str,
        k: int,
        when: str = "before",
        persist: str = "once",
        error: type[Exception] = InjectedFault,
    ) -> None:
        assert op in WRITES, op
        assert when in ("before", "after"), when
        assert persist in ("once", "down"), persist
        super().__init__(inner)
        self.op, self.k, self.when, self.persist, self.error = op, k, when, persist, error
        self.fired = 0  # how many errors were raised

    def _raise(self, op: str) -> None:
        self.fired += 1
        raise self.error(
            f"injected fault: {op} call {self.calls[op]} ({self.when}, {self.persist})"
        )

    async def _call(
        self, op: str, args: tuple[Any, ...], call: Callable[[], Awaitable[Any]]
    ) -> Any:
        if op not in WRITES:
            return await super()._call(op, args, call)

        async def faulty() -> Any:  # runs after ProxyStore._call counted this call
            if self.persist == "down" and self.fired:
                self._raise(op)
            hit = op == self.op and self.calls[op] == self.k
            if hit and self.when == "before":
                self._raise(op)
            result = await call()
            if hit:  # when == "after": the write happened, the caller sees an error
                self._raise(op)
            return result

        return await super()._call(op, args, faulty)


class ShiftedClock:
    """The wall clock, ``shift`` seconds ahead."""

    def __init__(self, shift: float) -> None:
        self.shift = shift

    def now(self) -> float:
        return time.time() + self.shift

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
async def store(store_factory: StoreFactory) -> WorkflowStore:
    """A fresh store of the kind under test: every store in the registry (``tests/stores.py``)."""
    return await store_factory()


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "heron.db")


@pytest.fixture
async def sqlite_store(db_path: str) -> AsyncIterator[WorkflowStore]:
    from heron.stores.sqlite import SqliteStore

    sqlite = SqliteStore(db_path)
    try:
        yield sqlite
    finally:
        await sqlite.close()


class Workers:
    """Worker processes of one test; ``stop_all`` kills whatever is still running."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.worker", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def wait_ready(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.wait(timeout=10)
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"worker did not start (rc={proc.returncode}): {line!r}\n{err}")

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float = 45.0) -> tuple[int, str]:
        """Wait for a worker to exit; returns its exit code and stderr."""
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"worker {proc.args} did not finish:\n{err}") from None
        return proc.returncode, err

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def workers() -> Iterator[Workers]:
    pool = Workers()
    try:
        yield pool
    finally:
        pool.stop_all()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Yield to the loop until ``predicate()`` holds; fail (not hang) after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while not predicate():
        if loop.time() > give_up:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.002)


__all__ = [
    "FaultyStore",
    "InjectedFault",
    "ProxyStore",
    "ShiftedClock",
    "Workers",
    "wait_until",
]
