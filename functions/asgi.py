"""The HTTP API, an ASGI app: served by ``heron.functions.api`` on Lambda (through Mangum) and by
``heron dev`` locally (through uvicorn).

::

    POST /workflows/{name}/runs          start a run        201 new · 200 same run again · 409
    GET  /runs                           list runs          ?workflow&status&tag&limit&cursor
    GET  /runs/{run_id}                  a run and its timeline (steps)
    POST /runs/{run_id}/signals/{name}   send a signal      202 · 404 · 409 if the run ended
    POST /runs/{run_id}/cancel           cancel a run       200 · 409 if it completed or failed
    POST /runs/{run_id}/retry            run a failed or cancelled run again  200 · 409
    DELETE /runs/{run_id}                delete a run and its history        204 · 404
    GET  /healthz, /openapi.json, /docs  open to all (/docs: the reference, made from the OpenAPI
                                         document, no external asset)
    GET  /dashboard                      the operators' dashboard (heron.functions.dashboard):
                                         token sign-in, runs, timelines, cancel / retry / signal

Every error is JSON, ``{"error": "RunNotFound", "message": "run 'o-1' not found", "field":
"run_id"}``, with a 4xx status for anything a client got wrong. Auth (see :class:`ApiSettings`):
a bearer token (``HERON_API_TOKEN``), API Gateway's IAM authorizer (``HERON_API_AUTH=iam``), or
nothing at all only when ``HERON_API_OPEN=1`` says so; with none configured every request is
refused. Request bodies are capped at ``HERON_MAX_BODY`` bytes (1 MiB). The dashboard signs a
browser in with the same token and keeps a session cookie that only its own routes accept
(docs/dashboard.md); the JSON routes read nothing but the bearer token and IAM.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import os
import re
import weakref
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heron.functions._shapes import run_detail, run_summary
from heron.runtime import (
    MAX_DEPTH,
    Conflict,
    PayloadTooLarge,
    RunInfo,
    RunNotFound,
    Runtime,
    SerializationError,
    StoreError,
    TooManySignals,
    WorkflowNotFound,
    check_run_id,
    check_signal_name,
)
from heron.runtime._serde import nested_too_deep
from heron.stores.contract import RunQuery, decode_cursor
from heron.stores.contract import RunSummary as StoredSummary

__all__ = ["ApiSettings", "app", "create_app"]

log = logging.getLogger("heron.api")

DEFAULT_MAX_BODY = 1024 * 1024
MAX_PAGE = 200
RunStatusName = Literal[
    "pending", "running", "sleeping", "waiting", "completed", "failed", "cancelled"
]
_TRUE = ("1", "true", "yes", "on")


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """How the API authenticates and how much it reads.

    ``token``: the bearer token every request must carry (compared in constant time).
    ``iam``: trust API Gateway's IAM authorizer (``requestContext.authorizer.iam`` in the event).
    ``open``: no auth at all, for local development (``heron dev``); ignored when a ``token``
    is set (a token always wins, so a development switch left in a deployed configuration
    cannot open an API that has one).
    With none of them set, every request but ``/healthz`` and the docs is refused.
    """

    token: str | None = None
    iam: bool = False
    open: bool = False
    max_body: int = DEFAULT_MAX_BODY

    def __post_init__(self) -> None:
        if self.open and self.token:
            object.__setattr__(self, "open", False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        """``HERON_API_TOKEN``, ``HERON_API_AUTH`` (``iam`` or ``token``), ``HERON_API_OPEN``,
        ``HERON_MAX_BODY``. Raises ``ValueError`` naming the variable that is wrong."""
        env = os.environ if environ is None else environ
        auth = (env.get("HERON_API_AUTH") or "").strip().lower()
        if auth not in ("", "iam", "token"):
            raise ValueError(f"HERON_API_AUTH must be 'iam' or 'token', got {auth!r}")
        token = env.get("HERON_API_TOKEN") or None
        if auth == "token" and not token:
            raise ValueError("HERON_API_AUTH=token needs HERON_API_TOKEN")
        raw_max = env.get("HERON_MAX_BODY") or str(DEFAULT_MAX_BODY)
        try:
            max_body = int(raw_max)
        except ValueError:
            raise ValueError(f"HERON_MAX_BODY must be a number of bytes, got {raw_max!r}") from None
        if max_body <= 0:
            raise ValueError(f"HERON_MAX_BODY must be positive, got {max_body}")
        return cls(
            token=token,
            iam=auth == "iam",
            open=(env.get("HERON_API_OPEN") or "").strip().lower() in _TRUE,
            max_body=max_body,
        )


# -- request and response bodies ---------------------------------------------------------------


def _clean_text(value: str) -> str:
    if not value.isprintable():
        raise ValueError("may not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode (a lone surrogate)") from None
    return value


def _json_value(value: Any) -> Any:
    """Only what can be stored: finite numbers, valid Unicode."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        reason = "NaN and Infinity" if isinstance(exc, ValueError) else "lone surrogates"
        raise ValueError(f"must be plain JSON ({reason} are not)") from None
    return value


