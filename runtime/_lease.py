"""The lease on a run, and every rule for the run's ``wake_at``.

One executor at a time works on a run: it holds the run's lease, a token with an expiry, taken
and renewed by the store's atomic ``acquire``. The lease is also how a lost executor is
noticed and replaced, because taking or renewing it moves ``wake_at`` to the expiry::

                    acquire(due_only): wake_at <= now, lease free or lapsed
       ┌────────┐ ─────────────────────────────────────────────────────────► ┌──────────────┐
       │  idle  │                                                            │     held     │
       │        │ ◄───────────────────────────────────────────────────────── │ token,       │
       └────────┘   release (save first: the header says when it is due)    │ expires =    │
           ▲                                                                 │ wake_at =    │
           │                                                                 │ now + ttl    │
           │    the holder dies: nothing renews, expires passes,             └──────┬───────┘
           │    wake_at (= expires) is due, the sweep dispatches it,               │ renew every
           └──  the next acquire takes it over (Acquired.TAKEN_OVER) ◄─────────────┘ ttl / 3

``wake_at`` is written in these places, and only these:

* ``start``: now (a new run is due at once);
* ``acquire`` / renewal (the store): the lease's expiry, so a dead holder's run comes due;
* the header saved when the run suspends: the earliest deadline of its pending operations
  (:func:`suspend_wake`), ``None`` if it waits only for a signal or a child;
* the header saved when the run ends: :func:`finished_wake`: ``None``, or now for a child
  whose parent has not been told yet (the sweep repairs a crash between the two);
* ``signal`` (the store): ``min(wake_at, now)``, so a signal makes the run due;
* ``retry``, ``continue_as_new``: now.

``release`` never touches ``wake_at``: the header the executor saved just before says when the
run is due next.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable

from heron.runtime._clock import Clock
from heron.stores.contract import Acquired, WorkflowStore

__all__ = ["Lease", "finished_wake", "suspend_wake"]

log = logging.getLogger("heron")


def suspend_wake(deadlines: Iterable[float]) -> float | None:
    """When a suspended run is due: the earliest deadline of its pending operations."""
    return min(deadlines, default=None)


def finished_wake(has_parent: bool, now: float) -> float | None:
    """When a finished run is due: never, unless it must still tell its parent (then now)."""
    return now if has_parent else None


class Lease:
    """An executor's hold on one run: take it with :meth:`take`, keep it with :meth:`keep`,
    check it before a retry with :meth:`renew`, give it back with :meth:`release`.

    ``lost`` turns true when a renewal finds the lease gone (it lapsed and another executor took
    it, or the run was cancelled): the executor then starts nothing new. ``taken_over`` says the
    previous holder never released it (see ``Acquired.TAKEN_OVER``).
    """

    __slots__ = (
        "_expires",
        "_task",
        "clock",
        "lost",
        "run_id",
        "store",
        "taken_over",
        "token",
        "ttl",
    )

    def __init__(self, store: WorkflowStore, run_id: str, ttl: float, clock: Clock) -> None:
        self.store = store
        self.run_id = run_id
        self.ttl = ttl
        self.clock = clock
        self.token = uuid.uuid4().hex
        self.lost = False
        self.taken_over = False
        self._expires = 0.0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def take(
        cls, store: WorkflowStore, run_id: str, ttl: float, clock: Clock
    ) -> Lease | None:
        """The run's lease if the run is due and the lease is free or lapsed, else ``None``
        (not due, held by another executor, terminal or missing). Raises what the store
        raises."""
        lease = cls(store, run_id, ttl, clock)
        now = clock.now()
        got = await store.acquire(run_id, lease.token, ttl, now=now, due_only=True)
        if not got:
            return None
        lease._expires = now + ttl
        lease.taken_over = got == Acquired.TAKEN_OVER
        return lease

    def keep(self) -> None:
        """Renew the lease in the background, every third of its ttl, until released."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._renew_forever())

    async def renew(self) -> bool:
        """Renew now; ``False`` (and ``lost``) when the lease is gone or the run was cancelled.
        A store error is retried by the next renewal while the lease has not expired."""
        if self.lost:
            return False
        now = self.clock.now()
        try:
            ok = await self.store.acquire(self.run_id, self.token, self.ttl, now=now)
        except Exception:
            if self.clock.now() >= self._expires:
                self.lost = True
            return not self.lost
        if not ok:
            self.lost = True
            return False
        self._expires = now + self.ttl
        return True

    async def _renew_forever(self) -> None:
        while not self.lost:
            await asyncio.sleep(self.ttl / 3)
            await self.renew()

    async def release(self) -> None:
        """Stop renewing and give the lease back (best effort: a lease that cannot be released
        lapses by itself, and the next holder counts it as taken over)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self.store.release(self.run_id, self.token)
        except Exception:
            log.warning(
                "could not release the lease; it lapses by itself", extra={"run_id": self.run_id}
            )
