"""``heron``: start, signal, list, inspect, cancel, retry and sweep runs from a terminal.

::

    heron demo                                  the example order, start to finish, in seconds
    heron start order '{"id": "o-1", ...}'      start a run (and drive it in process)
    heron signal o-1 approved '{"by": "ops"}'   send a signal
    heron ls --status waiting                   list runs
    heron inspect o-1                           a run's header and its timeline
    heron cancel o-1 | heron retry o-1          stop a run | give a failed one another go
    heron delete o-1                            delete a run and its history
    heron sweep [--watch]                       resume every run that is due
    heron dev                                   the HTTP API, dashboard and sweep, locally
    heron schema ensure                         create the store's tables

The workflows come from ``--app``/``HERON_APP`` (``module:attribute``, default
``heron.functions.demo:rt``), the store from ``--store``/``HERON_STORE`` (default
``sqlite:///.heron/heron.db``). With the runtime's default in-process dispatcher, a command that
makes a run due (``start``, ``signal``, ``retry``, ``sweep``) also runs it, here, until it
suspends or ends. Bad input prints one red line and exits with status 2.

Only this module imports typer and rich: the Lambda handlers never import it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from heron.functions._app import DEFAULT_APP, AppNotFound, load_runtime, resolve_spec
from heron.functions._config import Config, StorePinned, configure
from heron.functions._shapes import run_detail, run_summary
from heron.functions._terminal import (
    abbrev,
    clean,
    clean_json,
    console,
    error_text,
    escape,
    header,
    run_lines,
    status_line,
    timeline,
)
from heron.runtime import (
    Conflict,
    HeronError,
    InProcessDispatcher,
    RunInfo,
    RunNotFound,
    Runtime,
    SerializationError,
    WorkflowNotFound,
)
from heron.stores import MissingExtra
from heron.stores.contract import Checkpoint, RunQuery, RunStatus, RunSummary

__all__ = ["app", "main"]

T = TypeVar("T")

#: Runs ``heron ls`` shows at most on one page (as ``GET /runs``).
MAX_PAGE = 200
#: Exit status for bad input: unknown run or workflow, invalid JSON, a bad option value.
EXIT_USAGE = 2
#: Exit status for anything else that went wrong (a store error, a failed run).
EXIT_FAILURE = 1

STATUSES: tuple[str, ...] = typing.get_args(RunStatus)
#: Errors that mean the user asked for something that does not exist or cannot be: exit 2.
_USAGE_ERRORS: tuple[type[BaseException], ...] = (
    AppNotFound,
    StorePinned,
    MissingExtra,
    Conflict,
    RunNotFound,
    WorkflowNotFound,
    SerializationError,
    ValueError,  # a bad store URL, run id or tag; PayloadTooLarge
)

DEMO_DB = ".heron/demo.db"
DEMO_ORDER: dict[str, Any] = {
    "id": "o-1001",
    "items": [
        {"sku": "heron-mug", "qty": 2},
        {"sku": "heron-tee", "qty": 1},
        {"sku": "sticker", "qty": 5},
    ],
    "total": 4700,
}

app = typer.Typer(
    name="heron",
    help="Durable workflows as plain async Python: start, inspect and drive runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",  # docstrings' line breaks are not kept in --help
)
schema_app = typer.Typer(help="Manage the store's schema.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")


@dataclass(frozen=True, slots=True)
class Settings:
    """The global options, handed to every command through ``typer.Context.obj``."""

    app: str | None = None
    store: str | None = None
    debug: bool = False


def main() -> None:
    """The ``heron`` console script."""
    app(prog_name="heron")


def _print_version(value: bool) -> None:
    if value:
        from heron import __version__

        typer.echo(f"heron {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app",
            envvar="HERON_APP",
            metavar="MODULE:ATTR",
            help="The Runtime holding your workflows (default: heron.functions.demo:rt).",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="HERON_STORE",
            metavar="URL",
            help="Store URL (default: sqlite:///.heron/heron.db).",
        ),
    ] = None,
    app_dir: Annotated[
        Path,
        typer.Option(
            "--app-dir",
            envvar="HERON_APP_DIR",
            metavar="DIR",
            help="Import the app from this folder (default: the current one).",
        ),
    ] = Path("."),
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks: of the app's import, of errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    _log_to_stderr()
    # As uvicorn does: modules in the app folder (the current one by default) can be apps.
    folder = str(app_dir.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    ctx.obj = Settings(app=app_spec, store=store, debug=debug)


#: Interfaces ``heron dev`` binds to that only this machine reaches, and the Host names that
#: requests to them carry.
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def _log_to_stderr(level: int = logging.ERROR) -> None:
    """Show the engine's errors on stderr (a resume that failed in the background, a 500 under
    ``heron dev``, which shows warnings too, such as a step's failed attempt): a library logs
    nowhere until its application says where. Error messages stay out unless the app's runtime
    has ``log_messages=True`` (docs/security.md)."""
    logger = logging.getLogger("heron")
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    handler.setLevel(level)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record comes (typer's CliRunner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(_clean_lines(self.format(record)) + "\n")
        except Exception:
            self.handleError(record)


def _clean_lines(text: str) -> str:
    return "\n".join(clean(line) for line in text.split("\n"))


# -- commands ----------------------------------------------------------------------------------


@app.command()
def start(
    ctx: typer.Context,
    workflow: Annotated[
        str, typer.Argument(metavar="WORKFLOW", help="The workflow's registered name.")
    ],
    input_json: Annotated[
        str | None, typer.Argument(metavar="INPUT_JSON", help="The run's input, as JSON.")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Choose the run id (idempotent).")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Tag the run (repeatable).")
    ] = None,
) -> None:
    """Start a run of WORKFLOW and print its id."""
    payload = _parse_json(input_json, "INPUT_JSON")

    async def body(rt: Runtime) -> RunInfo:
        new_id = await rt.start(workflow, payload, run_id=run_id, tags=tag or ())
        await _settle(rt)
        return await rt.get(new_id)

    info = _run(ctx, body)
    out = console()
    out.print(f"started run [bold]{escape(info.id)}[/] ({escape(info.workflow)} v{info.version})")
    out.print(status_line(info), soft_wrap=True)
    _exit_if_failed(info)


@app.command()
def signal(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to signal.")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The signal's name.")],
    payload_json: Annotated[
        str | None, typer.Argument(metavar="PAYLOAD_JSON", help="The payload, as JSON.")
    ] = None,
    signal_id: Annotated[
        str | None, typer.Option("--id", help="A signal id: sending it twice does nothing.")
    ] = None,
) -> None:
    """Send signal NAME to a run (buffered until the run waits for it)."""
    payload = _parse_json(payload_json, "PAYLOAD_JSON")

    async def body(rt: Runtime) -> RunInfo:
        before = await rt.get(run_id)
        if before.terminal:  # as the API answers 409 RunEnded
            raise RunEnded(f"run {run_id!r} is {before.status}; it takes no more signals")
        await rt.signal(run_id, name, payload, signal_id=signal_id)
        await _settle(rt)
        return await rt.get(run_id)

    info = _run(ctx, body)
    out = console()
    out.print(f"sent signal [bold]{escape(name)}[/] to run [bold]{escape(run_id)}[/]")
    out.print(status_line(info), soft_wrap=True)
    _exit_if_failed(info)


@app.command("ls")
def list_runs(
    ctx: typer.Context,
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Only this one.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", "-s", help=f"One of {', '.join(STATUSES)}.")
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Only runs with this tag.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=MAX_PAGE, help="At most this many.")
    ] = 20,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="The next page: what the last page printed.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {runs, next_cursor} as GET /runs does.")
    ] = False,
) -> None:
    """List runs, newest first, a page at a time."""
    if status is not None and status not in STATUSES:
        _fail(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    query = RunQuery(workflow=workflow, status=status, tag=tag, limit=limit, cursor=cursor)

    async def body(rt: Runtime) -> tuple[list[RunSummary], str | None]:
        return await rt.list_runs(query)

    runs, more = _run(ctx, body, no_store=lambda: ([], None))
    if as_json:
        page = {"runs": [run_summary(run) for run in runs], "next_cursor": more}
        typer.echo(clean_json(json.dumps(page, ensure_ascii=False, indent=2)))
        return
    out = console()
    if not runs:
        out.print("[dim]no runs[/]")
        return
    shown = run_lines(runs, time.time(), out.width)
    for line in shown if isinstance(shown, list) else [shown]:
        out.print(line, soft_wrap=True)
    if more:
        out.print(f"[dim]more: heron ls --cursor {escape(more)}[/]", soft_wrap=True)


@app.command()
def inspect(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to show.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run as GET /runs/{id} does.")
    ] = False,
) -> None:
    """Show a run: its header, then its timeline (one row per checkpoint, a bar for each)."""

    def not_found() -> tuple[RunInfo, list[RunSummary]]:
        _fail(f"run {run_id!r} not found")

    async def body(rt: Runtime) -> tuple[RunInfo, list[RunSummary]]:
        info = await rt.get(run_id)
        children, _ = await rt.list_runs(parent_id=run_id, limit=100)
        return info, children

    info, children = _run(ctx, body, no_store=not_found)
    if as_json:  # heron.testing's replay takes it as it is
        typer.echo(clean_json(json.dumps(run_detail(info), ensure_ascii=False, indent=2)))
        return
    out = console()
    out.print(header(info, children))
    out.print()
    out.print(timeline(info, out.width))


@app.command()
def cancel(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to cancel.")],
    reason: Annotated[str, typer.Option("--reason", help="Recorded as the run's error.")] = (
        "cancelled from the heron CLI"
    ),
) -> None:
    """Cancel a run and its active children."""

    async def body(rt: Runtime) -> tuple[str, RunInfo]:
        before = (await rt.get(run_id)).status
        await rt.cancel(run_id, reason)
        return before, await rt.get(run_id)

    before, info = _run(ctx, body)
    out = console()
    if before in ("completed", "failed", "cancelled"):
        out.print(f"run [bold]{escape(run_id)}[/] is already {before}; nothing to cancel")
    else:
        out.print(f"cancelled run [bold]{escape(run_id)}[/] (it was {before})")
    out.print(status_line(info), soft_wrap=True)


@app.command()
def retry(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="A failed or cancelled run.")],
    from_seq: Annotated[
        int | None,
        typer.Option("--from-seq", min=0, help="Rerun from this seq (drops it and all after)."),
    ] = None,
) -> None:
    """Run a failed or cancelled run again: the failed step runs again, the history before it
    is kept."""

    async def body(rt: Runtime) -> RunInfo:
        await rt.retry(run_id, from_seq=from_seq)
        await _settle(rt)
        return await rt.get(run_id)

    info = _run(ctx, body)
    out = console()
    out.print(f"retried run [bold]{escape(run_id)}[/]")
    out.print(status_line(info), soft_wrap=True)
    _exit_if_failed(info)


@app.command()
def delete(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
) -> None:
    """Delete a run, its history and its buffered signals, for good (its children stay)."""

    async def body(rt: Runtime) -> None:  # one _run: it closes the app's store when done
        if await rt.store.load(run_id) is None:
            _fail(f"run {run_id!r} not found")
        if not yes:
            try:
                sure = typer.confirm(f"delete run {clean(run_id)} and its history?")
            except typer.Abort:  # no terminal and nothing on stdin
                _fail("not deleted: no answer (pass --yes to delete without asking)")
            if not sure:
                _fail("not deleted")
        await rt.delete(run_id)

    _run(ctx, body)
    console().print(f"deleted run [bold]{escape(run_id)}[/]")


@app.command()
def sweep(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Runs per page.")] = 100,
    watch: Annotated[bool, typer.Option("--watch", help="Keep sweeping until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds between sweeps (--watch).")
    ] = 1.0,
) -> None:
    """Resume every run that is due (a timer fired, a signal came, a lease lapsed)."""
    out = console()

    async def once(rt: Runtime) -> int:
        due = await rt.store.due(rt.clock.now(), limit)
        count = await rt.sweep(limit)
        if isinstance(rt.dispatcher, InProcessDispatcher):
            await rt.dispatcher.drain()
            for run_id in due:
                try:
                    out.print(f"resumed: {status_line(await rt.get(run_id))}", soft_wrap=True)
                except RunNotFound:  # deleted meanwhile
                    continue
        elif count:
            out.print(f"dispatched {count} due run(s) through {type(rt.dispatcher).__name__}")
        return count

    async def body(rt: Runtime) -> int:
        total = await once(rt)
        while watch:
            await asyncio.sleep(interval)
            total += await once(rt)
        return total

    try:
        total = _run(ctx, body)
    except KeyboardInterrupt:
        out.print("[dim]stopped[/]")
        return
    if not total:
        out.print("[dim]nothing is due[/]")


@app.command()
def dev(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8000,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds between sweeps.")
    ] = 1.0,
) -> None:
    """Run the platform locally: the HTTP API and dashboard, a sweep loop, in-process resumes.

    Serves the same ASGI app as the Lambda API function (uvicorn), sweeps every INTERVAL
    seconds and resumes runs in this process, on the configured store (the embedded SQLite
    file by default). The API is open unless HERON_API_TOKEN is set.
    """
    _require_extra("api", "uvicorn", "fastapi", "mangum")
    import uvicorn

    from heron.functions.asgi import ApiSettings, create_app

    settings = ctx.ensure_object(Settings)
    _log_to_stderr(logging.WARNING)
    api = ApiSettings.from_env()
    if not api.token and not api.iam:
        api = ApiSettings(open=True, max_body=api.max_body)
    out = console()

    async def serve() -> None:
        rt = _open_runtime(settings)
        if not isinstance(rt.dispatcher, InProcessDispatcher):  # HERON_QUEUE_URL: not here
            rt.dispatcher = InProcessDispatcher(rt.resume)
        app = create_app(rt, api)
        if host in _LOOPBACK:
            # Only the names of this machine: a site whose DNS name is made to point at
            # 127.0.0.1 (DNS rebinding) must not get the open API and its pages.
            from starlette.middleware.trustedhost import TrustedHostMiddleware

            app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(_LOOPBACK_NAMES))
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        sweeper = asyncio.create_task(_sweep_forever(rt, interval))
        auth = "open (local development)" if api.open else "bearer token (HERON_API_TOKEN)"
        out.print(
            f"[bold]heron dev[/]: http://{host}:{port}  ·  dashboard /dashboard  ·  API docs "
            f"/docs  ·  auth {auth}  ·  sweep every {interval:g}s  ·  "
            f"store {escape(repr(rt.store))}",
            soft_wrap=True,
        )
        try:
            await server.serve()
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await rt.close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    except _USAGE_ERRORS as exc:
        _fail(str(exc))
    out.print("[dim]stopped[/]")


async def _sweep_forever(rt: Runtime, interval: float) -> None:
    """The local stand-in for the EventBridge schedule: wake what is due, every ``interval``."""
    while True:
        try:
            await rt.sweep()
        except Exception as exc:  # a store blip: report it, keep sweeping
            console(stderr=True).print(f"[red]sweep failed: {escape(str(exc))}[/]")
        await asyncio.sleep(interval)


@schema_app.command("ensure")
def schema_ensure(ctx: typer.Context) -> None:
    """Create the store's tables and indexes if they are missing."""

    async def body(rt: Runtime) -> str:
        await rt.store.ensure_schema()
        return repr(rt.store)

    store = _run(ctx, body)
    console().print(f"schema ready: {escape(store)}", soft_wrap=True)


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Where to write the project (made if missing).")
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="The stack's name (default: DIR's name).")
    ] = None,
    heron_requirement: Annotated[
        str | None,
        typer.Option(
            "--heron-requirement",
            metavar="REQUIREMENT",
            help="How the functions install Heron: a requirement line such as "
            "'heron[dynamodb,api] @ file:///path/to/heron-0.2.0-py3-none-any.whl' "
            "(default: where this Heron was installed from).",
        ),
    ] = None,
    cdk: Annotated[
        bool, typer.Option("--cdk", help="Also write infra/, the stack in CDK.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite files that are already there.")
    ] = False,
) -> None:
    """Write a new, deployable project of your own into DIR: an app module with a workflow,
    its tests, template.yaml, samconfig.toml and sample events."""
    from heron.functions._init import ProjectExists, init_project

    try:
        project = init_project(
            directory, name=name, requirement=heron_requirement, cdk=cdk, force=force
        )
    except (ProjectExists, ValueError) as exc:
        _fail(str(exc))
    out = console()
    where = escape(str(project.root))
    out.print(f"wrote a Heron project to [bold]{where}[/] ({len(project.files)} files)")
    out.print(f"Heron comes from: {escape(project.requirement)}", soft_wrap=True)
    out.print()
    out.print(f"  cd {where}")
    out.print("  python -m venv .venv && . .venv/bin/activate")
    out.print("  pip install -r src/requirements.txt pytest")
    out.print("  pytest")
    out.print("  HERON_APP=app:rt heron --app-dir src dev")
    out.print("  sam validate --lint && sam build && sam deploy --guided")


