"""The store contract: what the engine needs from any storage backend.

A run lives in a store as three kinds of record:

    Run          the header: status, input/output, when it is next due (``wake_at``),
                 a ``revision`` for optimistic concurrency, the lease, engine-private state
    Checkpoint   one per completed operation, keyed by ``(run_id, seq)``, create-only
    Signal       one per buffered signal, keyed by ``(run_id, signal.id)``

Every backend subclasses :class:`WorkflowStore` and implements its abstract methods. The rules
every backend keeps (``tests/contract/`` checks them for each store):

* a steady-state step costs one write, :meth:`WorkflowStore.append`; the header is written only
  when the run suspends, finishes or renews its lease;
* :meth:`WorkflowStore.due` is an index lookup, never a scan of runs that are not due;
* writes that race are decided by the store, atomically: create-only checkpoints, headers saved
  on a matching ``revision``, signals stored and made due in one step, leases set-if-free;
* a signal is consumed by the checkpoint that records it (``append(..., consumes=id)``), in the
  same atomic write; ``load`` returns only the signals still pending, and a run holds at most
  ``max_pending`` of them (:class:`TooManySignals` past that);
* reads are bounded: ``list_runs`` returns summaries (no inputs or outputs), a page at a time.

Errors::

    HeronError            (the base of all of Heron's errors, re-exported by ``heron``)
    PayloadTooLarge       a value over the runtime's limit or a store's item limit
    StoreError            any failure a backend reports about a run (carries the run id)
     ├── Conflict         a create-only or conditional write lost a race
     ├── SchemaMissing    the table/schema is absent and ``auto_schema`` is off
     └── TooManySignals   the run already holds ``max_pending`` signals nobody consumed
"""

from __future__ import annotations

import abc
import base64
import enum
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

__all__ = [
    "ACTIVE_STATUSES",
    "MAX_PENDING_SIGNALS",
    "TERMINAL_STATUSES",
    "Acquired",
    "Checkpoint",
    "Conflict",
    "HeronError",
    "Loaded",
    "PayloadTooLarge",
    "Run",
    "RunPage",
    "RunQuery",
    "RunStatus",
    "RunSummary",
    "SchemaMissing",
    "Signal",
    "StoreError",
    "TooManySignals",
    "WorkflowStore",
    "decode_cursor",
    "dumps",
    "encode_cursor",
    "loads",
]

