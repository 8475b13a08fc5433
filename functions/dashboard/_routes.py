"""The dashboard's routes: server-rendered pages over the same engine calls as the JSON API.

::

    GET  /dashboard                          runs: filters, search by id, counts, paging
    GET  /dashboard/runs/{id}                a run: header, waits, timeline, values, actions
    POST /dashboard/runs/{id}/cancel         cancel  (reason)            ─┐ a form with the
    POST /dashboard/runs/{id}/retry          retry   (from_seq)           ├ session's CSRF token,
    POST /dashboard/runs/{id}/signal         signal  (name, JSON payload) ─┘ confirmed, then 303
    GET  /dashboard/sign-in, POST            token mode: type the token once, get a session
    POST /dashboard/sign-out                 end the session (this browser's copy)
    GET  /dashboard/static/{name}            the CSS and the script, from the package

Who gets in follows the API's :class:`~heron.functions.asgi.ApiSettings`: open mode lets
everyone in; with a token, a signed session cookie (:mod:`._session`) or the bearer token
itself; IAM without a token gets a page saying how to reach the dashboard (a browser cannot
sign requests); no auth configured gets a page saying the API is closed. The session cookie
counts here only: the JSON API's ``authorize`` reads nothing but the bearer token and IAM.

Every action is a POST carrying the session's CSRF token, from a page of this origin
(``Origin`` and ``Sec-Fetch-Site`` are checked when the browser sends them), and confirmed
(a script asks, or the server shows a confirmation page when no script ran). A refused action
shows the page again with the engine's reason and the form as it was typed; a done one
redirects back (POST/redirect/GET) with a one-shot message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from heron.functions.dashboard._render import Urls, render, static_file
from heron.functions.dashboard._session import (
    FLASH_COOKIE,
    FLASH_LIFETIME,
    SESSION_COOKIE,
    SESSION_LIFETIME,
    Flash,
    Session,
    SessionKey,
    same_token,
)
from heron.functions.dashboard._timeline import timeline
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
    check_run_id,
    check_signal_name,
)
from heron.stores import MissingExtra
from heron.stores.contract import RunQuery, RunSummary, decode_cursor

if TYPE_CHECKING:
    from fastapi import FastAPI

    from heron.functions.asgi import ApiSettings

__all__ = ["SECURITY_HEADERS", "add_dashboard", "guarded"]

log = logging.getLogger("heron.dashboard")

STATUSES = ("pending", "running", "sleeping", "waiting", "completed", "failed", "cancelled")
#: Counts per status stop here ("100+"): each is one listing of at most this many + 1 runs.
COUNT_LIMIT = 100
PAGE_SIZES = (20, 50, 100, 200)
#: Seconds between refreshes of a live page (the script asks; it can be paused).
REFRESH_SECONDS = 5
#: Children listed on a run's page (the rest: filter the runs list by parent).
CHILDREN_SHOWN = 100
MAX_REASON = 500
#: A number in a form or a query: ASCII digits only (``str.isdigit`` takes ``²`` and ``٣``).
_DIGITS = re.compile(r"[0-9]+")

#: Sent with every page. No inline script or style may run (templates have none), nothing
#: loads from elsewhere, no other site may frame a page, and forms post only here.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # "same-origin", not "no-referrer": with no-referrer a browser sends `Origin: null` on
    # our own form posts, which the origin check below would refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# -- who is visiting ---------------------------------------------------------------------------


def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def _mode(settings: ApiSettings) -> str:
    """``open``, ``token``, ``iam`` (no token: a browser cannot get in) or ``closed``, in the
    order :func:`heron.functions.asgi.authorize` tries them."""
    if settings.open:
        return "open"
    if settings.token:
        return "token"
    return "iam" if settings.iam else "closed"


def _key(request: Request) -> SessionKey:
    settings = _settings(request)
    if settings.token:
        return SessionKey.for_token(settings.token)
    key: SessionKey | None = request.app.state.dashboard_key
    if key is None:  # made on first use, not when the app is: no randomness at import time
        key = request.app.state.dashboard_key = SessionKey.random()
    return key


def _root(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


@dataclass
class Visit:
    """One request's view of the dashboard: its URLs, its session, the message to show."""

    request: Request
    mode: str
    urls: Urls
    key: SessionKey
    session: Session
    new_cookie: str | None = None  # a session made for this request, to set
    flash: Flash | None = None
    clear_flash: bool = False
    now: float = field(default_factory=time.time)

    def page(self, template: str, status: int = 200, **context: Any) -> Response:
        body = render(
            template,
            u=self.urls,
            mode=self.mode,
            session=self.session,
            flash=self.flash,
            **context,
        )
        response = HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
        if self.new_cookie:
            _set_session(response, self.request, self.new_cookie)
        if self.clear_flash:
            _delete(response, self.request, FLASH_COOKIE)
        return response

    def redirect(self, url: str, flash: Flash | None = None) -> Response:
        response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
        if self.new_cookie:
            _set_session(response, self.request, self.new_cookie)
        if flash is not None:
            _cookie(
                response,
                self.request,
                FLASH_COOKIE,
                self.key.flash(flash.kind, flash.text),
                FLASH_LIFETIME,
            )
        return response


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    """A cookie for the dashboard's pages only: scripts cannot read it, other sites' requests
    do not carry it, plain HTTP does not carry it when the page came over HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=f"{_root(request)}/dashboard",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def _set_session(response: Response, request: Request, value: str) -> None:
    _cookie(response, request, SESSION_COOKIE, value, SESSION_LIFETIME)


def _delete(response: Response, request: Request, name: str) -> None:
    _cookie(response, request, name, "", 0)


def _bearer(request: Request, token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (a script, ``curl``: a
    browser never adds it on its own, so it cannot be forged from another site)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and same_token(given.strip(), token)


def _plain_page(request: Request, template: str, status: int, **context: Any) -> Response:
    """A page for someone without a session (sign-in, a refusal)."""
    urls, mode = Urls(_root(request)), _mode(_settings(request))
    body = render(template, u=urls, mode=mode, session=None, flash=None, **context)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def _message(request: Request, status: int, title: str, text: str, **extra: Any) -> Response:
    return _plain_page(request, "message.html", status, title=title, text=text, **extra)


def _locked_out(request: Request) -> Response | None:
    """The page for a mode no browser can use (IAM without a token, no auth at all)."""
    mode = _mode(_settings(request))
    if mode == "iam":
        return _plain_page(request, "unreachable.html", 403)
    if mode == "closed":
        return _message(
            request,
            403,
            "The API is closed",
            "No way in is configured: set HERON_API_TOKEN (token sign-in) or HERON_API_AUTH=iam, "
            "or HERON_API_OPEN=1 for local development only.",
        )
    return None


def _cross_site(request: Request) -> str | None:
    """Why a POST does not come from one of our own pages, or ``None``: ``Sec-Fetch-Site`` and
    ``Origin`` are checked when the browser sends them (all current browsers do)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"the form was sent from another site (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        # Compare hosts, not schemes: behind a proxy that ends TLS the app sees http.
        if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
            return f"the form was sent from another origin ({origin})"
    return None