@app.command()
def demo(
    db: Annotated[
        Path, typer.Option("--db", help="SQLite file for the demo (deleted first).")
    ] = Path(DEMO_DB),
    timeout: Annotated[float, typer.Option("--timeout", help="Give up after this long.")] = 30.0,
) -> None:
    """Run the example order workflow start to finish, in a few seconds, and show its timeline.

    Uses heron.functions.demo:rt on its own SQLite file, whatever --app and --store say, so it never
    touches your runs.
    """
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    settings = Settings(app="heron.functions.demo:rt", store=f"sqlite:///{db}")
    out = console()
    out.print(f"[bold]heron demo[/]: the example order workflow on [cyan]{escape(str(db))}[/]")

    async def body(rt: Runtime) -> None:
        await _demo(rt, out, timeout, settings.store or "")

    _run(settings, body)


# -- the demo ----------------------------------------------------------------------------------


async def _demo(rt: Runtime, out: Console, timeout: float, store_url: str) -> None:
    order = DEMO_ORDER
    t0 = time.monotonic()
    narrator = _Narrator(out, t0)
    run_id = await rt.start("order", order, run_id=order["id"])
    items = ", ".join(f"{i['qty']}x {i['sku']}" for i in order["items"])
    narrator.say(f"started run [bold]{run_id}[/] of workflow [bold]order[/]: {items}")
    approval = {"by": "heron demo"}
    signalled = False
    while True:
        await rt.sweep()  # wakes what is due; the in-process dispatcher resumes it right here
        info = await rt.get(run_id)
        children, _ = await rt.list_runs(parent_id=run_id, limit=10)
        narrator.observe(info, [await rt.get(child.id) for child in children])
        if info.terminal and info.wake_at is None:
            break
        if info.status == "waiting" and not signalled:
            await rt.signal(run_id, "approved", approval, signal_id="demo-approval")
            signalled = True
            narrator.say(f"sent signal [bold]approved[/] {json.dumps(approval)} (from the demo)")
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"the demo run {run_id!r} is still {info.status} after {timeout}s")
        await asyncio.sleep(0.05)
    output = await rt.wait(run_id, timeout=5)  # the run has ended: its decoded output
    narrator.say(f"[green]run {run_id} completed[/] in {time.monotonic() - t0:.2f}s")

    out.print()
    out.print(timeline(info, out.width, title=f"run {run_id} · order v{info.version}"))
    for child in children:
        child_info = await rt.get(child.id)
        out.print()
        title = f"child run {child.id} · {child.workflow} v{child.version}"
        out.print(timeline(child_info, out.width, title=title))
    out.print()
    out.print("[bold]output[/]")
    out.print_json(data=output)
    out.print()
    heron = _heron_command()
    out.print("[dim]look again:[/]")
    out.print(f"  {heron} --store {escape(store_url)} inspect {run_id}", soft_wrap=True)
    out.print(
        f"  {heron} --store {escape(store_url)} dev    "
        "[dim]# the dashboard: http://127.0.0.1:8000/dashboard[/]",
        soft_wrap=True,
    )