def _run_id(value: str) -> str:
    # The engine's own rule (docs/security.md), so the API refuses exactly what rt.start does,
    # before anything is stored.
    return check_run_id(value, what="id")


Id = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_run_id)]
Tag = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_clean_text)]
JsonValue = Annotated[Any, AfterValidator(_json_value)]


class StartRun(BaseModel):
    """Start a run. The same ``run_id`` with the same input is the same run (``200``)."""

    model_config = ConfigDict(extra="forbid")
    input: JsonValue = Field(default=None, description="The workflow's input, any JSON value.")
    run_id: Id | None = Field(default=None, description="Choose the id; makes starting idempotent.")
    tags: list[Tag] = Field(default_factory=list, max_length=50)


class SendSignal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payload: JsonValue = Field(default=None, description="Handed to ctx.wait_for_signal.")
    signal_id: Id | None = Field(default=None, description="Sending the same id again is a no-op.")


class CancelRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(max_length=500), AfterValidator(_clean_text)] = "cancelled"


class RetryRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_seq: int | None = Field(
        default=None,
        ge=0,
        description="Rerun from this seq: its checkpoint and every later one are dropped.",
    )


class RunSummary(BaseModel):
    id: str
    workflow: str
    version: str
    status: str
    parent_id: str | None
    tags: list[str]
    created_at: float
    updated_at: float
    wake_at: float | None


class Step(BaseModel):
    """One checkpoint of the timeline."""

    seq: int
    kind: str
    name: str
    value: Any = None
    error: dict[str, Any] | None = None
    at: float
    attempts: int
    order: int | None = Field(
        default=None, description="Its place in the order outcomes were handed back."
    )


class BufferedSignal(BaseModel):
    id: str
    name: str
    at: float


class Waiting(BaseModel):
    """One thing a suspended run waits for."""

    seq: int
    kind: str = Field(
        description="sleep, signal (name: the signal; several joined by |), child (name: its "
        "run id), retry (name: the step), time (the invocation ran out of time)"
    )
    name: str
    until: float | None = Field(description="When it fires or times out (epoch seconds).")


class RunDetail(RunSummary):
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    steps: list[Step]
    signals: list[BufferedSignal]
    children: list[str] = Field(default_factory=list, description="Ids of its child runs.")
    waiting_for: list[Waiting] = Field(default_factory=list)


