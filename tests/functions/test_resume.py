"""The resume function: SQS batches (the sample from ``events/``) and direct invokes."""

from __future__ import annotations

from typing import Any

import pytest

from heron.functions import _lambda, resume
from heron.runtime import Runtime
from heron.runtime.testing import FakeClock
from tests.functions.kit import (
    LambdaContext,
    load_event,
    log_lines,
    metric_totals,
    sqs_event,
)
from tests.functions.test_sweep import Recorder

pytestmark = pytest.mark.usefixtures("container")


def runtime_with_recorder() -> tuple[Runtime, Recorder]:
    """The container's runtime, its dispatcher replaced by one that only records."""
    rt = _lambda.get_runtime()
    recorder = Recorder()
    rt.dispatcher = recorder
    return rt, recorder


def started(rt: Runtime, workflow: str, input: Any, run_id: str) -> str:
    return _lambda.run(rt.start(workflow, input, run_id=run_id))


def status(rt: Runtime, run_id: str) -> str:
    return _lambda.run(rt.get(run_id)).status


def test_the_sample_sqs_event_resumes_its_run() -> None:
    rt, _ = runtime_with_recorder()
    started(rt, "greet", "ada", "o-1")  # the sample's body is {"run_id": "o-1"}

    response = resume.handler(load_event("sqs_resume"), LambdaContext())

    assert response == {"batchItemFailures": []}
    info = _lambda.run(rt.get("o-1"))
    assert info.status == "waiting"
    assert [(cp.kind, cp.value) for cp in info.steps] == [("step", "hello ada")]


def test_a_batch_reports_only_the_messages_that_failed() -> None:
    rt, _ = runtime_with_recorder()
    for i in range(3):
        started(rt, "greet", f"n{i}", f"g-{i}")
    bodies: list[Any] = [
        {"run_id": "g-0"},
        "not json",
        {"run_id": "g-1"},
        {"id": "g-2"},  # no run_id
        {"run_id": "ghost"},  # deleted since: nothing to do, dropped
        {"run_id": "g-2"},
    ]
    ids = [f"m-{i}" for i in range(len(bodies))]

    response = resume.handler(sqs_event(bodies, message_ids=ids), LambdaContext())

    assert response == {"batchItemFailures": [{"itemIdentifier": "m-1"}, {"itemIdentifier": "m-3"}]}
    assert [status(rt, f"g-{i}") for i in range(3)] == ["waiting"] * 3


def test_a_resume_that_raises_fails_its_message_only(monkeypatch: pytest.MonkeyPatch) -> None:
    rt, _ = runtime_with_recorder()
    started(rt, "greet", "ada", "g-1")
    started(rt, "greet", "bob", "boom")
    real = rt.resume

    async def flaky(run_id: str, *, deadline: float | None = None) -> Any:
        if run_id == "boom":
            raise ConnectionError("the store is unreachable")
        return await real(run_id, deadline=deadline)

    monkeypatch.setattr(rt, "resume", flaky)
    event = sqs_event([{"run_id": "g-1"}, {"run_id": "boom"}], message_ids=["ok", "bad"])

    assert resume.handler(event, LambdaContext()) == {
        "batchItemFailures": [{"itemIdentifier": "bad"}]
    }
    assert status(rt, "g-1") == "waiting"

    # a batch where every message fails is reported, not raised: SQS retries each one
    everything = sqs_event([{"run_id": "boom"}, "junk"], message_ids=["a", "b"])
    failures = resume.handler(everything, LambdaContext())["batchItemFailures"]
    assert failures == [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]


def test_a_direct_invoke_resumes_one_run_and_says_how_it_left_it() -> None:
    rt, _ = runtime_with_recorder()
    started(rt, "greet", "ada", "g-1")

    assert resume.handler({"run_id": "g-1"}, LambdaContext()) == {
        "run_id": "g-1",
        "resumed": True,
        "status": "waiting",
        "wake_at": None,
    }
    # nothing is due any more: a second invoke has nothing to do
    assert resume.handler({"run_id": "g-1"}, LambdaContext()) == {
        "run_id": "g-1",
        "resumed": False,
    }
    with pytest.raises(ValueError, match="run_id"):
        resume.handler({"id": "g-1"}, LambdaContext())