@dataclass
class _Narrator:
    """Turns what the demo sees in the store (new checkpoints, status changes) into a story."""

    out: Console
    t0: float
    seen: set[tuple[str, int]] = field(default_factory=set)
    statuses: dict[str, str] = field(default_factory=dict)

    def say(self, message: str) -> None:
        self.out.print(f"[dim]{time.monotonic() - self.t0:5.2f}s[/]  {message}", soft_wrap=True)

    def observe(self, run: RunInfo, children: Sequence[RunInfo]) -> None:
        """Tell what is new since the last look: checkpoints and child runs, oldest first."""
        events: list[tuple[float, str]] = []
        for child in children:
            if child.id not in self.statuses:
                self.statuses[child.id] = child.status
                message = (
                    f"started child workflow [bold]{escape(child.workflow)}[/] as run {child.id}"
                )
                events.append((child.created_at, message))
        for info in (run, *children):
            prefix = "" if info is run else f"  [{info.workflow}] "
            for cp in info.steps:
                if cp.seq >= 0 and (info.id, cp.seq) not in self.seen:
                    self.seen.add((info.id, cp.seq))
                    events.append((cp.at, escape(prefix) + self._describe(cp)))
        for _, message in sorted(events, key=lambda event: event[0]):
            self.say(message)
        if run.status != self.statuses.get(run.id):
            self.statuses[run.id] = run.status
            self._status(run)

    @staticmethod
    def _describe(cp: Checkpoint) -> str:
        name = escape(cp.name)
        if cp.error is not None:
            return f"[red]✗ {cp.kind} {name} failed: {escape(error_text(cp.error))}[/]"
        if cp.kind == "step" and cp.attempts > 1:
            failed = "attempt 1" if cp.attempts == 2 else f"attempts 1-{cp.attempts - 1}"
            return (
                f"[yellow]↻ retrying {name}[/]: {failed} failed with a transient error, "
                f"attempt {cp.attempts} succeeded → {escape(abbrev(cp.value, 40))}"
            )
        if cp.kind == "sleep":
            return "✓ woke up: the durable sleep is over"
        if cp.kind == "signal":
            payload = cp.value.get("payload") if isinstance(cp.value, dict) else cp.value
            return f"✓ received signal [bold]{name}[/] {escape(abbrev(payload, 40))}"
        if cp.kind == "child":
            return f"✓ child workflow [bold]{name}[/] done → {escape(abbrev(cp.value, 50))}"
        return f"✓ {cp.kind} [bold]{name}[/] → {escape(abbrev(cp.value, 50))}"

    def _status(self, run: RunInfo) -> None:
        if run.status == "sleeping" and run.wake_at is not None:
            seconds = max(0.0, run.wake_at - time.time())
            self.say(f"[cyan]… sleeping[/] {seconds:.1f}s (suspended: nothing runs until then)")
        elif run.status == "waiting":
            waited = {cp.name for cp in run.steps if cp.kind == "signal"}
            if "approved" not in waited:
                self.say("[yellow]… waiting for approval[/] (signal [bold]approved[/])")
            else:
                self.say("[yellow]… waiting for the child workflow[/]")
        elif run.status == "failed":
            self.say(f"[red]✗ failed: {escape(error_text(run.error))}[/]")


