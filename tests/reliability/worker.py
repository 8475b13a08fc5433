"""Executor processes for the reliability tests, and the workflows they (and the tests) run.

    python -m tests.reliability.worker crash  DB RUN_ID [--kill OP:PHASE:N | --kill-in-step SEQ]
    python -m tests.reliability.worker race   DB --runs A,B,C [--lease S] [--budget S]
    python -m tests.reliability.worker signal DB --runs A,B,C [--name go] [--seed N]
    python -m tests.reliability.worker killer URL RUN_ID LOG --shift S

Every mode opens the SQLite file ``DB``, prints ``ready`` once connected, and then:

``crash``   drives ``RUN_ID`` to the end (``Runtime.wait``), unless it kills itself with SIGKILL
            first: ``--kill append:after:5`` right after the 5th ``append`` returned,
            ``--kill save:before:1`` just before the first ``save``, ...; ``--kill-in-step 7``
            inside step seq 7, after its side effect and before it returns (so before its
            commit). A test may also kill it from outside at any time.
``race``    waits for a line on stdin (the start gun), then resumes the runs over and over, in
            random order, until every one is terminal and settled (exit 0) or ``--timeout``
            passes (exit 3).
``signal``  waits for the start gun, then sends signal ``--name`` to each run, a few
            milliseconds apart, with signal id ``sig-RUN`` and payload ``{"run": RUN}``.
``killer``  opens the store at ``URL`` (any store a URL reaches), with its clock ``--shift``
            seconds ahead (past the lease of the killed worker before it), and resumes
            ``RUN_ID`` once: a ``killer`` run, whose step logs an attempt and kills the process
            (``os._exit(9)``, as a Lambda timeout or an out-of-memory kill would).

Steps leave a trace of every execution in a log file named by the run's input, one line per
execution, written with ``O_APPEND`` (and ``fsync`` in ``crashy``, so a line survives a kill):
the tests compare it with the checkpoints to count how often each step really ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal as _signal
import sys
import time
import uuid
from typing import Any

if not __package__:  # run by path: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from heron.runtime import Context, NoopDispatcher, RetryPolicy, Runtime, StepFailed, step_key
from heron.runtime._clock import Clock
from heron.stores.contract import Acquired, Checkpoint, Run, WorkflowStore
from heron.stores.sqlite import SqliteStore

#: The durable sleep in the middle of ``crashy`` (seconds): long enough to suspend the run.
CRASHY_SLEEP = 0.05
#: The lease the ``crash`` worker holds; a recovering executor must wait it out (or shift time).
CRASH_LEASE = 2.0
# Two attempts: an attempt its executor never came back from (the kill) counts against the
# step's policy; the recovering executor's is the second.
NO_RETRY = RetryPolicy(max_attempts=2, initial_delay=0)


def log_line(path: str, text: str, *, fsync: bool) -> None:
    """Append one line; ``O_APPEND`` makes concurrent writers (other processes) safe."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [line for line in f.read().splitlines() if line]
    except FileNotFoundError:
        return []


# -- the workflows -----------------------------------------------------------------------------


def crashy_value(i: int) -> int:
    return i * i + 7


def crashy_input(log: str, n: int = 30, delay: float = 0.01) -> dict[str, Any]:
    return {"log": log, "n": n, "delay": delay}


def crashy_expected(n: int = 30) -> list[int]:
    return [crashy_value(i) for i in range(n)]


def crashy_layout(n: int = 30) -> dict[int, str]:
    """seq -> kind of the checkpoint ``crashy`` writes there."""
    third = n // 3
    kinds = {seq: "step" for seq in range(n + 1)}
    kinds[third] = "sleep"
    return kinds


def racy_input(log: str, n: int, *, block: float = 0.0, pause: float = 0.0) -> dict[str, Any]:
    """``block``: seconds each step blocks its event loop (so the lease cannot be renewed);
    ``pause``: seconds each step awaits (so other runs and executors get a turn)."""
    return {"log": log, "n": n, "block": block, "pause": pause}