@pytest.mark.parametrize(
    ("remaining_ms", "margin_env", "expected"),
    [
        (60_000, None, 55.0),  # a tenth of the time left, at most 5 s
        (20_000, None, 18.0),
        (60_000, "1.5", 58.5),  # HERON_SAFETY_MARGIN
        (1_000, "3", 0.0),  # never before now
    ],
)
def test_each_resume_gets_the_invocations_deadline(
    monkeypatch: pytest.MonkeyPatch, remaining_ms: int, margin_env: str | None, expected: float
) -> None:
    if margin_env is not None:
        monkeypatch.setenv("HERON_SAFETY_MARGIN", margin_env)
    rt, _ = runtime_with_recorder()
    clock = FakeClock()
    rt.clock = clock
    deadlines: list[float | None] = []

    async def spy(run_id: str, *, deadline: float | None = None) -> None:
        deadlines.append(deadline)

    monkeypatch.setattr(rt, "resume", spy)
    event = sqs_event([{"run_id": "a"}, {"run_id": "b"}])
    resume.handler(event, LambdaContext(remaining_ms=remaining_ms))
    resume.handler({"run_id": "c"}, LambdaContext(remaining_ms=remaining_ms))

    assert deadlines == [clock.now() + expected] * 3


def test_a_bad_safety_margin_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERON_SAFETY_MARGIN", "soon")
    with pytest.raises(ValueError, match="HERON_SAFETY_MARGIN"):
        resume.handler({"run_id": "x"}, LambdaContext())


def test_out_of_time_a_run_suspends_at_once_and_is_dispatched_again() -> None:
    rt, recorder = runtime_with_recorder()
    started(rt, "greet", "ada", "g-1")
    recorder.sent.clear()

    resume.handler({"run_id": "g-1"}, LambdaContext(remaining_ms=0))

    info = _lambda.run(rt.get("g-1"))
    assert info.status == "pending" and info.steps == []  # no step started
    assert recorder.sent == [("g-1", 0.0)]  # the next invocation carries on


def test_a_run_that_sleeps_briefly_gets_a_precise_delayed_dispatch() -> None:
    rt, recorder = runtime_with_recorder()
    clock = FakeClock()
    rt.clock = clock
    started(rt, "nap", 30, "n-30")
    started(rt, "nap", 3600, "n-3600")
    recorder.sent.clear()

    resume.handler(sqs_event([{"run_id": "n-30"}, {"run_id": "n-3600"}]), LambdaContext())

    # a wake within 15 minutes is sent back delayed; an hour is left to the sweep
    assert recorder.sent == [("n-30", 30.0)]
    assert status(rt, "n-30") == status(rt, "n-3600") == "sleeping"


def test_metrics_count_steps_runs_and_wake_lateness(capsys: pytest.CaptureFixture[str]) -> None:
    rt, _ = runtime_with_recorder()
    clock = FakeClock()
    rt.clock = clock
    for workflow, input, run_id in [
        ("greet", "ada", "g-1"),
        ("doomed", "no funds", "d-1"),
        ("fragile", "bob", "f-1"),
        ("nap", 30, "n-1"),
    ]:
        started(rt, workflow, input, run_id)
    capsys.readouterr()

    ids = ["g-1", "d-1", "f-1", "n-1"]
    resume.handler(sqs_event([{"run_id": run_id} for run_id in ids]), LambdaContext())
    clock.advance(32)  # the nap's timer is 2 s overdue when it is resumed
    resume.handler(sqs_event([{"run_id": "n-1"}]), LambdaContext())
    out = capsys.readouterr().out

    totals = metric_totals(out)
    assert totals["Resumes"] == 5
    assert totals["StepsCompleted"] == 2  # greet's and fragile's
    assert totals["StepsFailed"] == 1  # doomed's
    assert totals["RunsCompleted"] == 2  # fragile, nap
    assert totals["RunsFailed"] == 1  # doomed
    assert totals["WakeLateness"] == pytest.approx(2.0)


def test_log_lines_name_the_run_the_workflow_and_the_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rt, _ = runtime_with_recorder()
    started(rt, "doomed", "no funds", "d-1")
    capsys.readouterr()

    resume.handler(sqs_event([{"run_id": "d-1"}]), LambdaContext(aws_request_id="inv-1"))
    lines = log_lines(capsys.readouterr().out)

    assert lines
    for line in lines:
        assert line["run_id"] == "d-1", line
        assert line["function_request_id"] == "inv-1"
    by_message = {line["message"]: line for line in lines}
    failed = by_message["step failed"]
    assert (failed["workflow"], failed["seq"], failed["step"]) == ("doomed", 0, "refuse")
    assert failed["error_type"] == "FatalError"
    assert by_message["run failed"]["workflow"] == "doomed"
    assert "no funds" not in str(lines)  # payloads and error messages stay out of the logs