# -- plumbing ----------------------------------------------------------------------------------


class RunEnded(HeronError, ValueError):
    """A command asked something of a run that has ended (a signal: as the API's 409)."""


def _run(
    settings: typer.Context | Settings,
    body: Callable[[Runtime], Awaitable[T]],
    *,
    no_store: Callable[[], T] | None = None,
) -> T:
    """Load the app's runtime, run ``body`` on it, let in-process work finish, close the store.

    A read passes ``no_store``: when the store is an SQLite file that does not exist yet, its
    answer is returned instead, and no file is created. Errors a person can fix (an unknown
    run or workflow, a bad value) print one red line and exit 2; other Heron errors exit 1, and
    so does an app that fails to import (with ``--debug``, its traceback).
    """
    if not isinstance(settings, Settings):
        settings = settings.ensure_object(Settings)
    rt = _load_app(settings)
    if no_store is not None and _missing_file(settings.store, rt):
        return no_store()
    rt = _configure(rt, settings)  # (an app that pins its own store and is given another fails)

    async def go() -> T:
        try:
            result = await body(rt)
            await _settle(rt)
            return result
        finally:
            await rt.close()

    try:
        return asyncio.run(go())
    except _USAGE_ERRORS as exc:
        if settings.debug:
            raise
        _fail(str(exc))
    except (HeronError, TimeoutError) as exc:  # a store error, a failed run, a stuck demo
        if settings.debug:
            raise
        _fail(str(exc) or type(exc).__name__, code=EXIT_FAILURE)


