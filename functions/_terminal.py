"""What the ``heron`` CLI draws: a run's header, its timeline as bars on a time axis, the list
of runs, one-line statuses. Everything taken from a store goes through :func:`clean` first (a
stored value must never drive the user's terminal) and is never parsed as rich markup.

Only the CLI imports this module (it imports rich).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape as markup_escape
from rich.table import Table
from rich.text import Text

from heron.functions._timeline import Span, ago, duration, spans, utc
from heron.runtime import RunInfo
from heron.stores.contract import RunSummary

__all__ = [
    "STATUS_STYLES",
    "abbrev",
    "clean",
    "clean_json",
    "console",
    "error_text",
    "escape",
    "header",
    "run_lines",
    "run_table",
    "status_line",
    "timeline",
]

STATUS_STYLES = {
    "pending": "blue",
    "running": "bold blue",
    "sleeping": "cyan",
    "waiting": "yellow",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
}
#: Colours of the timeline's bars, by checkpoint kind.
BAR_STYLES = {
    "step": "green",
    "sleep": "cyan",
    "signal": "yellow",
    "child": "magenta",
    "side_effect": "blue",
}
#: Columns the bars get at most (the terminal's width decides below that).
MAX_BAR = 40


# -- safe text -----------------------------------------------------------------------------------


def clean(text: str) -> str:
    """``text`` with every non-printable character written as its escape (``\\x1b``): ESC,
    CSI, BEL, CR and bidi overrides from a store must never retitle, clear or rewrite the
    user's terminal."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text
    )


def escape(text: str) -> str:
    """Stored text made safe inside rich markup: non-printables escaped, then the markup."""
    return markup_escape(clean(text))


def plain(text: str, style: str = "") -> Text:
    """A cell holding stored text, never parsed as markup."""
    return Text(clean(text), style=style)


def clean_json(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with every non-printable character
    in its strings written as a ``\\u`` escape: the same JSON, safe on a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else json.dumps(c)[1:-1] for c in text)


