"""A moto server on a free 127.0.0.1 port, for the DynamoDB (and S3) tests and benchmarks.

Real HTTP through aioboto3, no in-process mocks. moto's backends keep no locks, while its server
answers each request on a thread of its own: two conditional writes to one item could interleave
between moto's condition check and its write, and a failed transaction restores a copy of the
whole table (undoing a concurrent write). DynamoDB decides each write atomically, so this server
runs one request at a time, which is what the race tests need to mean anything.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

__all__ = ["MotoServer", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class MotoServer(ThreadedMotoServer):
    """``ThreadedMotoServer`` on 127.0.0.1 that serializes requests and logs nothing."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(ip_address="127.0.0.1", port=port or free_port(), verbose=False)
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        lock = self._lock

        def serial(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            with lock:
                return list(app(environ, start_response))

        self._server = make_server(
            self._ip_address, self._port, serial, True, request_handler=_QuietHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()
