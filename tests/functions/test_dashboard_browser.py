"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by
playwright, against ``heron dev`` with a token and a SQLite store, as an operator would use it.

An operator signs in, filters and searches the runs, opens a timeline, cancels a run, sends a
signal and retries a failed run through the pages; the store (``rt.get``) then says each took.
A second test does the same without JavaScript (the confirmation pages), and a third watches the
list refresh itself, and stop when paused.

Screenshots are kept as artifacts under the test's ``tmp_path``, and written to the folder
``HERON_SCREENSHOTS`` names when it is set; the README's ``docs/img/dashboard-runs.png`` and
``docs/img/dashboard-run.png`` come from here::

    HERON_SCREENSHOTS=/tmp/shots pytest tests/functions/test_dashboard_browser.py
    cp /tmp/shots/dashboard-runs.png /tmp/shots/dashboard-run.png docs/img/

No browser is downloaded: without Chromium or the playwright package the tests are skipped
loudly, and fail when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from heron.runtime import NoopDispatcher, RunInfo, Runtime
from heron.stores import open_store
from tests.functions.kit import ROOT
from tests.functions.test_dev import free_port
from tests.needs import unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

HERON = Path(sys.executable).with_name("heron")
CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-token-51f0"
#: A page element or a run's state: how long to wait for it, at most.
WAIT = 20.0

#: The demo's ``order`` and ``invoice`` workflows (a retried charge, a sleep, a wait for
#: approval, parallel packing, a child invoice) plus a step that fails until a file exists and
#: a long sleep.
APP = textwrap.dedent(
    """
    from pathlib import Path

    from heron.functions.demo import rt
    from heron.runtime import Context, FatalError


    @rt.step(name="check_stock")
    def check_stock(marker: str) -> str:
        if not Path(marker).exists():
            raise FatalError("the stock service refused the request (HTTP 503)")
        return "in stock"


    @rt.workflow("restock", version="3")
    async def restock(ctx: Context, request: dict) -> dict:
        await ctx.step(check_stock, request["marker"])
        return {"restocked": request["sku"]}


    @rt.workflow("nightly-report", version="2")
    async def nightly_report(ctx: Context, day: str) -> str:
        await ctx.sleep(6 * 3600)
        return f"report for {day}"
    """
)


