"""``MemoryStore``: the reference store, in process memory.

It is a real adapter, not a mock: tests and single-process apps use it, and the contract suite
checks every other store against the behaviour it defines. Atomicity comes for free: no method
awaits between reading and writing, so on one event loop every method is one indivisible step.
Records are copied in and out, so callers never share state with the store.
"""

from __future__ import annotations

import bisect
from dataclasses import replace
from typing import TypeVar

from heron.stores.contract import (
    MAX_PENDING_SIGNALS,
    Acquired,
    Checkpoint,
    Conflict,
    Loaded,
    Run,
    RunPage,
    RunQuery,
    Signal,
    TooManySignals,
    WorkflowStore,
    decode_cursor,
    dumps,
    loads,
)

__all__ = ["MemoryStore"]


#: Where a signal consumed in a history that a rewind dropped is recorded as consumed.
_GONE = -(2**62)


def _taken_at(marker: Checkpoint, seq: int) -> int:
    """The seq at which a patch marker was decided; an old marker without one counts as taken
    before ``seq`` (kept), unless the whole history goes (``seq`` 0)."""
    if isinstance(marker.value, int) and not isinstance(marker.value, bool):
        return marker.value
    return 0 if seq == 0 else -1


R = TypeVar("R", Checkpoint, Signal)


def _copy(record: R) -> R:
    """A copy whose JSON parts share nothing with the original (plain values are immutable)."""
    if isinstance(record, Checkpoint):
        if record.encoded is not None:  # what a store keeps: the JSON, not the caller's object
            return replace(
                record, value=loads(record.encoded), encoded=None, error=_json(record.error)
            )
        if isinstance(record.value, dict | list) or record.error is not None:
            return replace(record, value=loads(dumps(record.value)), error=_json(record.error))
        return record
    if isinstance(record.payload, dict | list):
        return replace(record, payload=loads(dumps(record.payload)))
    return record


def _json(value: dict[str, object] | None) -> dict[str, object] | None:
    return None if value is None else loads(dumps(value))


def _signal_order(signal: Signal) -> tuple[float, str]:
    return (signal.at, signal.id)


