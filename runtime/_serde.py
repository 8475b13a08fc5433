"""JSON in, typed values out.

Every value that crosses a step or workflow boundary is stored as JSON. Dataclasses, pydantic
models, tuples, sets, enums, datetimes and UUIDs are accepted on the way in; on the way out a
value is rebuilt as the function's annotation says (``-> Receipt`` gives a ``Receipt`` back, live
and on replay alike). pydantic is imported only when an annotation needs it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import inspect
import json
import math
import typing
import uuid
from collections.abc import Callable
from typing import Any

from heron.runtime._errors import SerializationError
from heron.stores.contract import dumps

__all__ = ["decoder_for", "encode", "encoded_size"]

_PLAIN = (str, int, float, bool, type(None))
_IDENTITY_TYPES: frozenset[Any] = frozenset(
    {Any, object, str, int, float, bool, dict, list, type(None), inspect.Parameter.empty}
)


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # a pydantic model
        return dump(mode="json")
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _is_plain(value: Any, depth: int = 0) -> bool:
    """True for values that are JSON already (checked cheaply, a few levels deep)."""
    if isinstance(value, _PLAIN):
        return not isinstance(value, float) or math.isfinite(value)  # NaN, ±inf are not JSON
    if depth > 3:
        return False
    if type(value) is list:
        return all(_is_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def encode(value: Any, what: str) -> Any:
    """``value`` as plain JSON data; ``what`` names it in errors ("step 'x' (run 'r', seq 3)")."""
    if _is_plain(value):
        return value
    try:
        return json.loads(json.dumps(value, default=_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{what}: value is not JSON-serializable: {exc}") from exc


def encoded_size(value: Any) -> int:
    """Bytes of the stored JSON form of a plain value."""
    if isinstance(value, str):
        if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
            return len(value) + 2  # nothing to escape
        return len(dumps(value).encode())
    if isinstance(value, _PLAIN):
        return 8
    return len(dumps(value).encode())


@functools.cache
def decoder_for(annotation: Any) -> Callable[[Any], Any] | None:
    """A function that rebuilds a value of ``annotation`` from JSON, or ``None`` for identity."""
    if annotation in _IDENTITY_TYPES:
        return None
    origin = typing.get_origin(annotation)
    if origin in (dict, list) and not _needs_model(annotation):
        return None
    if isinstance(annotation, type) and hasattr(annotation, "model_validate"):
        return annotation.model_validate  # type: ignore[no-any-return]
    if not _needs_model(annotation) and origin is not tuple and annotation is not tuple:
        return None
    from pydantic import TypeAdapter  # only now: pydantic is heavy to import

    return TypeAdapter(annotation).validate_python


def _needs_model(annotation: Any) -> bool:
    """Whether rebuilding ``annotation`` needs more than the JSON value itself."""
    if typing.get_origin(annotation) in (tuple, set, frozenset):
        return True
    if isinstance(annotation, type):
        return (
            dataclasses.is_dataclass(annotation)
            or hasattr(annotation, "model_validate")
            or issubclass(annotation, enum.Enum | tuple | set | frozenset | dt.date | uuid.UUID)
        )
    return any(_needs_model(arg) for arg in typing.get_args(annotation))


def return_annotation(fn: Callable[..., Any]) -> Any:
    """The resolved return annotation of ``fn`` (``Any`` when missing or unresolvable)."""
    try:
        return _return_annotation(fn)
    except TypeError:  # an unhashable callable object: resolve it uncached
        return _return_annotation.__wrapped__(fn)


@functools.lru_cache(maxsize=4096)
def _return_annotation(fn: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return Any
    return hints.get("return", Any)


def parameter_annotation(fn: Callable[..., Any], index: int) -> Any:
    """The resolved annotation of ``fn``'s positional parameter ``index`` (``Any`` if none)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
        hints = typing.get_type_hints(fn)
    except Exception:
        return Any
    if index >= len(params):
        return Any
    return hints.get(params[index].name, Any)
