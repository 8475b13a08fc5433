"""Helpers for testing workflows: a clock that skips time, and a ready-made runtime.

```python
from runtime.testing import FakeClock, test_runtime

rt, clock = test_runtime()
...register workflows on rt...
output = await rt.wait(await rt.start("checkout", order))   # a 3-day sleep takes no time
```
"""

from __future__ import annotations

import asyncio

from runtime._dispatch import NoopDispatcher
from runtime._runtime import Runtime
from stores.contract import WorkflowStore

__all__ = ["FakeClock", "test_runtime"]


class FakeClock:
    """A clock that only moves when told to, or when someone sleeps on it (time-skipping)."""

    skips_time = True

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
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
        from stores.memory import MemoryStore

        store = MemoryStore()
    clock = FakeClock()
    return Runtime(store, lease_ttl=lease_ttl, clock=clock, dispatcher=NoopDispatcher()), clock


test_runtime.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
