"""Steps per second, store calls per step and replay cost, for each embedded store.

    python bench/steps.py            # the full run (about half a minute)
    python bench/steps.py --quick    # a fast smoke run, smaller workflows, fewer repeats
    python bench/steps.py --profile  # also cProfile one SQLite NORMAL resume and list hot spots

What it measures (figures only, never pass/fail):

* sequential throughput: one ``Runtime.resume`` that runs a 1,000-step workflow from scratch
  (each step a trivial async function returning a small dict), timed whole: load, acquire,
  1,000 appends, the final save, release. Median of a few runs, for ``MemoryStore``,
  ``SqliteStore`` with ``synchronous=NORMAL`` (the default) and with ``synchronous=FULL``;
* store writes and reads per step, through a counting proxy (``bench/_counting.py``);
* replay: the resume of a run whose 1,000 / 2,000 / 4,000 steps are all recorded, which replays
  them and runs one new final step live; per replayed step, to show the growth is linear;
* context: a raw ``sqlite3`` INSERT + COMMIT in WAL mode (NORMAL and FULL) and
  ``await asyncio.to_thread(noop)`` on this machine.

The SQLite files live in a fresh temporary directory (``--dir`` to choose where; it must be on a
real disk for FULL to mean anything: on tmpfs an fsync costs nothing), removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/steps.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench._workload import make_runtime  # noqa: E402
from heron.runtime import Runtime  # noqa: E402
from heron.runtime.testing import READS, WRITES, CountingStore  # noqa: E402
from heron.stores.contract import Checkpoint, WorkflowStore  # noqa: E402
from heron.stores.memory import MemoryStore  # noqa: E402
from heron.stores.sqlite import SqliteStore  # noqa: E402

TARGETS = {"sqlite-normal": 10_000.0, "sqlite-full": 2_000.0}
TARGET_WRITES_PER_STEP = 1.05
#: Sequential steps/s on SQLite NORMAL over a raw sqlite3 insert-and-commit loop's rate.
TARGET_RAW_RATIO = 0.5

# -- the workload --------------------------------------------------------------------------------


@dataclass
class StoreCase:
    key: str
    label: str
    open: Callable[[], WorkflowStore]


def store_cases(directory: str) -> list[StoreCase]:
    return [
        StoreCase("memory", "memory", MemoryStore),
        StoreCase(
            "sqlite-normal",
            "sqlite NORMAL",
            lambda: SqliteStore(os.path.join(directory, "normal.db"), synchronous="NORMAL"),
        ),
        StoreCase(
            "sqlite-full",
            "sqlite FULL",
            lambda: SqliteStore(os.path.join(directory, "full.db"), synchronous="FULL"),
        ),
    ]


# -- measurements ----------------------------------------------------------------------------


async def timed(awaitable: Awaitable[Any]) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    result = await awaitable
    return time.perf_counter() - started, result


@dataclass
class Throughput:
    label: str
    steps: int
    seconds: list[float]
    calls: dict[str, int]

    @property
    def rates(self) -> list[float]:
        return [self.steps / s for s in self.seconds]

    @property
    def median_rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def writes_per_step(self) -> float:
        return sum(self.calls.get(m, 0) for m in WRITES) / self.steps

    @property
    def reads_per_step(self) -> float:
        return sum(self.calls.get(m, 0) for m in READS) / self.steps


async def sequential(case: StoreCase, steps: int, repeat: int) -> Throughput:
    """Time whole resumes of a fresh ``steps``-step run, then count one more through the proxy."""
    counting = CountingStore(case.open())
    rt = make_runtime(counting)
    try:
        warm = await rt.start("bench-seq", steps)  # schema, statement cache, caches, imports
        await rt.resume(warm)
        counting.reset()  # (the proxy's own await costs ~1 µs a call, so time the bare store)
        bare = make_runtime(counting.inner)
        seconds = []
        for _ in range(repeat):
            run_id = await bare.start("bench-seq", steps)
            elapsed, run = await timed(bare.resume(run_id))
            assert run is not None and run.status == "completed", run
            seconds.append(elapsed)
        run_id = await rt.start("bench-seq", steps)
        counting.reset()
        run = await rt.resume(run_id)
        assert run is not None and run.status == "completed", run
        return Throughput(case.label, steps, seconds, dict(counting.calls))
    finally:
        await rt.close()


@dataclass
class Replay:
    label: str
    base_ms: float  # resume of the same workflow with no history: just the final step, live
    sizes: list[int] = field(default_factory=list)
    resume_ms: list[float] = field(default_factory=list)
    load_ms: list[float] = field(default_factory=list)
    calls: list[dict[str, int]] = field(default_factory=list)

    def per_step_us(self, i: int) -> float:
        return self.resume_ms[i] * 1000 / self.sizes[i]

    def marginal_us(self, i: int) -> float:
        return (self.resume_ms[i] - self.base_ms) * 1000 / self.sizes[i]


async def _history(rt: Runtime, size: int) -> list[Checkpoint]:
    """The checkpoints of ``size`` tiny steps, exactly as the engine records them."""
    run_id = await rt.start("bench-replay", size)
    run = await rt.resume(run_id)
    assert run is not None and run.status == "completed", run
    loaded = await rt.store.load(run_id)
    assert loaded is not None
    await rt.store.delete(run_id)
    return [cp for cp in loaded.checkpoints if cp.seq < size]


async def _prepared(rt: Runtime, inner: WorkflowStore, history: list[Checkpoint]) -> str:
    """A fresh run of ``bench-replay`` whose first ``len(history)`` steps are recorded."""
    run_id = await rt.start("bench-replay", len(history))
    for cp in history:
        await inner.append(run_id, cp)
    return run_id


async def replay(case: StoreCase, sizes: list[int], repeat: int) -> Replay:
    counting = CountingStore(case.open())
    rt = make_runtime(counting)
    inner = counting.inner
    try:
        bases = []
        for _ in range(repeat + 1):
            run_id = await rt.start("bench-replay", 0)
            elapsed, _run = await timed(rt.resume(run_id))
            bases.append(elapsed)
        result = Replay(case.label, statistics.median(bases[1:]) * 1000)
        for size in sizes:
            history = await _history(rt, size)
            loads, resumes = [], []
            for _ in range(repeat + 1):  # the first round warms up and is dropped
                run_id = await _prepared(rt, inner, history)
                elapsed, loaded = await timed(inner.load(run_id))
                assert loaded is not None and len(loaded.checkpoints) == size
                loads.append(elapsed)
                counting.reset()
                elapsed, run = await timed(rt.resume(run_id))
                assert run is not None and run.status == "completed", run
                assert counting.calls["append"] == 1, counting.calls  # only the final step ran
                resumes.append(elapsed)
                # Drop it: a heap that grows with every run kept (MemoryStore) makes the garbage
                # collector's passes, and so this figure, grow with the runs held, not with N.
                await inner.delete(run_id)
            result.sizes.append(size)
            result.resume_ms.append(statistics.median(resumes[1:]) * 1000)
            result.load_ms.append(statistics.median(loads[1:]) * 1000)
            result.calls.append(dict(counting.calls))
        return result
    finally:
        await rt.close()


def raw_sqlite_us(directory: str, synchronous: str, n: int, batches: int) -> dict[str, float]:
    """µs per INSERT+COMMIT straight through sqlite3, WAL, into a table shaped like checkpoints."""
    path = os.path.join(directory, f"raw-{synchronous.lower()}.db")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(
            "CREATE TABLE t (run_id TEXT NOT NULL, seq INTEGER NOT NULL, value TEXT,"
            " PRIMARY KEY (run_id, seq)) WITHOUT ROWID"
        )
        value = '{"i":1,"ok":true,"tag":"bench"}'
        insert = "INSERT INTO t (run_id, seq, value) VALUES (?, ?, ?)"
        seq = 0
        auto, explicit = [], []
        for _ in range(batches + 1):  # the first batch warms up and is dropped
            started = time.perf_counter()
            for _ in range(n):
                conn.execute(insert, ("r", seq, value))  # autocommit: INSERT + implicit COMMIT
                seq += 1
            auto.append((time.perf_counter() - started) / n)
            started = time.perf_counter()
            for _ in range(n):
                conn.execute("BEGIN")
                conn.execute(insert, ("r", seq, value))
                conn.execute("COMMIT")
                seq += 1
            explicit.append((time.perf_counter() - started) / n)
        return {
            "autocommit": statistics.median(auto[1:]) * 1e6,
            "explicit": statistics.median(explicit[1:]) * 1e6,
        }
    finally:
        conn.close()


async def to_thread_us(n: int, batches: int) -> float:
    def noop() -> None:
        return None

    samples = []
    for _ in range(batches + 1):
        started = time.perf_counter()
        for _ in range(n):
            await asyncio.to_thread(noop)
        samples.append((time.perf_counter() - started) / n)
    # Idle executor threads slow what runs next for a while: measure this last, then stop them.
    await asyncio.get_running_loop().shutdown_default_executor()
    return statistics.median(samples[1:]) * 1e6


# -- profiling ---------------------------------------------------------------------------------


async def profile(case: StoreCase, steps: int, top: int, *, replayed: bool = False) -> str:
    """cProfile one whole resume: of a fresh ``steps``-step run, or (``replayed``) of a run
    whose ``steps`` steps are recorded already. The hot spots, ours and overall."""
    rt = make_runtime(case.open())
    try:
        if replayed:
            history = await _history(rt, steps)
            await rt.resume(await _prepared(rt, rt.store, history))  # warm-up
            run_id = await _prepared(rt, rt.store, history)
        else:
            warm = await rt.start("bench-seq", steps)
            await rt.resume(warm)
            run_id = await rt.start("bench-seq", steps)
        profiler = cProfile.Profile()
        gc.collect()
        profiler.enable()
        run = await rt.resume(run_id)
        profiler.disable()
        assert run is not None and run.status == "completed", run
    finally:
        await rt.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"== top {top} by own time (tottime), everything ==\n")
    stats.sort_stats("tottime").print_stats(top)
    ours = r"(runtime|stores)[/\\]"
    out.write(f"== runtime/ and stores/ by own time (tottime), top {top} ==\n")
    stats.sort_stats("tottime").print_stats(ours, top)
    out.write(f"== runtime/ and stores/ by cumulative time, top {top} ==\n")
    stats.sort_stats("cumulative").print_stats(ours, top)
    text = out.getvalue().replace(str(ROOT) + os.sep, "")
    return text


# -- machine -----------------------------------------------------------------------------------


def filesystem_of(path: str) -> str:
    best, fstype = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) >= 3 and path.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, fstype = parts[1], parts[2]
    except OSError:
        return "?"
    return fstype


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(directory: str) -> dict[str, str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpus = str(os.cpu_count())
    if usable is not None and usable != os.cpu_count():
        cpus += f" ({usable} usable)"
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu count": cpus,
        "sqlite": sqlite3.sqlite_version,
        "db dir": f"{directory} ({filesystem_of(os.path.realpath(directory))})",
    }


# -- printing ----------------------------------------------------------------------------------


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def calls_text(calls: dict[str, int]) -> str:
    order = [m for m in (*READS, *WRITES) if calls.get(m)]
    return " ".join(f"{m}={calls[m]}" for m in order)


# -- main --------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    quick = args.quick
    steps = args.steps or (200 if quick else 1000)
    repeat = args.repeat or (2 if quick else 7)
    sizes = [steps, 2 * steps, 4 * steps]
    parent = args.dir or None
    directory = tempfile.mkdtemp(prefix="heron-bench-", dir=parent)
    try:
        info = machine(directory)
        print("# Heron bench: steps\n")
        print(table(["machine", ""], [[k, v] for k, v in info.items()]))
        mode = "quick (smoke)" if quick else "full"
        print(f"\nmode: {mode}; {steps} steps per workflow; median of {repeat} runs\n")
        if info["db dir"].endswith("(tmpfs)"):
            print("note: the db dir is on tmpfs, where fsync is free; FULL figures mean little\n")

        cases = store_cases(directory)
        by_key = {c.key: c for c in cases}

        print(f"\n## Sequential: one resume running a {steps:,}-step workflow from scratch\n")
        throughput = [await sequential(c, steps, repeat) for c in cases]
        rows = []
        for t in throughput:
            rates = t.rates
            rows.append(
                [
                    t.label,
                    fmt_int(t.median_rate),
                    f"{fmt_int(min(rates))}-{fmt_int(max(rates))}",
                    f"{1e6 / t.median_rate:.1f}",
                    f"{t.writes_per_step:.3f}",
                    f"{t.reads_per_step:.3f}",
                    calls_text(t.calls),
                ]
            )
        headers = ["store", "steps/s", "range", "µs/step", "writes/step", "reads/step", "calls"]
        print(table(headers, rows))

        replay_cases = [by_key["memory"], by_key["sqlite-normal"]]
        print(
            "\n## Replay: resume of a run with N recorded steps "
            "(replays N, runs 1 final step live, completes)\n"
        )
        replays = [await replay(c, sizes, repeat) for c in replay_cases]
        rows = []
        for r in replays:
            rows.append([r.label, "0", f"{r.base_ms:.2f}", "-", "-", "-", "-"])
            for i, size in enumerate(r.sizes):
                rows.append(
                    [
                        r.label,
                        f"{size:,}",
                        f"{r.resume_ms[i]:.2f}",
                        f"{r.load_ms[i]:.2f}",
                        f"{r.per_step_us(i):.2f}",
                        f"{r.marginal_us(i):.2f}",
                        calls_text(r.calls[i]),
                    ]
                )
        headers = [
            "store",
            "history N",
            "resume ms",
            "load ms",
            "µs/replayed step",
            "marginal µs/step",
            "calls",
        ]
        print(table(headers, rows))
        print(
            "\n(load ms: store.load alone, part of resume ms; marginal: (resume - resume with no"
            " history) / N; linear growth shows as a flat µs/step column)"
        )

        # Context figures last: a burst of fsyncs or idle executor threads disturb what follows.
        n_normal, n_full, n_thread = (500, 100, 500) if quick else (3000, 400, 3000)
        raw_normal = raw_sqlite_us(directory, "NORMAL", n_normal, 3 if quick else 5)
        raw_full = raw_sqlite_us(directory, "FULL", n_full, 3 if quick else 5)
        thread_us = await to_thread_us(n_thread, 3 if quick else 5)
        print("\n## Context: raw costs on this machine (median µs per call)\n")
        print(
            table(
                ["operation", "µs"],
                [
                    ["sqlite3 INSERT, autocommit, WAL NORMAL", f"{raw_normal['autocommit']:.1f}"],
                    ["sqlite3 BEGIN; INSERT; COMMIT, WAL NORMAL", f"{raw_normal['explicit']:.1f}"],
                    ["sqlite3 INSERT, autocommit, WAL FULL", f"{raw_full['autocommit']:.1f}"],
                    ["sqlite3 BEGIN; INSERT; COMMIT, WAL FULL", f"{raw_full['explicit']:.1f}"],
                    ["await asyncio.to_thread(noop)", f"{thread_us:.1f}"],
                ],
            )
        )

        # The engine against the floor: a raw sqlite3 loop with the same settings.
        by_store = {c.key: tp for c, tp in zip(cases, throughput, strict=True)}
        ratio_rows = []
        for key, raw in (("sqlite-normal", raw_normal), ("sqlite-full", raw_full)):
            store_us = 1e6 / by_store[key].median_rate
            ratio_rows.append(
                [
                    by_store[key].label,
                    f"{store_us:.1f}",
                    f"{raw['autocommit']:.1f}",
                    f"{raw['autocommit'] / store_us:.2f}",
                    f"{raw['explicit'] / store_us:.2f}",
                ]
            )
        print("\n## Steps against a raw sqlite3 loop (same WAL and synchronous settings)\n")
        print(
            table(
                ["store", "µs/step", "raw µs/insert", "× raw (autocommit)", "× raw (BEGIN…COMMIT)"],
                ratio_rows,
            )
        )
        print(
            f"\n(steps/s of the store over inserts/s of the raw loop: the engine's target is "
            f"≥ {TARGET_RAW_RATIO} for SQLite NORMAL)"
        )

        if args.profile:
            print(f"\n## Profile: one sqlite NORMAL resume of {steps:,} live steps (cProfile)\n")
            print(await profile(by_key["sqlite-normal"], steps, args.top))
            size = sizes[-1]
            print(f"\n## Profile: one sqlite NORMAL resume replaying {size:,} steps (cProfile)\n")
            print(await profile(by_key["sqlite-normal"], size, args.top, replayed=True))

        # -- the README table ---------------------------------------------------------------
        keys = ("memory", "sqlite-normal", "sqlite-full")
        rp = {r.label: r for r in replays}
        mem, nor = rp["memory"], rp["sqlite NORMAL"]

        def replay_cell(r: Replay, i: int) -> str:
            return f"{r.resume_ms[i]:.1f} ms ({r.per_step_us(i):.2f} µs/step)"

        md_rows = [
            [
                f"steps/s, {steps:,}-step workflow, whole resume (median of {repeat})",
                fmt_int(by_store["memory"].median_rate),
                fmt_int(by_store["sqlite-normal"].median_rate),
                fmt_int(by_store["sqlite-full"].median_rate),
                "≥ 10,000 (NORMAL), ≥ 2,000 (FULL)",
            ],
            [
                "µs per step",
                f"{1e6 / by_store['memory'].median_rate:.1f}",
                f"{1e6 / by_store['sqlite-normal'].median_rate:.1f}",
                f"{1e6 / by_store['sqlite-full'].median_rate:.1f}",
                "",
            ],
            [
                "store writes per step",
                *(f"{by_store[k].writes_per_step:.3f}" for k in keys),
                f"≤ {TARGET_WRITES_PER_STEP}",
            ],
            [
                "store reads per step",
                *(f"{by_store[k].reads_per_step:.3f}" for k in keys),
                "",
            ],
        ]
        for i, size in enumerate(sizes):
            md_rows.append(
                [
                    f"resume with {size:,} recorded steps (+1 live)",
                    replay_cell(mem, i),
                    replay_cell(nor, i),
                    "-",
                    "linear" if i == 0 else "",
                ]
            )
        md_rows.append(
            [
                "raw sqlite3 INSERT+COMMIT, WAL (µs)",
                "-",
                f"{raw_normal['autocommit']:.1f}",
                f"{raw_full['autocommit']:.1f}",
                "",
            ]
        )
        md_rows.append(
            [
                "steps/s ÷ raw sqlite3 INSERT+COMMIT loop (same settings)",
                "-",
                ratio_rows[0][3],
                ratio_rows[1][3],
                f"≥ {TARGET_RAW_RATIO} (NORMAL)",
            ]
        )
        md_rows.append(["await asyncio.to_thread(noop) (µs)", f"{thread_us:.1f}", "", "", ""])
        print("\n## Markdown (for the README)\n")
        print(markdown(["figure", "memory", "SQLite NORMAL", "SQLite FULL", "target"], md_rows))
        print(
            f"\n{info['python']}, {info['cpu count']} × {info['cpu']}, SQLite {info['sqlite']}, "
            f"{info['platform']}; database on "
            f"{filesystem_of(os.path.realpath(directory))}; "
            + ("`python bench/steps.py --quick`" if quick else "`python bench/steps.py`")
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--steps", type=int, default=0, help="steps per workflow (1000)")
    parser.add_argument("--repeat", type=int, default=0, help="timed runs per figure (7)")
    parser.add_argument("--dir", default="", help="where to put the SQLite files (a temp dir)")
    parser.add_argument("--profile", action="store_true", help="cProfile a sqlite NORMAL resume")
    parser.add_argument("--top", type=int, default=25, help="rows per profile listing")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
