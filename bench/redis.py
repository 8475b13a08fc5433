"""Round trips and steps per second for RedisStore and KVStore on each driver, beside SQLite;
and what ``due()`` costs with 10 due runs among 10, then 100,000, idle ones.

    python bench/redis.py            # 1,000-step workflow; due() with 10 and 100,000 idle runs
    python bench/redis.py --quick    # 200 steps; 10 and 10,000 idle runs

It starts its own ``redis-server`` (no persistence, a free 127.0.0.1 port; ``REDIS_URL`` uses
another server instead) and the Upstash PROTOCOL DOUBLE of the tests (``tests/backends/kv.py``:
Upstash's REST API on 127.0.0.1, forwarding to that redis-server), so ``kv-upstash`` measures
the driver's HTTP requests over loopback, not Upstash's network. Figures only, never pass/fail.

Stores: ``sqlite`` (the embedded default, ``synchronous=NORMAL``), ``redis`` (RedisStore),
``kv-memory``, ``kv-file``, ``kv-redis``, ``kv-upstash``.

Sequential steps. One ``Runtime.resume`` runs a workflow of N trivial steps (the public API:
``from heron import Runtime, Context``). Round trips are counted where they happen: Redis
commands sent (one per command or pipeline, at redis-py's connection), HTTP requests served by
the double (Upstash), driver calls (memory, file), store calls (SQLite, through
``heron.testing.CountingStore``).

due(). ``due(now, 100)`` with 10 due runs and 10, then ``--idle``, idle runs (created without a
``wake_at``); median of 20 calls, and the round trips of one call.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `python bench/redis.py` puts bench/ first on sys.path, where this file would shadow the
# redis package: take bench/ off it and put the repository on it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._workload import make_runtime  # noqa: E402
from heron.stores import Run, WorkflowStore, open_store  # noqa: E402
from heron.stores.kv import FileDriver, KVStore, MemoryDriver  # noqa: E402
from heron.stores.sqlite import SqliteStore  # noqa: E402
from tests.backends.kv import UpstashDouble  # noqa: E402
from tests.backends.redis import RedisServer  # noqa: E402
from tests.contract.test_redis import CountingConnection  # noqa: E402

T0 = 1_700_000_000.0


class CountingDriver:
    """A KV driver proxy counting calls (a local driver's "round trips")."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.atomic = inner.atomic
        self.supports_ttl = inner.supports_ttl
        self.version_of = inner.version_of

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await method(*args, **kwargs)

        return call


@dataclass
class Target:
    name: str
    open: Callable[[], WorkflowStore]
    count: Callable[[], int]  # round trips so far


async def steps_engine(target: Target, steps: int) -> tuple[float, float]:
    """(seconds, round trips) of one resume running ``steps`` steps, through the engine."""
    store = target.open()
    rt = make_runtime(store)
    try:
        warm = await rt.start("bench-seq", 5)
        await rt.resume(warm)
        run_id = await rt.start("bench-seq", steps)
        before = target.count()
        started = time.perf_counter()
        run = await rt.resume(run_id)
        elapsed = time.perf_counter() - started
        trips = target.count() - before
        status = getattr(run, "status", None)
        if status != "completed":
            raise RuntimeError(f"the run ended {status!r}")
        return elapsed, trips
    finally:
        await store.close()


async def populate(store: WorkflowStore, idle: int, start: int) -> None:
    batch = 20
    for first in range(start, idle, batch):
        await asyncio.gather(
            *(
                store.create(Run(id=f"idle-{i:06}", workflow="idle", created_at=T0 + i))
                for i in range(first, min(first + batch, idle))
            )
        )


async def due_cost(
    target: Target, idle_counts: list[int], filler: Callable[[], WorkflowStore] | None
) -> list[tuple[int, float, int]]:
    store = target.open()
    out = []
    try:
        for i in range(10):
            await store.create(Run(id=f"due-{i}", workflow="w", wake_at=T0 + i, created_at=T0))
        done = 0
        for idle in idle_counts:
            fill = filler() if filler is not None else store
            await populate(fill, idle, done)
            if fill is not store:
                await fill.close()
            done = idle
            await store.due(T0 + 100, 100)
            times = []
            for _ in range(20):
                started = time.perf_counter()
                ids = await store.due(T0 + 100, 100)
                times.append(time.perf_counter() - started)
            assert len(ids) == 10, ids
            before = target.count()
            await store.due(T0 + 100, 100)
            out.append((idle, statistics.median(times), target.count() - before))
    finally:
        await store.close()
    return out


async def main(quick: bool) -> None:
    steps = 200 if quick else 1000
    idle_counts = [10, 10_000 if quick else 100_000]
    server = RedisServer()
    server.start()
    double = UpstashDouble(server.url)
    double.start()
    tmp = Path(tempfile.mkdtemp(prefix="heron-bench-redis-"))
    counters: dict[str, Any] = {}

    def redis_target(name: str, url: str) -> Target:
        def open_() -> WorkflowStore:
            return open_store(url, connection_class=CountingConnection)

        return Target(name, open_, lambda: len(CountingConnection.sent))

    def kv_local(name: str, make: Callable[[], Any]) -> Target:
        def open_() -> WorkflowStore:
            driver = counters[name] = CountingDriver(make())
            return KVStore(driver, prefix="bench")

        return Target(name, open_, lambda: counters[name].calls if name in counters else 0)

    sqlite_calls: list[int] = [0]

    def sqlite_open() -> WorkflowStore:
        from heron.testing import CountingStore

        inner = SqliteStore(str(tmp / "bench.db"))
        counting = CountingStore(inner)
        counters["sqlite"] = counting
        return counting

    def sqlite_count() -> int:
        store = counters.get("sqlite")
        return sqlite_calls[0] if store is None else sum(store.calls.values())

    redis_prefix = f"b{uuid.uuid4().hex[:6]}"
    upstash_url = (
        f"kv+upstash://127.0.0.1:{double.port}?tls=0&token={double.token}&prefix={redis_prefix}u"
    )
    targets = [
        Target("sqlite", sqlite_open, sqlite_count),
        redis_target("redis", f"{server.url}?prefix={redis_prefix}r:"),
        kv_local("kv-memory", MemoryDriver),
        kv_local("kv-file", lambda: FileDriver(tmp / "kv")),
        redis_target("kv-redis", f"kv+{server.url}?prefix={redis_prefix}k"),
        Target("kv-upstash", lambda: open_store(upstash_url), lambda: double.requests),
    ]
    print(f"# bench/redis.py: {steps}-step sequential workflow; due() among idle runs")
    print(f"# redis-server {server.url} (its own), Upstash protocol double on 127.0.0.1")
    print()
    print("| store | steps/s | round trips per step |")
    print("| --- | ---: | ---: |")
    for target in targets:
        runs = [await steps_engine(target, steps) for _ in range(3)]  # the median of three
        elapsed, trips = sorted(runs)[1]
        print(f"| {target.name} | {steps / elapsed:,.0f} | {trips / steps:.3f} |")
    print()
    print("| store | idle runs | due(now, 100) median | round trips |")
    print("| --- | ---: | ---: | ---: |")

    def upstash_filler() -> WorkflowStore:
        # the same keys the Upstash driver reads, written through redis-py (faster than HTTP)
        return open_store(f"kv+{server.url}?prefix={redis_prefix}u")

    for target in targets:
        name = target.name
        filler = upstash_filler if name == "kv-upstash" else None
        try:
            rows = await due_cost(target, idle_counts, filler)
        except Exception as exc:
            print(f"| {name} | - | failed: {type(exc).__name__}: {exc} | - |")
            continue
        for idle, median, trips in rows:
            print(f"| {name} | {idle:,} | {median * 1000:.3f} ms | {trips} |")
    double.stop()
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.quick))
