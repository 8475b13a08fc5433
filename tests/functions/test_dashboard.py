"""The dashboard through the ASGI app (httpx's ``ASGITransport``, an HTTPS origin), and once
through the Lambda handler: sign-in and the session cookie, CSRF, each filter, paging, each
action and its refusals, escaping, percent-encoded links, the root path, ``/docs`` offline, and
what the worker functions import (none of it).

The runtime is a fresh one per test (a ``MemoryStore``, a ``FakeClock``, no dispatch): the tests
drive runs with ``rt.resume`` so that a page shows exactly the state the test made.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from markupsafe import escape

from heron.functions.asgi import ApiSettings, create_app
from heron.functions.dashboard._format import COLLAPSE_OVER, SHOW_AT_MOST
from heron.functions.dashboard._session import SESSION_LIFETIME, SessionKey
from heron.functions.dashboard._timeline import timeline
from heron.runtime import (
    MAX_DEPTH,
    Context,
    FatalError,
    NoopDispatcher,
    RetryPolicy,
    Runtime,
    step_key,
)
from heron.stores.contract import Run
from heron.stores.memory import MemoryStore
from heron.testing import FakeClock
from tests.functions.kit import ROOT

TOKEN = "dashboard-token-9c2e"
ORIGIN = "https://heron.test"


# -- the app under test --------------------------------------------------------------------------


@dataclass
class World:
    """A runtime with the test's workflows, its clock, and switches the steps read."""

    rt: Runtime
    clock: FakeClock
    flags: dict[str, bool] = field(default_factory=dict)

    async def drive(self, run_id: str, rounds: int = 6) -> str:
        """Resume ``run_id`` (and its children) until it rests; its status."""
        for _ in range(rounds):
            await self.rt.resume(run_id)
            for child in (await self.rt.get(run_id)).children:
                await self.rt.resume(child)
            self.clock.advance(0.25)
        return (await self.rt.get(run_id)).status

    async def start(self, workflow: str, input: Any = None, **kwargs: Any) -> str:
        return await self.rt.start(workflow, input, **kwargs)


def build_world() -> World:
    clock = FakeClock()
    rt = Runtime(
        MemoryStore(),
        clock=clock,
        dispatcher=NoopDispatcher(),
        max_pending_signals=5,
        max_payload=4096,
    )
    world = World(rt, clock)

    @rt.step(name="greet")
    async def greet(name: str) -> str:
        return f"hello {name}"

    @rt.step(name="charge", retry=RetryPolicy(max_attempts=3, initial_delay=0.1))
    async def flaky_charge(order: str) -> dict[str, Any]:
        if step_key().attempt == 1:
            raise ConnectionError("gateway timed out")
        return {"charge": f"ch_{order}"}

    @rt.step(name="check", retry=RetryPolicy(max_attempts=1))
    async def check() -> str:
        if not world.flags.get("ok"):
            raise FatalError("not ready <b>yet</b>")
        return "ready"

    @rt.step(name="echo")
    async def echo(value: Any) -> Any:
        return value

    @rt.workflow("greet")
    async def greet_flow(ctx: Context, name: str) -> dict[str, Any]:
        text = await ctx.step(greet, name)
        reply = await ctx.wait_for_signal("reply", timeout=3600)
        return {"text": text, "reply": reply}

    @rt.workflow("nap")
    async def nap(ctx: Context, seconds: float) -> str:
        await ctx.sleep(seconds)
        return "rested"

    @rt.workflow("flaky")
    async def flaky(ctx: Context, _: Any) -> str:
        first: str = await ctx.step(greet, "x")
        return first + " " + await ctx.step(check)

    @rt.workflow("order")
    async def order(ctx: Context, order_id: str) -> dict[str, Any]:
        payment = await ctx.step(flaky_charge, order_id)
        await ctx.sleep(1)
        approval = await ctx.wait_for_signal("approved", timeout=600)
        child = await ctx.child("nap", 0)
        return {"payment": payment, "approval": approval, "child": child}

    @rt.workflow("echo")
    async def echo_flow(ctx: Context, value: Any) -> Any:
        return await ctx.step(echo, value)

    return world


@pytest.fixture
def world() -> World:
    return build_world()


def client_for(
    world: World,
    settings: ApiSettings | None = None,
    *,
    root_path: str = "",
    base_url: str = ORIGIN,
) -> httpx.AsyncClient:
    app = create_app(world.rt, settings or ApiSettings(token=TOKEN))
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(world) as client:
        yield client


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, page
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, prefix: str = "") -> str:
    """Sign in with the token; the session's CSRF token."""
    answer = await client.post(
        f"{prefix}/dashboard/sign-in", data={"token": TOKEN, "next": f"{prefix}/dashboard"}
    )
    assert answer.status_code == 303, answer.text
    page = await client.get(f"{prefix}/dashboard")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie header by cookie name."""
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


def text_of(page: str) -> str:
    """A page's text, tags removed and entities decoded (what a reader sees)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


# -- signing in ----------------------------------------------------------------------------------


async def test_without_a_session_a_page_redirects_to_sign_in(client: httpx.AsyncClient) -> None:
    answer = await client.get("/dashboard/runs/o-1?x=1")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/sign-in?next=%2Fdashboard%2Fruns%2Fo-1%3Fx%3D1"
    page = await client.get(answer.headers["location"])
    assert page.status_code == 200
    assert (
        'type="password"' in page.text
        and 'name="next" value="/dashboard/runs/o-1?x=1"' in page.text
    )
    assert "set-cookie" not in page.headers  # nothing is handed out before the token


