"""``heron dev``: the HTTP API, the sweep loop and in-process resumes, in one local process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "HERON_APP": APP,
        "HERON_STORE": f"sqlite:///{tmp_path / 'dev.db'}",
        "PYTHONPATH": str(ROOT),
    }
    for name in ("HERON_API_TOKEN", "HERON_API_AUTH", "HERON_QUEUE_URL"):
        env.pop(name, None)
    process = subprocess.Popen(
        [str(HERON), "dev", "--port", str(port), "--interval", "0.1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
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
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        assert "heron dev" in output, output


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
