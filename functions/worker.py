"""Heron on Cloudflare Python Workers: one ``WorkerEntrypoint`` serves the HTTP API, runs the
sweep and resumes runs, with the same workflow module that runs on Lambda and on a laptop.

::

    # src/worker.py, wrangler.toml's main
    from heron.functions.worker import entrypoint
    from app import rt            # your Runtime and its workflows, unchanged

    Default = entrypoint(rt)

``Default.fetch`` (HTTP) serves ``heron.functions.asgi.create_app``, the very FastAPI app Lambda
serves, through the Workers SDK's ASGI adapter (``workers.asgi``); ``Default.scheduled`` (a Cron
Trigger) is the sweep; ``Default.queue`` (the consumer of a Cloudflare Queue) resumes the runs
the queue names, and the runtime's dispatcher sends them there, a delayed message being a
precise timer. The configuration comes from the Worker's ``env`` (vars, secrets, bindings),
read once per isolate: ``heron.functions._cloudflare`` holds it, and the handlers' work, in
code that runs on CPython too; this module is the part only Pyodide runs. ``docs/edge.md`` has
the setup and the limits.

Import time is snapshot time on Workers: calling :func:`entrypoint` at the top of the worker
module imports FastAPI and the Workers SDK (so the snapshot holds them, and so the SDK's import
patches apply, such as the one that runs ``anyio``'s thread offloading inline), but makes no
store and no app, reads no configuration, uses no randomness and no network: all of that waits
for the first event.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from heron.functions._cloudflare import (
    QUEUES_MAX_DELAY,
    BindingMissing,
    HeronWorker,
    QueueDispatcher,
    WorkerConfig,
    WorkerConfigError,
    error_body,
)
from heron.runtime import Runtime

__all__ = [
    "QUEUES_MAX_DELAY",
    "BindingMissing",
    "HeronWorker",
    "QueueDispatcher",
    "WorkerConfig",
    "WorkerConfigError",
    "entrypoint",
]

log = logging.getLogger("heron.worker")


def entrypoint(app: Runtime | str | None = None) -> type[Any]:
    """The ``Default`` entrypoint class for the worker module: ``Default = entrypoint(rt)``.

    ``app`` is the app's ``Runtime``, its ``"module:attribute"``, or ``None`` for the
    ``HERON_APP`` var. Only Pyodide (a Python Worker, or the test harness) can call this: it
    subclasses the Workers SDK's ``WorkerEntrypoint``. The class's ``heron`` attribute is its
    :class:`HeronWorker`.
    """
    workers = importlib.import_module("workers")
    asgi_adapter = importlib.import_module("workers.asgi")
    # FastAPI (and with it anyio.to_thread) into the snapshot, so the SDK's patch that runs
    # anyio's thread offloading inline applies: it is installed only while the worker module is
    # imported. heron.functions.asgi itself is imported on the first request (its module-level
    # app is made at import, and making one is not an import-time thing on Workers).
    importlib.import_module("fastapi")
    worker = HeronWorker(app)

    class Default(workers.WorkerEntrypoint):  # type: ignore[name-defined,misc]
        """Heron's Worker: the HTTP API, the sweep (cron) and the resumes (queue)."""

        heron = worker

        async def fetch(self, request: Any, *_: Any) -> Any:
            try:
                api = worker.asgi(self.env)
            except WorkerConfigError as exc:
                log.error("cannot serve %s: %s", getattr(request, "url", "a request"), exc)
                return workers.Response.json(error_body(exc), status=500)
            response = await asgi_adapter.fetch(api, request, self.env)
            worker.after_response(self.ctx)
            return response

        async def scheduled(self, controller: Any, *_: Any) -> None:
            await worker.scheduled(self.env)

        async def queue(self, batch: Any, *_: Any) -> None:
            await worker.queue(batch, self.env)

    Default.__qualname__ = "Default"
    return Default