async def test_a_link_from_another_site_tries_again_from_this_one(
    client: httpx.AsyncClient,
) -> None:
    # SameSite=Strict keeps the cookie off a navigation that starts on another site
    answer = await client.get("/dashboard/runs/o-1", headers={"Sec-Fetch-Site": "cross-site"})
    assert answer.status_code == 200
    assert '<meta http-equiv="refresh" content="0; url=/dashboard/runs/o-1">' in answer.text


async def test_a_wrong_token_is_refused_and_gets_no_cookie(client: httpx.AsyncClient) -> None:
    for wrong in ("nope", TOKEN + "x", TOKEN[:-1], ""):
        answer = await client.post(
            "/dashboard/sign-in", data={"token": wrong, "next": "/dashboard"}
        )
        assert answer.status_code == 401
        assert "not this API's token" in text_of(answer.text)
        assert "set-cookie" not in answer.headers
    assert (await client.get("/dashboard")).status_code == 303


async def test_signing_in_sets_a_session_cookie_that_does_not_hold_the_token(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post(
        "/dashboard/sign-in", data={"token": TOKEN, "next": "/dashboard?status=failed"}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard?status=failed"
    cookie = set_cookies(answer)["heron_session"]
    flags = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert {"httponly", "secure", "samesite=strict", "path=/dashboard"} <= set(flags)
    assert f"max-age={SESSION_LIFETIME}" in flags
    assert TOKEN not in cookie and quote(TOKEN) not in cookie
    assert (await client.get("/dashboard")).status_code == 200


async def test_the_cookie_is_not_marked_secure_over_plain_http(world: World) -> None:
    async with client_for(world, base_url="http://127.0.0.1:8000") as client:
        answer = await client.post("/dashboard/sign-in", data={"token": TOKEN})
        flags = set_cookies(answer)["heron_session"].lower()
        assert "secure" not in flags and "httponly" in flags


async def test_a_new_token_ends_every_session(world: World) -> None:
    app = create_app(world.rt, ApiSettings(token=TOKEN))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        await sign_in(client)
        app.state.settings = ApiSettings(token="rotated-token")  # a deploy with a new token
        assert (await client.get("/dashboard")).status_code == 303


def test_a_session_cookie_is_checked_for_its_key_its_shape_and_its_age() -> None:
    key = SessionKey.for_token(TOKEN)
    cookie, session = key.new(now=1000.0, lifetime=60)
    assert key.verify(cookie, 1059.0) == session
    assert key.verify(cookie, 1060.0) is None  # expired
    assert SessionKey.for_token("other").verify(cookie, 1000.0) is None
    version, expires, nonce, mac = cookie.split(".")
    assert key.verify(f"{version}.{int(expires) + 3600}.{nonce}.{mac}", 1000.0) is None
    assert key.verify(f"{version}.{expires}.{nonce}.{mac[:-2]}AA", 1000.0) is None
    for junk in ("", "v1", "v1.x.y.z", "a.b.c.d.e", "é" * 10, None):
        assert key.verify(junk, 1000.0) is None
    assert key.check_csrf(session, session.csrf)
    assert not key.check_csrf(session, key.new(now=1000.0)[1].csrf)
    assert not key.check_csrf(session, None) and not key.check_csrf(session, "")


async def test_signing_out_clears_the_cookie(client: httpx.AsyncClient) -> None:
    csrf = await sign_in(client)
    answer = await client.post("/dashboard/sign-out", data={"csrf": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/sign-in"
    cleared = set_cookies(answer)["heron_session"].lower()
    assert "max-age=0" in cleared and "path=/dashboard" in cleared
    assert (await client.get("/dashboard")).status_code == 303


async def test_the_session_cookie_never_opens_the_json_api(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    session = client.cookies["heron_session"]
    answer = await client.get("/runs", headers={"Cookie": f"heron_session={session}"})
    assert answer.status_code == 401
    assert answer.json()["error"] == "Unauthorized"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/dashboard",
        "/runs",
        "/dashboardx",
        "/dashboard\\x",
        "/dashboard/../runs",
        "/dashboard/\r\nSet-Cookie: x=1",
        "/dashboard/\x00",
    ],
)
async def test_after_sign_in_the_browser_stays_on_the_dashboard(
    client: httpx.AsyncClient, target: str
) -> None:
    answer = await client.post("/dashboard/sign-in", data={"token": TOKEN, "next": target})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard"


async def test_the_bearer_token_opens_the_pages_too(client: httpx.AsyncClient) -> None:
    answer = await client.get("/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert "heron_session" in set_cookies(answer)  # for the forms' CSRF token
    client.cookies.clear()
    wrong = await client.get("/dashboard", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 303


async def test_open_mode_needs_no_sign_in(world: World) -> None:
    async with client_for(world, ApiSettings(open=True)) as client:
        answer = await client.get("/dashboard")
        assert answer.status_code == 200
        assert "open · local development" in answer.text and "Sign out" not in answer.text
        # the session cookie still carries the CSRF token the forms need
        assert "heron_session" in set_cookies(answer)
        assert (await client.get("/dashboard/sign-in")).status_code == 303


async def test_iam_mode_without_a_token_says_how_to_reach_the_dashboard(world: World) -> None:
    async with client_for(world, ApiSettings(iam=True)) as client:
        for path in ("/dashboard", "/dashboard/runs/x", "/dashboard/sign-in"):
            answer = await client.get(path)
            assert answer.status_code == 403
            assert "heron dev" in answer.text and "HERON_API_TOKEN" in answer.text


async def test_iam_mode_with_a_token_signs_in_with_it(world: World) -> None:
    async with client_for(world, ApiSettings(iam=True, token=TOKEN)) as client:
        assert (await client.get("/dashboard")).status_code == 303
        await sign_in(client)


async def test_a_closed_api_keeps_the_dashboard_closed(world: World) -> None:
    async with client_for(world, ApiSettings()) as client:
        answer = await client.get("/dashboard")
        assert answer.status_code == 403 and "The API is closed" in answer.text


# -- CSRF ----------------------------------------------------------------------------------------


async def test_an_action_without_the_right_csrf_token_changes_nothing(
    world: World, client: httpx.AsyncClient
) -> None:
    run_id = await world.start("greet", "ada", run_id="g-1")
    await world.drive(run_id)
    good = await sign_in(client)
    for csrf in (None, "", "x" * 43, good[:-1] + ("A" if good[-1] != "A" else "B")):
        form = {"reason": "no", "confirmed": "yes"} | ({"csrf": csrf} if csrf is not None else {})
        answer = await client.post("/dashboard/runs/g-1/cancel", data=form)
        assert answer.status_code == 403
        assert "could not be verified" in answer.text
    assert (await world.rt.get(run_id)).status == "waiting"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_an_action_from_another_site_is_refused(
    world: World, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    run_id = await world.start("greet", "ada", run_id="g-1")
    await world.drive(run_id)
    csrf = await sign_in(client)
    form = {"csrf": csrf, "reason": "x", "confirmed": "yes"}
    answer = await client.post("/dashboard/runs/g-1/cancel", data=form, headers=headers)
    assert answer.status_code == 403
    assert (await world.rt.get(run_id)).status == "waiting"

    # the same form from this origin goes through
    same = {"Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"}
    answer = await client.post("/dashboard/runs/g-1/cancel", data=form, headers=same)
    assert answer.status_code == 303
    assert (await world.rt.get(run_id)).status == "cancelled"


async def test_an_action_without_a_session_asks_to_sign_in_again(
    world: World, client: httpx.AsyncClient
) -> None:
    await world.start("greet", "ada", run_id="g-1")
    csrf = await sign_in(client)
    client.cookies.clear()
    answer = await client.post(
        "/dashboard/runs/g-1/cancel", data={"csrf": csrf, "confirmed": "yes"}
    )
    assert answer.status_code == 401 and "Sign in" in answer.text
    assert (await world.rt.get("g-1")).status != "cancelled"


async def test_an_action_that_is_not_a_form_is_refused(
    world: World, client: httpx.AsyncClient
) -> None:
    await world.start("greet", "ada", run_id="g-1")
    await sign_in(client)
    answer = await client.post("/dashboard/runs/g-1/cancel", json={"confirmed": "yes"})
    assert answer.status_code == 415


# -- the runs list -------------------------------------------------------------------------------


async def seed(world: World) -> dict[str, str]:
    """Runs of every kind, one second apart: id -> status."""
    made = [
        ("g-1", "greet", "ada", ["web"]),
        ("n-1", "nap", 3600, ["batch"]),
        ("f-1", "flaky", None, ["web", "vip"]),
        ("g-2", "greet", "bob", []),
        ("e-1", "echo", {"x": 1}, ["batch"]),
    ]
    for run_id, workflow, value, tags in made:
        await world.start(workflow, value, run_id=run_id, tags=tags)
        await world.drive(run_id, rounds=2)
        world.clock.advance(1)
    return {run_id: (await world.rt.get(run_id)).status for run_id, *_ in made}


def listed(page: str) -> list[str]:
    """The run ids in a runs page's table, in order."""
    row = r'<tr>\s*<td class="id"><a href="[^"]+"><code>(.*?)</code>'
    return [html.unescape(re.sub(r"<[^>]+>", "", m)) for m in re.findall(row, page)]


async def test_the_list_shows_every_run_newest_first_with_counts(
    world: World, client: httpx.AsyncClient
) -> None:
    statuses = await seed(world)
    assert statuses == {
        "g-1": "waiting",
        "n-1": "sleeping",
        "f-1": "failed",
        "g-2": "waiting",
        "e-1": "completed",
    }
    await sign_in(client)
    page = (await client.get("/dashboard")).text
    assert listed(page) == ["e-1", "g-2", "f-1", "n-1", "g-1"]
    counts = dict(re.findall(r">(all|[a-z]+) <b>(\d+\+?)</b>", page))
    assert counts == {
        "all": "5",
        "pending": "0",
        "running": "0",
        "sleeping": "1",
        "waiting": "2",
        "completed": "1",
        "failed": "1",
        "cancelled": "0",
    }
    assert "FatalError" in page  # the failed run's error type, at a glance


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"workflow": "greet"}, ["g-2", "g-1"]),
        ({"status": "waiting"}, ["g-2", "g-1"]),
        ({"status": "failed"}, ["f-1"]),
        ({"tag": "batch"}, ["e-1", "n-1"]),
        ({"tag": "vip", "workflow": "flaky"}, ["f-1"]),
        # created at 1_700_000_000 (2023-11-14T22:13:20Z) + 0, 1.5, 3, 4.5, 6
        ({"after": "2023-11-14T22:13:22"}, ["e-1", "g-2", "f-1"]),
        ({"before": "2023-11-14T22:13:22"}, ["n-1", "g-1"]),
        ({"after": "2023-11-14T23:13:21+01:00", "before": "1700000004"}, ["f-1", "n-1"]),
        ({"workflow": "nope"}, []),
    ],
)
async def test_each_filter(
    world: World, client: httpx.AsyncClient, query: dict[str, str], expected: list[str]
) -> None:
    await seed(world)
    await sign_in(client)
    page = await client.get("/dashboard", params=query)
    assert page.status_code == 200, text_of(page.text)
    assert listed(page.text) == expected
    # the form shows the filters it applied, and the count links keep them
    for name, value in query.items():
        if name == "workflow":
            assert f'name="workflow" value="{value}"' in page.text
        if name == "status":
            assert f'<option value="{value}" selected>' in page.text


async def test_the_counts_follow_the_other_filters(world: World, client: httpx.AsyncClient) -> None:
    await seed(world)
    await sign_in(client)
    page = (await client.get("/dashboard", params={"workflow": "greet", "status": "failed"})).text
    counts = dict(re.findall(r">(all|[a-z]+) <b>(\d+\+?)</b>", page))
    assert counts["all"] == "2" and counts["waiting"] == "2" and counts["failed"] == "0"
    assert 'href="/dashboard?workflow=greet&amp;status=waiting"' in page


async def test_the_children_of_a_run_are_listed_by_parent(
    world: World, client: httpx.AsyncClient
) -> None:
    run_id = await world.start("order", "o-1", run_id="o-1")
    await world.drive(run_id)
    await world.rt.signal(run_id, "approved", {"by": "ops"})
    assert await world.drive(run_id) == "completed"
    (child,) = (await world.rt.get(run_id)).children
    await sign_in(client)
    page = (await client.get("/dashboard", params={"parent": "o-1"})).text
    assert listed(page) == [child]
    assert "Children of" in page


async def test_bad_filters_are_explained_not_applied(
    world: World, client: httpx.AsyncClient
) -> None:
    await seed(world)
    await sign_in(client)
    query = {"status": "bogus", "after": "yesterday", "limit": "0", "cursor": "junk"}
    page = await client.get("/dashboard", params=query)
    assert page.status_code == 400
    text = text_of(page.text)
    assert "status: one of pending" in text
    assert "created after: not a date and time: 'yesterday'" in text
    assert "limit: a number from 1 to 200" in text
    assert "page link is not one the dashboard made" in text
    assert len(listed(page.text)) == 5


async def test_paging_follows_the_stores_cursor(world: World, client: httpx.AsyncClient) -> None:
    await seed(world)
    await sign_in(client)
    seen: list[str] = []
    url: str | None = "/dashboard?limit=2&tag="
    pages = 0
    while url:
        page = (await client.get(html.unescape(url))).text
        seen += listed(page)
        pages += 1
        found = re.search(r'<a rel="next" href="([^"]+)"', page)
        url = found.group(1) if found else None
        if url:
            assert "limit=2" in url and "cursor=" in url
    assert pages == 3
    assert seen == ["e-1", "g-2", "f-1", "n-1", "g-1"]


async def test_counts_stop_at_a_hundred(world: World, client: httpx.AsyncClient) -> None:
    for n in range(101):
        await world.start("nap", 60, run_id=f"n-{n}")
    await sign_in(client)
    page = (await client.get("/dashboard", params={"limit": "5"})).text
    counts = dict(re.findall(r">(all|[a-z]+) <b>(\d+\+?)</b>", page))
    assert counts["all"] == "100+" and counts["pending"] == "100+" and counts["failed"] == "0"


async def test_searching_an_exact_id_goes_to_that_run(
    world: World, client: httpx.AsyncClient
) -> None:
    await seed(world)
    await sign_in(client)
    found = await client.get("/dashboard", params={"id": " g-2 "})
    assert found.status_code == 303 and found.headers["location"] == "/dashboard/runs/g-2"

    missing = await client.get("/dashboard", params={"id": "g-9"})
    assert missing.status_code == 200
    assert "No run has the id g-9" in text_of(missing.text)
    assert len(listed(missing.text)) == 5

    bad = await client.get("/dashboard", params={"id": "a/b"})
    assert "not a run id" in text_of(bad.text)


# -- a run ---------------------------------------------------------------------------------------


async def test_a_run_shows_its_timeline_waits_children_and_values(
    world: World, client: httpx.AsyncClient
) -> None:
    # given an order whose charge was retried, that slept, and now waits for approval
    run_id = await world.start("order", "o-1", run_id="o-1", tags=["web"])
    assert await world.drive(run_id) == "waiting"
    await sign_in(client)

    page = (await client.get("/dashboard/runs/o-1")).text
    text = text_of(page)
    assert "Waiting for" in text and "signal approved" in text
    assert "×2" in text  # the charge took two attempts
    assert re.search(r'<li class="k-step" title="step charge · seq 0 ·', page)
    assert '<li class="k-signal open"' in page  # what it waits for now, an open bar
    assert "The store records when each operation ended" in text  # the approximation, told
    assert 'name="name" required maxlength="200" value="approved"' in page  # suggested
    assert "data-live" in page  # a live run refreshes

    # when it is approved and its child runs
    await world.rt.signal(run_id, "approved", {"by": "ops"})
    assert await world.drive(run_id) == "completed"
    (child,) = (await world.rt.get(run_id)).children
    page = (await client.get("/dashboard/runs/o-1")).text

    # then the child is linked from the header and from its checkpoint
    assert page.count(f'href="/dashboard/runs/{quote(child, safe="")}"') >= 2
    assert "data-live" not in page  # an ended run does not
    child_page = (await client.get(f"/dashboard/runs/{quote(child, safe='')}")).text
    assert 'href="/dashboard/runs/o-1"' in child_page  # and the child links its parent


def test_timeline_bars_start_at_the_previous_checkpoint() -> None:
    async def scenario() -> None:
        world = build_world()
        run_id = await world.start("order", "o-1", run_id="o-1")
        await world.drive(run_id)
        info = await world.rt.get(run_id)
        drawn = timeline(info, world.clock.now())
        kinds = [(bar.kind, bar.open) for bar in drawn.bars]
        assert kinds == [("step", False), ("sleep", False), ("signal", True)]
        charge, sleep, wait = drawn.bars
        assert charge.start == info.created_at and charge.attempts == 2
        assert sleep.start == charge.end and sleep.until == info.steps[1].value
        assert wait.start == sleep.end and wait.until == info.waiting_for[0].until
        assert wait.beyond  # ten minutes away: past the end of the axis
        assert all(0 <= bar.x <= 1000 and bar.x + bar.width <= 1000 for bar in drawn.bars)

    asyncio.run(scenario())


async def test_a_failed_step_is_marked_with_its_error(
    world: World, client: httpx.AsyncClient
) -> None:
    run_id = await world.start("flaky", None, run_id="f-1")
    assert await world.drive(run_id) == "failed"
    await sign_in(client)
    page = (await client.get("/dashboard/runs/f-1")).text
    assert '<tr class="failed">' in page and 'class="k-step failed"' in page
    assert "not ready &lt;b&gt;yet&lt;/b&gt;" in page and "<b>yet</b>" not in page
    assert 'action="/dashboard/runs/f-1/retry"' in page
    assert 'action="/dashboard/runs/f-1/cancel"' not in page  # an ended run takes no cancel


async def test_large_values_are_collapsed_and_huge_ones_cut(
    world: World, client: httpx.AsyncClient
) -> None:
    big = {"rows": ["x" * 50] * 40}  # ~2.5 KB: over COLLAPSE_OVER
    await world.start("echo", big, run_id="big")
    await world.drive("big")
    await sign_in(client)
    page = (await client.get("/dashboard/runs/big")).text
    assert len(json.dumps(big, indent=2)) > COLLAPSE_OVER
    assert '<details class="json">' in page  # collapsed: no "open"

    huge = "y" * (SHOW_AT_MOST + 10)
    await world.rt.store.create(Run(id="huge", workflow="echo", input=huge, created_at=1.0))
    page = (await client.get("/dashboard/runs/huge")).text
    assert "Cut at" in page and huge not in page


async def test_an_unknown_or_impossible_run_is_a_404_page(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    for path in ("/dashboard/runs/nope", "/dashboard/runs/bell%07", "/dashboard/runs/%20x"):
        answer = await client.get(path)
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")
        assert "No such run" in answer.text


# -- actions -------------------------------------------------------------------------------------


async def act(
    client: httpx.AsyncClient, csrf: str, run_id: str, action: str, **fields: str
) -> httpx.Response:
    form = {"csrf": csrf, "confirmed": "yes", **fields}
    return await client.post(f"/dashboard/runs/{quote(run_id, safe='')}/{action}", data=form)


async def test_an_action_asks_first_without_a_script(
    world: World, client: httpx.AsyncClient
) -> None:
    await world.start("greet", "ada", run_id="g-1")
    await world.drive("g-1")
    csrf = await sign_in(client)
    form = {"csrf": csrf, "reason": 'done "now"'}
    answer = await client.post("/dashboard/runs/g-1/cancel", data=form)
    assert answer.status_code == 200
    assert "Are you sure?" in answer.text
    assert '<input type="hidden" name="confirmed" value="yes">' in answer.text
    assert '<input type="hidden" name="reason" value="done &#34;now&#34;">' in answer.text
    assert (await world.rt.get("g-1")).status == "waiting"  # nothing happened yet


async def test_cancel_then_redirect_back_with_a_message(
    world: World, client: httpx.AsyncClient
) -> None:
    await world.start("greet", "ada", run_id="g-1")
    await world.drive("g-1")
    csrf = await sign_in(client)

    answer = await act(client, csrf, "g-1", "cancel", reason="customer changed their mind")

    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/runs/g-1"
    info = await world.rt.get("g-1")
    assert info.status == "cancelled"
    assert info.error == {"type": "Cancelled", "message": "customer changed their mind"}
    page = await client.get("/dashboard/runs/g-1")
    assert "Run cancelled." in page.text
    assert "max-age=0" in set_cookies(page)["heron_flash"].lower()  # shown once
    assert "Run cancelled." not in (await client.get("/dashboard/runs/g-1")).text


async def test_cancel_refusals_are_shown_with_the_form(
    world: World, client: httpx.AsyncClient
) -> None:
    await world.start("echo", 1, run_id="e-1")
    await world.drive("e-1")
    await world.start("greet", "ada", run_id="g-1")
    csrf = await sign_in(client)

    answer = await act(client, csrf, "e-1", "cancel", reason="late")
    assert answer.status_code == 409
    assert "run 'e-1' is completed; it cannot be cancelled" in text_of(answer.text)

    answer = await act(client, csrf, "g-1", "cancel", reason="bad\x1bone")
    assert answer.status_code == 422 and "printable" in answer.text
    assert (await world.rt.get("g-1")).status != "cancelled"

    answer = await act(client, csrf, "g-9", "cancel", reason="x")
    assert answer.status_code == 404


async def test_retry_and_rerun_from_a_seq(world: World, client: httpx.AsyncClient) -> None:
    await world.start("flaky", None, run_id="f-1")
    assert await world.drive("f-1") == "failed"
    csrf = await sign_in(client)

    # a retry of a run that did not fail is refused as the API refuses it
    await world.start("greet", "ada", run_id="g-1")
    answer = await act(client, csrf, "g-1", "retry", from_seq="")
    assert answer.status_code == 409 and "only failed or cancelled runs" in answer.text
    answer = await act(client, csrf, "f-1", "retry", from_seq="-1")
    assert answer.status_code == 422

    # when the cause is fixed, a retry runs the failed step again
    world.flags["ok"] = True
    answer = await act(client, csrf, "f-1", "retry", from_seq="")
    assert answer.status_code == 303
    assert await world.drive("f-1") == "completed"
    assert (await world.rt.get("f-1")).output == "hello x ready"

    # a rerun from seq 0 runs everything again
    world.flags["ok"] = False
    await world.start("flaky", 2, run_id="f-2")
    assert await world.drive("f-2") == "failed"
    world.flags["ok"] = True
    answer = await act(client, csrf, "f-2", "retry", from_seq="0")
    assert answer.status_code == 303
    assert "Run retried from seq 0." in (await client.get(answer.headers["location"])).text
    info = await world.rt.get("f-2")
    assert info.status == "pending" and info.steps == []
    assert await world.drive("f-2") == "completed"


async def test_send_a_signal_with_a_json_payload(world: World, client: httpx.AsyncClient) -> None:
    await world.start("greet", "ada", run_id="g-1")
    await world.drive("g-1")
    csrf = await sign_in(client)

    answer = await act(
        client,
        csrf,
        "g-1",
        "signal",
        name="reply",
        payload='{"by": "ops", "n": [1, 2]}',
        signal_id="reply-1",
    )

    assert answer.status_code == 303
    page = (await client.get("/dashboard/runs/g-1")).text
    assert "Signal &#39;reply&#39; sent (id reply-1)." in page
    assert "Buffered signals" in page and "reply-1" in page
    assert await world.drive("g-1") == "completed"
    assert (await world.rt.get("g-1")).output == {
        "text": "hello ada",
        "reply": {"by": "ops", "n": [1, 2]},
    }


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"name": "heron:child:x", "payload": "1"}, 422, "reserved"),
        ({"name": "", "payload": "1"}, 422, "signal name"),
        ({"name": "reply", "payload": "{not json"}, 400, "not valid JSON"),
        ({"name": "reply", "payload": "NaN"}, 422, "NaN is not JSON"),
        ({"name": "reply", "payload": "[1e999]"}, 422, "would be Infinity"),
        ({"name": "reply", "payload": nested(MAX_DEPTH + 1)}, 422, "nested more than 64"),
        ({"name": "reply", "payload": nested(5000)}, 422, "nested more than 64"),
        ({"name": "reply", "payload": json.dumps("x" * 5000)}, 413, "over"),
        ({"name": "reply", "payload": '"\\ud800"'}, 422, "surrogate"),
        ({"name": "reply", "payload": "1", "signal_id": "a/b"}, 422, "signal id"),
    ],
)
async def test_signal_refusals_keep_what_was_typed(
    world: World, client: httpx.AsyncClient, fields: dict[str, str], status: int, words: str
) -> None:
    await world.start("greet", "ada", run_id="g-1")
    await world.drive("g-1")
    csrf = await sign_in(client)
    answer = await act(client, csrf, "g-1", "signal", **fields)
    assert answer.status_code == status, text_of(answer.text)
    assert words in text_of(answer.text)
    assert "Signal refused" in text_of(answer.text)
    if len(fields["payload"]) < 200:
        assert str(escape(fields["payload"])) in answer.text  # the textarea, as typed
    assert (await world.rt.get("g-1")).signals == []


