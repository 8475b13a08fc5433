"""One Cloudflare Worker isolate: its configuration, its ``Runtime`` and its ASGI app, made on
the first event and kept while the isolate lives, and the three handlers' work.

Nothing here imports the Workers SDK or touches JavaScript: the handlers work on what the SDK
hands Python (an ``env`` whose attributes are the vars, secrets and bindings; a queue batch whose
``messages`` have ``body``, ``ack()`` and ``retry()``; a ``ctx`` with ``waitUntil``), so the same
code runs, and is tested, on CPython with doubles of those (``tests/edge/``).
``heron.functions.worker`` is the thin part that only Pyodide can run: the ``WorkerEntrypoint``
class and the ASGI adapter.

::

    isolate starts:  import the worker module (snapshot): the app's Runtime, FastAPI, Heron
    first event:     WorkerConfig.from_env(env) ─► open the store (the D1 binding, or fetch for
                     Turso / Upstash) ─► the queue dispatcher ─► the API app   (once)
    every event:     fetch ─► the API · scheduled ─► sweep ─► queue · queue ─► resume each run

Configuration, from the Worker's ``env`` (``[vars]`` and secrets in ``wrangler.toml``), parsed
once per isolate, the way ``heron.functions._config`` reads ``HERON_*`` for Lambda (the engine
reads no environment):

``HERON_STORE``       the store URL: ``d1://BINDING``, ``libsql://HOST`` / ``https://HOST``
                     (Turso, sqld), ``kv+upstash://HOST``; required unless the app pins a store
``HERON_QUEUE``       the binding name of the resume queue's producer (Cloudflare Queues); without
                     it, runs resume inside the request that made them due, after the response
``HERON_API_TOKEN``   (secret) the bearer token of the HTTP API; without it the API refuses all
``HERON_API_OPEN``    ``1``: no auth at all (``wrangler dev`` only; ignored when a token is set)
``HERON_MAX_BODY``    request body cap in bytes (1 MiB)
``HERON_SWEEP_PAGE``  runs per ``due`` page of the sweep (100; at most 1,000)
``HERON_TIME_BUDGET`` seconds a queue or cron invocation, or a request's resumes without a
                     queue, start new steps for (30, at most 900; then the run suspends and
                     continues in the next invocation)
``HERON_LOG_LEVEL``   the ``heron`` loggers' level (``INFO``)
``HERON_APP``         ``module:attribute`` of the app's ``Runtime``, when ``entrypoint()`` gets none
``TURSO_AUTH_TOKEN``  (secret) the libSQL token for a ``libsql://`` / ``https://`` store
``UPSTASH_REDIS_REST_TOKEN``  (secret) the Upstash token for a ``kv+upstash://`` store

A binding that the configuration names but the Worker lacks is a :class:`BindingMissing` at
the first event that needs it, naming the binding and the ``wrangler.toml`` lines that add it.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from heron.functions._app import load_runtime
from heron.runtime import HeronError, InProcessDispatcher, RunNotFound, Runtime
from heron.stores._url import masked

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "QUEUES_MAX_DELAY",
    "QUEUES_MAX_MESSAGES",
    "BindingMissing",
    "HeronWorker",
    "InvocationDispatcher",
    "QueueDispatcher",
    "WorkerConfig",
    "WorkerConfigError",
    "error_body",
]

log = logging.getLogger("heron.worker")

#: Cloudflare Queues: a message may be delayed by at most this many seconds. The limits page
#: (https://developers.cloudflare.com/queues/platform/limits/) says "delaySeconds (when sending
#: or retrying): 24 hours" today and said 12 hours before; Heron uses 12 hours, which both
#: allow. A run due later is woken by the cron sweep, as every run that is due.
QUEUES_MAX_DELAY = 12 * 3600
#: Cloudflare Queues: at most 100 messages (and 256 KB) a ``sendBatch``.
QUEUES_MAX_MESSAGES = 100

DEFAULT_SWEEP_PAGE = 100
#: A sweep page of more runs than this is refused: every run of a page is one message (a cron
#: invocation sends ten sendBatch calls for it), and D1 takes no integer above 2**53 anyway.
MAX_SWEEP_PAGE = 1000
DEFAULT_TIME_BUDGET = 30.0
#: A queue consumer invocation has 15 minutes of wall time (Queues limits, above); a budget
#: beyond it would only be cut short by the platform.
MAX_TIME_BUDGET = 900.0
#: Store URL schemes a Worker can reach (no sockets, no disk: a binding or fetch).
_EDGE_SCHEMES = ("d1", "libsql", "https", "http", "kv+upstash", "memory")
_API_KEYS = ("HERON_API_TOKEN", "HERON_API_AUTH", "HERON_API_OPEN", "HERON_MAX_BODY")


class WorkerConfigError(HeronError, ValueError):
    """The Worker's configuration is wrong: the message names the variable and the fix."""


