"""The ``heron`` CLI, driven through typer's ``CliRunner`` (and the installed script for the demo).

Every test runs in its own temporary directory, on its own SQLite file (``HERON_STORE``), with a
small app module written next to it (``HERON_APP``), so nothing touches the repository's
``.heron`` folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from heron.functions._app import DEFAULT_APP, AppNotFound, load_runtime
from heron.functions.cli import app
from heron.runtime import Runtime

HERON = Path(sys.executable).with_name("heron")
APP_MODULE = "heron_cli_testapp"
APP_SOURCE = textwrap.dedent(
    '''
    """Workflows for the CLI tests: one waits for a signal, one naps briefly."""

    from __future__ import annotations

    from heron.runtime import Context, FatalError, Runtime

    rt = Runtime()
    not_a_runtime = {"rt": "no"}


    @rt.step
    async def greet(name: str) -> str:
        return f"hello {name}"


    @rt.workflow("greet")
    async def greet_flow(ctx: Context, name: str) -> dict[str, object]:
        text = await ctx.step(greet, name)
        reply = await ctx.wait_for_signal("reply")
        return {"text": text, "reply": reply}


    @rt.workflow("nap")
    async def nap(ctx: Context, seconds: float) -> str:
        await ctx.sleep(seconds)
        return "rested"


    @rt.step
    async def refuse(reason: str) -> None:
        raise FatalError(reason)


    @rt.workflow("doomed")
    async def doomed(ctx: Context, reason: str) -> None:
        await ctx.step(refuse, reason)


    @rt.workflow("patient")
    async def patient(ctx: Context, _: object) -> object:
        return await ctx.wait_for_signal("go", timeout=3600)
    '''
)


#: Modules that hold a ``Runtime`` at module level. Each ``heron`` command runs in a process of
#: its own and closes the runtime's store when it ends; in one test process, every invocation
#: imports them afresh instead.
APP_MODULES = (APP_MODULE, "heron.functions.demo", "nested_app", "pinned_app")


def forget_apps() -> None:
    for name in APP_MODULES:
        sys.modules.pop(name, None)


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary cwd holding the test app, and a fresh store in it."""
    (tmp_path / f"{APP_MODULE}.py").write_text(APP_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("HERON_STORE", f"sqlite:///{tmp_path / 'heron.db'}")
    monkeypatch.setenv("HERON_APP", f"{APP_MODULE}:rt")
    forget_apps()
    yield tmp_path
    forget_apps()


def heron(*args: str, input: str | None = None) -> Result:
    forget_apps()
    return CliRunner().invoke(app, list(args), input=input)


def ok(*args: str) -> str:
    result = heron(*args)
    assert result.exit_code == 0, f"heron {' '.join(args)}: {result.output}"
    return result.stdout


def usage_error(*args: str) -> str:
    """Run a command that must fail on bad input: exit 2, one red line, no traceback."""
    result = heron(*args)
    assert result.exit_code == 2, f"heron {' '.join(args)}: {result.output}"
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# -- the demo ----------------------------------------------------------------------------------


def test_demo_runs_the_order_workflow_to_completion(workspace: Path) -> None:
    # given a directory with no .heron folder
    env = {k: v for k, v in os.environ.items() if k not in ("HERON_STORE", "HERON_APP")}

    # when the installed script runs the demo
    proc = subprocess.run(
        [str(HERON), "demo"], cwd=workspace, env=env, capture_output=True, text=True, timeout=60
    )

    # then it finishes in seconds, tells each phase, and shows both timelines and the output
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for phase in (
        "started run o-1001",
        "retrying charge",
        "sleeping",
        "waiting for approval",
        "sent signal approved",
        "completed",
    ):
        assert phase in out, phase
    for name in ("charge", "sleep", "approved", "pack", "invoice", "render_invoice"):
        assert name in out, name
    assert "child run o-1001-c" in out
    assert '"status": "shipped"' in out
    assert (workspace / ".heron" / "demo.db").exists()
    assert proc.stderr == ""


def test_demo_starts_fresh_each_time(workspace: Path) -> None:
    # given a demo file left behind (not even a database)
    db = workspace / "old" / "demo.db"
    db.parent.mkdir()
    db.write_text("left over")

    # when / then: the demo deletes it and runs on a new one
    out = ok("demo", "--db", str(db))
    assert "run o-1001 completed" in out


# -- a run's life through the CLI --------------------------------------------------------------


def test_start_inspect_ls_cancel_retry_signal_round_trip() -> None:
    out = ok("start", "greet", '"ada"', "--run-id", "r-1", "--tag", "vip")
    assert "started run r-1 (greet v1)" in out
    assert "waiting" in out  # ran in process until it waits for its signal

    listed = ok("ls")
    assert "r-1" in listed and "waiting" in listed and "vip" in listed
    assert "no runs" in ok("ls", "--status", "completed")
    assert "r-1" in ok("ls", "--workflow", "greet", "--tag", "vip", "--limit", "5")

    shown = ok("inspect", "r-1")
    assert "waiting" in shown and "greet" in shown and "hello ada" in shown

    assert "cancelled run r-1 (it was waiting)" in ok("cancel", "r-1")
    assert "cancelled" in ok("inspect", "r-1")

    out = ok("retry", "r-1")
    assert "retried run r-1" in out and "waiting" in out

    out = ok("signal", "r-1", "reply", '{"ok": true}')
    assert "sent signal reply to run r-1" in out and "completed" in out

    shown = ok("inspect", "r-1")
    assert "completed" in shown
    assert "reply" in shown and '{"ok": true}' in shown  # the signal's row in the timeline
    assert '"text": "hello ada"' in shown  # the output in the header

    assert "already completed" in ok("cancel", "r-1")
    assert "r-1" in usage_error("retry", "r-1")


def test_retry_from_seq_reruns_from_there() -> None:
    ok("start", "greet", '"ada"', "--run-id", "r-2")
    ok("cancel", "r-2")
    refused = heron("retry", "r-2", "--from-seq", "-1")
    assert refused.exit_code == 2 and "--from-seq" in refused.output

    out = ok("retry", "r-2", "--from-seq", "0")

    assert "retried run r-2" in out and "waiting" in out


def test_delete_removes_a_run_after_asking() -> None:
    ok("start", "greet", '"ada"', "--run-id", "r-3")

    refused = heron("delete", "r-3", input="n\n")
    assert refused.exit_code == 2 and "not deleted" in refused.stderr
    assert "r-3" in ok("ls")

    assert "deleted run r-3" in heron("delete", "r-3", input="y\n").stdout
    assert "no runs" in ok("ls")
    assert "run 'r-3' not found" in usage_error("delete", "r-3", "--yes")


def test_stored_text_cannot_drive_the_terminal() -> None:
    # given a run whose id, tag, input and output carry escape sequences and markup
    hostile = "\x1b]0;pwned\x07\x1b[2J\u009b31m\u202e[bold]x[/]"
    ok("start", "greet", json.dumps(hostile), "--run-id", "r-4", "--tag", "[red]vip")
    ok("signal", "r-4", "reply", json.dumps({"text": hostile}))

    # then nothing the CLI prints holds a control character: they are shown escaped
    for args in (("ls",), ("inspect", "r-4"), ("inspect", "r-4", "--json")):
        out = ok(*args)
        assert all(c.isprintable() or c == "\n" for c in out), (args, out)
    shown = ok("inspect", "r-4")
    assert "\\x1b]0;pwned\\x07" in shown and "[bold]x[/]" in shown and "[red]vip" in shown
    assert json.loads(ok("inspect", "r-4", "--json"))["input"] == hostile


def test_start_is_idempotent_on_run_id() -> None:
    ok("start", "greet", '"ada"', "--run-id", "r-1")
    assert "started run r-1" in ok("start", "greet", '"ada"', "--run-id", "r-1")
    assert "'r-1' already exists" in usage_error("start", "greet", '"bob"', "--run-id", "r-1")


def test_sweep_resumes_what_is_due() -> None:
    ok("start", "nap", "0.2", "--run-id", "n-1")
    assert "sleeping" in ok("inspect", "n-1")
    time.sleep(0.25)

    out = ok("sweep")
    assert "resumed: n-1 (nap) is completed: rested" in out
    assert "nothing is due" in ok("sweep")


def test_schema_ensure(workspace: Path) -> None:
    out = ok("--store", f"sqlite:///{workspace / 'other.db'}", "schema", "ensure")
    assert "schema ready" in out and "other.db" in out
    assert (workspace / "other.db").exists()


def test_store_option_overrides_heron_store(workspace: Path) -> None:
    other = f"sqlite:///{workspace / 'other.db'}"
    ok("--store", other, "start", "greet", '"ada"', "--run-id", "r-9")
    assert "r-9" in ok("--store", other, "ls")
    assert "no runs" in ok("ls")


# -- bad input: one red line, exit 2 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("inspect", "ghost"), "run 'ghost' not found"),
        (("signal", "ghost", "reply"), "run 'ghost' not found"),
        (("cancel", "ghost"), "run 'ghost' not found"),
        (("retry", "ghost"), "run 'ghost' not found"),
        (
            ("start", "nope"),
            "no workflow named 'nope' is registered (known: doomed, greet, nap, patient)",
        ),
        (("start", "greet", "{bad"), "INPUT_JSON is not valid JSON"),
        (("signal", "r-1", "reply", "[1,"), "PAYLOAD_JSON is not valid JSON"),
        (("start", "greet", '"x"', "--run-id", "a/b"), "'a/b'"),
        (("ls", "--status", "weird"), "unknown status 'weird'"),
        (("--app", "no_such_module:rt", "ls"), "'no_such_module:rt': no module named"),
        (("--app", f"{APP_MODULE}:missing", "ls"), "has no attribute 'missing'"),
        (("--app", f"{APP_MODULE}:not_a_runtime", "ls"), "is a dict, not a heron Runtime"),
        (("--app", APP_MODULE, "ls"), "expected 'module:attribute'"),
        (("--store", "bogus://x", "ls"), "unknown store URL scheme 'bogus'"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], expected: str) -> None:
    assert expected in usage_error(*args)