async def _enter(request: Request) -> Visit | Response:
    """The visit of a page request, or the response that replaces the page: sign in (token
    mode, no session), or a page saying how to get in."""
    locked = _locked_out(request)
    if locked is not None:
        return locked
    settings, key, now = _settings(request), _key(request), time.time()
    mode = _mode(settings)
    urls = Urls(_root(request))
    session = key.verify(request.cookies.get(SESSION_COOKIE), now)
    new_cookie = None
    if session is None:
        if mode == "token" and not _bearer(request, settings.token or ""):
            return _to_sign_in(request, urls)
        new_cookie, session = key.new(now)
    visit = Visit(request, mode, urls, key, session, new_cookie, now=now)
    if FLASH_COOKIE in request.cookies:
        visit.flash = key.read_flash(request.cookies[FLASH_COOKIE])
        visit.clear_flash = True
    return visit


def _here(request: Request) -> str:
    """The request's own URL path and query, ids percent-encoded again."""
    path = quote(request.scope["path"], safe="/")
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def _to_sign_in(request: Request, urls: Urls) -> Response:
    target = _safe_next(_here(request), urls)
    if request.headers.get("sec-fetch-site") == "cross-site":
        # A link followed from another site (a chat, an e-mail): the browser held back the
        # SameSite=Strict cookie. Going again from our own page sends it, if there is one.
        return _plain_page(request, "bounce.html", 200, target=target)
    return RedirectResponse(
        f"{urls.sign_in}?{_query(next=target)}",
        status_code=303,
        headers={"Cache-Control": "no-store"},
    )


