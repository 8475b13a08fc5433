"""Typed values across step and workflow boundaries: stored as JSON, rebuilt per annotation,
alike live and on replay."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass
from typing import Any

import pydantic
import pytest

from heron.runtime import Context, Runtime, SerializationError
from heron.runtime._serde import decoder_for, encode
from heron.runtime.testing import FakeClock


@dataclass
class Receipt:
    id: str
    cents: int


class Parcel(pydantic.BaseModel):
    sku: str
    weight: float


@dataclass
class Order:
    id: str
    parcels: list[Parcel]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


async def two_resumes(rt: Runtime, clock: FakeClock, workflow: str, value: Any = None) -> Any:
    """Start ``workflow``, let it reach its sleep(10), then finish it (a replay)."""
    run_id = await rt.start(workflow, value)
    await rt.resume(run_id)
    clock.advance(10)
    return await rt.wait(run_id, timeout=10)


async def test_dataclass_and_model_results_come_back_typed(rt: Runtime, clock: FakeClock) -> None:
    seen: list[tuple[Any, Any, Any]] = []

    @rt.step
    async def charge() -> Receipt:
        return Receipt(id="r-1", cents=100)

    @rt.step
    async def weigh() -> Parcel:
        return Parcel(sku="book", weight=1.5)

    @rt.step
    async def weigh_all() -> list[Parcel]:
        return [Parcel(sku="a", weight=1), Parcel(sku="b", weight=2)]

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        values = (await ctx.step(charge), await ctx.step(weigh), await ctx.step(weigh_all))
        seen.append(values)
        await ctx.sleep(10)

    await two_resumes(rt, clock, "w")

    assert len(seen) == 2  # live, then replayed
    for receipt, parcel, parcels in seen:
        assert receipt == Receipt(id="r-1", cents=100)
        assert parcel == Parcel(sku="book", weight=1.5)
        assert parcels == [Parcel(sku="a", weight=1), Parcel(sku="b", weight=2)]
        assert all(isinstance(p, Parcel) for p in parcels)


async def test_stored_values_are_plain_json(rt: Runtime) -> None:
    @rt.step
    async def charge() -> Receipt:
        return Receipt(id="r-1", cents=100)

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> Receipt:
        return await ctx.step(charge)

    run_id = await rt.start("w")
    output = await rt.wait(run_id, timeout=10)

    info = await rt.get(run_id)
    assert info.steps[0].value == {"id": "r-1", "cents": 100}
    assert info.output == {"id": "r-1", "cents": 100}
    assert output == Receipt(id="r-1", cents=100)  # wait rebuilds the workflow's output type


async def test_workflow_input_is_rebuilt_per_annotation(rt: Runtime, clock: FakeClock) -> None:
    seen: list[Any] = []

    @rt.workflow("ship")
    async def ship(ctx: Context, order: Order) -> str:
        seen.append(order)
        await ctx.sleep(10)
        return f"{order.id}:{sum(p.weight for p in order.parcels)}"

    order = Order(id="o-1", parcels=[Parcel(sku="a", weight=1.0), Parcel(sku="b", weight=2.5)])

    assert await two_resumes(rt, clock, "ship", order) == "o-1:3.5"
    assert seen == [order, order]
    assert all(isinstance(o, Order) and isinstance(o.parcels[0], Parcel) for o in seen)


async def test_model_input_given_as_a_dict(rt: Runtime, clock: FakeClock) -> None:
    @rt.workflow("weigh")
    async def weigh(ctx: Context, parcel: Parcel) -> float:
        assert isinstance(parcel, Parcel)
        await ctx.sleep(10)
        return parcel.weight

    assert await two_resumes(rt, clock, "weigh", {"sku": "x", "weight": 4}) == 4.0


async def test_plain_and_untyped_values_are_untouched(rt: Runtime, clock: FakeClock) -> None:
    seen: list[tuple[Any, ...]] = []

    @rt.step
    async def as_dict() -> dict[str, Any]:
        return {"a": [1, 2], "b": None}

    @rt.step
    async def untyped():
        return {"c": 1.5}

    @rt.step
    async def as_any() -> Any:
        return [1, "two"]

    @rt.workflow("w")
    async def w(ctx: Context, payload):
        values = (
            payload,
            await ctx.step(as_dict),
            await ctx.step(untyped),
            await ctx.step(as_any),
        )
        seen.append(values)
        await ctx.sleep(10)

    await two_resumes(rt, clock, "w", {"raw": True})

    expected = ({"raw": True}, {"a": [1, 2], "b": None}, {"c": 1.5}, [1, "two"])
    assert seen == [expected, expected]
    assert all(type(v) in (dict, list) for v in seen[1])


async def test_side_effect_result_is_typed_too(rt: Runtime, clock: FakeClock) -> None:
    seen: list[Any] = []

    def fresh_receipt() -> Receipt:
        return Receipt(id="r-9", cents=9)

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        seen.append(await ctx.side_effect(fresh_receipt))
        await ctx.sleep(10)

    await two_resumes(rt, clock, "w")

    assert seen == [Receipt(id="r-9", cents=9)] * 2


async def test_child_output_is_typed_per_the_child_workflow(rt: Runtime) -> None:
    @rt.workflow("make_receipt")
    async def make_receipt(ctx: Context, cents: int) -> Receipt:
        return Receipt(id="child", cents=cents)

    @rt.workflow("parent")
    async def parent(ctx: Context, _: Any) -> bool:
        receipt = await ctx.child("make_receipt", 7)
        return bool(receipt == Receipt(id="child", cents=7))

    assert await rt.wait(await rt.start("parent"), timeout=10) is True


ROUND_TRIPS: list[tuple[Any, Any]] = [
    (Receipt, Receipt(id="x", cents=1)),
    (Parcel, Parcel(sku="s", weight=0.5)),
    (list[Parcel], [Parcel(sku="s", weight=0.5)]),
    (dict[str, Receipt], {"k": Receipt(id="y", cents=2)}),
    (Receipt | None, Receipt(id="z", cents=3)),
    (tuple[int, str], (1, "a")),
    (dt.datetime, dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)),
    (dt.date, dt.date(2024, 5, 1)),
    (uuid.UUID, uuid.UUID("12345678-1234-5678-1234-567812345678")),
    (Color, Color.BLUE),
    (set, {1, 2, 3}),
    (set[int], {1, 2, 3}),
    (frozenset[str], frozenset({"a", "b"})),
    (list[tuple[int, str]], [(1, "a"), (2, "b")]),
    (dict[str, set[int]], {"k": {1, 2}}),
]


def _name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace(f"{__name__}.", "").replace("datetime.", "")


@pytest.mark.parametrize(
    ("annotation", "value"), [pytest.param(a, v, id=_name(a)) for a, v in ROUND_TRIPS]
)
def test_round_trip_per_annotation(annotation: Any, value: Any) -> None:
    stored = encode(value, "test value").value
    decoder = decoder_for(annotation)

    assert decoder is not None
    assert decoder(stored) == value


@pytest.mark.parametrize("annotation", [Any, dict, list, str, int, dict[str, Any], list[int]])
def test_plain_annotations_need_no_decoder(annotation: Any) -> None:
    assert decoder_for(annotation) is None


@pytest.mark.parametrize(
    "value",
    [object(), float("nan"), {"k": object()}, [1, {2j}], float("inf"), [float("-inf")]],
    ids=["object", "nan", "nested-object", "complex", "inf", "nested-minus-inf"],
)
def test_encode_refuses_what_json_cannot_hold(value: Any) -> None:
    with pytest.raises(SerializationError, match="the thing"):
        encode(value, "the thing")


async def test_a_step_annotated_with_a_set_returns_a_set(rt: Runtime, clock: FakeClock) -> None:
    seen: list[Any] = []

    @rt.step
    async def tags() -> set[str]:
        return {"a", "b"}

    @rt.step
    async def pairs() -> list[tuple[int, int]]:
        return [(1, 2)]

    @rt.workflow("w")
    async def w(ctx: Context, _: Any) -> None:
        seen.append((await ctx.step(tags), await ctx.step(pairs)))
        await ctx.sleep(10)

    await two_resumes(rt, clock, "w")

    assert seen == [({"a", "b"}, [(1, 2)])] * 2
