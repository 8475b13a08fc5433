"""The sweep function, called with the EventBridge scheduled event from ``events/``."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from heron.functions import _lambda, sweep
from tests.functions.kit import LambdaContext, metric_totals, scheduled_event

pytestmark = pytest.mark.usefixtures("container")


class Recorder:
    """A dispatcher that only writes down what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, float]] = []

    async def dispatch(self, run_ids: Sequence[str], *, delay: float = 0.0) -> None:
        self.sent += [(run_id, delay) for run_id in run_ids]

    async def drain(self) -> None:
        return None

    async def close(self) -> None:
        return None


def due_runs(count: int) -> Recorder:
    """``count`` runs started (so due) but never resumed: the dispatcher only records."""
    rt = _lambda.get_runtime()
    recorder = Recorder()
    rt.dispatcher = recorder
    for i in range(count):
        _lambda.run(rt.start("nap", 0.01, run_id=f"n-{i}"))
    recorder.sent.clear()
    return recorder


def test_the_scheduled_event_dispatches_every_due_run(capsys: pytest.CaptureFixture[str]) -> None:
    recorder = due_runs(5)
    capsys.readouterr()

    result = sweep.handler(scheduled_event(), LambdaContext())

    assert result == {"dispatched": 5}
    assert sorted(run_id for run_id, _ in recorder.sent) == [f"n-{i}" for i in range(5)]
    assert all(delay == 0 for _, delay in recorder.sent)
    assert metric_totals(capsys.readouterr().out)["RunsDispatched"] == 5


def test_the_sweep_pages_until_nothing_is_due(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep, "PAGE", 2)
    recorder = due_runs(5)

    assert sweep.handler(scheduled_event(), LambdaContext()) == {"dispatched": 5}
    assert len(recorder.sent) == 5  # each run once, over three pages


def test_near_its_deadline_the_sweep_stops_after_the_page_in_hand(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sweep, "PAGE", 2)
    recorder = due_runs(5)

    result = sweep.handler(scheduled_event(), LambdaContext(remaining_ms=0))

    assert result == {"dispatched": 2}
    assert len(recorder.sent) == 2  # the rest waits for the next schedule


def test_with_nothing_due_the_sweep_dispatches_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    recorder = due_runs(0)
    assert sweep.handler(scheduled_event(), LambdaContext()) == {"dispatched": 0}
    assert recorder.sent == []
    assert metric_totals(capsys.readouterr().out)["RunsDispatched"] == 0


def test_with_the_in_process_dispatcher_the_sweep_resumes_before_returning() -> None:
    # given a run made due without being resumed
    rt = _lambda.get_runtime()
    dispatcher = rt.dispatcher
    rt.dispatcher = Recorder()
    _lambda.run(rt.start("fragile", "ada", run_id="f-1"))
    rt.dispatcher = dispatcher

    # when the sweep runs (sam local: no queue)
    assert sweep.handler(scheduled_event(), LambdaContext()) == {"dispatched": 1}

    # then the run went as far as it could within the invocation
    assert _lambda.run(rt.get("f-1")).status == "completed"