def _open_runtime(settings: Settings) -> Runtime:
    """The app's runtime, with the store ``--store``/``HERON_STORE`` names (an app that pins
    its own store and is given another fails: never silently another store)."""
    return _configure(_load_app(settings), settings)


def _load_app(settings: Settings) -> Runtime:
    """The app's runtime, as imported. Without ``--app``/``HERON_APP``, says on stderr that
    the demo app is used. An app that fails to import is one line (``--debug``: raised)."""
    if settings.app is None and DEFAULT_APP == resolve_spec(None):
        console(stderr=True).print(
            f"[dim]using the demo app {DEFAULT_APP} (--app or HERON_APP names yours)[/]",
            soft_wrap=True,
        )
    try:
        return load_runtime(settings.app)
    except AppNotFound as exc:
        _fail(str(exc))
    except Exception as exc:  # the app's own code failed while it was imported
        if settings.debug:
            raise
        spec = resolve_spec(settings.app)
        _fail(f"importing the app {spec!r} failed: {_one_line(exc)}", code=EXIT_FAILURE)


def _configure(rt: Runtime, settings: Settings) -> Runtime:
    try:
        return configure(rt, Config(store=settings.store), strict=True)
    except _USAGE_ERRORS as exc:
        _fail(str(exc))


def _one_line(exc: BaseException) -> str:
    """``SyntaxError: invalid syntax (app.py, line 3)``: an exception in one line, with where
    it happened (the file and line of the deepest frame, for a syntax error its own)."""
    if isinstance(exc, SyntaxError):
        where = f" ({exc.filename}, line {exc.lineno})" if exc.filename else ""
        return f"SyntaxError: {exc.msg}{where} (--debug shows the traceback)"
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" ({tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno})" if tb else ""
    message = str(exc).splitlines()[0] if str(exc) else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"{text}{where} (--debug shows the traceback)"