async def test_a_signal_to_an_ended_run_or_past_the_cap_is_refused(
    world: World, client: httpx.AsyncClient
) -> None:
    await world.start("echo", 1, run_id="e-1")
    await world.drive("e-1")
    await world.start("greet", "ada", run_id="g-1")
    csrf = await sign_in(client)

    answer = await act(client, csrf, "e-1", "signal", name="reply", payload="1")
    assert answer.status_code == 409
    assert "run 'e-1' is completed; it takes no more signals" in text_of(answer.text)

    for n in range(5):  # the runtime's max_pending_signals
        assert (
            await act(client, csrf, "g-1", "signal", name=f"s{n}", payload="")
        ).status_code == 303
    answer = await act(client, csrf, "g-1", "signal", name="one-more", payload="")
    assert answer.status_code == 409 and "already holds 5 signals" in text_of(answer.text)


# -- escaping and links --------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>\u202e\x1b[31m\u200b'


async def test_hostile_ids_and_values_are_escaped(world: World, client: httpx.AsyncClient) -> None:
    # given runs whose id, tags, input and output carry markup, quotes and control characters
    run_id = 'x"<img src=x onerror=alert(1)>'
    await world.start("echo", {"html": HOSTILE, "k": "</pre><b>"}, run_id=run_id, tags=["<i>t"])
    await world.drive(run_id)
    # and a record written to the store directly, with control characters in its id and tags
    raw_id = "raw\x1b]0;owned\x07\u202eid"
    await world.rt.store.create(
        Run(id=raw_id, workflow="echo", input=HOSTILE, tags=["t\x1b"], created_at=2e9)
    )
    await sign_in(client)

    for path in ("/dashboard", f"/dashboard/runs/{quote(run_id, safe='')}"):
        page = (await client.get(path)).text
        assert "<script>alert" not in page and "<img src=x" not in page and "<i>t" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
        assert "\u202e" not in page and "\x1b" not in page and "\u200b" not in page
    page = (await client.get(f"/dashboard/runs/{quote(run_id, safe='')}")).text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page or (
        "&lt;script&gt;alert(\\&#34;x\\&#34;)&lt;/script&gt;" in page
    )
    assert '<span class="esc">\\u202e</span>' in page
    assert '<span class="esc">\\u200b</span>' in page

    listing = (await client.get("/dashboard")).text
    assert '<span class="esc">\\x1b</span>]0;owned<span class="esc">\\x07</span>' in listing
    assert f'href="/dashboard/runs/{quote(raw_id, safe="")}"' in listing


