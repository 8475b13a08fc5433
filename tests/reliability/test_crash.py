"""Kill -9 of an executor, at every boundary of a resume, then recovery by a fresh executor.

The worker process (``tests/reliability/worker.py``, mode ``crash``) drives a 30-step ``crashy``
run on a SQLite file: ten steps one after another, a durable sleep, ten steps in parallel, ten
more one after another. Every step execution appends a line to a side-effect log and fsyncs it
before the step returns. The worker dies by SIGKILL either at a precise boundary (it kills
itself there) or when the test, watching the log, has seen ``k`` executions.

Right after the kill the test reads what the database holds (the checkpoints committed before
the kill). A fresh executor whose clock is past the dead worker's lease then drives the run to
the end. Then:

* the run completed with the right output, and each of its 31 checkpoints exists exactly once
  (and a checkpoint committed before the kill is unchanged);
* every step ran at least once and at most twice in all (at-least-once);
* no step whose checkpoint was committed before the kill ran again; every step that was not
  committed ran exactly once more.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from heron.stores.sqlite import SqliteStore
from tests.reliability.conftest import ShiftedClock, Workers
from tests.reliability.worker import (
    CRASH_LEASE,
    build_runtime,
    crashy_expected,
    crashy_input,
    crashy_layout,
    crashy_value,
    read_lines,
)

N = 30
LAYOUT = crashy_layout(N)
STEP_SEQS = sorted(seq for seq, kind in LAYOUT.items() if kind == "step")
SLEEP_SEQ = next(seq for seq, kind in LAYOUT.items() if kind == "sleep")

# Where the worker kills itself. Its store writes, in order: acquire; save (the first step's
# attempt counted before it runs); append seqs 0..9 (appends 1-10); the sleep suspends the run:
# save (sleeping), release; once it is due: acquire, append the sleep's checkpoint (seq 10,
# append 11); save (the first live step's attempt counted), the parallel steps 11..20 and the
# steps 21..30 (append 31); save (completed); release.
BOUNDARIES = [
    pytest.param(["--kill", "acquire:after:1"], id="lease-taken-nothing-done"),
    pytest.param(["--kill", "save:before:1"], id="before-the-first-attempt-is-counted"),
    pytest.param(["--kill", "save:after:1"], id="first-attempt-counted-not-started"),
    pytest.param(["--kill-in-step", "0"], id="inside-first-step"),
    pytest.param(["--kill", "append:before:1"], id="first-step-done-not-committed"),
    pytest.param(["--kill", "append:after:1"], id="first-step-committed"),
    pytest.param(["--kill", "append:after:6"], id="six-steps-committed"),
    pytest.param(["--kill", "save:before:2"], id="before-suspension-save"),
    pytest.param(["--kill", "save:after:2"], id="suspended-lease-still-held"),
    pytest.param(["--kill", "release:after:1"], id="asleep-lease-released"),
    pytest.param(["--kill", "acquire:after:2"], id="woken-lease-retaken"),
    pytest.param(["--kill", "append:after:11"], id="sleep-checkpoint-committed"),
    pytest.param(["--kill-in-step", "15"], id="inside-parallel-steps"),
    pytest.param(["--kill", "append:after:16"], id="parallel-steps-half-committed"),
    pytest.param(["--kill", "append:after:31"], id="every-step-committed"),
    pytest.param(["--kill", "save:before:4"], id="before-completion-save"),
    pytest.param(["--kill", "save:after:4"], id="completed-lease-still-held"),
]


def step_index(seq: int) -> int:
    """The ``i`` the step at ``seq`` was called with (the sleep takes one seq)."""
    return seq if seq < SLEEP_SEQ else seq - 1


def executions(lines: list[str]) -> Counter[int]:
    return Counter(int(line.split()[0]) for line in lines)


async def crash_then_recover(
    workers: Workers,
    tmp_path: Path,
    *,
    kill_args: list[str] | None = None,
    after_lines: int | None = None,
) -> None:
    db = str(tmp_path / "heron.db")
    log = str(tmp_path / "effects.log")
    store = SqliteStore(db)
    try:
        starter = build_runtime(store, lease_ttl=CRASH_LEASE)
        run_id = await starter.start("crashy", crashy_input(log, N), run_id="crashy-1")

        # -- the worker runs and dies -----------------------------------------------------------
        proc = workers.spawn("crash", db, run_id, *(kill_args or []))
        workers.wait_ready(proc)
        if after_lines is not None:
            while len(read_lines(log)) < after_lines and proc.poll() is None:
                time.sleep(0.0005)
            proc.send_signal(signal.SIGKILL)
        rc, err = workers.finish(proc)
        if kill_args is not None:
            assert rc == -signal.SIGKILL, f"the worker should have killed itself: rc={rc}\n{err}"
        else:  # killed from outside; it may (rarely) have finished first, which proves less
            assert rc in (-signal.SIGKILL, 0), err

        # -- what survived the kill -------------------------------------------------------------
        before = read_lines(log)
        ran_before = executions(before)
        assert all(n == 1 for n in ran_before.values()), f"one executor ran a step twice: {before}"
        assert {int(line.split()[1]) for line in before} <= {proc.pid}
        crashed = await store.load(run_id)
        assert crashed is not None
        committed = {cp.seq: cp for cp in crashed.checkpoints}
        committed_steps = {seq for seq in committed if LAYOUT.get(seq) == "step"}
        assert set(committed) <= set(LAYOUT), f"unexpected checkpoints: {sorted(committed)}"
        assert committed_steps <= set(ran_before), "a step was committed without running"
        for seq in committed_steps:
            assert committed[seq].value == crashy_value(step_index(seq))

        run = crashed.run
        now = time.time()
        if (
            not run.terminal
            and run.lease_expires_at is not None
            and run.lease_expires_at > now + 0.5
        ):
            # The dead worker's lease is still live: nobody may take the run over yet.
            idle = build_runtime(store, lease_ttl=1.0)
            assert await idle.resume(run_id) is None
            assert read_lines(log) == before, "a step ran under someone else's live lease"

        # -- recovery: a fresh executor for which that lease has lapsed -------------------------
        clock = ShiftedClock(CRASH_LEASE + 1.0)
        if not run.terminal:
            assert run_id in await store.due(clock.now(), 10), "a crashed run must become due"
        recovery = build_runtime(store, lease_ttl=1.0, clock=clock)
        output = await recovery.wait(run_id, timeout=20)
        assert output == crashy_expected(N)
        assert (await recovery.get(run_id)).status == "completed"

        # -- exactly one checkpoint per seq; committed ones unchanged -----------------------------
        final = await store.load(run_id)
        assert final is not None
        assert [cp.seq for cp in final.checkpoints] == list(range(N + 1))
        for cp in final.checkpoints:
            assert cp.kind == LAYOUT[cp.seq], cp
            if cp.kind == "step":
                assert cp.value == crashy_value(step_index(cp.seq)), cp
            if cp.seq in committed:
                assert cp == committed[cp.seq], "a committed checkpoint changed"

        # -- at least once, at most twice; nothing committed ran again ----------------------------
        after = read_lines(log)[len(before) :]
        ran_after = executions(after)
        assert all(n == 1 for n in ran_after.values()), f"recovery ran a step twice: {after}"
        rerun = set(ran_after) & committed_steps
        assert not rerun, f"steps committed before the kill ran again: {sorted(rerun)}"
        assert set(ran_after) == set(STEP_SEQS) - committed_steps
        total = ran_before + ran_after
        assert set(total) == set(STEP_SEQS)
        assert max(total.values()) <= 2
    finally:
        await store.close()


@pytest.mark.parametrize("kill_args", BOUNDARIES)
async def test_kill_at_boundary_then_recover(
    workers: Workers, tmp_path: Path, kill_args: list[str]
) -> None:
    await crash_then_recover(workers, tmp_path, kill_args=kill_args)


@pytest.mark.parametrize("k", [0, 1, 5, 10, 13, 22, 29])
async def test_kill_after_k_side_effects_then_recover(
    workers: Workers, tmp_path: Path, k: int
) -> None:
    await crash_then_recover(workers, tmp_path, after_lines=k)