# -- loading the app ---------------------------------------------------------------------------


def test_load_runtime_resolves_spec_env_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import heron.functions.demo

    assert load_runtime("heron.functions.demo:rt") is heron.functions.demo.rt
    monkeypatch.delenv("HERON_APP")
    assert DEFAULT_APP == "heron.functions.demo:rt"
    assert load_runtime() is heron.functions.demo.rt
    assert set(heron.functions.demo.rt.workflows) == {"invoice", "order"}


def test_load_runtime_error_names_the_spec() -> None:
    with pytest.raises(AppNotFound) as caught:
        load_runtime("heron.functions.demo:nothing")
    assert caught.value.spec == "heron.functions.demo:nothing"
    assert "heron.functions.demo:nothing" in str(caught.value)


def test_load_runtime_follows_dotted_attributes(workspace: Path) -> None:
    (workspace / "nested_app.py").write_text(
        "from types import SimpleNamespace\n"
        "from runtime import Runtime\n"
        "platform = SimpleNamespace(rt=Runtime())\n"
    )
    sys.path.insert(0, str(workspace))  # the fixture restores sys.path
    assert isinstance(load_runtime("nested_app:platform.rt"), Runtime)


def test_handlers_never_import_the_cli_libraries() -> None:
    code = (
        "import sys, heron.functions._app, heron.functions.demo; "
        "print(sorted(m for m in ('typer', 'rich') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_inspect_json_is_a_history_the_test_environment_replays() -> None:
    from heron.runtime import RunInfo
    from heron.testing import environment

    assert heron("start", "greet", '"ada"', "--run-id", "g-json").exit_code == 0
    assert heron("signal", "g-json", "reply", '"hi"').exit_code == 0
    shown = heron("inspect", "g-json", "--json")
    assert shown.exit_code == 0, shown.output
    detail = json.loads(shown.output)
    assert (detail["id"], detail["status"], detail["output"]) == (
        "g-json",
        "completed",
        {"text": "hello ada", "reply": "hi"},
    )
    assert [(s["seq"], s["kind"], s["name"]) for s in detail["steps"]] == [
        (0, "step", "greet"),
        (1, "signal", "reply"),
    ]

    async def replay() -> RunInfo:
        async with environment(load_runtime()) as env:
            return await env.replay(detail)

    replayed = asyncio.run(replay())
    assert replayed.status == "completed"
    assert replayed.output == detail["output"]


# -- scripting: exit codes, JSON, paging, reads without side effects ------------------------------


def test_version() -> None:
    from heron import __version__

    assert ok("--version").strip() == f"heron {__version__}"


def test_a_command_whose_run_fails_exits_1() -> None:
    started = heron("start", "doomed", '"no stock"', "--run-id", "d-1")
    assert started.exit_code == 1 and "failed" in started.stdout and "no stock" in started.stdout

    retried = heron("retry", "d-1")
    assert retried.exit_code == 1 and "FatalError: no stock" in retried.stdout

    assert heron("start", "greet", '"ada"', "--run-id", "g-1").exit_code == 0


def test_a_signal_to_an_ended_run_is_refused_as_the_api_does() -> None:
    ok("start", "greet", '"ada"', "--run-id", "g-2")
    ok("signal", "g-2", "reply", "1")
    assert "completed" in ok("inspect", "g-2")

    assert "run 'g-2' is completed; it takes no more signals" in usage_error(
        "signal", "g-2", "reply", "2"
    )
    assert "run 'g-2' not found" not in ok("inspect", "g-2")


def test_ls_json_pages_with_a_cursor() -> None:
    for n in range(5):
        ok("start", "greet", f'"n{n}"', "--run-id", f"p-{n}")

    first = json.loads(ok("ls", "--json", "--limit", "2"))
    assert [r["id"] for r in first["runs"]] == ["p-4", "p-3"]
    assert set(first["runs"][0]) == {
        "id",
        "workflow",
        "version",
        "status",
        "parent_id",
        "tags",
        "created_at",
        "updated_at",
        "wake_at",
    }
    second = json.loads(ok("ls", "--json", "--limit", "2", "--cursor", first["next_cursor"]))
    assert [r["id"] for r in second["runs"]] == ["p-2", "p-1"]

    table = ok("ls", "--limit", "2")
    assert "p-4" in table and f"heron ls --cursor {first['next_cursor']}" in table
    assert "invalid cursor" in usage_error("ls", "--cursor", "not-a-cursor")


def test_ids_are_never_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    long_id = "order-" + "x" * 60 + "-end"
    ok("start", "greet", '"ada"', "--run-id", long_id)

    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal
    assert long_id in ok("ls")
    monkeypatch.delenv("COLUMNS")  # piped: as wide as it needs
    assert long_id in ok("ls")


def test_inspect_draws_the_timeline_with_bars_and_readable_times() -> None:
    ok("start", "patient", "null", "--run-id", "w-1")

    shown = ok("inspect", "w-1")
    assert "waits for" in shown and "signal go (until" in shown and "UTC" in shown
    assert "created" in shown and ("ago" in shown or "now" in shown)

    ok("signal", "w-1", "go", '"ok"')
    shown = ok("inspect", "w-1")
    assert "█" in shown and "0 → " in shown and "took" in shown

    detail = json.loads(ok("inspect", "w-1", "--json"))
    assert detail["waiting_for"] == [] and detail["steps"][0]["kind"] == "signal"
    assert set(detail) >= {"steps", "signals", "children", "waiting_for", "input", "output"}


def test_reads_never_create_the_database(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = workspace / "nowhere" / "runs.db"
    monkeypatch.setenv("HERON_STORE", f"sqlite:///{missing}")

    assert "no runs" in ok("ls")
    assert json.loads(ok("ls", "--json")) == {"runs": [], "next_cursor": None}
    assert "run 'x' not found" in usage_error("inspect", "x")
    assert not missing.exists() and not missing.parent.exists()


def test_without_an_app_the_cli_says_it_uses_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HERON_APP")

    result = heron("ls")

    assert result.exit_code == 0
    assert "using the demo app heron.functions.demo:rt" in result.stderr


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def broken(:\n", "SyntaxError: invalid syntax ("),
        ("import json\nraise RuntimeError('boom at import')\n", "RuntimeError: boom at import ("),
    ],
)
def test_an_app_that_fails_to_import_is_one_line(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    (workspace / "broken_app.py").write_text(source)
    monkeypatch.setenv("HERON_APP", "broken_app:rt")
    sys.modules.pop("broken_app", None)

    result = heron("ls")

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "broken_app.py, line" in lines[0]
    assert "--debug" in lines[0] and "Traceback" not in result.output

    sys.modules.pop("broken_app", None)
    debugged = heron("--debug", "ls")
    assert debugged.exit_code == 1 and debugged.exception is not None


def test_help_shows_flags_as_flags_on_single_lines() -> None:
    shown = CliRunner().invoke(app, ["ls", "--help"], env={"COLUMNS": "120"}).stdout
    flag = next(line for line in shown.splitlines() if "--json" in line)
    assert "<bool>" not in shown and "Print {runs, next_cursor}" in flag
    dev = CliRunner().invoke(app, ["dev", "--help"], env={"COLUMNS": "200"}).stdout
    assert "sweeps every INTERVAL seconds and resumes runs in this process" in dev


PINNED_APP = textwrap.dedent(
    """
    from heron.runtime import Runtime
    from heron.stores import open_store

    rt = Runtime(store=open_store("sqlite:///pinned.db"))
    """
)


GREET_ON_PINNED = textwrap.dedent(
    """
    @rt.workflow("hello")
    async def hello(ctx, name):
        return f"hello {name}"
    """
)


def test_a_store_url_never_silently_loses_to_the_apps_own(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an app that pins its own store
    (workspace / "pinned_app.py").write_text(PINNED_APP)
    monkeypatch.setenv("HERON_APP", "pinned_app:rt")
    monkeypatch.delenv("HERON_STORE")
    sys.modules.pop("pinned_app", None)
    assert "no runs" in ok("ls")

    # when a command names another store, by option or by environment
    for args, env in (
        (("--store", "sqlite:///other.db", "ls"), {}),
        (("ls",), {"HERON_STORE": "sqlite:///other.db"}),
    ):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        sys.modules.pop("pinned_app", None)

        # then it fails saying so, instead of reading the app's store
        assert "pins its own store" in usage_error(*args)
    assert not (workspace / "other.db").exists()


def test_the_apps_own_store_may_be_named_and_every_command_works_on_it(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an app that pins its own store, and the environment naming that same store
    (workspace / "pinned_app.py").write_text(PINNED_APP + GREET_ON_PINNED)
    monkeypatch.setenv("HERON_APP", "pinned_app:rt")
    monkeypatch.setenv("HERON_STORE", "sqlite:///pinned.db")

    # then the commands run on it, delete too (it reads, asks, then deletes, in one go)
    assert "started run p-1" in ok("start", "hello", '"ada"', "--run-id", "p-1")
    assert "p-1" in ok("ls")
    assert "deleted run p-1" in ok("delete", "p-1", "--yes")
    assert "no runs" in ok("ls")


def test_delete_without_an_answer_deletes_nothing() -> None:
    ok("start", "greet", '"ada"', "--run-id", "r-9")

    refused = heron("delete", "r-9", input="")

    assert refused.exit_code == 2 and "pass --yes" in refused.stderr
    assert "r-9" in ok("ls")


def test_debug_shows_the_traceback_of_an_error() -> None:
    plain = heron("start", "nope", "1")
    assert plain.exit_code == 2 and "no workflow named 'nope'" in plain.stderr
    assert "Traceback" not in plain.output

    debugged = heron("--debug", "start", "nope", "1")

    # CliRunner catches what main would let Python print as a traceback
    assert debugged.exit_code == 1 and "no workflow named 'nope'" in str(debugged.exception)