async def _act(request: Request) -> tuple[Visit, dict[str, str]] | Response:
    """The visit and form of an action (a POST): signed in, same origin, the CSRF token."""
    locked = _locked_out(request)
    if locked is not None:
        return locked
    key, now = _key(request), time.time()
    mode = _mode(_settings(request))
    urls = Urls(_root(request))
    form = await _form(request)
    if isinstance(form, Response):
        return form
    session = key.verify(request.cookies.get(SESSION_COOKIE), now)
    if session is None:
        if mode == "token":
            return _message(
                request,
                401,
                "Signed out",
                "Your session has ended (it lasts 12 hours, and a new API token ends it): sign "
                "in again, then repeat what you were doing.",
                link=(f"{urls.sign_in}?{_query(next=_back(request, urls))}", "Sign in"),
            )
        return _message(
            request,
            403,
            "This form has expired",
            "The page it came from is too old (the server restarted since). Go back, reload "
            "the page and try again.",
            link=(_back(request, urls), "Back"),
        )
    cross = _cross_site(request)
    if cross is not None or not key.check_csrf(session, form.get("csrf")):
        return _message(
            request,
            403,
            "Refused: this form could not be verified",
            (cross or "its security token is missing or wrong")
            + ". Nothing was changed. Go back, reload the page and try again.",
            link=(_back(request, urls), "Back"),
        )
    return Visit(request, mode, urls, key, session, now=now), form


def _back(request: Request, urls: Urls) -> str:
    """The page an action belongs to (its run), to return to."""
    run_id = request.path_params.get("run_id")
    return urls.run(run_id) if isinstance(run_id, str) else urls.home


async def _form(request: Request) -> dict[str, str] | Response:
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return _message(request, 415, "Not a form", "Send the form as a browser does.")
    body = await request.body()
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=20, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        return _message(request, 400, "Not a form", "The form could not be read.")
    return dict(pairs)


def _query(**params: str) -> str:
    return urlencode(params)


def _safe_next(value: str | None, urls: Urls) -> str:
    """Where to go after signing in: a page of the dashboard, never another site, never out
    of the dashboard (also not by percent-encoded dot segments: ``%2e%2e``, encoded twice)."""
    home = urls.home
    decoded = value or ""
    for _ in range(3):
        decoded = unquote(decoded)
    if (
        value
        and "/." not in decoded
        and "\\" not in decoded
        and value.isascii()
        and value.isprintable()
        and "\\" not in value
        and "//" not in value
        and "/." not in value  # no dot segments: /dashboard/../runs is the JSON API
        and (value == home or value.startswith((home + "/", home + "?")))
    ):
        return value
    return home


# -- guarding ------------------------------------------------------------------------------------

Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(endpoint: Endpoint) -> Endpoint:
    """Answers a failure with a page instead of the API's JSON: a store outage (503), a body
    over the limit (its status), anything else (500, logged)."""

    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except MissingExtra as exc:  # no templates without jinja2: say so, in plain text
            log.error("%s", exc)
            return PlainTextResponse(str(exc), status_code=500)
        except HTTPException as exc:
            return _message(request, exc.status_code, "Refused", str(exc.detail))
        except StoreError as exc:
            log.error("store error: %s", exc, extra={"run_id": getattr(exc, "run_id", None)})
            return _message(request, 503, "The store failed", "Try again in a moment.")
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.url.path)
            return _message(request, 500, "Something went wrong", "The server logged it.")

    answer.__name__ = endpoint.__name__
    answer.__doc__ = endpoint.__doc__
    return answer


def _runtime(request: Request) -> Runtime:
    # asgi imports this package while it builds the app: import it back only when serving.
    from heron.functions.asgi import runtime_of

    return runtime_of(request)


# -- the runs list -------------------------------------------------------------------------------


