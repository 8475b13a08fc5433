"""``heron dev``: the HTTP API, the sweep loop and in-process resumes, in one local process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.functions.kit import APP, ROOT

HERON = Path(sys.executable).with_name("heron")
#: Wait at most this many polls, POLL apart, for the server and for the run.
POLLS = 200
POLL = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(env: dict[str, str], cwd: Path) -> Iterator[tuple[str, list[str]]]:
    """``heron dev`` on a free port: yields its URL and, once it has stopped, its output."""
    port = free_port()
    for name in ("HERON_API_TOKEN", "HERON_API_AUTH", "HERON_QUEUE_URL"):
        env.pop(name, None)
    process = subprocess.Popen(
        [str(HERON), "dev", "--port", str(port), "--interval", "0.1"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    output: list[str] = []
    try:
        for _ in range(POLLS):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()[0]
            time.sleep(POLL)
        else:
            pytest.fail("heron dev did not come up")
        yield base, output
    finally:
        process.send_signal(signal.SIGINT)
        try:
            text, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            text, _ = process.communicate()
        output.append(text)
        assert "heron dev" in text, text


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[str]:
    env = {
        **os.environ,
        "HERON_APP": APP,
        "HERON_STORE": f"sqlite:///{tmp_path / 'dev.db'}",
        "PYTHONPATH": str(ROOT),
    }
    with serving(env, ROOT) as (base, _):
        yield base


def test_heron_dev_serves_the_api_and_sweeps_a_sleeping_run_to_completion(
    dev_server: str,
) -> None:
    with httpx.Client(base_url=dev_server, timeout=5) as client:
        # open locally: no token needed
        created = client.post("/workflows/nap/runs", json={"input": 0.3, "run_id": "nap-1"})
        assert created.status_code == 201, created.text

        for _ in range(POLLS):
            run = client.get("/runs/nap-1").json()
            if run["status"] == "completed":
                break
            time.sleep(POLL)
        assert run["status"] == "completed", run
        assert run["output"] == "rested"
        assert [step["kind"] for step in run["steps"]] == ["sleep"]

        page = client.get("/dashboard")
        assert page.status_code == 200 and "nap-1" in page.text

        # a name made to point at 127.0.0.1 (DNS rebinding) gets nothing of the open API
        rebound = client.get("/runs/nap-1", headers={"host": "rebound.attacker.example"})
        assert rebound.status_code == 400 and "nap-1" not in rebound.text
        for name in ("localhost", "127.0.0.1"):
            assert client.get("/runs/nap-1", headers={"host": name}).status_code == 200


BROKEN_APP = textwrap.dedent(
    """
    from heron.runtime import Runtime
    from heron.stores.memory import MemoryStore


    class BrokenStore(MemoryStore):
        async def list_runs(self, query):
            raise RuntimeError("listing is broken")


    rt = Runtime(store=BrokenStore())
    """
)


def test_heron_dev_logs_the_error_behind_a_500(tmp_path: Path) -> None:
    # given an app whose store fails in a way the API does not expect
    (tmp_path / "broken_app.py").write_text(BROKEN_APP)
    env = {k: v for k, v in os.environ.items() if k != "HERON_STORE"}
    env |= {"HERON_APP": "broken_app:rt", "PYTHONPATH": str(ROOT)}

    # when a request hits it
    with serving(env, tmp_path) as (base, output):
        answer = httpx.get(f"{base}/runs", timeout=5)
        assert answer.status_code == 500
        assert "listing is broken" not in answer.text  # the details stay on the server

    # then heron dev printed what went wrong
    assert "unexpected error answering GET /runs" in output[0]
    assert "RuntimeError: listing is broken" in output[0]
