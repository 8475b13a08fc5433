"""A run's history as bars on a time axis, for the dashboard.

Where a checkpoint's bar starts and ends is :func:`heron.functions._timeline.spans`, the rule
``heron inspect`` draws with too (the store records when an operation *ended*, not when it
began: see that module). Time a run spent suspended counts toward the bar that ended the
suspension (a sleep, a signal wait). What a suspended run waits for now
(``RunInfo.waiting_for``) is drawn as an open bar from the last checkpoint to its deadline, or to
now when it has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from heron.functions._timeline import spans
from heron.runtime import RunInfo

__all__ = ["Bar", "Timeline", "timeline"]

#: The narrowest bar drawn, in thousandths of the axis, so an instant still shows.
MIN_WIDTH = 4.0
#: An open wait whose deadline lies within this many axis lengths stretches the axis to it.
STRETCH = 1.0


@dataclass(frozen=True, slots=True)
class Bar:
    """One row of the timeline; ``x`` and ``width`` in thousandths of the axis."""

    seq: int
    kind: str
    name: str
    start: float
    end: float
    x: float
    width: float
    attempts: int = 1
    failed: bool = False
    open: bool = False  # a wait the run is in now
    until: float | None = None  # an open wait's deadline, or a sleep's
    beyond: bool = False  # the deadline lies past the end of the axis
    child: str | None = None  # the child run's id, for a child bar
    error: dict[str, Any] | None = None
    value: Any = None
    recorded: bool = True  # False for an open wait (no checkpoint yet)

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True, slots=True)
class Timeline:
    start: float
    end: float
    now: float
    now_x: float | None  # where "now" falls, for a run still going
    bars: list[Bar]
    ticks: list[float]  # offsets from start, in seconds, at 0, 1/4, ... 1 of the axis

    @property
    def span(self) -> float:
        return self.end - self.start


def _child_of(info: RunInfo, seq: int) -> str | None:
    """The id of the child run started at ``seq`` (child ids read ``<parent>-c<seq>-<nonce>``,
    docs/security.md); ``None`` when none matches."""
    prefix = f"{info.id}-c{seq}-"
    for child in info.children:
        if child.startswith(prefix):
            return child
    return None


def timeline(info: RunInfo, now: float) -> Timeline:
    """The bars of ``info``'s checkpoints and of what it waits for, on one axis."""
    origin = info.created_at
    checkpoints = [cp for cp in info.steps if cp.seq >= 0]  # patch markers are not operations
    live = not info.terminal
    last = max([origin, *(cp.at for cp in checkpoints if math.isfinite(cp.at))])
    end = max(last, info.updated_at if math.isfinite(info.updated_at) else last)
    if live:
        end = max(end, now)
    for wait in info.waiting_for:
        if wait.until is not None and math.isfinite(wait.until) and wait.until > end:
            if wait.until - origin <= (1 + STRETCH) * max(end - origin, 1e-9):
                end = wait.until
    span = max(end - origin, 1e-6)

    def place(start: float, stop: float) -> tuple[float, float]:
        x = min(max((start - origin) / span * 1000, 0.0), 1000.0)
        right = min(max((stop - origin) / span * 1000, x), 1000.0)
        width = max(right - x, MIN_WIDTH)
        if x + width > 1000:
            x = 1000 - width
        return x, width

    bars: list[Bar] = []
    previous = origin
    finite = [cp for cp in checkpoints if math.isfinite(cp.at)]
    for span_ in spans(finite, origin):
        x, width = place(span_.start, span_.end)
        bars.append(
            Bar(
                seq=span_.seq,
                kind=span_.kind,
                name=span_.name,
                start=span_.start,
                end=span_.end,
                x=x,
                width=width,
                attempts=span_.attempts,
                failed=span_.failed,
                until=span_.value
                if span_.kind == "sleep" and isinstance(span_.value, int | float)
                else None,
                child=_child_of(info, span_.seq) if span_.kind == "child" else None,
                error=span_.error,
                value=span_.value,
            )
        )
        previous = max(previous, span_.end)
    if live:
        for wait in info.waiting_for:
            until = wait.until if wait.until is not None and math.isfinite(wait.until) else None
            stop = min(until, end) if until is not None else end
            x, width = place(previous, max(stop, previous))
            bars.append(
                Bar(
                    seq=wait.seq,
                    kind=wait.kind,
                    name=wait.name,
                    start=previous,
                    end=stop,
                    x=x,
                    width=width,
                    open=True,
                    until=until,
                    beyond=until is not None and until > end,
                    child=wait.name if wait.kind == "child" else None,
                    recorded=False,
                )
            )
    now_x = min(max((now - origin) / span * 1000, 0.0), 1000.0) if live else None
    return Timeline(
        start=origin,
        end=end,
        now=now,
        now_x=now_x,
        bars=bars,
        ticks=[span * i / 4 for i in range(5)],
    )
