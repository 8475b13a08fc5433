"""Finding the user's ``Runtime``: ``HERON_APP="module:attribute"``, the way uvicorn finds an app.

The CLI, the HTTP API and the Lambda handlers all start from :func:`load_runtime`, so they run
the same workflows against the same store. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import importlib
import os

from heron.runtime import HeronError, Runtime

__all__ = ["DEFAULT_APP", "AppNotFound", "load_runtime", "resolve_spec"]

#: What ``HERON_APP`` falls back to: the example order workflow.
DEFAULT_APP = "heron.functions.demo:rt"


class AppNotFound(HeronError, LookupError):
    """``HERON_APP`` does not name a ``Runtime``. ``spec`` is the ``module:attribute`` asked for."""

    def __init__(self, spec: str, message: str) -> None:
        super().__init__(f"HERON_APP {spec!r}: {message}")
        self.spec = spec


def resolve_spec(spec: str | None = None) -> str:
    """``spec`` if given, else ``HERON_APP``, else :data:`DEFAULT_APP`."""
    return spec or os.environ.get("HERON_APP") or DEFAULT_APP


def load_runtime(spec: str | None = None) -> Runtime:
    """Import the ``Runtime`` that ``spec`` (``"package.module:attribute"``) names.

    ``spec`` defaults to ``HERON_APP``, then to ``heron.functions.demo:rt``. The attribute may be
    dotted (``"app:platform.rt"``). Raises :class:`AppNotFound`, naming the spec, when the module
    cannot be imported, lacks the attribute, or the attribute is not a ``Runtime``; an error
    raised by the module's own code while it is imported propagates unchanged.
    """
    spec = resolve_spec(spec)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppNotFound(spec, "expected 'module:attribute', like 'heron.functions.demo:rt'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise AppNotFound(spec, f"no module named {missing!r}") from None
        raise AppNotFound(
            spec, f"importing module {module_name!r} failed: no module named {missing!r}"
        ) from exc

    value: object = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AppNotFound(
                spec, f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not isinstance(value, Runtime):
        kind = "a class" if isinstance(value, type) else f"a {type(value).__name__}"
        raise AppNotFound(spec, f"{attribute!r} is {kind}, not a heron Runtime")
    return value