class RunList(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class SignalSent(BaseModel):
    run_id: str
    name: str
    signal_id: str


class ErrorBody(BaseModel):
    error: str = Field(description="The kind of error, e.g. RunNotFound, ValidationError.")
    message: str = Field(description="What went wrong, naming the field or the id.")
    field: str | None = Field(default=None, description="The request field at fault, if one.")


class Health(BaseModel):
    status: Literal["ok"]


def _summary(run: StoredSummary | RunInfo) -> RunSummary:
    return RunSummary(**run_summary(run))


def _detail(info: RunInfo) -> RunDetail:
    """The answer to ``GET /runs/{id}``: the shape ``heron inspect --json`` prints too."""
    return RunDetail.model_validate(run_detail(info))


#: Nesting an answer may have (pydantic refuses to serialize deeper values).
_MAX_SHOWN_DEPTH = 64


def _shown(value: Any) -> Any:
    """``value``, or a note in its place when it nests too deep to answer with: a record stored
    by an older Heron (or written to the store directly) must not make its run unreadable."""
    if nested_too_deep(value, _MAX_SHOWN_DEPTH):
        return f"<a value nested more than {_MAX_SHOWN_DEPTH} levels deep: not shown>"
    return value


def _readable_detail(info: RunInfo) -> RunDetail:
    """:func:`_detail` with every value that nests too deep replaced by a note."""
    detail = _detail(info)
    detail.input, detail.output = _shown(detail.input), _shown(detail.output)
    for step in detail.steps:
        step.value, step.error = _shown(step.value), _shown(step.error)
    return detail


# -- errors ------------------------------------------------------------------------------------


class ApiError(HTTPException):
    """An error answer: ``status`` with ``{"error", "message", "field"}``."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=dict(headers or {}))
        self.error = error
        self.field = field


def _error(
    status: int,
    error: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=error, message=message, field=field).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


_STATUS_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
}

#: Engine errors and what they mean over HTTP: (status, the request field they are about).
_ENGINE_ERRORS: list[tuple[type[Exception], int, str | None]] = [
    (RunNotFound, 404, "run_id"),
    (WorkflowNotFound, 404, "name"),
    (Conflict, 409, None),
    (TooManySignals, 409, "run_id"),  # the run holds the most unconsumed signals it may
    (PayloadTooLarge, 413, None),
    (SerializationError, 422, None),
    (StoreError, 503, None),
    (ValueError, 422, None),  # the engine's own argument checks (ids, tags)
]


@contextlib.contextmanager
def _about(field: str) -> Iterator[None]:
    """Name ``field`` in the 413/422 answer to a value the engine refuses to store."""
    try:
        yield
    except PayloadTooLarge as exc:
        raise ApiError(413, "PayloadTooLarge", str(exc), field=field) from None
    except SerializationError as exc:
        raise ApiError(422, "SerializationError", str(exc), field=field) from None


def run_path(root: str, run_id: str) -> str:
    """The URL path of run ``run_id`` under ``root``, its id percent-encoded (every character
    but the unreserved ones of RFC 3986, so ``%``, ``@`` and non-Latin text all survive)."""
    return f"{root}/runs/{quote(run_id, safe='')}"


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ApiError):
        return _error(exc.status_code, exc.error, exc.detail, exc.field, exc.headers)
    name = _STATUS_NAMES.get(exc.status_code, "HTTPError")
    message = exc.detail
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return _error(exc.status_code, name, str(message), headers=exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    field: str | None = None
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        if error.get("type") == "json_invalid":
            return _error(400, "InvalidJSON", "the request body is not valid JSON", "body")
        content_type = request.headers.get("content-type", "")
        if loc == ["body"] and "json" not in content_type.lower():
            return _error(
                415,
                "UnsupportedMediaType",
                f"send the body as JSON with Content-Type: application/json, not {content_type!r}",
                "Content-Type",
            )
        where = ".".join(loc) or "request"
        field = field or where
        problems.append(f"{where}: {error.get('msg', 'is invalid')}")
    message = "; ".join(problems) or "the request is invalid"
    return _error(422, "ValidationError", message, field)


async def _on_engine_error(request: Request, exc: Exception) -> Response:
    for kind, status, field in _ENGINE_ERRORS:
        if isinstance(exc, kind):
            if status >= 500:
                log.error("store error: %s", exc, extra={"run_id": getattr(exc, "run_id", None)})
                return _error(status, "StoreUnavailable", "the store failed; try again")
            return _error(status, type(exc).__name__, str(exc), field)
    raise exc  # pragma: no cover - only registered for the kinds above


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return _error(500, "InternalError", "internal error; the server logged it")


# -- request bodies nested too deep -------------------------------------------------------------

#: A JSON string, or one of the brackets that open and close a level (strings are skipped whole,
#: in C, so a bracket inside one does not count).
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def too_deep(body: bytes, limit: int) -> str | None:
    """The request field (``body.input``) whose value nests more than ``limit`` levels, or
    ``None``. Checked on the raw bytes before they are parsed: Python's parser would give up
    with a ``RecursionError`` a few hundred levels down, and the engine refuses a value nested
    more than :data:`~heron.runtime.MAX_DEPTH` levels anyway (docs/security.md)."""
    depth = 0
    key = b""  # the last string seen at the top level of the body: the key of what follows
    for match in _JSON_TOKENS.finditer(body):
        token = match.group()
        if token[0] == 34:  # a string
            if depth == 1:
                key = token
        elif token in (b"[", b"{"):
            depth += 1
            if depth > limit + 1:  # the body's own object is one level
                try:
                    name = json.loads(key) if key else ""
                except ValueError:
                    name = ""
                return f"body.{name}" if isinstance(name, str) and name else "body"
        else:
            depth -= 1
    return None


class _CheckedRequest(Request):
    """A request whose JSON body is refused (422, naming the field) when it nests too deep."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            field = too_deep(body, MAX_DEPTH)
            if field is not None:
                raise ApiError(
                    422,
                    "ValidationError",
                    f"{field}: nested more than {MAX_DEPTH} levels deep",
                    field=field,
                )
            self._json = json.loads(body)
        return self._json


class _CheckedRoute(APIRoute):
    """Every route of the app reads its body through :class:`_CheckedRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            return await handler(_CheckedRequest(request.scope, request.receive))

        return checked


# -- body size limit ---------------------------------------------------------------------------


class BodyLimit:
    """Refuses bodies over the app's ``settings.max_body`` bytes with 413: by ``Content-Length``
    before reading, and by counting the bytes actually received (a missing or lying length)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int = scope["app"].state.settings.max_body
        too_large = ApiError(
            413, "PayloadTooLarge", f"the request body is over {limit} bytes", field="body"
        )
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():
                    response = _error(400, "BadRequest", "invalid Content-Length", "body")
                    await response(scope, receive, send)
                    return
                if int(value) > limit:
                    response = _error(413, too_large.error, too_large.detail, too_large.field)
                    await response(scope, receive, send)
                    return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large
            return message

        await self.app(scope, counted, send)


# -- the app -----------------------------------------------------------------------------------

#: Run ids that ``Runtime.start`` created during this request (its ``run.started`` event).
_created: ContextVar[set[str] | None] = ContextVar("heron_api_created", default=None)


def _note_created(event: str, data: Mapping[str, Any]) -> None:
    created = _created.get()
    if event == "run.started" and created is not None:
        created.add(data["run"].id)


def _iam_principal(scope: Scope) -> str | None:
    """The caller API Gateway's IAM authorizer vouched for (Mangum puts the event in scope)."""
    event = scope.get("aws.event")
    if not isinstance(event, dict):
        return None
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    iam = authorizer.get("iam") if isinstance(authorizer, dict) else None
    if not isinstance(iam, dict):
        return None
    return str(iam.get("userArn") or iam.get("callerId") or iam.get("accountId") or "iam")


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Bad request (invalid JSON or cursor)",
        401: "Missing or wrong bearer token",
        403: "Not allowed",
        404: "No such run or workflow",
        413: "Body or value too large",
        415: "The body is not sent as JSON",
        422: "Invalid field",
    }.items()
}