def build_runtime(
    store: WorkflowStore,
    *,
    lease_ttl: float,
    clock: Clock | None = None,
    kill_in_step: int | None = None,
) -> Runtime:
    """A runtime with every workflow the reliability tests run."""
    rt = Runtime(store, lease_ttl=lease_ttl, dispatcher=NoopDispatcher(), clock=clock)

    @rt.step(name="crashy.work", retry=NO_RETRY)
    async def work(log: str, i: int, delay: float) -> int:
        seq = step_key().seq
        log_line(log, f"{seq} {os.getpid()}", fsync=True)
        if kill_in_step == seq:
            os.kill(os.getpid(), _signal.SIGKILL)
        await asyncio.sleep(delay)
        return crashy_value(i)

    @rt.workflow("crashy")
    async def crashy(ctx: Context, args: dict[str, Any]) -> list[int]:
        """``n`` steps: a third one after another, a durable sleep, a third in parallel
        (``asyncio.gather``), the last third one after another."""
        n, log, delay = int(args["n"]), str(args["log"]), float(args["delay"])
        third = n // 3
        out = [await ctx.step(work, log, i, delay) for i in range(third)]
        await ctx.sleep(CRASHY_SLEEP)
        out += await asyncio.gather(
            *(ctx.step(work, log, i, delay) for i in range(third, 2 * third))
        )
        out += [await ctx.step(work, log, i, delay) for i in range(2 * third, n)]
        return out

    # Every takeover of a lease that lapsed under a step counts as an attempt that never came
    # back (the races make many): room for them all, so the runs complete.
    @rt.step(name="racy.work", retry=RetryPolicy(max_attempts=100, initial_delay=0))
    async def racy_work(log: str, block: float, pause: float) -> dict[str, Any]:
        key = step_key()
        nonce = uuid.uuid4().hex
        log_line(
            log,
            json.dumps({"run": key.run_id, "seq": key.seq, "pid": os.getpid(), "nonce": nonce}),
            fsync=False,
        )
        if block:
            time.sleep(block)  # blocks the loop: no lease renewal meanwhile, on purpose
        if pause:
            await asyncio.sleep(pause)
        return {"seq": key.seq, "pid": os.getpid(), "nonce": nonce}

    @rt.workflow("racy")
    async def racy(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
        log, block, pause = str(args["log"]), float(args["block"]), float(args["pause"])
        values = [await ctx.step(racy_work, log, block, pause) for _ in range(int(args["n"]))]
        return {"values": values, "total": sum(v["seq"] for v in values)}

    @rt.step(name="signaled.before", retry=NO_RETRY)
    async def before(log: str) -> str:
        key = step_key()
        log_line(log, f"{key.run_id} {key.seq}", fsync=False)
        await asyncio.sleep(random.random() * 0.003)
        return "before"

    @rt.step(name="signaled.after", retry=NO_RETRY)
    async def after(log: str, payload: Any) -> Any:
        key = step_key()
        log_line(log, f"{key.run_id} {key.seq}", fsync=False)
        return {"got": payload}

    @rt.workflow("signaled")
    async def signaled(ctx: Context, args: dict[str, Any]) -> Any:
        log = str(args["log"])
        await ctx.step(before, log)
        payload = await ctx.wait_for_signal("go")
        return await ctx.step(after, log, payload)

    return rt


# -- a store that kills its process at one boundary --------------------------------------------


class KillingStore(SqliteStore):
    """SIGKILLs the process at the ``n``-th call of ``op``, ``before`` or ``after`` it runs."""

    def __init__(self, path: str, kill: str | None) -> None:
        super().__init__(path)
        self._kill: tuple[str, str, int] | None = None
        if kill:
            op, phase, n = kill.split(":")
            assert phase in ("before", "after"), kill
            self._kill = (op, phase, int(n))
        self._calls: dict[str, int] = {}

    def _maybe_die(self, op: str, phase: str) -> None:
        if self._kill is None:
            return
        kill_op, kill_phase, n = self._kill
        if op == kill_op and phase == kill_phase and self._calls.get(op, 0) == n:
            os.kill(os.getpid(), _signal.SIGKILL)

    async def _around(self, op: str, call: Any) -> Any:
        self._calls[op] = self._calls.get(op, 0) + 1
        self._maybe_die(op, "before")
        result = await call
        self._maybe_die(op, "after")
        return result

    async def append(
        self, run_id: str, checkpoint: Checkpoint, *, consumes: str | None = None
    ) -> None:
        await self._around("append", super().append(run_id, checkpoint, consumes=consumes))

    async def save(self, run: Run) -> Run:
        saved: Run = await self._around("save", super().save(run))
        return saved

    async def acquire(
        self, run_id: str, token: str, ttl: float, *, now: float | None = None, **options: Any
    ) -> Acquired:
        call = super().acquire(run_id, token, ttl, now=now, **options)
        ok: Acquired = await self._around("acquire", call)
        return ok

    async def release(self, run_id: str, token: str) -> None:
        await self._around("release", super().release(run_id, token))


# -- attempts that never come back ----------------------------------------------------------------

#: The lease of a ``killer`` worker; the next one's clock is shifted past it.
KILLER_LEASE = 1.0
KILLER_ATTEMPTS = 3


class Shifted:
    """The wall clock, ``shift`` seconds ahead."""

    def __init__(self, shift: float) -> None:
        self.shift = shift

    def now(self) -> float:
        return time.time() + self.shift

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def killer_runtime(store: WorkflowStore, log: str, clock: Clock | None = None) -> Runtime:
    """A ``killer`` workflow: one step, every attempt of which kills its process."""
    rt = Runtime(store, lease_ttl=KILLER_LEASE, dispatcher=NoopDispatcher(), clock=clock)

    @rt.step(name="killer.boom", retry=RetryPolicy(max_attempts=KILLER_ATTEMPTS, initial_delay=0))
    async def boom() -> None:
        log_line(log, "attempt", fsync=True)
        os._exit(9)

    @rt.workflow("killer")
    async def killer(ctx: Context, _: Any) -> dict[str, Any]:
        try:
            await ctx.step(boom)
        except StepFailed as failed:
            return {"gave_up": failed.error_type, "message": failed.error_message}
        return {"gave_up": None}

    return rt


async def killer_main(url: str, run_id: str, log: str, shift: float) -> int:
    from heron.stores import open_store

    store = open_store(url)
    rt = killer_runtime(store, log, Shifted(shift))
    try:
        await store.load(run_id)
        print("ready", flush=True)
        await rt.resume(run_id)
        return 0
    finally:
        await store.close()


# -- the modes ---------------------------------------------------------------------------------


async def crash_main(db: str, run_id: str, kill: str | None, kill_in_step: int | None) -> int:
    store = KillingStore(db, kill)
    rt = build_runtime(store, lease_ttl=CRASH_LEASE, kill_in_step=kill_in_step)
    try:
        await store.load(run_id)  # connect before saying ready
        print("ready", flush=True)
        await rt.wait(run_id, timeout=30)
        return 0
    finally:
        await store.close()


async def race_main(db: str, runs: list[str], lease: float, budget: float, timeout: float) -> int:
    store = SqliteStore(db)
    rt = build_runtime(store, lease_ttl=lease)
    try:
        await store.load(runs[0])
        print("ready", flush=True)
        sys.stdin.readline()  # the start gun
        give_up = time.monotonic() + timeout
        pending = list(runs)
        while pending:
            if time.monotonic() > give_up:
                print(f"gave up with {len(pending)} runs unfinished", file=sys.stderr)
                return 3
            random.shuffle(pending)
            for run_id in pending:
                deadline = rt.clock.now() + budget if budget > 0 else None
                await rt.resume(run_id, deadline=deadline)
            still = []
            for run_id in pending:
                loaded = await store.load(run_id)
                assert loaded is not None, run_id
                if not loaded.run.terminal or loaded.run.wake_at is not None:
                    still.append(run_id)
            pending = still
            await asyncio.sleep(0.001)
        return 0
    finally:
        await store.close()


async def signal_main(db: str, runs: list[str], name: str, seed: int) -> int:
    store = SqliteStore(db)
    rt = build_runtime(store, lease_ttl=30.0)
    rng = random.Random(seed)
    try:
        await store.load(runs[0])
        print("ready", flush=True)
        sys.stdin.readline()
        for run_id in runs:
            await asyncio.sleep(rng.random() * 0.004)
            await rt.signal(run_id, name, {"run": run_id}, signal_id=f"sig-{run_id}")
        return 0
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.worker")
    modes = parser.add_subparsers(dest="mode", required=True)
    crash = modes.add_parser("crash")
    crash.add_argument("db")
    crash.add_argument("run_id")
    crash.add_argument("--kill", default=None, help="OP:PHASE:N, e.g. append:after:5")
    crash.add_argument("--kill-in-step", type=int, default=None)
    race = modes.add_parser("race")
    race.add_argument("db")
    race.add_argument("--runs", required=True)
    race.add_argument("--lease", type=float, default=10.0)
    race.add_argument("--budget", type=float, default=0.0)
    race.add_argument("--timeout", type=float, default=40.0)
    killer = modes.add_parser("killer")
    killer.add_argument("url")
    killer.add_argument("run_id")
    killer.add_argument("log")
    killer.add_argument("--shift", type=float, default=0.0)
    sig = modes.add_parser("signal")
    sig.add_argument("db")
    sig.add_argument("--runs", required=True)
    sig.add_argument("--name", default="go")
    sig.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.mode == "killer":
        return asyncio.run(killer_main(args.url, args.run_id, args.log, args.shift))
    if args.mode == "crash":
        return asyncio.run(crash_main(args.db, args.run_id, args.kill, args.kill_in_step))
    if args.mode == "race":
        runs = args.runs.split(",")
        return asyncio.run(race_main(args.db, runs, args.lease, args.budget, args.timeout))
    return asyncio.run(signal_main(args.db, args.runs.split(","), args.name, args.seed))


if __name__ == "__main__":
    sys.exit(main())