def _missing_file(url: str | None, rt: Runtime) -> bool:
    """Whether the store a read would open is an SQLite file that does not exist yet (a read
    finds nothing there, and must not create it as a side effect)."""
    if rt.store_pinned:  # the app opened its own store already
        return False
    if url is None:
        from heron.stores import DEFAULT_STORE_URL

        url = DEFAULT_STORE_URL
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not rest.startswith("/"):
        return False
    path = rest[1:].split("?", 1)[0]
    return path not in ("", ":memory:") and not Path(path).exists()


def _exit_if_failed(info: RunInfo) -> None:
    """Exit 1 when the run a command started, signalled or retried ended failed."""
    if info.status == "failed":
        raise typer.Exit(EXIT_FAILURE)


async def _settle(rt: Runtime) -> None:
    """Let the in-process dispatcher finish what it started (resumes of runs made due)."""
    if isinstance(rt.dispatcher, InProcessDispatcher):
        await rt.dispatcher.drain()


def _parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{what} is not valid JSON ({exc.msg} at column {exc.colno}): {abbrev(text, 60)}")


def _heron_command() -> str:
    """How to call this ``heron`` again from the shell: ``heron`` when that is what is on the
    ``PATH``, else its path (``.venv/bin/heron`` after ``make demo``)."""
    import shutil

    me = Path(sys.argv[0])
    found = shutil.which("heron")
    if me.name != "heron" or (found is not None and Path(found).resolve() == me.resolve()):
        return "heron"
    try:
        return str(me.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(me)


def _require_extra(extra: str, *modules: str) -> None:
    """Fail with one line naming the extra to install when one of ``modules`` is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        _fail(
            f"this command needs Heron's {extra!r} extra ({', '.join(missing)} not installed): "
            f"pip install 'heron[{extra}]'"
        )


def _fail(message: str, *, code: int = EXIT_USAGE) -> NoReturn:
    console(stderr=True).print(f"[bold red]error:[/] [red]{escape(message)}[/]", soft_wrap=True)
    raise typer.Exit(code)


if __name__ == "__main__":
    main()
