"""``RedisStore`` (``redis``) and ``KVStore`` on its Redis driver (``kv-redis``), against a real
redis-server that this module starts for the session (``redis_url``).

The server is Debian's ``redis-server`` binary (``.ci/run`` installs it), started as
``redis-server --port <free> --save '' --appendonly no`` on 127.0.0.1, in a temporary
directory, and stopped after the session: it never touches another Redis on the machine (one
may listen on 6379). ``REDIS_URL`` points the suite at an external server instead (Valkey,
ElastiCache, Upstash's Redis protocol). Each test gets a key prefix of its own, so tests never
see each other's data and nothing is flushed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from heron.stores.contract import WorkflowStore
from tests.needs import unavailable
from tests.stores import ATOMIC_LEASE, URL, Backend, StoreKind


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private redis-server on a free 127.0.0.1 port, no persistence, in a temporary dir."""

    def __init__(self, binary: str = "redis-server", *args: str) -> None:
        path = shutil.which(binary)
        if path is None:
            raise RuntimeError(
                "redis-server is not installed (apt-get install redis-server; .ci/run does it), "
                "or set REDIS_URL to a server the tests may use"
            )
        self.binary = path
        self.args = args
        self.port = 0
        self.dir = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="heron-redis-")
        for _ in range(5):
            self.port = free_port()
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.dir,
                    "--protected-mode",
                    "yes",
                    *self.args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._ready():
                return
            self.stop_process()
        raise RuntimeError("redis-server did not start")

    def _ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    answer = sock.recv(64)
                    if answer.startswith((b"+PONG", b"-NOAUTH")):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop_process(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stderr is not None:
            process.stderr.close()

    def stop(self) -> None:
        self.stop_process()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis the tests may write to: ``REDIS_URL``, else a redis-server started here."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    if shutil.which("redis-server") is None:
        unavailable(
            "redis-server is not installed (apt-get install redis-server; .ci/run does it), "
            "or set REDIS_URL to a server the tests may use",
            "Redis tests",
        )
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def with_query(url: str, **params: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in params.items())


@asynccontextmanager
async def setup_redis(tmp_path: Path, redis_url: str) -> AsyncIterator[Backend]:
    from heron.stores import open_store

    url = with_query(redis_url, prefix=f"t{uuid.uuid4().hex[:12]}:")

    async def open_(**options: Any) -> WorkflowStore:
        return open_store(url, **options)

    yield Backend(open=open_, url=url)


@asynccontextmanager
async def setup_kv_redis(tmp_path: Path, redis_url: str) -> AsyncIterator[Backend]:
    from heron.stores import open_store

    url = with_query("kv+" + redis_url, prefix=f"t{uuid.uuid4().hex[:12]}")

    async def open_(**options: Any) -> WorkflowStore:
        return open_store(url, **options)

    yield Backend(open=open_, url=url)


KINDS = {
    "redis": StoreKind(setup_redis, frozenset({ATOMIC_LEASE, URL}), fixtures=("redis_url",)),
    "kv-redis": StoreKind(setup_kv_redis, frozenset({ATOMIC_LEASE, URL}), fixtures=("redis_url",)),
}