def chromium() -> str:
    """The Chromium to drive, or skip (fail in CI) saying what is missing."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    path = os.environ.get("HERON_CHROMIUM") or CHROMIUM
    if not os.access(path, os.X_OK):
        missing.append(f"Chromium at {path} (apt-get install chromium)")
    if not missing:
        return path
    message = "the dashboard's browser tests need " + " and ".join(missing)
    unavailable(message, "browser tests")


@dataclass
class Dev:
    """``heron dev`` serving the test app with a token; a runtime on the same store, on an event
    loop of its own thread (playwright's sync API holds the test thread's loop)."""

    base: str
    rt: Runtime
    folder: Path
    log: Path
    loop: asyncio.AbstractEventLoop

    def start(self, workflow: str, value: Any, run_id: str, tags: list[str] | None = None) -> None:
        answer = httpx.post(
            f"{self.base}/workflows/{workflow}/runs",
            json={"input": value, "run_id": run_id, "tags": tags or []},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert answer.status_code == 201, answer.text

    def get(self, run_id: str) -> RunInfo:
        return asyncio.run_coroutine_threadsafe(self.rt.get(run_id), self.loop).result(WAIT)

    def until(self, run_id: str, *statuses: str) -> RunInfo:
        """Poll the store until the run has one of ``statuses``."""
        deadline = time.monotonic() + WAIT
        while True:
            info = self.get(run_id)
            if info.status in statuses:
                return info
            if time.monotonic() > deadline:
                pytest.fail(f"{run_id} is {info.status}, not {statuses}: {self.log.read_text()}")
            time.sleep(0.1)


@contextlib.contextmanager
def heron_dev(folder: Path) -> Iterator[Dev]:
    (folder / "shop_app.py").write_text(APP)
    db = folder / "dev.db"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HERON_")},
        "HERON_APP": "shop_app:rt",
        "HERON_STORE": f"sqlite:///{db}",
        "HERON_API_TOKEN": TOKEN,
        "PYTHONPATH": str(ROOT),
    }
    log = folder / "heron-dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(HERON), "dev", "--port", str(port), "--interval", "0.1"],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    rt = Runtime(open_store(f"sqlite:///{db}"), dispatcher=NoopDispatcher())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "heron dev did not come up"
            time.sleep(0.05)
        yield Dev(base, rt, folder, log, loop)
    finally:
        asyncio.run_coroutine_threadsafe(rt.close(), loop).result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    with heron_dev(tmp_path) as server:
        yield server


@pytest.fixture
def browser() -> Iterator[Browser]:
    path = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Shots:
    """Screenshots: under ``tmp_path``, and in ``HERON_SCREENSHOTS`` when set."""

    def __init__(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "screenshots"
        self.folder.mkdir()
        extra = os.environ.get("HERON_SCREENSHOTS")
        self.extra = Path(extra) if extra else None

    def take(self, page: Page, name: str, *, full_page: bool = False) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.extra / path.name)
        return path


@pytest.fixture
def shots(tmp_path: Path) -> Shots:
    return Shots(tmp_path)


def new_page(browser: Browser, **options: Any) -> Page:
    context = browser.new_context(
        viewport={"width": 1280, "height": 860},
        timezone_id="Europe/Paris",
        locale="en-GB",
        **options,
    )
    page = context.new_page()
    page.set_default_timeout(WAIT * 1000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(  # a script's errors; a refusal's 4xx status is not one
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.errors = errors  # type: ignore[attr-defined]
    return page


def sign_in(page: Page, dev: Dev, shots: Shots | None = None) -> None:
    page.goto(f"{dev.base}/dashboard")
    assert "/dashboard/sign-in" in page.url
    page.fill("#token", "not the token")
    page.click("button:has-text('Sign in')")
    assert "not this API's token" in page.inner_text("main")
    page.fill("#token", TOKEN)
    if shots:
        shots.take(page, "dashboard-sign-in")
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{dev.base}/dashboard")


def table_ids(page: Page) -> list[str]:
    return page.locator("table.runs tbody tr td:first-child code").all_inner_texts()


def seed(dev: Dev) -> None:
    """Orders that wait for approval (one approved already), restocks that fail, a report that
    sleeps for hours."""
    order = {"items": [{"sku": "mug", "qty": 2}, {"sku": "tea", "qty": 1}], "total": 1800}
    for n in (1001, 1002, 1003, 1000):
        dev.start("order", {"id": f"o-{n}", **order}, f"o-{n}", tags=["web"])
    dev.until("o-1000", "waiting")
    httpx.post(
        f"{dev.base}/runs/o-1000/signals/approved",
        json={"payload": {"by": "ada"}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    ).raise_for_status()
    for n in (1, 2):
        marker = str(dev.folder / f"restock-{n}.ok")
        dev.start("restock", {"sku": "mug", "marker": marker}, f"restock-{n}", tags=["ops"])
    dev.start("nightly-report", "2026-01-05", "nightly-2026-01-05", tags=["batch"])
    for n in (1001, 1002, 1003):
        dev.until(f"o-{n}", "waiting")
    dev.until("o-1000", "completed")
    dev.until("restock-1", "failed")
    dev.until("restock-2", "failed")
    dev.until("nightly-2026-01-05", "sleeping")


# -- the tests -----------------------------------------------------------------------------------


def test_an_operator_signs_in_finds_a_run_and_acts_on_it(
    dev: Dev, browser: Browser, shots: Shots
) -> None:
    seed(dev)
    page = new_page(browser)
    page.on("dialog", lambda dialog: dialog.accept())  # each action's confirm()
    sign_in(page, dev, shots)

    # the list: every run, counts per status, times in this browser's zone
    assert set(table_ids(page)) >= {"o-1001", "o-1002", "restock-1", "nightly-2026-01-05"}
    assert page.inner_text(".counts a:has-text('waiting') b") == "3"
    assert "Europe/Paris" in page.inner_text("footer")

    # filter: waiting orders only
    page.select_option("select[name=status]", "waiting")
    page.fill("input[name=workflow]", "order")
    page.click("button:has-text('Filter')")
    page.wait_for_url("**status=waiting**")
    assert table_ids(page) == ["o-1003", "o-1002", "o-1001"]

    # search: an exact id opens the run
    page.fill("#search-id", "o-1002")
    page.press("#search-id", "Enter")
    page.wait_for_url(f"{dev.base}/dashboard/runs/o-1002")
    assert "Waiting for" in page.inner_text(".waits")
    bars = page.locator("ol.tl li")
    assert bars.count() == 3  # charge (×2), sleep, the open wait
    assert "×2" in bars.nth(0).inner_text()
    assert page.locator("ol.tl li.open").count() == 1

    # cancel it, with a reason
    page.fill("input[name=reason]", "customer changed their mind")
    page.click("button:has-text('Cancel run')")
    page.wait_for_selector(".flash.ok")
    assert "Run cancelled." in page.inner_text(".flash.ok")
    info = dev.until("o-1002", "cancelled")
    assert info.error == {"type": "Cancelled", "message": "customer changed their mind"}
    assert page.inner_text(".run-head .badge") == "cancelled"

    # approve o-1001 with a signal: it packs, invoices (a child run) and completes
    page.goto(f"{dev.base}/dashboard/runs/o-1001")
    assert page.input_value("input[name=name]") == "approved"  # what it waits for
    page.fill("textarea[name=payload]", '{"by": "ops"')
    page.click("button:has-text('Send signal')")
    assert "not valid JSON" in page.inner_text(".actions .flash.error")
    assert page.input_value("textarea[name=payload]") == '{"by": "ops"'  # kept, to fix
    page.fill("textarea[name=payload]", '{"by": "ops"}')
    page.click("button:has-text('Send signal')")
    page.wait_for_selector(".flash.ok")
    info = dev.until("o-1001", "completed")
    assert info.output["approved_by"] == "ops"
    (child,) = info.children
    dev.until(child, "completed")
    page.reload()
    assert page.inner_text(".run-head .badge") == "completed"
    shots.take(page, "dashboard-run")
    kinds = page.locator("ol.tl li .kind").all_inner_texts()
    assert [k.lower() for k in kinds] == [
        "step", "sleep", "signal", "step", "step", "child",
    ]  # fmt: skip
    page.click("ol.tl li.k-child a")
    page.wait_for_url(f"**/dashboard/runs/{child}")
    assert page.inner_text(".facts").count("o-1001") == 1  # its parent, linked

    # retry a failed restock once the cause is fixed
    (dev.folder / "restock-1.ok").write_text("ok")
    page.goto(f"{dev.base}/dashboard/runs/restock-1")
    assert "FatalError" in page.inner_text(".error-box")
    assert "the stock service refused" in page.inner_text(".error-box")
    page.click("button:has-text('Retry run')")
    page.wait_for_selector(".flash.ok")
    dev.until("restock-1", "completed")

    # the list now holds a run of every kind
    page.goto(f"{dev.base}/dashboard")
    page.wait_for_selector("table.runs")
    statuses = set(page.locator("table.runs tbody .badge").all_inner_texts())
    assert {"completed", "cancelled", "waiting", "failed", "sleeping"} <= statuses
    shots.take(page, "dashboard-runs")
    assert page.errors == []  # type: ignore[attr-defined]

    # and signing out ends the session
    page.click("button:has-text('Sign out')")
    page.wait_for_url("**/dashboard/sign-in")
    page.goto(f"{dev.base}/dashboard")
    assert "/dashboard/sign-in" in page.url


def test_the_forms_work_without_javascript(dev: Dev, browser: Browser, shots: Shots) -> None:
    dev.start("order", {"id": "o-1", "items": [], "total": 100}, "o-1")
    dev.until("o-1", "waiting")
    page = new_page(browser, java_script_enabled=False)
    sign_in(page, dev)

    page.goto(f"{dev.base}/dashboard/runs/o-1")
    page.fill("input[name=reason]", "no script here")
    page.click("button:has-text('Cancel run')")
    # a confirmation page instead of a dialog
    assert "Are you sure?" in page.inner_text("main")
    shots.take(page, "dashboard-confirm")
    assert dev.get("o-1").status == "waiting"
    page.click("button:has-text('Yes, cancel the run')")
    page.wait_for_selector(".flash.ok")
    assert dev.until("o-1", "cancelled").error["message"] == "no script here"  # type: ignore[index]


def test_the_list_refreshes_itself_until_paused(dev: Dev, browser: Browser) -> None:
    page = new_page(browser)
    sign_in(page, dev)
    page.evaluate("window.heronMarker = 1")  # gone if the page were loaded again

    # a run started elsewhere shows up without a reload
    dev.start("nightly-report", "d-1", "report-1")
    page.wait_for_selector("code:has-text('report-1')", timeout=WAIT * 1000)
    assert page.evaluate("window.heronMarker") == 1
    assert page.url == f"{dev.base}/dashboard"

    # paused, it stays as it is (and remembers that)
    page.click("button[data-refresh-toggle]")
    assert page.inner_text("[data-refresh-state]") == "Auto-refresh paused"
    dev.start("nightly-report", "d-2", "report-2")
    page.wait_for_timeout(7000)
    assert "report-2" not in table_ids(page)
    page.reload()
    assert page.inner_text("button[data-refresh-toggle]") == "Resume"
    assert "report-2" in table_ids(page)  # a reload still shows it
    page.evaluate("window.heronMarker = 2")

    # resumed, it refreshes again
    page.click("button[data-refresh-toggle]")
    dev.start("nightly-report", "d-3", "report-3")
    page.wait_for_selector("code:has-text('report-3')", timeout=WAIT * 1000)
    assert page.evaluate("window.heronMarker") == 2
