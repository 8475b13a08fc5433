"""A run's timeline as spans on a time axis, and times for people: what ``heron inspect`` and
the dashboard draw.

A checkpoint records when its operation *ended* (``at``), not when it began. A span therefore
starts at the latest end, at or before its own, of an operation with a lower seq (or at the
run's creation). That is exact for operations in sequence, the common case; for concurrent
branches a span may start later than its operation did (never earlier), so gathered steps look
staggered. A step that was retried spans all its attempts and back-offs; a sleep spans from
the point it was reached to its wake.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from heron.stores.contract import Checkpoint

__all__ = ["Span", "ago", "duration", "spans", "utc"]


@dataclass(frozen=True, slots=True)
class Span:
    """One checkpoint on the time axis: ``start``/``end`` are epoch seconds."""

    seq: int
    kind: str
    name: str
    start: float
    end: float
    attempts: int
    failed: bool
    value: Any
    error: dict[str, Any] | None

    @property
    def seconds(self) -> float:
        return self.end - self.start


def spans(steps: Sequence[Checkpoint], created_at: float) -> list[Span]:
    """The spans of ``steps`` (a run's checkpoints; patch markers, with negative seqs, are left
    out), in seq order."""
    ordered = sorted((cp for cp in steps if cp.seq >= 0), key=lambda cp: cp.seq)
    result: list[Span] = []
    ends: list[float] = []  # the ends of the lower seqs seen so far
    for cp in ordered:
        start = max((end for end in ends if end <= cp.at), default=created_at)
        result.append(
            Span(
                seq=cp.seq,
                kind=cp.kind,
                name=cp.name,
                start=min(start, cp.at),
                end=cp.at,
                attempts=cp.attempts,
                failed=cp.error is not None,
                value=cp.value,
                error=cp.error,
            )
        )
        ends.append(cp.at)
    return result


def utc(ts: float, *, ms: bool = False) -> str:
    """``2026-11-30 10:17:54 UTC``: an absolute time, its zone stated."""
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if ms:
        text += f".{moment.microsecond // 1000:03d}"
    return f"{text} UTC"


def duration(seconds: float) -> str:
    """``0.21s``, ``12s``, ``3m 05s``, ``2h 10m``, ``3d 4h``: a span's length for people."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def ago(ts: float, now: float) -> str:
    """``3m 05s ago`` or ``in 2h 10m``: ``ts`` relative to ``now``."""
    if abs(now - ts) < 1:
        return "now"
    return f"{duration(now - ts)} ago" if ts <= now else f"in {duration(ts - now)}"