RuntimeSource = Runtime | Callable[[], Runtime] | None


async def get_runtime(request: Request) -> Runtime:
    """The runtime the app was made with (the dependency; async, so FastAPI runs it on the
    loop, not in a thread: there are none on an edge platform)."""
    return runtime_of(request)


def runtime_of(request: Request) -> Runtime:
    """The runtime the app was made with (the Lambda container's by default)."""
    source: RuntimeSource = request.app.state.runtime_source
    if isinstance(source, Runtime):
        rt = source
    elif source is not None:
        rt = source()
    else:
        from heron.functions._lambda import get_runtime as container_runtime

        rt = container_runtime()
    observed: weakref.WeakSet[Runtime] = request.app.state.observed
    if rt not in observed:
        rt.observe(_note_created)
        observed.add(rt)
    return rt


_bearer = HTTPBearer(auto_error=False, description="HERON_API_TOKEN")


async def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let the request through, or raise 401/403 (see :class:`ApiSettings`)."""
    config: ApiSettings = request.app.state.settings
    if config.open:
        _same_origin_only(request)
        return
    if config.iam and _iam_principal(request.scope) is not None:
        return
    if config.token:
        given = credentials.credentials.encode() if credentials else b""
        if credentials and hmac.compare_digest(given, config.token.encode()):
            return
        raise ApiError(
            401,
            "Unauthorized",
            "a valid bearer token is required: Authorization: Bearer <HERON_API_TOKEN>",
            field="Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if config.iam:
        raise ApiError(403, "Forbidden", "this API takes IAM-signed requests through API Gateway")
    raise ApiError(
        403,
        "ApiClosed",
        "the API is closed: set HERON_API_TOKEN or HERON_API_AUTH=iam "
        "(HERON_API_OPEN=1 opens it, for local development only)",
    )


_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _same_origin_only(request: Request) -> None:
    """An open API (``heron dev``) still refuses a change a browser makes for another site: a
    page anywhere could otherwise post a form to ``127.0.0.1`` and cancel runs. Browsers send
    ``Origin`` (and ``Sec-Fetch-Site``) with such a request; curl and SDKs send neither, so
    they are not affected. Raises 403 ``CrossOrigin``."""
    if request.method not in _UNSAFE_METHODS:
        return
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site", "")
    host = request.headers.get("host") or request.url.netloc
    foreign = origin is not None and (origin == "null" or urlsplit(origin).netloc != host)
    if foreign or site in ("cross-site", "same-site"):
        raise ApiError(
            403,
            "CrossOrigin",
            f"the open API takes no changes from pages of another origin ({origin or site})",
            field="Origin",
        )


Rt = Annotated[Runtime, Depends(get_runtime)]
RunIdPath = Annotated[
    str,
    Path(min_length=1, max_length=200, description="The run's id, percent-encoded."),
    AfterValidator(_run_id),
]
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
SignalNamePath = Annotated[
    str,
    Path(min_length=1, max_length=200, description="Not under the reserved prefix heron:."),
    AfterValidator(check_signal_name),
]
SECURED = [Depends(authorize)]


def create_app(
    runtime: RuntimeSource = None,
    settings: ApiSettings | None = None,
    *,
    dashboard: bool = True,
) -> FastAPI:
    """The API over ``runtime`` (a ``Runtime``, or a function returning one when first needed;
    by default the Lambda container's, from ``HERON_APP``) with ``settings`` (by default
    :meth:`ApiSettings.from_env`). ``dashboard=False`` leaves out ``/dashboard`` and ``/docs``
    (their templates need jinja2 and MarkupSafe, which Cloudflare's Python Workers can lack).
    Creating the app opens nothing and draws nothing random."""
    config = settings or ApiSettings.from_env()
    app = FastAPI(
        title="Heron",
        version="0.1.0",
        summary="Durable workflows as plain async Python: start, signal and inspect runs.",
        responses=_ERRORS,
        docs_url=None,  # /docs is our own page (heron.functions.dashboard): no CDN
        redoc_url=None,
    )
    app.router.route_class = _CheckedRoute
    app.state.runtime_source = runtime
    app.state.settings = config
    app.state.observed = weakref.WeakSet()
    app.add_middleware(BodyLimit)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    for kind, _, _ in _ENGINE_ERRORS:
        app.add_exception_handler(kind, _on_engine_error)
    app.add_exception_handler(Exception, _on_unexpected)
    secured = SECURED

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> Health:
        """The function is up (the store is not touched)."""
        return Health(status="ok")

    @app.post(
        "/workflows/{name}/runs",
        status_code=201,
        tags=["runs"],
        dependencies=secured,
        responses={
            200: {"model": RunSummary, "description": "That run exists already"},
            409: {"model": ErrorBody, "description": "The run id exists with another input"},
        },
    )
    async def start_run(
        name: NamePath,
        body: StartRun,
        rt: Rt,
        request: Request,
        response: Response,
    ) -> RunSummary:
        """Start a run of workflow ``name``."""
        created: set[str] = set()
        token = _created.set(created)
        try:
            with _about("body.input"):
                run_id = await rt.start(name, body.input, run_id=body.run_id, tags=body.tags)
        finally:
            _created.reset(token)
        response.status_code = 201 if run_id in created else 200
        response.headers["Location"] = run_path(request.scope.get("root_path", ""), run_id)
        return _summary(await rt.get(run_id))

    @app.get("/runs", tags=["runs"], dependencies=secured)
    async def list_runs(
        rt: Rt,
        workflow: Annotated[str | None, Query(max_length=200)] = None,
        status: RunStatusName | None = None,
        tag: Annotated[str | None, Query(max_length=100)] = None,
        parent_id: Annotated[str | None, Query(max_length=200)] = None,
        created_after: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        created_before: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> RunList:
        """Runs, newest first, a page at a time."""
        if cursor is not None:
            try:
                created_at, _ = decode_cursor(cursor)
                if not math.isfinite(created_at):
                    raise ValueError(cursor)
            except ValueError:
                raise ApiError(
                    400, "InvalidCursor", "cursor is not one this API returned", field="cursor"
                ) from None
        query = RunQuery(
            workflow=workflow,
            status=status,
            tag=tag,
            parent_id=parent_id,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
        )
        runs, next_cursor = await rt.list_runs(query)
        return RunList(runs=[_summary(run) for run in runs], next_cursor=next_cursor)

    @app.get("/runs/{run_id}", tags=["runs"], dependencies=secured, response_model=RunDetail)
    async def get_run(run_id: RunIdPath, rt: Rt) -> Response:
        """A run: status, input, output, error, and ``steps``, its timeline."""
        info = await rt.get(run_id)
        try:
            body = _detail(info).model_dump_json()
        except PydanticSerializationError:  # a value nested too deep: show the rest
            body = _readable_detail(info).model_dump_json()
        return Response(body, media_type="application/json")

    @app.post(
        "/runs/{run_id}/signals/{name}",
        status_code=202,
        tags=["runs"],
        dependencies=secured,
        responses={409: {"model": ErrorBody, "description": "The run has ended"}},
    )
    async def send_signal(
        run_id: RunIdPath,
        name: SignalNamePath,
        rt: Rt,
        body: SendSignal | None = None,
    ) -> SignalSent:
        """Send signal ``name``; buffered until the run waits for it."""
        info = await rt.get(run_id)
        if info.terminal:
            raise ApiError(
                409,
                "RunEnded",
                f"run {run_id!r} is {info.status}; it takes no more signals",
                field="run_id",
            )
        body = body or SendSignal()
        with _about("body.payload"):
            signal_id = await rt.signal(run_id, name, body.payload, signal_id=body.signal_id)
        return SignalSent(run_id=run_id, name=name, signal_id=signal_id)

    @app.post(
        "/runs/{run_id}/cancel",
        tags=["runs"],
        dependencies=secured,
        responses={409: {"model": ErrorBody, "description": "The run completed or failed"}},
    )
    async def cancel_run(run_id: RunIdPath, rt: Rt, body: CancelRun | None = None) -> RunSummary:
        """Cancel a run (and its active children). Cancelling a cancelled run changes nothing."""
        info = await rt.get(run_id)
        if info.status in ("completed", "failed"):
            raise ApiError(
                409,
                "RunEnded",
                f"run {run_id!r} is {info.status}; it cannot be cancelled",
                field="run_id",
            )
        await rt.cancel(run_id, (body or CancelRun()).reason)
        return _summary(await rt.get(run_id))

    @app.post(
        "/runs/{run_id}/retry",
        tags=["runs"],
        dependencies=secured,
        responses={409: {"model": ErrorBody, "description": "The run is not failed or cancelled"}},
    )
    async def retry_run(run_id: RunIdPath, rt: Rt, body: RetryRun | None = None) -> RunSummary:
        """Run a failed or cancelled run again: the failed step runs again with the history
        before it kept (or, with ``from_seq``, everything from that seq reruns)."""
        await rt.retry(run_id, from_seq=(body or RetryRun()).from_seq)
        return _summary(await rt.get(run_id))

    @app.delete(
        "/runs/{run_id}",
        status_code=204,
        tags=["runs"],
        dependencies=secured,
        responses={404: {"model": ErrorBody, "description": "No such run"}},
    )
    async def delete_run(run_id: RunIdPath, rt: Rt) -> Response:
        """Delete a run, its history and its buffered signals (for operators: a run that should
        never have been stored). A run in progress is deleted too; its executor's next write
        fails and it stops. The run's children are left alone."""
        if await rt.store.load(run_id) is None:
            raise RunNotFound(run_id)
        await rt.delete(run_id)
        return Response(status_code=204)

    # The dashboard and /docs: pages from the package's templates (jinja2 is imported on the
    # first page rendered; the worker functions never import any of it).
    if dashboard:
        from heron.functions.dashboard import add_dashboard, add_docs

        add_dashboard(app)
        add_docs(app)

    return app


#: The app over the Lambda container's runtime (``HERON_APP``), configured from the environment.
app = create_app()
