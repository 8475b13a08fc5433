"""Small helpers shared by the unit tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

from heron.runtime import Runtime


async def timeline(rt: Runtime, run_id: str) -> list[tuple[int, str, str]]:
    """``(seq, kind, name)`` of every checkpoint of a run, in ``seq`` order."""
    return [(cp.seq, cp.kind, cp.name) for cp in (await rt.get(run_id)).steps]


async def status(rt: Runtime, run_id: str) -> str:
    return (await rt.get(run_id)).status
