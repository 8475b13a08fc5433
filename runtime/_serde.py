"""JSON in, typed values out: every value that crosses a step or workflow boundary.

A value is stored as JSON, encoded exactly once: :func:`encode` checks it, measures the stored
bytes and keeps the text, which the store then writes as it is. Dataclasses, pydantic models,
tuples, sets, enums, datetimes and UUIDs are accepted on the way in; on the way out a value is
rebuilt as the function's annotation says (``-> Receipt`` gives a ``Receipt`` back,
``-> dict[int, str]`` gives integer keys back), live and on replay alike. pydantic is imported
only when an annotation needs it, and an annotation that cannot be rebuilt is refused when the
step or workflow is registered, not when a run first meets it.

Limits (docs/security.md): a value nests at most :data:`MAX_DEPTH` levels; integers fit JSON
(Python refuses to print one of more than 4,300 digits); text is valid Unicode (no lone
surrogates); floats are finite. Anything else is a :class:`SerializationError` naming the value,
raised before anything is stored.
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
import weakref
from collections.abc import Callable
from typing import Any, Final

from heron.runtime._errors import PayloadTooLarge, SerializationError

__all__ = [
    "MAX_DEPTH",
    "Encoded",
    "build_decoder",
    "decoder_for",
    "encode",
    "nested_too_deep",
    "parameter_annotation",
    "return_annotation",
]

#: How deep a stored value may nest (lists and objects within each other).
MAX_DEPTH: Final = 64

_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# The C encoder behind it, made once: JSONEncoder.encode builds one on every call. (No cycle
# check: a value that contains itself fails with RecursionError, which encode reports.)
_make_c_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER: Any = (
    _make_c_encoder(None, None, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    if _make_c_encoder is not None
    else None
)


def _dumps(value: Any) -> str:
    """Compact JSON of a plain value (the C encoder when there is one)."""
    if _C_ENCODER is None:
        return _ENCODER.encode(value)
    if type(value) is str:
        return json.encoder.encode_basestring(value)
    return "".join(_C_ENCODER(value, 0))


#: Classes whose instances are JSON values as they are (TypedDicts are dicts).
_JSON_CLASSES: Final = (str, int, float, bool, dict, list, type(None))
_IDENTITY_TYPES: frozenset[Any] = frozenset(
    {Any, object, str, int, float, bool, dict, list, type(None), inspect.Parameter.empty}
)


@dataclasses.dataclass(frozen=True, slots=True)
class Encoded:
    """A value ready to store: ``value`` as plain JSON data, ``text`` its JSON, ``size`` its
    UTF-8 bytes, and ``same`` whether ``value`` is the caller's own object (already plain)."""

    value: Any
    text: str
    size: int
    same: bool


def encode(value: Any, what: object, limit: int | None = None) -> Encoded:
    """Check and encode ``value`` once; ``what`` names it in errors ("step 'x' (run 'r', seq 3)").

    Raises :class:`SerializationError` for what JSON cannot hold (see the module docstring) and
    :class:`PayloadTooLarge` when the encoded value is over ``limit`` bytes.
    """
    try:
        plain = _is_plain(value, 0)
        if plain:
            data, text = value, _dumps(value)
        else:
            text = json.dumps(
                value, default=_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
            data = json.loads(text)
            _is_plain(data, 0)  # the converted form keeps to the depth limit too
    except _TooDeep:
        raise SerializationError(f"{what}: nested more than {MAX_DEPTH} levels deep") from None
    except RecursionError:
        raise SerializationError(f"{what}: nested more than {MAX_DEPTH} levels deep") from None
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{what}: value cannot be stored as JSON: {exc}") from None
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise SerializationError(
                f"{what}: text is not valid Unicode ({exc.reason} at position {exc.start})"
            ) from None
    if limit is not None and size > limit:
        raise PayloadTooLarge(f"{what}: {size} bytes, over the {limit}-byte limit")
    return Encoded(value=data, text=text, size=size, same=plain)


class _TooDeep(Exception):
    pass


def nested_too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (decoded JSON: dicts, lists, scalars) nests more than ``limit`` lists
    and objects within each other, the rule :func:`encode` applies. Walks level by level, not
    recursively, so a record stored before the rule existed (or written to the store directly)
    cannot exhaust the stack while it is checked for being shown."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        level = [
            item
            for v in level
            if isinstance(v, dict | list)
            for item in (v.values() if isinstance(v, dict) else v)
        ]
        if not level:
            return False
    return True


