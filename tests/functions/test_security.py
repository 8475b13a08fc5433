"""Attacks on the HTTP API, made as API Gateway delivers them to the Lambda function
(docs/security.md): forged engine messages, squatted child ids, nesting that exhausts the stack,
hostile ids in URLs and headers, bad records already stored, and what reaches the logs. Each
attack once worked. The ``Runtime`` calls underneath are attacked in
``tests/unit/test_hostile_input.py``."""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import quote

import pytest

from heron.functions import _lambda
from heron.stores.contract import Run
from tests.functions.kit import api_event
from tests.functions.test_api import assert_error, call, get, post, start

pytestmark = pytest.mark.usefixtures("container")


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def store_directly(run: Run) -> None:
    """Write a header the way an older version (or anyone with store access) could have."""
    rt = _lambda.get_runtime()
    assert _lambda.run(rt.store.create(run))


def delete(path: str) -> tuple[int, Any]:
    return call(api_event("DELETE", path))


# -- reserved channels ---------------------------------------------------------------------------


def test_a_child_result_cannot_be_forged_with_a_signal() -> None:
    # given a run that waits for a signal
    status, _ = start("greet", "ada", run_id="g-1")
    assert status == 201

    # when a caller sends a signal under the engine's reserved names
    for name in ("heron:child:g-1-c1", "heron:x"):
        status, body = post(f"/runs/g-1/signals/{quote(name)}", {"payload": {"forged": True}})

        # then it is refused naming the field, and nothing was buffered
        assert_error(status, body, 422, "reserved", "path.name")
    run = get("/runs/g-1")[1]
    assert run["status"] == "waiting" and run["signals"] == []


# -- nesting -------------------------------------------------------------------------------------


def test_a_deeply_nested_input_is_refused_before_anything_is_stored() -> None:
    # one 1.9 KB request, nested 947 levels deep
    status, body = start("greet", nested(947), run_id="deep")

    assert_error(status, body, 422, "nested more than 64 levels", "body.input")
    assert get("/runs/deep")[0] == 404
    assert get("/runs")[1]["runs"] == []

    start("greet", "ada", run_id="g-2")
    status, body = post("/runs/g-2/signals/reply", {"payload": nested(947)})
    assert_error(status, body, 422, "nested more than 64 levels", "body.payload")
    assert get("/runs/g-2")[1]["signals"] == []


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '[[[[{{{{ \\" ' * 50  # brackets, an escaped backslash and a quote, many times
    status, body = start("greet", {"a": [text], 'b\\"[': nested(60)}, run_id="s-1")
    assert status == 201, body
    assert get("/runs/s-1")[1]["input"]["a"] == [text]

    status, body = start("greet", {"deep": nested(65)}, run_id="s-2")
    assert_error(status, body, 422, "nested more than 64 levels", "body.input")


def test_a_bad_record_never_breaks_listing_and_can_be_deleted() -> None:
    # given a run stored without today's checks, nested deeper than any answer may be
    now = time.time()
    store_directly(Run(id="bad", workflow="greet", input=nested(900), created_at=now))
    start("greet", "ada", run_id="good")

    # then every listing, the dashboard and the run itself still answer
    for path, query in [("/runs", ""), ("/runs", "workflow=greet"), ("/runs", "status=pending")]:
        status, body = get(path, query)
        assert status == 200, body
        assert "bad" in {run["id"] for run in body["runs"]}
    assert get("/dashboard")[0] == 200
    status, body = get("/runs/bad")
    assert status == 200 and body["input"].startswith("<a value nested more than 64 levels")
    assert get("/dashboard/runs/bad")[0] == 200

    # and an operator can delete it
    assert delete("/runs/bad") == (204, "")
    assert get("/runs/bad")[0] == 404
    assert_error(*delete("/runs/bad"), 404, "'bad'")
    assert [run["id"] for run in get("/runs")[1]["runs"]] == ["good"]


def test_signals_past_the_cap_are_refused_and_nothing_is_lost() -> None:
    # given a run that buffers signals it has not asked for yet
    start("greet", "ada", run_id="g-4")
    for n in range(100):
        status, body = post(f"/runs/g-4/signals/note-{n}", {"payload": n})
        assert status == 202, body

    # then the next one is refused, and the run still holds all the others
    status, body = post("/runs/g-4/signals/note-100", {"payload": 100})
    assert_error(status, body, 409, "g-4")
    assert body["error"] == "TooManySignals"
    assert len(get("/runs/g-4")[1]["signals"]) == 100


def test_delete_needs_auth() -> None:
    start("greet", "ada", run_id="g-3")
    status, _ = call(api_event("DELETE", "/runs/g-3", token="wrong"))
    assert status == 401
    assert get("/runs/g-3")[0] == 200


# -- ids in URLs and headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_id", ["注文-42", "cafe\u0301", "user%40example.com", "x%2Fy", "a b", "@:+,;=$&!'()*"]
)
def test_every_accepted_id_gets_201_and_a_location_that_leads_to_its_run(run_id: str) -> None:
    event = api_event("POST", "/workflows/greet/runs", {"input": "ada", "run_id": run_id})
    from heron.functions import api
    from tests.functions.kit import LambdaContext

    response = api.handler(event, LambdaContext())

    assert response["statusCode"] == 201, response
    location = dict(response["headers"])["location"]
    assert location == "/runs/" + quote(run_id, safe="")
    assert location.isascii()
    status, body = get(location)  # as a client follows it: the path as sent, still encoded
    assert status == 200 and body["id"] == run_id

    # and the dashboard links to it the same way
    page = get("/dashboard")[1]
    assert f'href="/dashboard{location}"' in page.replace("&amp;", "&").replace("&#x27;", "'")


@pytest.mark.parametrize(
    ("run_id", "reason"),
    [
        ("", "at least 1"),
        ("x" * 201, "at most 200"),
        ("trailing ", "whitespace"),
        (".", "dot segment"),
        ("..", "dot segment"),
        ("a/b", "'/'"),
        ("esc\x1b]0;pwned\x07", "control"),
    ],
)
def test_ids_that_no_url_can_address_are_refused_before_anything_is_stored(
    run_id: str, reason: str
) -> None:
    status, body = start("greet", "ada", run_id=run_id)

    assert_error(status, body, 422, reason, "body.run_id")
    assert get("/runs")[1]["runs"] == []


# -- logs ----------------------------------------------------------------------------------------


def test_a_failed_steps_message_is_not_logged() -> None:
    # given: every line the heron loggers write, rendered as the function's log handler does
    # (collected here, not read from stdout: other tests in the same process may have
    # pointed the handlers elsewhere)
    from heron.functions._observe import logger as function_logger

    lines: list[str] = []
    collect = logging.Handler()
    collect.setFormatter(function_logger.registered_formatter)
    collect.emit = lambda record: lines.append(collect.format(record))  # type: ignore[method-assign]
    engine = logging.getLogger("heron")
    engine.addHandler(collect)
    try:
        # when a step fails with the caller's secret in its message
        status, body = start("doomed", "card 4111 1111 1111 1111 declined", run_id="d-1")
        assert status == 201, body
    finally:
        engine.removeHandler(collect)

    # then the run records the message, and the function's logs only its type
    assert "4111" in json.dumps(get("/runs/d-1")[1]["error"])
    output = "\n".join(lines)
    assert "FatalError" in output
    assert "4111" not in output