class MemoryStore(WorkflowStore):
    """All runs in dictionaries; ``due`` is a bisect over a list sorted by ``wake_at``."""

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self._checkpoints: dict[str, dict[int, Checkpoint]] = {}
        self._signals: dict[str, dict[str, Signal]] = {}
        #: run id -> signal id -> the seq of the checkpoint that consumed it
        self._consumed: dict[str, dict[str, int]] = {}
        self._wakes: list[tuple[float, str]] = []  # the due index, sorted

    # -- the due index -------------------------------------------------------------------------

    def _index(self, run_id: str, old: float | None, new: float | None) -> None:
        if old == new:
            return
        if old is not None:
            i = bisect.bisect_left(self._wakes, (old, run_id))
            if i < len(self._wakes) and self._wakes[i] == (old, run_id):
                del self._wakes[i]
        if new is not None:
            bisect.insort(self._wakes, (new, run_id))

    def _put(self, run: Run) -> None:
        old = self._runs.get(run.id)
        self._index(run.id, old.wake_at if old else None, run.wake_at)
        self._runs[run.id] = run

    # -- the contract --------------------------------------------------------------------------

    async def create(self, run: Run) -> bool:
        if run.id in self._runs:
            return False
        self._put(run.copy())
        self._checkpoints[run.id] = {}
        self._signals[run.id] = {}
        self._consumed[run.id] = {}
        return True

    async def load(self, run_id: str) -> Loaded | None:
        run = self._runs.get(run_id)
        if run is None:
            return None
        checkpoints = [_copy(cp) for _, cp in sorted(self._checkpoints[run_id].items())]
        consumed = self._consumed[run_id]
        pending = [s for s in self._signals[run_id].values() if s.id not in consumed]
        signals = [_copy(s) for s in sorted(pending, key=_signal_order)]
        return Loaded(run=run.copy(), checkpoints=checkpoints, signals=signals)

    async def append(
        self, run_id: str, checkpoint: Checkpoint, *, consumes: str | None = None
    ) -> None:
        history = self._checkpoints.get(run_id)
        if history is None:
            raise Conflict(f"run {run_id!r} does not exist", run_id=run_id)
        if checkpoint.seq in history:
            raise Conflict(f"run {run_id!r} already has seq {checkpoint.seq}", run_id=run_id)
        if consumes is not None:
            if consumes not in self._signals[run_id] or consumes in self._consumed[run_id]:
                raise Conflict(
                    f"run {run_id!r} has no pending signal {consumes!r} for seq {checkpoint.seq}",
                    run_id=run_id,
                )
            self._consumed[run_id][consumes] = checkpoint.seq
        history[checkpoint.seq] = _copy(checkpoint)

    async def save(self, run: Run) -> Run:
        stored = self._runs.get(run.id)
        if stored is None or stored.revision != run.revision:
            raise Conflict(f"run {run.id!r} changed since revision {run.revision}", run_id=run.id)
        saved = replace(
            run.copy(),
            input=stored.input,
            revision=run.revision + 1,
            lease_token=stored.lease_token,
            lease_expires_at=stored.lease_expires_at,
        )
        self._put(saved)
        return saved.copy()

    async def _save_with_input(self, run: Run) -> Run:
        saved = await self.save(run)
        self._runs[run.id] = replace(self._runs[run.id], input=loads(dumps(run.input)))
        return replace(saved, input=loads(dumps(run.input)))

    async def signal(
        self, run_id: str, signal: Signal, *, max_pending: int = MAX_PENDING_SIGNALS
    ) -> bool:
        run = self._runs.get(run_id)
        if run is None:
            return False
        buffered = self._signals[run_id]
        if signal.id in buffered:
            return True
        if len(buffered) - len(self._consumed[run_id]) >= max_pending:
            raise TooManySignals(run_id, max_pending)
        buffered[signal.id] = _copy(signal)
        wake_at = run.wake_at
        if not run.terminal:
            wake_at = signal.at if wake_at is None else min(wake_at, signal.at)
        self._put(replace(run, wake_at=wake_at, revision=run.revision + 1))
        return True

    async def due(self, now: float, limit: int) -> list[str]:
        end = bisect.bisect_right(self._wakes, (now, "\U0010ffff"))
        return [run_id for _, run_id in self._wakes[: min(end, limit)]]

    async def delete(self, run_id: str) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            self._index(run_id, run.wake_at, None)
        self._checkpoints.pop(run_id, None)
        self._signals.pop(run_id, None)
        self._consumed.pop(run_id, None)

    async def list_runs(self, query: RunQuery) -> RunPage:
        after = decode_cursor(query.cursor) if query.cursor else None
        runs = sorted(self._runs.values(), key=lambda r: (r.created_at, r.id), reverse=True)
        hits = [r.summary() for r in runs if query.matches(r) and self._after_cursor(r, after)][
            : query.limit + 1
        ]
        return self._page(hits, query)

    async def rewind(self, run: Run, seq: int, *, restore_signals: bool = True) -> Run:
        saved = await self._save_with_input(run)  # checks the revision before anything changes
        history = self._checkpoints[run.id]
        for cp in list(history.values()):
            if cp.seq >= seq or (cp.kind == "patch" and _taken_at(cp, seq) >= seq):
                del history[cp.seq]
        consumed = self._consumed[run.id]
        for signal_id, by in list(consumed.items()):
            if by >= seq:
                if restore_signals:
                    del consumed[signal_id]
                else:  # consumed in a history that is gone: no later rewind brings it back
                    consumed[signal_id] = _GONE
        return saved

    async def acquire(
        self,
        run_id: str,
        token: str,
        ttl: float,
        *,
        now: float | None = None,
        due_only: bool = False,
    ) -> Acquired:
        run = self._runs.get(run_id)
        now = self._now(now)
        if run is None or run.terminal:
            return Acquired.NO
        if due_only and (run.wake_at is None or run.wake_at > now):
            return Acquired.NO
        held = run.lease_expires_at is not None and run.lease_expires_at > now
        if held and run.lease_token != token:
            return Acquired.NO
        expires = now + ttl
        self._put(replace(run, lease_token=token, lease_expires_at=expires, wake_at=expires))
        if run.lease_token is None:
            return Acquired.FREE
        return Acquired.RENEWED if run.lease_token == token else Acquired.TAKEN_OVER

    async def release(self, run_id: str, token: str) -> None:
        run = self._runs.get(run_id)
        if run is not None and run.lease_token == token:
            self._put(replace(run, lease_token=None, lease_expires_at=None))