_SCALARS: Final = (str, bool, type(None))


def _is_plain(value: Any, depth: int) -> bool:
    """True when ``value`` is JSON data as it is (str keys, finite floats); raises ``_TooDeep``
    past :data:`MAX_DEPTH`. False for what needs converting (tuples, dataclasses, ...)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is int:
        return True
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"{value} is not JSON (NaN and infinity are not)")
        return True
    if depth >= MAX_DEPTH and (kind is list or kind is dict):
        raise _TooDeep
    if kind is list:
        plain = True
        for item in value:
            plain = _is_plain(item, depth + 1) and plain
        return plain
    if kind is dict:
        plain = True
        for key, item in value.items():
            if type(key) is not str:
                plain = False
            item_kind = type(item)
            if item_kind is str or item_kind is int or item_kind is bool or item is None:
                continue  # the common leaf, without a call
            plain = _is_plain(item, depth + 1) and plain
        return plain
    return False


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


# -- decoding ------------------------------------------------------------------------------------


@functools.cache
def decoder_for(annotation: Any) -> Callable[[Any], Any] | None:
    """A function that rebuilds a value of ``annotation`` from JSON, or ``None`` for identity.
    Raises ``TypeError`` for a class that JSON can neither hold nor rebuild."""
    if annotation in _IDENTITY_TYPES:
        return None
    if not _needs_model(annotation):
        if isinstance(annotation, type) and not issubclass(annotation, _JSON_CLASSES):
            raise TypeError(f"{annotation.__qualname__} is neither JSON nor rebuildable from it")
        return None
    if isinstance(annotation, type) and hasattr(annotation, "model_validate"):
        return annotation.model_validate  # type: ignore[no-any-return]
    from pydantic import TypeAdapter  # only now: pydantic is heavy to import

    return TypeAdapter(annotation).validate_python


def build_decoder(annotation: Any, what: str) -> Callable[[Any], Any] | None:
    """:func:`decoder_for`, at registration: ``TypeError`` naming ``what`` when values of
    ``annotation`` cannot be rebuilt from JSON (pydantic is missing, or knows no such type)."""
    try:
        return decoder_for(annotation)
    except ImportError:
        raise TypeError(
            f"{what} is annotated {_name(annotation)}, and rebuilding that from JSON needs "
            "pydantic: pip install pydantic (or heron[api]), or annotate a JSON type"
        ) from None
    except Exception as exc:  # pydantic cannot build a schema for it
        raise TypeError(
            f"{what} is annotated {_name(annotation)}, which cannot be rebuilt from JSON "
            f"({type(exc).__name__}: {exc}); return a JSON type, a dataclass or a pydantic model"
        ) from None


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)


def _needs_model(annotation: Any) -> bool:
    """Whether rebuilding ``annotation`` needs more than the JSON value itself."""
    origin = typing.get_origin(annotation)
    if origin in (tuple, set, frozenset):
        return True
    if origin is dict:  # JSON object keys are text: dict[int, str] needs its keys rebuilt
        args = typing.get_args(annotation)
        if args and args[0] not in (str, Any):
            return True
    if isinstance(annotation, type):
        return (
            dataclasses.is_dataclass(annotation)
            or hasattr(annotation, "model_validate")
            or issubclass(annotation, enum.Enum | tuple | set | frozenset | dt.date | uuid.UUID)
        )
    return any(_needs_model(arg) for arg in typing.get_args(annotation))


# -- annotations, cached without keeping any function alive ----------------------------------------

_RETURNS: weakref.WeakKeyDictionary[Callable[..., Any], Any] = weakref.WeakKeyDictionary()


def return_annotation(fn: Callable[..., Any]) -> Any:
    """The resolved return annotation of ``fn`` (``Any`` when missing or unresolvable). Cached
    by a weak reference: a closure passed to ``ctx.step`` is forgotten with the closure."""
    try:
        return _RETURNS[fn]
    except (KeyError, TypeError):
        pass
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    annotation = hints.get("return", Any)
    try:
        _RETURNS[fn] = annotation
    except TypeError:  # no weak references to it (a builtin): just do not cache
        pass
    return annotation


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
