"""The engine-private part of a run header, typed.

A store keeps it as opaque JSON (``Run.engine``); the engine reads it into an
:class:`EngineState` when it loads a run and writes it back when it saves the header (the run
suspends, finishes, or retries a step). Nothing here is written per step.

``timers``    seq -> deadline (epoch seconds) of each sleep and signal timeout that started:
              set when the operation first runs, so a replay keeps the deadline it had
``retries``   seq -> the failed attempts of a step so far and when the next one is due
``children``  the ids of the child runs this run started
``notify``    this (child) run has ended and its parent has not been told yet
``live``      the seq of the first step this invocation ran live: written before that attempt,
              cleared when the invocation ends cleanly, so a successor that finds it set knows
              its lost predecessor did start running steps
``lost``      invocations lost in a row at the same point of the history (their lease lapsed
              without a release: a crash, a timeout, an out-of-memory kill)
``nonce``     a secret of the run, part of its children's ids (so nobody can guess and squat
              them)
``waits``     what a suspended run waits for (:class:`Wait`), for people: written when the run
              suspends, gone when it resumes and ends; the engine never reads it back
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EngineState", "LostInvocations", "RetryState", "Wait"]


@dataclass(slots=True)
class RetryState:
    """A step's attempts started so far (failed, or never came back), and when the next one may
    start (``at``, epoch seconds; ``None``: at once)."""

    attempts: int
    at: float | None = None


@dataclass(slots=True)
class LostInvocations:
    """``count`` invocations were lost in a row while the history held ``mark`` checkpoints."""

    count: int
    mark: int


@dataclass(frozen=True, slots=True)
class Wait:
    """One thing a suspended run waits for: ``kind`` is ``sleep``, ``signal`` (``name`` the
    signal, several joined by ``|``), ``child`` (``name`` the child run's id), ``retry``
    (``name`` the step) or ``time`` (the invocation ran out of time); ``until`` when it gives
    up or fires (epoch seconds; ``None``: no deadline); ``seq`` its place in the history."""

    seq: int
    kind: str
    name: str
    until: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "name": self.name, "until": self.until}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Wait:
        until = data.get("until")
        return cls(
            int(data.get("seq", 0)),
            str(data.get("kind", "")),
            str(data.get("name", "")),
            None if until is None else float(until),
        )


@dataclass(slots=True)
class EngineState:
    timers: dict[int, float] = field(default_factory=dict)
    retries: dict[int, RetryState] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    notify: bool = False
    live: int | None = None
    lost: LostInvocations | None = None
    nonce: str = ""
    waits: list[Wait] = field(default_factory=list)

    @classmethod
    def new(cls) -> EngineState:
        return cls(nonce=secrets.token_hex(8))

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> EngineState:
        data = data or {}
        retries: dict[int, RetryState] = {}
        for seq, state in (data.get("retries") or {}).items():
            if isinstance(state, dict):  # "attempt" is what Heron 0.1 wrote
                attempts = int(state.get("attempts", state.get("attempt")) or 0)
                at = state.get("at")
                retries[int(seq)] = RetryState(attempts, None if at is None else float(at))
        lost = data.get("lost")
        return cls(
            timers={
                int(seq): float(deadline) for seq, deadline in (data.get("timers") or {}).items()
            },
            retries=retries,
            children=[str(child) for child in data.get("children") or []],
            notify=bool(data.get("notify", data.get("notify_parent", False))),
            live=None if data.get("live") is None else int(data["live"]),
            lost=LostInvocations(int(lost["count"]), int(lost["mark"])) if lost else None,
            nonce=str(data.get("nonce", "")),
            waits=[Wait.from_json(w) for w in data.get("waits") or [] if isinstance(w, dict)],
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.timers:
            data["timers"] = {str(seq): deadline for seq, deadline in self.timers.items()}
        if self.retries:
            data["retries"] = {
                str(seq): {"attempts": state.attempts, "at": state.at}
                for seq, state in self.retries.items()
            }
        if self.children:
            data["children"] = list(self.children)
        if self.notify:
            data["notify"] = True
        if self.live is not None:
            data["live"] = self.live
        if self.lost is not None:
            data["lost"] = {"count": self.lost.count, "mark": self.lost.mark}
        if self.nonce:
            data["nonce"] = self.nonce
        if self.waits:
            data["waits"] = [wait.to_json() for wait in self.waits]
        return data

    def forget_from(self, seq: int) -> None:
        """Drop what belongs to operations at ``seq`` and after (a rewind to ``seq``)."""
        self.timers = {s: d for s, d in self.timers.items() if s < seq}
        self.retries = {s: r for s, r in self.retries.items() if s < seq}
        self.lost = None
        self.waits = []