def test_run_links_are_the_apis_own_encoding() -> None:
    from heron.functions.asgi import run_path
    from heron.functions.dashboard._render import Urls

    for run_id in ("user%40example.com", "注文-42", "a b", 'x"<'):
        assert Urls("/prod").run(run_id) == run_path("/prod/dashboard", run_id)


@pytest.mark.parametrize(
    "run_id", ["user%40example.com", "注文-42", "a b", "@:+,;=$&!'()*", "x%2Fy"]
)
async def test_links_percent_encode_ids_and_lead_to_the_run(
    world: World, client: httpx.AsyncClient, run_id: str
) -> None:
    await world.start("greet", "ada", run_id=run_id)
    await world.drive(run_id)
    csrf = await sign_in(client)
    encoded = quote(run_id, safe="")

    listing = (await client.get("/dashboard")).text
    link = f'href="/dashboard/runs/{encoded}"'
    assert link in listing
    page = await client.get(f"/dashboard/runs/{encoded}")
    assert page.status_code == 200
    assert html.unescape(re.search(r"<h1><code>(.*?)</code></h1>", page.text).group(1)) == run_id  # type: ignore[union-attr]
    for action in ("cancel", "signal"):
        assert f'action="/dashboard/runs/{encoded}/{action}"' in page.text

    answer = await act(client, csrf, run_id, "cancel", reason="x")
    assert answer.status_code == 303 and answer.headers["location"] == f"/dashboard/runs/{encoded}"
    assert (await world.rt.get(run_id)).status == "cancelled"


