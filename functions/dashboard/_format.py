"""What the templates print: times a person can read, JSON that cannot break the page, text
whose invisible characters are shown.

Every function here returns plain text or :class:`markupsafe.Markup` built from escaped parts;
the templates escape everything else (autoescape is on).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from heron.runtime import MAX_DEPTH
from heron.runtime._serde import nested_too_deep

__all__ = [
    "Shown",
    "absolute",
    "duration",
    "iso",
    "printable",
    "relative",
    "show_json",
    "visible",
]

#: A value longer than this (characters of its indented JSON) starts collapsed.
COLLAPSE_OVER = 1200
#: Lines of indented JSON past which a value starts collapsed.
COLLAPSE_LINES = 24
#: A value whose JSON fits on one line of this many characters is shown on that line.
INLINE_AT_MOST = 80
#: Characters of a value the page shows at most; the rest is at ``GET /runs/{id}``.
SHOW_AT_MOST = 64 * 1024


def _escape_char(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(value: Any, *, keep_newlines: bool = False) -> Markup:
    """``value`` as escaped HTML with each character that does not print (control and format
    characters: ``\\x1b``, a right-to-left override ``\\u202e``, a zero-width space) written
    as its escape in a ``<span class="esc">``, so stored text can neither hide nor reorder what
    is shown around it."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return escape(text)
    parts: list[str] = []
    plain: list[str] = []
    for char in text:
        if char.isprintable() or (keep_newlines and char == "\n"):
            plain.append(char)
            continue
        if plain:
            parts.append(str(escape("".join(plain))))
            plain = []
        parts.append(f'<span class="esc">{_escape_char(char)}</span>')
    if plain:
        parts.append(str(escape("".join(plain))))
    return Markup("".join(parts))


def printable(value: Any) -> str:
    """``value`` as plain text with the characters that do not print written as escapes (for
    attributes: a tooltip, a confirmation the script shows)."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape_char(char) for char in text)


# -- times -------------------------------------------------------------------------------------


def iso(ts: float | None) -> str:
    """``2026-01-05T14:03:22Z`` (for ``<time datetime>`` and scripts)."""
    if ts is None or not math.isfinite(ts):
        return ""
    try:  # a wake 10**12 seconds away is a valid run, beyond what datetime can show
        moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def absolute(ts: float | None) -> str:
    """``2026-01-05 14:03:22 UTC``: the zone always stated."""
    if ts is None or not math.isfinite(ts):
        return "-"
    try:
        moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    """``0.25 s``, ``42 s``, ``3 min 20 s``, ``5 h 2 min``, ``3 d 4 h``."""
    if not math.isfinite(seconds):
        return "-"
    seconds = abs(seconds)
    if seconds < 10:
        return f"{seconds:.2f} s".replace(".00 s", " s")
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(ts: float | None, now: float) -> str:
    """``12 s ago``, ``in 3 min``, ``just now``."""
    if ts is None or not math.isfinite(ts):
        return "-"
    delta = ts - now
    if abs(delta) < 1:
        return "just now"
    if abs(delta) < 60:
        return f"in {abs(delta):.0f} s" if delta > 0 else f"{abs(delta):.0f} s ago"
    # the largest unit, rounded, is enough at a glance (a sleep of 7 days just started: "in 7 d")
    seconds = abs(delta)
    if seconds < 3600:
        short = f"{round(seconds / 60)} min"
    elif seconds < 48 * 3600:
        short = f"{round(seconds / 3600)} h"
    else:
        short = f"{round(seconds / 86400)} d"
    return f"in {short}" if delta > 0 else f"{short} ago"


# -- JSON --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shown:
    """A value as the page shows it: indented JSON, and whether to collapse or cut it."""

    text: str
    lines: int
    size: int
    collapsed: bool
    cut: bool
    summary: str
    inline: str | None = None  # the value on one line, when it is short


def show_json(value: Any) -> Shown:
    """``value`` as indented JSON (non-ASCII kept, every string escaped by JSON's rules; the
    template escapes it for HTML), collapsed when large, cut past :data:`SHOW_AT_MOST`."""
    inline = None
    if nested_too_deep(value):
        text = f"<a value nested more than {MAX_DEPTH} levels deep: not shown>"
    else:
        try:
            text = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=True, default=repr)
            one_line = json.dumps(value, ensure_ascii=False, allow_nan=True, default=repr)
            inline = one_line if len(one_line) <= INLINE_AT_MOST else None
        except (ValueError, TypeError, RecursionError):
            text = repr(value)
    size = len(text)
    cut = size > SHOW_AT_MOST
    if cut:
        text = text[:SHOW_AT_MOST]
    lines = text.count("\n") + 1
    if isinstance(value, dict):
        summary = f"object, {len(value)} key{'s' if len(value) != 1 else ''}"
    elif isinstance(value, list):
        summary = f"array, {len(value)} item{'s' if len(value) != 1 else ''}"
    else:
        summary = type(value).__name__ if value is not None else "null"
    summary += f", {size:,} characters"
    return Shown(
        text=text,
        lines=lines,
        size=size,
        collapsed=size > COLLAPSE_OVER or lines > COLLAPSE_LINES,
        cut=cut,
        summary=summary,
        inline=inline,
    )
