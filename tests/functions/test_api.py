"""The HTTP API function, called as Lambda calls it: ``heron.functions.api.handler(event, context)``
with API Gateway HTTP API events (the SAM samples in ``events/``, patched) and a context object.

The container runs the test app on SQLite with the in-process dispatcher, which the handler
drains before it returns, so a run has gone as far as it can when the response comes back.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from heron.functions import _lambda, api, asgi
from tests.functions.kit import (
    TOKEN,
    LambdaContext,
    api_event,
    load_event,
    log_lines,
    metric_totals,
    response_json,
    with_iam,
)
from tests.functions.lambda_app import BROKEN

pytestmark = pytest.mark.usefixtures("container")


def call(event: dict[str, Any]) -> tuple[int, Any]:
    response = api.handler(event, LambdaContext())
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    content_type = dict(response["headers"]).get("content-type", "")
    parsed = json.loads(body) if body and content_type.startswith("application/json") else body
    return response["statusCode"], parsed


def start(workflow: str, input: Any = None, **fields: Any) -> tuple[int, Any]:
    return call(api_event("POST", f"/workflows/{workflow}/runs", {"input": input, **fields}))


def get(path: str, query: str = "") -> tuple[int, Any]:
    return call(api_event("GET", path, query=query))


def post(path: str, body: Any = None) -> tuple[int, Any]:
    return call(api_event("POST", path, body))


def assert_error(status: int, body: Any, expected: int, *words: str) -> None:
    assert status == expected, body
    assert set(body) >= {"error", "message"}
    for word in words:
        assert word in body["message"] or word == body.get("field"), (word, body)


# -- starting runs -------------------------------------------------------------------------------


def test_the_sample_start_event_starts_a_run_and_starting_it_again_is_the_same_run() -> None:
    # given the committed sample event (POST /workflows/order/runs, run_id o-1)
    event = load_event("api_start_run")
    event["headers"]["authorization"] = f"Bearer {TOKEN}"

    # when it is sent twice
    first = api.handler(event, LambdaContext())
    again = api.handler(
        load_event("api_start_run") | {"headers": event["headers"]}, LambdaContext()
    )

    # then the first creates the run (201) and the second finds it (200)
    assert first["statusCode"] == 201
    assert again["statusCode"] == 200
    body = response_json(first)
    assert body["id"] == "o-1" and body["workflow"] == "order" and body["tags"] == ["web"]
    assert dict(first["headers"])["location"] == "/runs/o-1"
    assert response_json(again)["id"] == "o-1"


def test_the_same_run_id_with_another_input_is_a_conflict() -> None:
    assert start("greet", "ada", run_id="g-1")[0] == 201
    status, body = start("greet", "bob", run_id="g-1")
    assert_error(status, body, 409, "g-1")


def test_a_run_id_is_generated_when_none_is_given() -> None:
    status, body = start("greet", "ada")
    assert status == 201
    assert len(body["id"]) == 32


def test_an_unknown_workflow_is_404_naming_it() -> None:
    status, body = start("nope", {})
    assert_error(status, body, 404, "'nope'")
    assert body["error"] == "WorkflowNotFound"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": 1, "run_id": "x" * 201}, "body.run_id"),
        ({"input": 1, "run_id": "a/b"}, "body.run_id"),
        ({"input": 1, "run_id": "tab\there"}, "body.run_id"),
        ({"input": 1, "tags": [""]}, "body.tags.0"),
        ({"input": 1, "tags": "web"}, "body.tags"),
        ({"inputs": 1}, "body.inputs"),
    ],
)
def test_invalid_start_bodies_are_422_naming_the_field(body: dict[str, Any], field: str) -> None:
    status, answer = call(api_event("POST", "/workflows/greet/runs", body))
    assert_error(status, answer, 422, field)
    assert answer["field"] == field


def test_a_body_that_is_not_json_is_400() -> None:
    status, body = call(api_event("POST", "/workflows/greet/runs", raw_body=b"{not json"))
    assert_error(status, body, 400, "body")
    assert body["error"] == "InvalidJSON"


def test_nan_is_not_json_a_run_can_store() -> None:
    raw = b'{"input": {"x": NaN}}'
    status, body = call(api_event("POST", "/workflows/greet/runs", raw_body=raw))
    assert_error(status, body, 422, "body.input")


def test_an_input_over_the_engines_payload_limit_is_413() -> None:
    status, body = start("greet", "x" * 300_000)
    assert_error(status, body, 413, "input of workflow 'greet'")


def test_a_body_over_the_limit_is_413_before_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    asgi.app.state.settings = asgi.ApiSettings(token=TOKEN, max_body=1000)
    event = api_event("POST", "/workflows/greet/runs", {"input": "x" * 2000})
    # with a Content-Length, and without one (the bytes are counted as they arrive)
    for headers in ({"content-length": "2014"}, {}):
        event["headers"] = {**event["headers"], **headers}
        if not headers:
            event["headers"].pop("content-length", None)
        status, body = call(event)
        assert_error(status, body, 413, "1000 bytes")


# -- reading runs --------------------------------------------------------------------------------


def test_get_run_returns_the_run_and_its_timeline() -> None:
    start("greet", "ada", run_id="g-1")

    status, body = call(load_event("api_get_run") | {"rawPath": "/runs/g-1"})
    assert status == 401  # the sample event's token is a placeholder

    event = load_event("api_get_run")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/runs/g-1"
    event["headers"]["authorization"] = f"Bearer {TOKEN}"
    status, body = call(event)

    assert status == 200
    assert {"id", "workflow", "status", "input", "output", "error", "steps"} <= set(body)
    assert (body["id"], body["workflow"], body["status"]) == ("g-1", "greet", "waiting")
    assert body["input"] == "ada" and body["output"] is None and body["error"] is None
    assert [(s["seq"], s["kind"], s["name"], s["value"]) for s in body["steps"]] == [
        (0, "step", "greet", "hello ada")
    ]


def test_an_unknown_run_is_404_naming_it() -> None:
    status, body = get("/runs/ghost")
    assert_error(status, body, 404, "'ghost'")
    assert body["field"] == "run_id"


def test_list_runs_filters_and_pages_with_a_cursor() -> None:
    for i in range(5):
        start("greet", f"n{i}", run_id=f"g-{i}", tags=["batch"] if i % 2 == 0 else [])
    start("fragile", "x", run_id="f-1")  # completes

    # the committed sample: ?status=waiting&limit=10
    event = load_event("api_list_runs")
    event["headers"]["authorization"] = f"Bearer {TOKEN}"
    status, body = call(event)
    assert status == 200
    assert sorted(r["id"] for r in body["runs"]) == [f"g-{i}" for i in range(5)]

    assert [r["id"] for r in get("/runs", "tag=batch")[1]["runs"]] == ["g-4", "g-2", "g-0"]
    assert [r["id"] for r in get("/runs", "workflow=fragile")[1]["runs"]] == ["f-1"]

    seen: list[str] = []
    query = "workflow=greet&limit=2"
    while True:
        status, page = get("/runs", query)
        assert status == 200 and len(page["runs"]) <= 2
        seen += [r["id"] for r in page["runs"]]
        if not page["next_cursor"]:
            break
        query = f"workflow=greet&limit=2&cursor={page['next_cursor']}"
    assert seen == [f"g-{i}" for i in reversed(range(5))]


@pytest.mark.parametrize(
    ("query", "expected", "field"),
    [
        ("cursor=not-a-cursor", 400, "cursor"),
        ("cursor=WzEsICJcdWQ4MDAiXQ==", 400, "cursor"),  # [1, "\ud800"]: a lone surrogate
        ("limit=0", 422, "query.limit"),
        ("limit=201", 422, "query.limit"),
        ("status=asleep", 422, "query.status"),
        ("created_after=nan", 422, "query.created_after"),
    ],
)
def test_bad_list_queries_are_4xx_naming_the_parameter(
    query: str, expected: int, field: str
) -> None:
    status, body = get("/runs", query)
    assert_error(status, body, expected, field)


# -- signals, cancel, retry ----------------------------------------------------------------------


def test_a_signal_completes_a_waiting_run_and_a_finished_run_takes_no_more() -> None:
    start("greet", "ada", run_id="g-1")

    # the committed sample signal event, aimed at this run
    event = load_event("api_signal_run")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/runs/g-1/signals/reply"
    event["headers"]["authorization"] = f"Bearer {TOKEN}"
    status, body = call(event)

    assert status == 202
    assert body == {"run_id": "g-1", "name": "reply", "signal_id": "approval-1"}
    run = get("/runs/g-1")[1]
    assert run["status"] == "completed"
    assert run["output"] == {"text": "hello ada", "reply": {"by": "ops"}}

    status, body = post("/runs/g-1/signals/reply", {"payload": "late"})
    assert_error(status, body, 409, "completed")


def test_a_signal_id_deduplicates_and_an_unknown_run_is_404() -> None:
    start("greet", "ada", run_id="g-1")
    post("/runs/g-1/cancel")  # keep it from consuming the signal
    start("greet", "bob", run_id="g-2")
    first = post("/runs/g-2/signals/other", {"payload": 1, "signal_id": "s-1"})
    again = post("/runs/g-2/signals/other", {"payload": 2, "signal_id": "s-1"})
    assert first[0] == again[0] == 202
    signals = get("/runs/g-2")[1]["signals"]
    assert [(s["id"], s["name"]) for s in signals] == [("s-1", "other")]

    status, body = post("/runs/ghost/signals/reply", {"payload": 1})
    assert_error(status, body, 404, "'ghost'")


def test_a_signal_without_a_body_has_no_payload() -> None:
    start("greet", "ada", run_id="g-1")
    assert post("/runs/g-1/signals/reply")[0] == 202
    assert get("/runs/g-1")[1]["output"] == {"text": "hello ada", "reply": None}


def test_cancel_is_idempotent_and_refused_for_a_completed_run() -> None:
    start("greet", "ada", run_id="g-1")

    status, body = post("/runs/g-1/cancel", {"reason": "changed my mind"})
    assert status == 200 and body["status"] == "cancelled"
    assert post("/runs/g-1/cancel")[0] == 200
    assert get("/runs/g-1")[1]["error"] == {"type": "Cancelled", "message": "changed my mind"}

    start("fragile", "x", run_id="f-1")
    status, body = post("/runs/f-1/cancel")
    assert_error(status, body, 409, "completed")
    assert_error(*post("/runs/ghost/cancel"), 404, "'ghost'")


def test_retry_restarts_a_failed_run_from_its_last_good_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a run that failed after its first step
    monkeypatch.setenv(BROKEN, "1")
    start("fragile", "ada", run_id="f-1")
    failed = get("/runs/f-1")[1]
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == "the fragile workflow is broken"

    # when the fault is fixed and the run retried
    monkeypatch.delenv(BROKEN)
    status, body = post("/runs/f-1/retry")

    # then it completes, and the step it had finished did not run again
    assert status == 200, body
    done = get("/runs/f-1")[1]
    assert done["status"] == "completed" and done["output"] == "hello ada"
    assert [(s["seq"], s["attempts"], s["at"]) for s in done["steps"]] == [
        (s["seq"], s["attempts"], s["at"]) for s in failed["steps"]
    ]

    status, body = post("/runs/f-1/retry")
    assert_error(status, body, 409, "completed")
    assert_error(*post("/runs/ghost/retry"), 404, "'ghost'")


def test_retry_from_a_seq_reruns_that_step_and_everything_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a run that failed after its first step
    monkeypatch.setenv(BROKEN, "1")
    start("fragile", "ada", run_id="f-2")
    failed = get("/runs/f-2")[1]
    assert [s["seq"] for s in failed["steps"]] == [0]

    # when it is retried from seq 0 after the fix
    monkeypatch.delenv(BROKEN)
    assert_error(*post("/runs/f-2/retry", {"from_seq": -1}), 422, "from_seq")
    status, body = post("/runs/f-2/retry", {"from_seq": 0})

    # then the first step ran again: a new checkpoint at seq 0
    assert status == 200, body
    done = get("/runs/f-2")[1]
    assert done["status"] == "completed"
    assert done["steps"][0]["at"] > failed["steps"][0]["at"]


# -- auth, routing, meta -------------------------------------------------------------------------


def test_requests_without_the_right_token_are_401() -> None:
    for token in (None, "wrong", TOKEN + "x", "ünïcode"):
        status, body = call(api_event("GET", "/runs", token=token))
        assert_error(status, body, 401, "Authorization")
    response = api.handler(api_event("GET", "/runs", token=None), LambdaContext())
    assert dict(response["headers"])["www-authenticate"] == "Bearer"


def test_health_and_the_openapi_document_need_no_token() -> None:
    assert call(api_event("GET", "/healthz", token=None)) == (200, {"status": "ok"})
    status, doc = call(api_event("GET", "/openapi.json", token=None))
    assert status == 200
    assert set(doc["paths"]) >= {
        "/workflows/{name}/runs",
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/signals/{name}",
        "/runs/{run_id}/cancel",
        "/runs/{run_id}/retry",
        "/healthz",
    }


def test_iam_auth_trusts_what_api_gateway_authorized(monkeypatch: pytest.MonkeyPatch) -> None:
    asgi.app.state.settings = asgi.ApiSettings(iam=True)
    assert call(with_iam(api_event("GET", "/runs", token=None)))[0] == 200
    status, body = call(api_event("GET", "/runs", token=TOKEN))  # no IAM context: refused
    assert_error(status, body, 403, "IAM")


def test_with_no_auth_configured_the_api_is_closed_unless_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asgi.app.state.settings = asgi.ApiSettings()
    status, body = call(api_event("GET", "/runs", token=TOKEN))
    assert_error(status, body, 403, "HERON_API_OPEN")
    assert body["error"] == "ApiClosed"

    asgi.app.state.settings = asgi.ApiSettings(open=True)
    assert call(api_event("GET", "/runs", token=None))[0] == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},  # a form posted from another site
        {"origin": "null"},  # a sandboxed frame, a data: URL
        {"sec-fetch-site": "cross-site"},
        {"origin": "http://localhost:9999", "sec-fetch-site": "same-site"},  # another port
    ],
)
def test_an_open_api_takes_no_changes_from_another_origin(headers: dict[str, str]) -> None:
    # given: the API open (heron dev) and a run waiting
    asgi.app.state.settings = asgi.ApiSettings(open=True)
    assert start("greet", "ada", run_id="x-1")[0] == 201

    # when: a page of another origin posts to it (a body-less form needs no JSON)
    host = "id.execute-api.us-east-1.amazonaws.com"
    event = api_event("POST", "/runs/x-1/cancel", token=None, headers={"host": host, **headers})
    status, body = call(event)

    # then: refused, and the run is untouched; reads and same-origin or non-browser changes work
    assert_error(status, body, 403, "another origin", "Origin")
    assert get("/runs/x-1")[1]["status"] == "waiting"
    same = {"host": host, "origin": f"https://{host}", "sec-fetch-site": "same-origin"}
    assert call(api_event("POST", "/runs/x-1/cancel", token=None, headers=same))[0] == 200


def test_a_token_wins_over_the_open_switch() -> None:
    # given: a development switch left on beside a token (a deployed Worker's [vars], say)
    asgi.app.state.settings = asgi.ApiSettings.from_env(
        {"HERON_API_TOKEN": TOKEN, "HERON_API_OPEN": "1"}
    )

    # then: the token is still required
    status, body = call(api_event("GET", "/runs", token=None))
    assert_error(status, body, 401, "bearer token", "Authorization")
    assert call(api_event("GET", "/runs", token=TOKEN))[0] == 200


def test_settings_come_from_the_environment_and_name_a_bad_variable() -> None:
    settings = asgi.ApiSettings.from_env(
        {"HERON_API_TOKEN": "t", "HERON_API_AUTH": "iam", "HERON_MAX_BODY": "10"}
    )
    assert settings == asgi.ApiSettings(token="t", iam=True, open=False, max_body=10)
    assert asgi.ApiSettings.from_env({"HERON_API_OPEN": "1"}).open
    assert asgi.ApiSettings.from_env({}) == asgi.ApiSettings()
    for env, name in [
        ({"HERON_API_AUTH": "basic"}, "HERON_API_AUTH"),
        ({"HERON_API_AUTH": "token"}, "HERON_API_TOKEN"),
        ({"HERON_MAX_BODY": "lots"}, "HERON_MAX_BODY"),
        ({"HERON_MAX_BODY": "0"}, "HERON_MAX_BODY"),
    ]:
        with pytest.raises(ValueError, match=name):
            asgi.ApiSettings.from_env(env)


def test_unknown_routes_and_methods_are_json_errors() -> None:
    assert_error(*get("/nowhere"), 404, "/nowhere")
    assert_error(*call(api_event("DELETE", "/runs")), 405, "DELETE")


def test_the_dashboard_lists_runs_and_shows_a_timeline() -> None:
    start("greet", "<b>ada</b>", run_id="g-1")
    status, page = get("/dashboard")
    assert status == 200
    assert "/dashboard/runs/g-1" in page and "waiting" in page
    status, page = get("/dashboard/runs/g-1")
    assert status == 200
    assert "hello &lt;b&gt;ada&lt;/b&gt;" in page and "<b>ada" not in page


# -- observability -------------------------------------------------------------------------------


def test_logs_carry_the_request_id_and_metrics_count_the_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    event = api_event("POST", "/workflows/greet/runs", {"input": "ada", "run_id": "g-1"})
    event["requestContext"]["requestId"] = "req-abc-123"
    api.handler(event, LambdaContext())
    out = capsys.readouterr().out

    started = [line for line in log_lines(out) if line["message"] == "run started"]
    assert started and started[0]["correlation_id"] == "req-abc-123"
    assert started[0]["run_id"] == "g-1" and started[0]["workflow"] == "greet"
    assert started[0]["function_request_id"]
    assert metric_totals(out)["RunsStarted"] == 1
    assert TOKEN not in out and "ada" not in out.replace('"hello ada"', "")


def test_the_runtime_is_built_once_per_container() -> None:
    start("greet", "ada", run_id="g-1")
    first = _lambda.get_runtime()
    get("/runs/g-1")
    assert _lambda.get_runtime() is first


async def test_a_streamed_body_without_a_length_is_counted_and_cut_at_the_limit() -> None:
    import httpx

    from heron.runtime.testing import test_runtime

    rt, _ = test_runtime()
    app = asgi.create_app(rt, asgi.ApiSettings(open=True, max_body=100))

    async def chunks() -> Any:
        yield b'{"input": "'
        for _ in range(10):
            yield b"x" * 20
        yield b'"}'

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://heron") as client:
        response = await client.post("/workflows/greet/runs", content=chunks())
        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert response.json()["field"] == "body"
        small = await client.post("/workflows/greet/runs", json={"input": "ada"})
        assert small.status_code == 404  # within the limit: on to the workflow lookup


def test_a_body_not_sent_as_json_is_415_naming_the_header() -> None:
    event = api_event("POST", "/workflows/greet/runs", {"input": "ada"})
    event["headers"]["content-type"] = "text/plain"
    status, body = call(event)
    assert_error(status, body, 415, "Content-Type")


def test_the_api_and_the_cli_answer_with_one_shape() -> None:
    # GET /runs/{id} and heron inspect --json both come from heron.functions._shapes
    from heron.functions._shapes import run_detail, run_summary
    from heron.runtime import RunInfo

    info = RunInfo("r", "w", "1", "pending", None, None, None, None, [], 0.0, 0.0, None)
    assert set(asgi.RunDetail.model_fields) == set(run_detail(info))
    assert set(asgi.RunSummary.model_fields) == set(run_summary(info))
    assert set(asgi.Step.model_fields) == {
        "seq",
        "kind",
        "name",
        "value",
        "error",
        "at",
        "attempts",
        "order",
    }