async def test_everything_lives_under_the_root_path(world: World) -> None:
    # given the app behind a prefix (an API Gateway stage, a proxy's sub-path)
    await world.start("greet", "user@example.com", run_id="user@example.com")
    async with client_for(world, root_path="/prod") as client:
        answer = await client.get("/prod/dashboard")
        assert answer.headers["location"] == "/prod/dashboard/sign-in?next=%2Fprod%2Fdashboard"
        login = await client.post(
            "/prod/dashboard/sign-in", data={"token": TOKEN, "next": "/prod/dashboard"}
        )
        assert login.headers["location"] == "/prod/dashboard"
        assert "path=/prod/dashboard" in set_cookies(login)["heron_session"].lower()

        page = (await client.get("/prod/dashboard")).text
        assert 'href="/prod/dashboard/runs/user%40example.com"' in page
        assert re.search(r'href="/prod/dashboard/static/dashboard\.css\?v=\w+"', page)
        assert 'href="/prod/docs"' in page and 'action="/prod/dashboard/sign-out"' in page
        run = (await client.get("/prod/dashboard/runs/user%40example.com")).text
        assert 'action="/prod/dashboard/runs/user%40example.com/cancel"' in run
        assert 'href="/prod/dashboard?workflow=greet"' in run
        css = await client.get("/prod/dashboard/static/dashboard.css")
        assert css.status_code == 200