RunStatus = Literal["pending", "running", "sleeping", "waiting", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: Final = frozenset({"completed", "failed", "cancelled"})
ACTIVE_STATUSES: Final = frozenset({"pending", "running", "sleeping", "waiting"})


class HeronError(Exception):
    """Base of every error Heron raises on purpose (defined here, the bottom layer)."""


class StoreError(HeronError):
    """A store could not do what was asked. ``run_id`` names the run when there is one."""

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class Conflict(StoreError):
    """A create-only or conditional write lost a race (or a start reused an id differently)."""


class PayloadTooLarge(HeronError, ValueError):
    """A value is larger than the runtime's limit or the store's item limit; the message names
    the step and seq. Raised by the runtime, and by stores whose items have a hard size cap."""


class SchemaMissing(StoreError):
    """The store's schema or table does not exist and ``auto_schema`` is off."""


class TooManySignals(StoreError):
    """A run already holds ``limit`` signals that no checkpoint consumed yet; the signal was not
    stored. Raised by :meth:`WorkflowStore.signal`."""

    def __init__(self, run_id: str, limit: int) -> None:
        super().__init__(
            f"run {run_id!r} already holds {limit} signals it has not consumed (the limit); "
            "this one was not stored",
            run_id=run_id,
        )
        self.limit = limit


#: How many unconsumed signals a run may hold, by default (docs/security.md).
MAX_PENDING_SIGNALS: Final = 100


class Acquired(enum.IntEnum):
    """What :meth:`WorkflowStore.acquire` did. False-y when the lease was not taken."""

    #: Not taken: held by another token, the run is terminal or missing, or (``due_only``) not due.
    NO = 0
    #: Taken: the lease was free (never taken, or released).
    FREE = 1
    #: Renewed: ``token`` held it already.
    RENEWED = 2
    #: Taken over: another token held it and let it lapse without releasing it: that executor
    #: died (a crash, a timeout, an out-of-memory kill) or lost touch mid-invocation.
    TAKEN_OVER = 3


@dataclass(slots=True)
class Run:
    """The run header.

    ``revision`` is compared and bumped by :meth:`WorkflowStore.save` and bumped by
    :meth:`WorkflowStore.signal`. ``lease_token``/``lease_expires_at`` are owned by the store's
    lease methods: ``save`` neither reads nor writes them. ``engine`` is the runtime's private
    state (timer deadlines, signal timeouts, retry counters), opaque JSON to the store.
    """

    id: str
    workflow: str
    input: Any = None
    version: str = "1"
    status: RunStatus = "pending"
    output: Any = None
    error: dict[str, Any] | None = None
    parent_id: str | None = None
    tags: list[str] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0
    wake_at: float | None = None
    revision: int = 0
    engine: dict[str, Any] = field(default_factory=dict)
    lease_token: str | None = None
    lease_expires_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def copy(self) -> Run:
        """A deep-enough copy: the JSON parts are copied through JSON."""
        return replace(
            self,
            input=loads(dumps(self.input)),
            output=loads(dumps(self.output)),
            error=None if self.error is None else dict(self.error),
            tags=list(self.tags),
            engine=loads(dumps(self.engine)),
        )

    def summary(self) -> RunSummary:
        """The run without its input and output (what listing returns)."""
        return RunSummary(
            id=self.id,
            workflow=self.workflow,
            version=self.version,
            status=self.status,
            error=None if self.error is None else dict(self.error),
            parent_id=self.parent_id,
            tags=list(self.tags),
            created_at=self.created_at,
            updated_at=self.updated_at,
            wake_at=self.wake_at,
        )

    def header_fields(self) -> dict[str, Any]:
        """The columns every backend persists, JSON parts encoded once, here."""
        return {
            "id": self.id,
            "workflow": self.workflow,
            "version": self.version,
            "status": self.status,
            "input": dumps(self.input),
            "output": dumps(self.output),
            "error": dumps(self.error),
            "parent_id": self.parent_id,
            "tags": dumps(self.tags),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "wake_at": self.wake_at,
            "revision": self.revision,
            "engine": dumps(self.engine),
            "lease_token": self.lease_token,
            "lease_expires_at": self.lease_expires_at,
        }

    @classmethod
    def from_fields(cls, row: Any) -> Run:
        """Inverse of :meth:`header_fields` (``row`` is a mapping such as ``sqlite3.Row``)."""
        return cls(
            id=row["id"],
            workflow=row["workflow"],
            version=row["version"],
            status=row["status"],
            input=loads(row["input"]),
            output=loads(row["output"]),
            error=loads(row["error"]),
            parent_id=row["parent_id"],
            tags=loads(row["tags"]) or [],
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
            wake_at=None if row["wake_at"] is None else float(row["wake_at"]),
            revision=int(row["revision"]),
            engine=loads(row["engine"]) or {},
            lease_token=row["lease_token"],
            lease_expires_at=(
                None if row["lease_expires_at"] is None else float(row["lease_expires_at"])
            ),
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One completed operation of a run, at ``seq``.

    ``kind`` is ``step``, ``sleep``, ``signal``, ``child``, ``side_effect`` or ``patch``. Patch
    markers use negative ``seq`` values, a key space of their own, so they never shift the
    sequence numbers of the operations around them; a marker's ``value`` is the ``seq`` at which
    the decision was taken. ``error`` (``{"type", "message", ...}``) is set when the operation
    failed for good; replay raises it again. ``order`` is the checkpoint's position in the order
    outcomes were handed back to the workflow (``None`` in histories written before Heron kept
    it: ``seq`` then stands in). ``encoded`` is ``value`` already encoded as JSON, when the
    runtime has that text at hand (stores write it instead of encoding again).
    """

    seq: int
    kind: str
    name: str
    value: Any = None
    error: dict[str, Any] | None = None
    at: float = 0.0
    attempts: int = 1
    order: int | None = None
    encoded: str | None = field(default=None, compare=False, repr=False)

    def value_json(self) -> str:
        """``value`` as compact JSON text."""
        return self.encoded if self.encoded is not None else dumps(self.value)

    def error_json(self) -> str | None:
        return None if self.error is None else dumps(self.error)

    def to_json(self) -> str:
        head = dumps(
            {
                "seq": self.seq,
                "kind": self.kind,
                "name": self.name,
                "error": self.error,
                "at": self.at,
                "attempts": self.attempts,
                "order": self.order,
            }
        )
        return f'{head[:-1]},"value":{self.value_json()}}}'

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        d = loads(text)
        return cls(
            seq=d["seq"],
            kind=d["kind"],
            name=d["name"],
            value=d.get("value"),
            error=d.get("error"),
            at=d.get("at", 0.0),
            attempts=d.get("attempts", 1),
            order=d.get("order"),
        )


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal buffered for a run. ``id`` deduplicates: storing the same id twice is a no-op."""

    id: str
    name: str
    payload: Any = None
    at: float = 0.0

    def to_json(self) -> str:
        return dumps({"id": self.id, "name": self.name, "payload": self.payload, "at": self.at})

    @classmethod
    def from_json(cls, text: str | bytes) -> Signal:
        d = loads(text)
        return cls(id=d["id"], name=d["name"], payload=d.get("payload"), at=d.get("at", 0.0))


@dataclass(frozen=True, slots=True)
class Loaded:
    """Everything about one run, as one :meth:`WorkflowStore.load` returns it: the header, the
    checkpoints in ``seq`` order (patch markers first), and the signals no checkpoint consumed
    yet, in ``(at, id)`` order."""

    run: Run
    checkpoints: list[Checkpoint]
    signals: list[Signal]


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run as listing shows it: the header without input, output and engine state."""

    id: str
    workflow: str
    version: str
    status: str
    error: dict[str, Any] | None
    parent_id: str | None
    tags: list[str]
    created_at: float
    updated_at: float
    wake_at: float | None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class RunQuery:
    """A filter for :meth:`WorkflowStore.list_runs`; runs come newest first."""

    workflow: str | None = None
    status: str | None = None
    tag: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    parent_id: str | None = None
    limit: int = 50
    cursor: str | None = None

    def matches(self, run: Run | RunSummary) -> bool:
        """The filter as a predicate; backends that filter in memory use it, others mirror it."""
        return (
            (self.workflow is None or run.workflow == self.workflow)
            and (self.status is None or run.status == self.status)
            and (self.tag is None or self.tag in run.tags)
            and (self.created_after is None or run.created_at >= self.created_after)
            and (self.created_before is None or run.created_at < self.created_before)
            and (self.parent_id is None or run.parent_id == self.parent_id)
        )


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of :meth:`WorkflowStore.list_runs`; ``next_cursor`` fetches the next one."""

    runs: list[RunSummary]
    next_cursor: str | None = None


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Compact JSON, the one encoding every store uses for payloads."""
    return _ENCODER.encode(value)


def loads(text: str | bytes | None) -> Any:
    return None if text is None else json.loads(text)


def encode_cursor(created_at: float, run_id: str) -> str:
    """An opaque cursor after the run ``(created_at, run_id)`` in newest-first order."""
    return base64.urlsafe_b64encode(dumps([created_at, run_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The ``(created_at, run_id)`` a cursor of :func:`encode_cursor` holds. Raises
    ``ValueError`` for anything else: a cursor is sent by callers, so it is checked before any
    store sees it (a finite number, and an id every store can hold: no lone surrogate)."""
    try:
        created_at, run_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(created_at, bool) or not isinstance(created_at, int | float):
            raise TypeError("created_at is not a number")
        if not isinstance(run_id, str):
            raise TypeError("run id is not a string")
        run_id.encode()  # a lone surrogate raises UnicodeEncodeError
        if not math.isfinite(created_at):
            raise ValueError("created_at is not finite")
        return float(created_at), run_id
    except Exception as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc


class WorkflowStore(abc.ABC):
    """The storage contract. Every method is a coroutine; every write that can race is atomic.

    ``now`` arguments default to the wall clock; the runtime passes its own clock so that tests
    can move time.
    """

    #: False for stores whose lease is best-effort (a KV driver without set-if-absent).
    atomic_lease: bool = True

    # -- runs ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def create(self, run: Run) -> bool:
        """Insert a new header; ``False`` (and nothing written) if ``run.id`` exists."""

    @abc.abstractmethod
    async def load(self, run_id: str) -> Loaded | None:
        """The header, checkpoints in ``seq`` order and the signals not consumed, or ``None``."""

    @abc.abstractmethod
    async def append(
        self, run_id: str, checkpoint: Checkpoint, *, consumes: str | None = None
    ) -> None:
        """Write one checkpoint, create-only. Raises :class:`Conflict` if its ``seq`` exists or
        the run does not.

        ``consumes`` names a buffered signal the checkpoint records: in the same atomic write it
        is marked consumed by ``checkpoint.seq``, so ``load`` no longer returns it (its id still
        deduplicates). A signal that is missing or consumed already raises :class:`Conflict`
        and nothing is written.
        """

    @abc.abstractmethod
    async def save(self, run: Run) -> Run:
        """Write the header if the stored ``revision`` equals ``run.revision``.

        Returns the run with ``revision`` bumped. Raises :class:`Conflict` when the revision has
        moved (a signal, a cancel or another executor got there first) or the run is gone.
        Leaves the lease fields alone, and the input: only :meth:`create` and :meth:`rewind`
        write it (it never changes in between, and it can be a quarter of a megabyte that a
        save would send again at every suspension).
        """

    @abc.abstractmethod
    async def signal(
        self, run_id: str, signal: Signal, *, max_pending: int = MAX_PENDING_SIGNALS
    ) -> bool:
        """Buffer ``signal``, make the run due and bump its revision, in one atomic step.

        Due means ``wake_at = min(wake_at, signal.at)``; a terminal run keeps the signal but is
        not made due. Storing a signal id the run has seen (buffered or consumed) changes
        nothing. Returns ``False`` if the run does not exist; raises :class:`TooManySignals`
        (nothing stored) when the run already holds ``max_pending`` unconsumed signals.
        """

    @abc.abstractmethod
    async def due(self, now: float, limit: int) -> list[str]:
        """Ids of runs with ``wake_at <= now``, earliest ``wake_at`` first, at most ``limit``."""

    @abc.abstractmethod
    async def delete(self, run_id: str) -> None:
        """Remove the run, its checkpoints and its signals. Deleting a missing run is a no-op."""

    @abc.abstractmethod
    async def list_runs(self, query: RunQuery) -> RunPage:
        """Summaries of the runs matching ``query``, newest first, ``query.limit`` a page, with a
        cursor for the next; the work done is bounded by the page, not by the table. Raises
        ``ValueError`` for a cursor it did not issue."""

    @abc.abstractmethod
    async def rewind(self, run: Run, seq: int, *, restore_signals: bool = True) -> Run:
        """Drop the run's history from ``seq`` on and write ``run``'s header, atomically.

        Deletes the checkpoints at ``seq`` and after, and the patch markers decided there
        (a marker's ``value``; markers without one stay, unless ``seq`` is 0); with
        ``restore_signals`` the signals those checkpoints consumed are pending again (a rerun
        consumes them anew), without it they stay consumed (``continue_as_new``). The header is
        written as :meth:`save` writes it, on a matching ``revision`` (bumped; the saved run is
        returned), else :class:`Conflict` and nothing changes. A store that cannot do all of it
        in one atomic write (a history too long for one DynamoDB transaction) orders the writes
        so that an interrupted rewind can be done again.
        """

    # -- the lease -------------------------------------------------------------------------

    @abc.abstractmethod
    async def acquire(
        self,
        run_id: str,
        token: str,
        ttl: float,
        *,
        now: float | None = None,
        due_only: bool = False,
    ) -> Acquired:
        """Take the run's lease (or renew it, when ``token`` already holds it).

        Succeeds when the lease is free, expired or held by ``token``, and the run exists and is
        not terminal. Sets ``lease_expires_at`` and ``wake_at`` to ``now + ttl``, so that a
        crashed holder's run becomes due once its lease lapses. Does not bump ``revision``.
        Returns :class:`Acquired`: ``NO`` (false-y) when not taken, ``FREE``, ``RENEWED``, or
        ``TAKEN_OVER`` when another token held the lease and let it lapse without a release
        (the engine counts that invocation's step attempt as one that never came back).

        With ``due_only``, also requires ``wake_at <= now``: an executor takes a run only when
        it is due, in the same atomic step, and reads the history after that, so it can never
        act on a history loaded before another executor's whole invocation.
        """

    @abc.abstractmethod
    async def release(self, run_id: str, token: str) -> None:
        """Drop the lease if ``token`` holds it; ``wake_at`` is left as it is."""

    # -- schema ----------------------------------------------------------------------------

    async def ensure_schema(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Create tables/indexes if missing. Stores without a schema do nothing."""

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections. The store must not be used afterwards."""

    # -- shared helpers for backends -----------------------------------------------------------

    @staticmethod
    def _now(now: float | None) -> float:
        return time.time() if now is None else now

    @staticmethod
    def _page(runs: Sequence[RunSummary], query: RunQuery) -> RunPage:
        """Cut a newest-first, already filtered and cursor-positioned list into one page."""
        page = list(runs[: query.limit])
        more = len(runs) > query.limit
        cursor = encode_cursor(page[-1].created_at, page[-1].id) if more and page else None
        return RunPage(runs=page, next_cursor=cursor)

    @staticmethod
    def _after_cursor(run: Run | RunSummary, cursor: tuple[float, str] | None) -> bool:
        """Whether ``run`` comes after ``cursor`` in newest-first ``(created_at, id)`` order."""
        if cursor is None:
            return True
        return (run.created_at, run.id) < cursor
