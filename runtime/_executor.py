"""One replay of a run: build the invocation and the workflow's context, run the workflow
function until it returns, raises, or goes quiet (every branch waiting on Heron), then unwind
it and decide what the run becomes.

::

    loaded run ─► Invocation + Context ─► workflow task ─┬─ returns / raises ─────┐
                                                         └─ quiet: unwind blocked ┤
                                   in-flight steps finish and commit (settle) ◄───┘
                                                          ─► decide(facts) ─► Decision

A lost predecessor (the lease was taken over: its holder never released it) is accounted
here, before the replay: the invocations lost in a row at the same point are counted in the
header, and the step that runs live first is charged with them (``_operations.step``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from heron.runtime._clock import Clock
from heron.runtime._context import Context
from heron.runtime._decide import Decision, Facts, decide
from heron.runtime._errors import ContinueAsNew, ErrorRecord, NonDeterminismError, Suspend
from heron.runtime._invocation import Invocation, Limits
from heron.runtime._lease import Lease
from heron.runtime._registry import Registry, WorkflowSpec
from heron.runtime._state import EngineState, LostInvocations
from heron.stores.contract import Loaded, WorkflowStore

__all__ = ["Engine", "execute"]

#: Real seconds a workflow may wait on something that is not a Heron operation (an
#: ``asyncio.sleep`` or an ``Event`` in workflow code) before the run is failed for it.
STALL_TIMEOUT = 30.0


class Engine:
    """What an execution needs from the runtime: the store, the clock, the registry, the
    limits and the test hook. Built by ``Runtime``; nothing here reaches back into it."""

    __slots__ = ("before_attempt", "clock", "limits", "registry", "store")

    def __init__(
        self,
        store: WorkflowStore,
        clock: Clock,
        registry: Registry,
        limits: Limits,
        before_attempt: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.registry = registry
        self.limits = limits
        self.before_attempt = before_attempt


async def execute(
    engine: Engine, loaded: Loaded, spec: WorkflowSpec, lease: Lease, deadline: float | None
) -> tuple[Decision, Invocation]:
    """Replay ``loaded`` once under ``lease``; return the decision and the invocation (what it
    committed, the children it started, the engine state to save). Raises the store error the
    invocation met (the invocation fails; the run does not)."""
    state = EngineState.from_json(loaded.run.engine)
    state.waits = []  # what the run waited for until now: no longer
    inv = Invocation(
        loaded,
        store=engine.store,
        clock=engine.clock,
        registry=engine.registry,
        limits=engine.limits,
        lease=lease,
        deadline=deadline,
        state=state,
        before_attempt=engine.before_attempt,
    )
    if lease.taken_over:
        lost = await _count_lost(inv)
        if lost is not None:
            return lost, inv
    elif state.live is not None:
        # The last invocation released its lease but never wrote its end (its store failed):
        # its attempt came back, so it does not count as one that did not.
        counted = state.retries.get(state.live)
        if counted is not None and counted.attempts > 0:
            counted.attempts -= 1
        state.live = None
    context = Context(inv, spec.name)
    try:
        argument = loaded.run.input
        if spec.input_decoder is not None and argument is not None:
            argument = spec.input_decoder(argument)
    except Exception as exc:
        return Decision("failed", status="failed", error=ErrorRecord.of(exc).to_dict()), inv
    task = asyncio.ensure_future(spec.fn(context, argument))
    try:
        quiet = await _until_done_or_quiet(inv, task)
    except asyncio.CancelledError:  # the invocation itself is cancelled: stop the workflow too
        inv.unwind()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    if quiet:
        stalled = inv.stalled_seq()
        if stalled is not None:
            cp = inv.history[stalled]
            inv.fail(
                NonDeterminismError(
                    f"run {inv.run_id!r}: the history has {cp.kind} {cp.name!r} at seq {stalled}, "
                    "handed back before what the workflow waits for now, but the code never "
                    "reached it; the code changed under a running workflow"
                )
            )
    # what the run waits for, read before unwinding releases the blocked operations
    status, deadlines = inv.suspended_status(), inv.deadlines()
    inv.state.waits = inv.waits() if quiet else []
    inv.unwind()  # quiet or done: whatever still waits in this invocation unwinds
    raised, output = await _finish(inv, task)
    facts = Facts(
        run_id=inv.run_id,
        store_error=inv.store_error,
        raced=inv.conflict or lease.lost,
        continued=inv.continued,
        failure=inv.failure,
        quiet=quiet,
        suspended_status=status,
        deadlines=deadlines,
        raised=raised,
        unreached=[] if quiet or raised is not None else inv.unreached(),
        output=output,
    )
    return decide(facts), inv


async def _count_lost(inv: Invocation) -> Decision | None:
    """The previous holder of the lease never came back: count it in the header before
    anything else runs. A run lost too many times in a row at one point of its history fails.
    If the lost invocation had started running steps (``live`` is set), its last attempt never
    came back: the first live step here owes it, unless that step's own record already counts
    it (it was the lost one's first live step too)."""
    state = inv.state
    mark = inv.recorded
    count = state.lost.count + 1 if state.lost is not None and state.lost.mark == mark else 1
    if count >= inv.limits.max_lost_invocations:
        error = ErrorRecord(
            "ExecutorLost",
            f"run {inv.run_id!r}: {count} invocations in a row were lost at the same point "
            f"(after {mark} checkpoints) without progress (a crash, a timeout or an "
            "out-of-memory kill each time)",
        )
        return Decision("failed", status="failed", error=error.to_dict())
    state.lost = LostInvocations(count, mark)
    if state.live is not None:
        inv.lost_charge, inv.lost_live = 1, state.live
    await inv.save_state()
    if inv.store_error is not None:
        raise inv.store_error
    if inv.conflict:
        return Decision("reload")
    return None


async def _until_done_or_quiet(inv: Invocation, task: asyncio.Future[Any]) -> bool:
    """Run until the workflow task is done (False) or quiet (True): nothing running, nothing
    ready, every branch waiting on Heron. Costs nothing while no operation blocks: this only
    wakes up when one does."""
    passes = 0
    while not task.done():
        inv.mark()
        if inv.busy or not inv.blocked and not inv.stopping:
            await _first(task, inv.changed())
            passes = 0
            continue
        progress, seq = inv.progress, inv.next_seq
        await asyncio.sleep(0)
        if task.done():
            break
        if inv.busy or inv.progress != progress or inv.next_seq != seq:
            passes = 0
            continue
        passes += 1
        if inv.others_ready() and passes < 3:  # no view of the loop's ready queue: be patient
            continue
        if inv.blocked:
            return True
        # waiting on nothing Heron knows (an asyncio.sleep, an Event): give it real time
        inv.mark()
        done = await _first(task, inv.changed(), timeout=STALL_TIMEOUT)
        if not done and not inv.blocked and not task.done():
            inv.fail(
                RuntimeError(
                    f"workflow of run {inv.run_id!r} waited {STALL_TIMEOUT:g}s on something that "
                    "is not a Heron operation (an asyncio.sleep, an Event?); use ctx.sleep or "
                    "ctx.wait_for_signal"
                )
            )
            return True
    return False


async def _first(task: asyncio.Future[Any], change: Any, timeout: float | None = None) -> bool:
    """Wait for the task or a change; False on timeout."""
    waiter = asyncio.ensure_future(change)
    try:
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        if not waiter.done():
            waiter.cancel()
    return bool(done)


async def _finish(inv: Invocation, task: asyncio.Future[Any]) -> tuple[BaseException | None, Any]:
    """Let the workflow unwind and in-flight steps commit; what it raised, what it returned."""
    raised: BaseException | None = None
    output: Any = None
    try:
        output = await task
    except Suspend:
        pass
    except asyncio.CancelledError as exc:
        raised = exc
    except ContinueAsNew:
        pass
    except Exception as exc:
        raised = exc
    # anything else (KeyboardInterrupt, SystemExit, a harness's kill) is not the workflow's
    # failure: it goes on up, after in-flight steps settle below
    while inv.busy:  # branches still running a step: let it finish and commit (or block)
        inv.mark()
        if inv.busy:
            await inv.changed()
    await asyncio.sleep(0)
    return raised, output