# -- static files, headers, /docs ----------------------------------------------------------------


async def test_pages_load_nothing_from_elsewhere_and_forbid_inline_scripts(
    world: World, client: httpx.AsyncClient
) -> None:
    await seed(world)
    await sign_in(client)
    for path in ("/dashboard", "/dashboard/runs/g-1", "/dashboard/runs/f-1", "/docs"):
        answer = await client.get(path)
        assert answer.status_code == 200
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["cache-control"] == "no-store"
        assert not re.search(r'(src|href|action)="(https?:)?//', answer.text), path
        assert "<script>" not in answer.text and " style=" not in answer.text
        assert not re.search(r"<[^>]+\son[a-z]+=", answer.text)  # no inline handlers


async def test_static_files_come_from_the_package(client: httpx.AsyncClient) -> None:
    css = await client.get("/dashboard/static/dashboard.css")
    js = await client.get("/dashboard/static/dashboard.js")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "http" not in js.text.replace("X-Heron", "")  # fetches only this page's own URL
    version = css.headers["etag"].strip('"')
    cached = await client.get(f"/dashboard/static/dashboard.css?v={version}")
    assert "immutable" in cached.headers["cache-control"]
    for name in ("nope.css", "..%2F_routes.py", "_routes.py", ".hidden.js"):
        assert (await client.get(f"/dashboard/static/{name}")).status_code == 404


