"""``KVStore`` on its memory (``kv-memory``), file (``kv-file``) and Upstash (``kv-upstash``)
drivers. ``kv-redis`` is in ``tests/backends/redis.py``, beside the server it needs.

``kv-upstash`` talks HTTP to :class:`UpstashDouble`, a PROTOCOL DOUBLE of Upstash's REST API
started here for the session: a small threaded HTTP server that speaks what Upstash documents
(https://upstash.com/docs/redis/features/restapi: ``POST /`` with a JSON command array,
``/pipeline``, ``/multi-exec``, ``Authorization: Bearer <token>``, ``{"result": ...}`` or
``{"error": "..."}`` with 400, 401 on a bad token) and forwards every command to the session's
real redis-server (``redis_url``). It is not Upstash: it proves the driver speaks the protocol,
and the Redis semantics behind it are real. ``kv-upstash-real`` runs against real Upstash, and
is registered only when ``UPSTASH_REDIS_REST_URL`` and ``UPSTASH_REDIS_REST_TOKEN`` are set.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from heron.stores.contract import WorkflowStore
from tests.stores import ATOMIC_LEASE, URL, Backend, StoreKind


def _reply(value: Any) -> Any:
    """A Redis reply as Upstash puts it in JSON (bulk strings as text)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple):
        return [_reply(v) for v in value]
    return value


def _error_text(exc: Exception) -> str:
    """redis-py drops the error code of some replies (NOSCRIPT); Upstash sends it whole."""
    import redis.exceptions as rx

    text = str(exc)
    if isinstance(exc, rx.NoScriptError):
        return f"NOSCRIPT {text}"
    head = text.split(" ", 1)[0].split("\t", 1)[0]
    return text if head.isupper() and len(head) > 2 else f"ERR {text}"


class UpstashDouble:
    """PROTOCOL DOUBLE: Upstash's REST API on 127.0.0.1, forwarding to a real Redis."""

    def __init__(self, redis_url: str, token: str | None = None) -> None:
        import redis

        self.token = token or secrets.token_hex(16)
        self.redis = redis.Redis.from_url(redis_url)
        self.redis.response_callbacks.clear()  # replies as Redis sends them ("OK", not True)
        self.requests = 0
        self.commands: list[list[str]] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stall

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.headers.get("Authorization") != f"Bearer {double.token}":
                    self._send(401, {"error": "Unauthorized"})
                    return
                double.requests += 1
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, {"error": "ERR failed to parse command"})
                    return
                if self.path in ("/", ""):
                    double.commands.append([str(a) for a in body[:1]])
                    try:
                        self._send(200, {"result": _reply(double.redis.execute_command(*body))})
                    except Exception as exc:
                        self._send(400, {"error": _error_text(exc)})
                elif self.path in ("/pipeline", "/multi-exec"):
                    pipe = double.redis.pipeline(transaction=self.path == "/multi-exec")
                    for command in body:
                        pipe.execute_command(*command)
                    try:
                        results = pipe.execute(raise_on_error=False)
                    except Exception as exc:
                        self._send(400, {"error": _error_text(exc)})
                        return
                    self._send(
                        200,
                        [
                            {"error": _error_text(r)}
                            if isinstance(r, Exception)
                            else {"result": _reply(r)}
                            for r in results
                        ],
                    )
                else:
                    self._send(404, {"error": "Not Found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.redis.close()


@pytest.fixture(scope="session")
def upstash_double(redis_url: str) -> Iterator[UpstashDouble]:
    double = UpstashDouble(redis_url)
    double.start()
    try:
        yield double
    finally:
        double.stop()


@asynccontextmanager
async def setup_memory(tmp_path: Path) -> AsyncIterator[Backend]:
    from heron.stores.kv import KVStore, MemoryDriver

    driver = MemoryDriver()  # one driver, many store instances: executors sharing the data

    async def open_(**options: Any) -> WorkflowStore:
        return KVStore(driver, **options)

    yield Backend(open=open_)


@asynccontextmanager
async def setup_file(tmp_path: Path) -> AsyncIterator[Backend]:
    from heron.stores import open_store

    url = f"kv+file:///{tmp_path / 'kv'}"  # absolute: kv+file:////tmp/...

    async def open_(**options: Any) -> WorkflowStore:
        return open_store(url, **options)

    yield Backend(open=open_, url=url)


@asynccontextmanager
async def setup_upstash(tmp_path: Path, upstash_double: UpstashDouble) -> AsyncIterator[Backend]:
    from heron.stores import open_store

    prefix = f"t{uuid.uuid4().hex[:12]}"
    url = f"kv+upstash://127.0.0.1:{upstash_double.port}?tls=0&token={upstash_double.token}"
    url += f"&prefix={prefix}"

    async def open_(**options: Any) -> WorkflowStore:
        return open_store(url, **options)

    yield Backend(open=open_, url=url)


@asynccontextmanager
async def setup_upstash_real(tmp_path: Path) -> AsyncIterator[Backend]:
    from heron.stores import open_store

    url = f"kv+upstash://?prefix=heron-test-{uuid.uuid4().hex[:12]}"

    async def open_(**options: Any) -> WorkflowStore:
        return open_store(url, **options)

    yield Backend(open=open_, url=url)


KINDS = {
    "kv-memory": StoreKind(setup_memory, frozenset({ATOMIC_LEASE})),
    "kv-file": StoreKind(setup_file, frozenset({ATOMIC_LEASE, URL})),
    "kv-upstash": StoreKind(
        setup_upstash, frozenset({ATOMIC_LEASE, URL}), fixtures=("upstash_double",)
    ),
}
if os.environ.get("UPSTASH_REDIS_REST_URL") and os.environ.get("UPSTASH_REDIS_REST_TOKEN"):
    KINDS["kv-upstash-real"] = StoreKind(setup_upstash_real, frozenset({ATOMIC_LEASE, URL}))