@dataclass
class Filters:
    """The runs list's filters as typed (to fill the form again) and as a query."""

    workflow: str = ""
    status: str = ""
    tag: str = ""
    parent: str = ""
    after: str = ""
    before: str = ""
    limit: int = 50
    cursor: str = ""
    problems: list[str] = field(default_factory=list)
    after_ts: float | None = None
    before_ts: float | None = None

    def params(self, **changes: Any) -> dict[str, Any]:
        """The query string of the list with these filters (and ``changes``)."""
        params: dict[str, Any] = {
            "workflow": self.workflow,
            "status": self.status,
            "tag": self.tag,
            "parent": self.parent,
            "after": self.after,
            "before": self.before,
            "limit": self.limit if self.limit != 50 else None,
        }
        params.update(changes)
        return params

    def query(self) -> RunQuery:
        """The page these filters show."""
        return self.count_query(self.status or None, self.limit, self.cursor or None)

    def count_query(self, status: str | None, limit: int, cursor: str | None = None) -> RunQuery:
        """These filters with ``status`` in place of their own (``None``: any)."""
        return RunQuery(
            workflow=self.workflow or None,
            status=status,
            tag=self.tag or None,
            parent_id=self.parent or None,
            created_after=self.after_ts,
            created_before=self.before_ts,
            limit=limit,
            cursor=cursor,
        )

    @property
    def active(self) -> bool:
        return any((self.workflow, self.status, self.tag, self.parent, self.after, self.before))


def _text(params: Mapping[str, str], name: str, limit: int, problems: list[str]) -> str:
    value = params.get(name, "").strip()
    if len(value) > limit:
        problems.append(f"{name}: at most {limit} characters")
        return ""
    if not value.isprintable():
        problems.append(f"{name}: may not contain control characters")
        return ""
    return value


def parse_time(text: str) -> dt.datetime:
    """``2026-01-05``, ``2026-01-05T14:03`` (UTC unless an offset is given: ``+02:00``,
    ``Z``), or epoch seconds. Raises ``ValueError`` (or ``OverflowError``)."""
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(text)
        return dt.datetime.fromtimestamp(number, dt.UTC)
    moment = dt.datetime.fromisoformat(text.replace(" ", "T", 1))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _filters(params: Mapping[str, str]) -> Filters:
    problems: list[str] = []
    found = Filters(
        workflow=_text(params, "workflow", 200, problems),
        tag=_text(params, "tag", 100, problems),
        parent=_text(params, "parent", 200, problems),
        problems=problems,
    )
    status = params.get("status", "")
    if status and status not in STATUSES:
        problems.append(f"status: one of {', '.join(STATUSES)}")
    else:
        found.status = status
    for name in ("after", "before"):
        text = _text(params, name, 40, problems)
        if text:
            try:
                moment = parse_time(text)
            except (ValueError, OverflowError, OSError):
                problems.append(f"created {name}: not a date and time: {text!r} (2026-01-05T14:03)")
                continue
            # the form's datetime-local input shows this shape, in UTC as its label says
            setattr(found, name, moment.strftime("%Y-%m-%dT%H:%M:%S"))
            setattr(found, f"{name}_ts", moment.timestamp())
    raw_limit = params.get("limit", "")
    if raw_limit:
        if _DIGITS.fullmatch(raw_limit) and 1 <= int(raw_limit) <= 200:
            found.limit = int(raw_limit)
        else:
            problems.append("limit: a number from 1 to 200")
    cursor = params.get("cursor", "")
    if cursor:
        try:
            created_at, _ = decode_cursor(cursor)
            if len(cursor) > 1000 or not math.isfinite(created_at):
                raise ValueError(cursor)
            found.cursor = cursor
        except ValueError:
            problems.append("this page link is not one the dashboard made: showing the first page")
    return found


async def _count(rt: Runtime, filters: Filters, status: str | None) -> int:
    runs, _ = await rt.list_runs(filters.count_query(status, COUNT_LIMIT + 1))
    return len(runs)


