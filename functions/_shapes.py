"""The JSON shapes of runs that every way out shares: ``GET /runs`` and ``GET /runs/{id}`` (the
HTTP API's models are built from these), ``heron ls --json`` and ``heron inspect --json``.
Plain dicts of JSON values; no pydantic, so the CLI does not need the ``api`` extra.
"""

from __future__ import annotations

from typing import Any

from heron.runtime import RunInfo
from heron.stores.contract import RunSummary

__all__ = ["run_detail", "run_summary"]


def run_summary(run: RunSummary | RunInfo) -> dict[str, Any]:
    """``id workflow version status parent_id tags created_at updated_at wake_at``."""
    return {
        "id": run.id,
        "workflow": run.workflow,
        "version": run.version,
        "status": run.status,
        "parent_id": run.parent_id,
        "tags": list(run.tags),
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "wake_at": run.wake_at,
    }


def run_detail(info: RunInfo) -> dict[str, Any]:
    """The summary, plus ``input output error``, the timeline (``steps``: ``seq kind name value
    error at attempts order``; ``order`` is the checkpoint's place in the order outcomes were
    handed back, which replaying a recorded history needs), buffered ``signals`` (``id name
    at``), ``children`` (their ids) and ``waiting_for`` (``seq kind name until``)."""
    return {
        **run_summary(info),
        "input": info.input,
        "output": info.output,
        "error": info.error,
        "steps": [
            {
                "seq": cp.seq,
                "kind": cp.kind,
                "name": cp.name,
                "value": cp.value,
                "error": cp.error,
                "at": cp.at,
                "attempts": cp.attempts,
                "order": cp.order,
            }
            for cp in info.steps
        ],
        "signals": [{"id": s.id, "name": s.name, "at": s.at} for s in info.signals],
        "children": list(info.children),
        "waiting_for": [
            {"seq": w.seq, "kind": w.kind, "name": w.name, "until": w.until}
            for w in info.waiting_for
        ],
    }