async def test_docs_is_a_self_contained_page_of_every_route(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    page = await client.get("/docs")  # open to all, as /openapi.json is
    assert page.status_code == 200
    text = text_of(page.text)
    for path, item in document["paths"].items():
        for method in item:
            assert f"{method.upper()} {path}" in text, (method, path)
    for schema in document["components"]["schemas"]:
        assert f'id="schema-{schema}"' in page.text
    assert "cdn" not in page.text.lower() and "swagger" not in page.text.lower()
    assert "run_id" in text and "from_seq" in text and "Authorization: Bearer" in text
    assert (await client.get("/redoc")).status_code == 404


# -- through the Lambda handler --------------------------------------------------------------------


def test_through_the_lambda_handler_the_cookie_is_secure(container: Any) -> None:
    import base64

    from heron.functions import api
    from tests.functions.kit import TOKEN as LAMBDA_TOKEN
    from tests.functions.kit import LambdaContext, api_event

    # given the API function behind API Gateway (HTTPS)
    event = api_event(
        "POST",
        "/dashboard/sign-in",
        token=None,
        raw_body=f"token={LAMBDA_TOKEN}&next=%2Fdashboard".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    # when a browser signs in
    response = api.handler(event, LambdaContext())

    # then the session cookie is marked Secure, and it opens the pages
    assert response["statusCode"] == 303
    (cookie,) = response["cookies"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    page_event = api_event("GET", "/dashboard", token=None)
    page_event["cookies"] = [cookie.split(";")[0]]
    page = api.handler(page_event, LambdaContext())
    body = page["body"]
    if page.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    assert page["statusCode"] == 200 and "Runs" in body


# -- cold starts ---------------------------------------------------------------------------------


def modules_after(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HERON_API_TOKEN": "t"}
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "handler", ["heron.functions.resume", "heron.functions.sweep", "heron.functions.reaper"]
)
def test_the_worker_functions_never_import_the_dashboard(handler: str) -> None:
    modules = modules_after(f"import {handler}")
    assert not {m for m in modules if m.startswith(("jinja2", "markupsafe"))}
    assert not {m for m in modules if "dashboard" in m}


def test_the_api_imports_jinja2_only_for_a_page() -> None:
    modules = modules_after("import heron.functions.api")
    assert "heron.functions.dashboard" in modules
    assert not {m for m in modules if m.startswith(("jinja2", "markupsafe"))}


async def test_without_jinja2_the_api_still_answers_and_the_dashboard_says_why(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heron.functions.dashboard import _render

    _render._environment.cache_clear()
    monkeypatch.setitem(sys.modules, "jinja2", None)  # import jinja2 -> ImportError
    try:
        async with client_for(world, ApiSettings(open=True)) as client:
            assert (await client.get("/runs")).status_code == 200
            page = await client.get("/dashboard")
            assert page.status_code == 500
            assert "pip install 'heron[api]'" in page.text
    finally:
        monkeypatch.undo()
        _render._environment.cache_clear()


@pytest.mark.parametrize(
    ("delta", "shown"),
    [
        (0.4, "just now"),
        (42, "in 42 s"),
        (-42, "42 s ago"),
        (220, "in 4 min"),
        (5 * 3600 + 40 * 60, "in 6 h"),
        (7 * 86400 - 30, "in 7 d"),  # a seven-day sleep that began half a minute ago
        (-(2 * 86400 + 3 * 3600), "2 d ago"),
    ],
)
def test_relative_times_round_to_their_largest_unit(delta: float, shown: str) -> None:
    from heron.functions.dashboard._format import relative

    assert relative(1_000_000.0 + delta, 1_000_000.0) == shown


def test_an_iso_time_beyond_what_datetime_can_show_is_left_blank() -> None:
    from heron.functions.dashboard._format import absolute, iso

    # a wait_for_signal(timeout=1e18) is a valid run; its wake is beyond the year 9999
    assert iso(1e18) == "" and absolute(1e18) == "-"
    assert iso(0.0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("next_url", "lands"),
    [
        ("/dashboard/runs/a", "/dashboard/runs/a"),
        ("/dashboard/%2e%2e/openapi.json", "/dashboard"),
        ("/dashboard/%252e%252e/openapi.json", "/dashboard"),  # encoded twice
        ("/dashboard/%5c%5cevil.example", "/dashboard"),
    ],
)
def test_sign_in_sends_on_only_to_a_dashboard_page(next_url: str, lands: str) -> None:
    from heron.functions.dashboard._render import Urls
    from heron.functions.dashboard._routes import _safe_next

    assert _safe_next(next_url, Urls("")) == lands


def test_a_long_message_still_fits_its_cookie() -> None:
    key = SessionKey.random()

    cookie = key.flash("ok", "Signal sent: " + "\U0001f600" * 400)

    shown = key.read_flash(cookie)
    assert shown is not None and shown.text.endswith("…") and len(cookie) < 4000