@guarded
async def runs_page(request: Request) -> Response:
    """The runs list."""
    visit = await _enter(request)
    if isinstance(visit, Response):
        return visit
    rt = _runtime(request)
    params = request.query_params
    filters = _filters(params)
    notice = None
    search = params.get("id", "").strip()
    if search:
        try:
            check_run_id(search)
            await rt.get(search)
            return visit.redirect(visit.urls.run(search))
        except ValueError as exc:
            filters.problems.append(f"not a run id: {exc}")
        except RunNotFound:
            notice = search
    try:
        runs, next_cursor = await rt.list_runs(filters.query())
    except ValueError:  # a cursor the store does not take (another backend's): start over
        filters.problems.append("this page link is not one the dashboard made: the first page")
        filters.cursor = ""
        runs, next_cursor = await rt.list_runs(filters.query())
    counts = await asyncio.gather(
        _count(rt, filters, None), *(_count(rt, filters, s) for s in STATUSES)
    )
    return visit.page(
        "runs.html",
        status=400 if filters.problems else 200,
        runs=runs,
        next_cursor=next_cursor,
        filters=filters,
        statuses=STATUSES,
        counts=dict(zip(("", *STATUSES), counts, strict=True)),
        count_limit=COUNT_LIMIT,
        page_sizes=PAGE_SIZES,
        workflows=sorted(rt.registry.workflow_names),
        search=search,
        not_found=notice,
        now=rt.clock.now(),
        refresh=REFRESH_SECONDS,
    )


# -- a run ---------------------------------------------------------------------------------------


@dataclass
class Attempt:
    """What an action's form held, and why it was refused: shown again with the run."""

    action: str
    fields: dict[str, str]
    problem: str


async def _show_run(
    visit: Visit, rt: Runtime, run_id: str, *, status: int = 200, attempt: Attempt | None = None
) -> Response:
    try:
        check_run_id(run_id)
        info = await rt.get(run_id)
    except (ValueError, RunNotFound):
        return visit.page(
            "message.html",
            404,
            title="No such run",
            text=f"No run has the id {run_id!r}.",
            link=(visit.urls.home, "All runs"),
        )
    children, more = await _children(rt, info)
    now = rt.clock.now()
    drawn = timeline(info, now)
    waited = [w.name.split("|")[0] for w in info.waiting_for if w.kind == "signal"]
    return visit.page(
        "run.html",
        status=status,
        run=info,
        children=children,
        more_children=more,
        timeline=drawn,
        child_ids={bar.seq: bar.child for bar in drawn.bars if bar.child and bar.recorded},
        suggested_signal=waited[0] if waited else "",
        now=now,
        attempt=attempt,
        refresh=REFRESH_SECONDS if not info.terminal else None,
        seqs=[cp.seq for cp in info.steps if cp.seq >= 0],
    )


async def _children(rt: Runtime, info: RunInfo) -> tuple[list[RunSummary | str], bool]:
    """The run's children, newest first, as summaries (an id alone for one not listed)."""
    listed, next_cursor = await rt.list_runs(RunQuery(parent_id=info.id, limit=CHILDREN_SHOWN))
    seen = {child.id for child in listed}
    room = max(0, CHILDREN_SHOWN - len(listed))  # ids alone for those the list did not hold
    unlisted = [c for c in info.children if c not in seen]
    rest: list[RunSummary | str] = list(unlisted[:room])
    return [*listed, *rest], next_cursor is not None or len(unlisted) > room


@guarded
async def run_page(request: Request) -> Response:
    """One run."""
    visit = await _enter(request)
    if isinstance(visit, Response):
        return visit
    return await _show_run(visit, _runtime(request), request.path_params["run_id"])


# -- actions -------------------------------------------------------------------------------------

#: What each action's confirmation asks.
_CONFIRM = {
    "cancel": "Cancel run {id}? It stops at its next step and its active children are cancelled.",
    "retry": "Retry run {id}? It runs again from the failed step (or the seq you chose).",
    "signal": "Send signal {name} to run {id}?",
}