class BindingMissing(WorkerConfigError, LookupError):
    """The configuration names a binding the Worker does not have. ``binding`` is its name."""

    def __init__(self, message: str, *, binding: str) -> None:
        super().__init__(message)
        self.binding = binding


def _read(env: Any, name: str) -> Any:
    """``env``'s ``name`` (a var, a secret or a binding), ``None`` when it has none. ``env`` is
    the Worker's (attributes) or, in tests, a mapping."""
    if isinstance(env, Mapping):
        return env.get(name)
    try:
        return getattr(env, name, None)
    except Exception:  # a JS proxy can raise more than AttributeError for a missing name
        return None


def _text(env: Any, name: str) -> str | None:
    """A var or secret as text. wrangler.toml's ``[vars]`` may hold TOML numbers and booleans,
    which reach Python as ``int``/``float``/``bool``: read as their text (``true`` as ``1``)."""
    value = _read(env, name)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WorkerConfigError(
            f"{name} must be a text var or secret, but the Worker's env holds a "
            f"{type(value).__name__} under that name (a binding?)"
        )
    return value


def _number(env: Any, name: str, default: float, *, most: float, integer: bool = False) -> float:
    text = _text(env, name)
    if text is None:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise WorkerConfigError(f"{name} must be a number, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= most):
        raise WorkerConfigError(f"{name} must be above 0 and at most {most:g}, got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What the Worker's ``env`` says (``None``: not set). Secrets are never shown in a repr."""

    store: str | None = None
    queue: str | None = None
    app: str | None = None
    sweep_page: int = DEFAULT_SWEEP_PAGE
    time_budget: float = DEFAULT_TIME_BUDGET
    log_level: str = "INFO"
    api_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    turso_token: str | None = field(default=None, repr=False)
    upstash_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Any) -> WorkerConfig:
        """Read the ``HERON_*`` vars and the stores' secrets from ``env`` (the Worker's, or a
        mapping). Raises :class:`WorkerConfigError` naming the variable that is wrong."""
        queue = _text(env, "HERON_QUEUE")
        if queue is not None and not queue.isidentifier():
            raise WorkerConfigError(f"HERON_QUEUE must name a queue binding, got {queue!r}")
        api_env = {key: value for key in _API_KEYS if (value := _text(env, key)) is not None}
        if api_env.get("HERON_API_AUTH", "").strip().lower() == "iam":
            raise WorkerConfigError(
                "HERON_API_AUTH=iam is API Gateway's IAM auth, which a Worker does not have: "
                "set the HERON_API_TOKEN secret (wrangler secret put HERON_API_TOKEN)"
            )
        level = (_text(env, "HERON_LOG_LEVEL") or "INFO").upper()
        if not isinstance(logging.getLevelName(level), int):
            raise WorkerConfigError(f"HERON_LOG_LEVEL must be a logging level, got {level!r}")
        return cls(
            store=_text(env, "HERON_STORE"),
            queue=queue,
            app=_text(env, "HERON_APP"),
            sweep_page=int(
                _number(
                    env, "HERON_SWEEP_PAGE", DEFAULT_SWEEP_PAGE, most=MAX_SWEEP_PAGE, integer=True
                )
            ),
            time_budget=_number(
                env, "HERON_TIME_BUDGET", DEFAULT_TIME_BUDGET, most=MAX_TIME_BUDGET
            ),
            log_level=level,
            api_env=api_env,
            turso_token=_text(env, "TURSO_AUTH_TOKEN"),
            upstash_token=_text(env, "UPSTASH_REDIS_REST_TOKEN"),
        )


# -- dispatchers -------------------------------------------------------------------------------


class QueueDispatcher:
    """Sends each run id to the resume queue (a Cloudflare Queues producer binding) as
    ``{"run_id": ...}``, 100 to a ``sendBatch``; a delay is the message's ``delaySeconds``, so a
    run suspending with a wake less than 15 minutes away is woken on time (a precise timer).

    A delay is rounded up to whole seconds and capped at :data:`QUEUES_MAX_DELAY`. A failed
    send raises (the runs stay due: the sweep dispatches them again).
    """

    def __init__(self, queue: Any, *, name: str = "queue") -> None:
        self.queue = queue
        self.name = name
        self.sent = 0

    def __repr__(self) -> str:
        return f"QueueDispatcher({self.name!r})"

    async def dispatch(self, run_ids: Sequence[str], *, delay: float = 0.0) -> None:
        seconds = min(QUEUES_MAX_DELAY, max(0, math.ceil(delay)))
        for start in range(0, len(run_ids), QUEUES_MAX_MESSAGES):
            chunk = run_ids[start : start + QUEUES_MAX_MESSAGES]
            messages = []
            for run_id in chunk:
                message: dict[str, Any] = {"body": {"run_id": run_id}, "contentType": "json"}
                if seconds:
                    message["delaySeconds"] = seconds
                messages.append(message)
            await self.queue.sendBatch(messages)
            self.sent += len(chunk)

    async def drain(self) -> None:
        """Nothing to wait for: the queue's consumer does the work."""
        return None

    async def close(self) -> None:
        return None


class InvocationDispatcher(InProcessDispatcher):
    """Without a queue: resumes runs as tasks of the invocation that made them due, which waits
    for them (``ctx.waitUntil`` after a response; the cron sweep before it returns). A delayed
    dispatch is dropped: a Worker cannot keep a timer past its invocation, so the next sweep
    wakes that run (at most a cron interval late)."""

    async def dispatch(self, run_ids: Sequence[str], *, delay: float = 0.0) -> None:
        if delay <= 0:
            await super().dispatch(run_ids)


# -- logging -------------------------------------------------------------------------------------


class _JsonLines(logging.Formatter):
    """One JSON object a line (Workers Logs indexes JSON fields), the engine's ``extra`` keys
    (``run_id``, ``seq``, ``step``, ``workflow``) as fields."""

    _EXTRA = ("run_id", "seq", "step", "workflow", "status", "dispatched", "queue", "error")

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in self._EXTRA:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value if isinstance(value, int | float | str) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class _Stderr(io.TextIOBase):
    """Writes to whatever ``sys.stderr`` is at the time (the Worker's, or a test's capture)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _log_to_stderr(level: str) -> None:
    """Send the ``heron`` loggers to stderr (the Worker's logs), unless the app configured
    them: the engine's package only adds a ``NullHandler``, which silences them otherwise."""
    root = logging.getLogger("heron")
    if any(not isinstance(h, logging.NullHandler) for h in root.handlers):
        return
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(_JsonLines())
    root.addHandler(handler)
    root.setLevel(level)


# -- the isolate ---------------------------------------------------------------------------------


def _run_id(body: Any) -> str:
    run_id = body.get("run_id") if isinstance(body, Mapping) else None
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f'expected {{"run_id": "<id>"}}, got a {type(body).__name__}')
    return run_id


@dataclass
class _Isolate:
    config: WorkerConfig
    runtime: Runtime
    app: FastAPI | None = None


class HeronWorker:
    """The Worker's state and its handlers' work: ``fetch`` serves the HTTP API, ``scheduled``
    is the sweep, ``queue`` resumes runs.

    ``app`` is the user's ``Runtime``, or its ``"module:attribute"`` (default: the
    ``HERON_APP`` var, as on Lambda). Made at import time, it does nothing until the first
    event: then it reads the configuration from that event's ``env``, opens the store and the
    dispatcher, and keeps them for the isolate's life. A configuration error is raised at
    every event until it is fixed (a new deployment), never cached.
    """

    def __init__(self, app: Runtime | str | None = None) -> None:
        self._app = app
        self._isolate: _Isolate | None = None

    def setup(self, env: Any) -> Runtime:
        """The runtime, configured from ``env`` on the first call. Raises
        :class:`WorkerConfigError` (and :class:`BindingMissing`) for a wrong configuration."""
        if self._isolate is None:
            self._isolate = self._configure(env)  # no await inside: one event does it
        return self._isolate.runtime

    @property
    def config(self) -> WorkerConfig | None:
        return None if self._isolate is None else self._isolate.config

    def _configure(self, env: Any) -> _Isolate:
        config = WorkerConfig.from_env(env)
        _log_to_stderr(config.log_level)
        app = self._app if self._app is not None else config.app
        if app is None:
            raise WorkerConfigError(
                "no app: pass your Runtime to heron.functions.worker.entrypoint(rt), or set the "
                "HERON_APP var to its 'module:attribute'"
            )
        rt = app if isinstance(app, Runtime) else load_runtime(app)
        if config.store is not None:
            if rt.store_pinned:
                log.warning(
                    "the app's runtime pins its own store (%r), so HERON_STORE %s is not used",
                    rt.store,
                    masked(config.store),
                )
            else:
                rt.store = self._open_store(config, env)
        elif not rt.store_pinned:
            raise WorkerConfigError(
                "HERON_STORE is not set: a Worker has no disk for the embedded SQLite store; "
                "set it to d1://DB (a D1 binding), libsql://HOST (Turso) or kv+upstash://HOST"
            )
        if isinstance(rt.dispatcher, InProcessDispatcher) and not isinstance(
            rt.dispatcher, InvocationDispatcher
        ):
            if config.queue is not None:
                queue = _binding(
                    env,
                    config.queue,
                    "HERON_QUEUE",
                    f'[[queues.producers]] binding = "{config.queue}" queue = "heron-resume"',
                )
                if not callable(getattr(queue, "sendBatch", None)):
                    raise WorkerConfigError(
                        f"HERON_QUEUE names the binding {config.queue!r}, which is not a queue "
                        "producer (it has no sendBatch): name the [[queues.producers]] binding"
                    )
                rt.dispatcher = QueueDispatcher(queue, name=config.queue)
            else:
                rt.dispatcher = InvocationDispatcher(_within(rt, config.time_budget))
        log.info(
            "configured",
            extra={"status": f"store={rt.store!r} dispatcher={rt.dispatcher!r}"},
        )
        return _Isolate(config, rt)

    @staticmethod
    def _open_store(config: WorkerConfig, env: Any) -> Any:
        from heron.stores import open_store

        url = config.store or ""
        scheme = url.partition("://")[0].lower()
        if scheme not in _EDGE_SCHEMES:
            raise WorkerConfigError(
                f"HERON_STORE {masked(url)}: a {scheme}:// store cannot run in a Worker (no "
                "sockets, no disk); use d1://BINDING, libsql://HOST, https://HOST or "
                "kv+upstash://HOST"
            )
        options: dict[str, Any] = {}
        if scheme == "d1":
            name = url.partition("://")[2].partition("?")[0].rstrip("/")
            options["binding"] = _binding(
                env,
                name,
                "HERON_STORE",
                f'[[d1_databases]] binding = "{name}" database_name = "..." database_id = "..."',
            )
        elif scheme in ("libsql", "https", "http", "kv+upstash"):
            from heron.stores._http import FetchTransport

            options["transport"] = FetchTransport()
            if scheme == "kv+upstash" and config.upstash_token:
                options["token"] = config.upstash_token
            elif scheme != "kv+upstash" and config.turso_token:
                options["auth_token"] = config.turso_token
        try:
            return open_store(url, **options)
        except (ValueError, ImportError) as exc:
            raise WorkerConfigError(f"HERON_STORE {masked(url)}: {exc}") from exc

    def asgi(self, env: Any) -> FastAPI:
        """The HTTP API (``heron.functions.asgi.create_app``) over this Worker's runtime, with
        the API settings of ``env``; made once."""
        rt = self.setup(env)
        isolate = self._isolate
        assert isolate is not None
        if isolate.app is None:
            from heron.functions.asgi import ApiSettings, create_app

            try:
                settings = ApiSettings.from_env(isolate.config.api_env)
            except ValueError as exc:
                raise WorkerConfigError(str(exc)) from exc
            # The dashboard's templates need jinja2 and MarkupSafe; MarkupSafe has no pure wheel
            # on PyPI (Pyodide's own index has one, which pywrangler installs): without them
            # the Worker serves the JSON API alone.
            isolate.app = create_app(rt, settings, dashboard=_has("jinja2", "markupsafe"))
        return isolate.app

    def after_response(self, ctx: Any) -> None:
        """Without a queue: keep the invocation alive (``ctx.waitUntil``) until the resumes the
        request started are done."""
        rt = self._isolate.runtime if self._isolate is not None else None
        if rt is not None and isinstance(rt.dispatcher, InvocationDispatcher):
            wait_until = getattr(ctx, "waitUntil", None)
            if wait_until is not None:
                wait_until(rt.dispatcher.drain())

    async def scheduled(self, env: Any) -> int:
        """The sweep (a Cron Trigger): dispatch every run that is due; returns how many."""
        rt = self.setup(env)
        config = self._isolate.config if self._isolate is not None else WorkerConfig()
        deadline = rt.clock.now() + config.time_budget
        try:
            dispatched = await rt.sweep(config.sweep_page, deadline=deadline)
        finally:
            # without a queue the resumes run here, before returning: also those a failing
            # sweep had started (a task left behind would be cut off with the invocation)
            await rt.dispatcher.drain()
        log.info("sweep done", extra={"dispatched": dispatched})
        return dispatched

    async def queue(self, batch: Any, env: Any) -> dict[str, list[str]]:
        """Resume the run each message names, concurrently; ``ack()`` a message whose resume
        returned (or whose run is gone), ``retry()`` one whose resume raised or that is not a
        ``{"run_id": ...}`` message (after ``max_retries`` it goes to the dead-letter queue).
        Returns the message ids by outcome."""
        rt = self.setup(env)
        config = self._isolate.config if self._isolate is not None else WorkerConfig()
        deadline = rt.clock.now() + config.time_budget
        outcome: dict[str, list[str]] = {"acked": [], "retried": []}

        async def one(message: Any) -> None:
            ident = str(_read(message, "id") or "")
            try:
                run_id = _run_id(_read(message, "body"))
            except ValueError as exc:
                log.error("malformed resume message %s: %s", ident, exc)
                message.retry()
                outcome["retried"].append(ident)
                return
            try:
                run = await rt.resume(run_id, deadline=deadline)
            except RunNotFound:
                log.warning("run not found; nothing to resume", extra={"run_id": run_id})
            except Exception as exc:
                log.exception("resume failed", extra={"run_id": run_id, "error": type(exc)})
                message.retry()
                outcome["retried"].append(ident)
                return
            else:
                status = run.status if run is not None else "not due or leased elsewhere"
                log.info("run resumed", extra={"run_id": run_id, "status": status})
            message.ack()
            outcome["acked"].append(ident)

        await asyncio.gather(*(one(m) for m in list(_read(batch, "messages") or ())))
        await rt.dispatcher.drain()
        return outcome


def _within(rt: Runtime, budget: float) -> Callable[[str], Awaitable[Any]]:
    """``rt.resume`` that starts new steps for at most ``budget`` seconds, then suspends the
    run (the next invocation continues it), as the queue consumer's resumes do."""

    async def resume(run_id: str) -> Any:
        return await rt.resume(run_id, deadline=rt.clock.now() + budget)

    return resume


def _binding(env: Any, name: str, variable: str, wrangler: str) -> Any:
    binding = _read(env, name)
    if binding is None or isinstance(binding, str):
        found = "has a text var" if isinstance(binding, str) else "has no binding"
        raise BindingMissing(
            f"{variable} names the binding {name!r}, but this Worker {found} {name!r}: add "
            f"it to wrangler.toml ({wrangler}) and deploy again",
            binding=name,
        )
    return binding


def error_body(exc: BaseException) -> dict[str, str]:
    """The JSON an HTTP request gets when the Worker cannot serve it (a configuration error)."""
    return {"error": type(exc).__name__, "message": str(exc)}


def _has(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(module) is not None for module in modules)