def abbrev(value: Any, width: int) -> str:
    """``value`` as one line of at most ``width`` characters (JSON unless a string)."""
    text = clean(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return text if len(text) <= width else text[: width - 1] + "…"


def error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    return clean(f"{error.get('type', 'Error')}: {error.get('message', '')}")


def console(stderr: bool = False) -> Console:
    """A console on whatever ``sys.stdout``/``sys.stderr`` is now (typer's CliRunner swaps
    them). Piped, it is as wide as the text needs (unless ``COLUMNS`` says otherwise): nothing
    is cut for a script."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out = Console(stderr=stderr, highlight=False, width=10_000)
    return out


# -- runs ----------------------------------------------------------------------------------------


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def status_line(info: RunInfo) -> str:
    """``o-1 (order) is waiting for signal approved until ...``: one line of rich markup."""
    status = f"[{STATUS_STYLES.get(info.status, 'default')}]{info.status}[/]"
    line = f"{escape(info.id)} ({escape(info.workflow)}) is {status}"
    if info.waiting_for:
        line += " for " + escape(waits_text(info, time.time()))
    elif info.status == "sleeping" and info.wake_at is not None:
        line += f", wakes {ago(info.wake_at, time.time())}"
    elif info.status == "completed":
        line += f": {escape(abbrev(info.output, 60))}"
    elif info.error:
        line += f": {escape(error_text(info.error))}"
    return line


def waits_text(info: RunInfo, now: float) -> str:
    """What a suspended run waits for: ``signal approved (until ..., in 5m 00s), sleep (...)``."""
    parts = []
    for wait in info.waiting_for:
        what = wait.kind if wait.kind in ("sleep", "time") else f"{wait.kind} {wait.name}"
        if wait.until is not None:
            what += f" (until {utc(wait.until)}, {ago(wait.until, now)})"
        parts.append(what)
    return ", ".join(parts)


def header(info: RunInfo, children: Sequence[RunSummary]) -> Table:
    """The run's fields, one per line; times absolute (UTC) and relative."""
    now = time.time()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("run", plain(info.id))
    grid.add_row("workflow", plain(f"{info.workflow} v{info.version}"))
    grid.add_row("status", status_text(info.status))
    grid.add_row("created", f"{utc(info.created_at)} ({ago(info.created_at, now)})")
    elapsed = duration(info.updated_at - info.created_at)
    grid.add_row("updated", f"{utc(info.updated_at)} ({ago(info.updated_at, now)}; +{elapsed})")
    if info.waiting_for:
        grid.add_row("waits for", plain(waits_text(info, now)))
    elif info.wake_at is not None:
        grid.add_row("wakes", f"{utc(info.wake_at)} ({ago(info.wake_at, now)})")
    if info.parent_id:
        grid.add_row("parent", plain(info.parent_id))
    if children:
        grid.add_row("children", plain(", ".join(f"{c.id} ({c.status})" for c in children)))
    if info.tags:
        grid.add_row("tags", plain(", ".join(info.tags)))
    grid.add_row("input", plain(abbrev(info.input, 300)))
    if info.output is not None:
        grid.add_row("output", plain(abbrev(info.output, 300)))
    if info.error:
        grid.add_row("error", Text(error_text(info.error), style="red"))
    if info.signals:
        names = ", ".join(s.name for s in info.signals)
        grid.add_row("signals", plain(f"{len(info.signals)} buffered, not consumed yet: {names}"))
    return grid


def timeline(info: RunInfo, width: int, title: str | None = None) -> Table:
    """One row per checkpoint: when it began (relative to the run's start), how long it took,
    a bar on the run's time axis, and its value or error. The bar and value columns share what
    ``width`` leaves; nothing else shrinks."""
    rows = spans(info.steps, info.created_at)
    end = max([info.created_at, *(span.end for span in rows)])
    total = end - info.created_at
    cells = [
        (
            str(span.seq),
            span.kind,
            span.name,
            str(span.attempts),
            f"+{duration(span.start - info.created_at)}",
            duration(span.seconds),
        )
        for span in rows
    ]
    headers = ("seq", "kind", "name", "tries", "start", "took")
    fixed = [max([len(h), *(len(clean(c[i])) for c in cells)]) for i, h in enumerate(headers)]
    # Borders and padding take 3 characters a column, plus one.
    left = max(32, width - sum(fixed) - 3 * (len(headers) + 2) - 1)
    bar_width = min(MAX_BAR, max(10, left // 2))
    value_width = max(16, left - bar_width)
    axis = f"0 → {duration(total)}"
    table = Table(title=title, title_justify="left", header_style="bold")
    for name, size in zip(headers, fixed, strict=True):
        justify: Literal["left", "right"] = "left" if name in ("kind", "name") else "right"
        table.add_column(name, justify=justify, no_wrap=True, min_width=size)
    table.add_column(axis, no_wrap=True, width=bar_width)
    table.add_column("value / error", overflow="ellipsis", no_wrap=True, max_width=value_width)
    for span, (seq, kind, name, tries, start, took) in zip(rows, cells, strict=True):
        if span.failed:
            result = Text(error_text(span.error), style="red")
        else:
            result = Text(abbrev(_shown_value(span), 500))
        result.truncate(value_width, overflow="ellipsis")
        table.add_row(
            seq,
            plain(kind),
            plain(name, "red" if span.failed else ""),
            Text(tries, style="yellow" if span.attempts > 1 else ""),
            start,
            took,
            _bar(span, info.created_at, total, bar_width),
            result,
        )
    if not rows:
        table.add_row("", "", Text("no checkpoints yet", style="dim"), "", "", "", "", "")
    return table


def _bar(span: Span, origin: float, total: float, width: int) -> Text:
    """The span on an axis of ``width`` columns from ``origin`` to ``origin + total``; at least
    one column, so an instant still shows where it happened."""
    if total <= 0:
        first, last = 0, 1
    else:
        first = min(width - 1, int((span.start - origin) / total * width))
        last = max(first + 1, round((span.end - origin) / total * width))
    style = "red" if span.failed else BAR_STYLES.get(span.kind, "white")
    return Text(" " * first + "█" * (min(last, width) - first), style=style)


def _shown_value(span: Span) -> Any:
    if span.kind == "signal" and isinstance(span.value, dict):
        return span.value.get("payload")
    if span.kind == "sleep" and isinstance(span.value, int | float):
        return f"until {utc(float(span.value), ms=True)}"
    return span.value


def run_lines(runs: Sequence[RunSummary], now: float, width: int) -> Table | list[Text]:
    """The runs, one per line, as a table; on a terminal too narrow for the table with its
    longest id, as plain lines (``id  status  workflow  updated``) that the terminal wraps: an
    id is never cut."""
    longest = max(len(clean(run.id)) for run in runs)
    if longest + 60 <= width:
        return run_table(runs, now)
    return [
        Text.assemble(
            plain(run.id),
            "  ",
            status_text(run.status),
            "  ",
            plain(run.workflow),
            f"  {ago(run.updated_at, now)}",
        )
        for run in runs
    ]


def run_table(runs: Sequence[RunSummary], now: float) -> Table:
    """The runs, one per line; an id is never cut (its column is as wide as the longest)."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    longest = max(len(clean(run.id)) for run in runs)
    table.add_column("RUN", no_wrap=True, min_width=longest)
    table.add_column("WORKFLOW", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("CREATED (UTC)", no_wrap=True)
    table.add_column("UPDATED", no_wrap=True)
    table.add_column("WAKES", no_wrap=True)
    table.add_column("TAGS", overflow="fold")
    for run in runs:
        table.add_row(
            plain(run.id),
            plain(f"{run.workflow} v{run.version}"),
            status_text(run.status),
            utc(run.created_at).removesuffix(" UTC"),
            ago(run.updated_at, now),
            "-" if run.wake_at is None else ago(run.wake_at, now),
            plain(", ".join(run.tags)),
        )
    return table