async def _action(
    request: Request,
    action: str,
    fields: tuple[str, ...],
    do: Callable[[Runtime, str, dict[str, str]], Awaitable[str]],
) -> Response:
    checked = await _act(request)
    if isinstance(checked, Response):
        return checked
    visit, form = checked
    rt = _runtime(request)
    run_id: str = request.path_params["run_id"]
    kept = {name: form.get(name, "") for name in fields}
    try:
        check_run_id(run_id)
    except ValueError:
        return await _show_run(visit, rt, run_id)  # the page for no such run
    if form.get("confirmed") != "yes":
        question = _CONFIRM[action].format(id=repr(run_id), name=repr(kept.get("name", "")))
        return visit.page(
            "confirm.html", action=action, run_id=run_id, fields=kept, question=question
        )
    try:
        done = await do(rt, run_id, kept)
    except Refused as exc:
        attempt = Attempt(action, kept, exc.message)
        return await _show_run(visit, rt, run_id, status=exc.status, attempt=attempt)
    except RunNotFound:
        attempt = Attempt(action, kept, f"no run has the id {run_id!r}")
        return await _show_run(visit, rt, run_id, status=404, attempt=attempt)
    return visit.redirect(visit.urls.run(run_id), Flash("ok", done))


class Refused(Exception):
    """An action the engine (or the form) refused: ``status`` as the API would answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _refusals(exc: Exception) -> Refused:
    """The API's answer to an engine error, as a message for the page."""
    if isinstance(exc, TooManySignals | Conflict):
        return Refused(409, str(exc))
    if isinstance(exc, PayloadTooLarge):
        return Refused(413, str(exc))
    if isinstance(exc, SerializationError | ValueError):
        return Refused(422, str(exc))
    raise exc


async def _cancel(rt: Runtime, run_id: str, form: dict[str, str]) -> str:
    reason = form["reason"].strip() or "cancelled from the dashboard"
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise Refused(422, f"reason: at most {MAX_REASON} printable characters")
    info = await rt.get(run_id)
    if info.status in ("completed", "failed"):
        raise Refused(409, f"run {run_id!r} is {info.status}; it cannot be cancelled")
    if info.status == "cancelled":
        return "The run was cancelled already."
    await rt.cancel(run_id, reason)
    after = await rt.get(run_id)
    if after.status != "cancelled":  # it ended between the check and the cancel
        raise Refused(409, f"run {run_id!r} is {after.status}; it cannot be cancelled")
    return "Run cancelled."


async def _retry(rt: Runtime, run_id: str, form: dict[str, str]) -> str:
    raw = form["from_seq"].strip()
    from_seq = None
    if raw:
        if not _DIGITS.fullmatch(raw) or len(raw) > 9:
            raise Refused(422, f"from seq: a number 0 or more, not {raw!r}")
        from_seq = int(raw)
    try:
        await rt.retry(run_id, from_seq=from_seq)
    except (Conflict, ValueError) as exc:
        raise _refusals(exc) from None
    if from_seq is None:
        return "Run retried: it carries on from where it failed or stopped."
    return f"Run retried from seq {from_seq}."


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (only finite numbers are)")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999: JSON's grammar takes it, no store can keep it
        raise ValueError(f"{text} is too large: it would be Infinity, which is not JSON")
    return number


async def _signal(rt: Runtime, run_id: str, form: dict[str, str]) -> str:
    from heron.functions.asgi import too_deep

    name = form["name"].strip()
    try:
        check_signal_name(name)
    except ValueError as exc:
        raise Refused(422, f"signal name: {exc}") from None
    signal_id = form["signal_id"].strip() or None
    if signal_id is not None:
        try:
            check_run_id(signal_id, what="signal id")
        except ValueError as exc:
            raise Refused(422, str(exc)) from None
    text = form["payload"].strip()
    payload: Any = None
    if text:
        # Depth first, on the text, as the API does: the parser must never see a value nested
        # deeper than any run may hold (docs/security.md).
        if too_deep(b'{"payload":' + text.encode("utf-8", "surrogatepass") + b"}", MAX_DEPTH):
            raise Refused(422, f"payload: nested more than {MAX_DEPTH} levels deep")
        try:
            payload = json.loads(text, parse_constant=_no_constants, parse_float=_finite)
        except json.JSONDecodeError as exc:
            raise Refused(
                400, f"payload: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
            ) from None
        except ValueError as exc:
            raise Refused(422, f"payload: {exc}") from None
    info = await rt.get(run_id)
    if info.terminal:
        raise Refused(409, f"run {run_id!r} is {info.status}; it takes no more signals")
    try:
        sent = await rt.signal(run_id, name, payload, signal_id=signal_id)
    except (TooManySignals, PayloadTooLarge, SerializationError, ValueError) as exc:
        raise _refusals(exc) from None
    return f"Signal {name!r} sent (id {sent})."


