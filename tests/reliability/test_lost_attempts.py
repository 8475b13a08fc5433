"""Attempts that never come back (issue 9, item 2): a step whose every attempt kills its
executor (``os._exit(9)`` in the step: what a Lambda timeout or an out-of-memory kill does)
fails after its policy's attempts, with ``StepFailed`` saying the attempt did not return,
instead of being attempted once per invocation for ever.

Each invocation is a process of its own (``worker.py killer``) on the store under test, reached
by URL; each one's clock is ahead of the last, past the dead worker's lease, as a fresh
invocation after the lease lapsed would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from heron.stores.contract import WorkflowStore
from tests.reliability.conftest import Workers
from tests.reliability.worker import KILLER_ATTEMPTS, KILLER_LEASE, killer_runtime, read_lines
from tests.stores import URL


@pytest.mark.stores(URL)
async def test_a_step_whose_attempts_kill_the_executor_fails_after_its_attempts(
    store: WorkflowStore, backend: Any, workers: Workers, tmp_path: Path
) -> None:
    log = str(tmp_path / "attempts.log")
    rt = killer_runtime(store, log)
    run_id = await rt.start("killer", None, run_id="lost")

    outcomes = []
    for invocation in range(KILLER_ATTEMPTS + 3):
        shift = (invocation + 1) * (KILLER_LEASE + 1) * 10
        proc = workers.spawn("killer", backend.url, run_id, log, "--shift", str(shift))
        workers.wait_ready(proc)
        code, err = workers.finish(proc)
        outcomes.append(code)
        if code == 0:  # the run ended in this invocation: nothing was left to attempt
            break
        assert code == -9 or code == 9, f"the worker failed otherwise (rc={code}):\n{err}"

    info = await rt.get(run_id)
    assert read_lines(log) == ["attempt"] * KILLER_ATTEMPTS  # exactly the policy's attempts
    assert info.status == "completed", (info.status, info.error)
    assert info.output["gave_up"] == "AttemptLost"
    assert "did not return" in info.output["message"]
    assert outcomes == [9] * KILLER_ATTEMPTS + [0]
    step = info.steps[0]
    assert (step.name, step.attempts) == ("killer.boom", KILLER_ATTEMPTS)