@guarded
async def cancel_run(request: Request) -> Response:
    return await _action(request, "cancel", ("reason",), _cancel)


@guarded
async def retry_run(request: Request) -> Response:
    return await _action(request, "retry", ("from_seq",), _retry)


@guarded
async def signal_run(request: Request) -> Response:
    return await _action(request, "signal", ("name", "payload", "signal_id"), _signal)


# -- signing in and out --------------------------------------------------------------------------


@guarded
async def sign_in_page(request: Request) -> Response:
    locked = _locked_out(request)
    if locked is not None:
        return locked
    settings, urls = _settings(request), Urls(_root(request))
    target = _safe_next(request.query_params.get("next"), urls)
    if _mode(settings) != "token":
        return RedirectResponse(target, status_code=303)
    if _key(request).verify(request.cookies.get(SESSION_COOKIE), time.time()) is not None:
        return RedirectResponse(target, status_code=303)
    return _plain_page(request, "sign_in.html", 200, target=target, problem=None)


@guarded
async def sign_in(request: Request) -> Response:
    """Check the token once; on success a session cookie that does not contain it."""
    locked = _locked_out(request)
    if locked is not None:
        return locked
    settings, urls = _settings(request), Urls(_root(request))
    if _mode(settings) != "token":
        return RedirectResponse(urls.home, status_code=303)
    form = await _form(request)
    if isinstance(form, Response):
        return form
    target = _safe_next(form.get("next"), urls)
    cross = _cross_site(request)
    if cross is not None:
        return _plain_page(request, "sign_in.html", 403, target=target, problem=cross)
    if not same_token(form.get("token", ""), settings.token or ""):
        return _plain_page(
            request,
            "sign_in.html",
            401,
            target=target,
            problem="That is not this API's token.",
        )
    cookie, _ = _key(request).new(time.time())
    response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
    _set_session(response, request, cookie)
    return response


@guarded
async def sign_out(request: Request) -> Response:
    checked = await _act(request)
    if isinstance(checked, Response):
        return checked
    visit, _ = checked
    target = visit.urls.sign_in if visit.mode == "token" else visit.urls.home
    response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
    _delete(response, request, SESSION_COOKIE)
    return response


# -- static files --------------------------------------------------------------------------------


async def static(request: Request) -> Response:
    """The stylesheet and the script (no data: served to anyone, as the sign-in page needs)."""
    found = static_file(request.path_params["name"])
    if found is None:
        return Response("not found", status_code=404, media_type="text/plain")
    fresh = request.query_params.get("v") == found.version
    return Response(
        found.body,
        media_type=found.content_type,
        headers={
            "Cache-Control": "public, max-age=31536000, immutable" if fresh else "no-cache",
            "ETag": f'"{found.version}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


def add_dashboard(app: FastAPI) -> None:
    """Add the dashboard's routes to ``app`` (they stay out of the OpenAPI document). Nothing
    random is drawn here (an edge platform snapshots the module state of import time)."""
    app.state.dashboard_key = None
    for path, endpoint, methods in [
        ("/dashboard", runs_page, ["GET"]),
        ("/dashboard/runs/{run_id}", run_page, ["GET"]),
        ("/dashboard/runs/{run_id}/cancel", cancel_run, ["POST"]),
        ("/dashboard/runs/{run_id}/retry", retry_run, ["POST"]),
        ("/dashboard/runs/{run_id}/signal", signal_run, ["POST"]),
        ("/dashboard/sign-in", sign_in_page, ["GET"]),
        ("/dashboard/sign-in", sign_in, ["POST"]),
        ("/dashboard/sign-out", sign_out, ["POST"]),
        ("/dashboard/static/{name}", static, ["GET"]),
    ]:
        app.add_route(path, endpoint, methods=methods, include_in_schema=False)
