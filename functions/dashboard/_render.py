"""The template environment and the package's static files.

Jinja2 (and MarkupSafe, through :mod:`._format`) is imported on the first page rendered, not
when the app is made: a JSON API call never pays for it, and an API function deployed without
it still answers JSON, its dashboard saying what to install
(``tests/functions/test_dashboard.py`` checks that the worker functions never import it).
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from heron.stores import MissingExtra

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = ["Static", "Urls", "render", "static_file"]

_PACKAGE = __name__.rpartition(".")[0]

#: What the static files may be served as (anything else is not served).
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class Static:
    body: bytes
    content_type: str
    version: str  # a hash of the body: the URL's ?v=, so a changed file is fetched again


@cache
def static_file(name: str) -> Static | None:
    """``static/<name>`` from the package (a wheel, a Lambda zip or a checkout alike)."""
    suffix = "." + name.rpartition(".")[2]
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in _TYPES:
        return None
    try:
        body = (resources.files(_PACKAGE) / "static" / name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    kind = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Static(body, kind, hashlib.sha256(body).hexdigest()[:12])


class Urls:
    """Every URL a page links to, under the app's ``root_path``, ids percent-encoded."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.home = f"{root}/dashboard"

    def run(self, run_id: str) -> str:
        return f"{self.home}/runs/{quote(run_id, safe='')}"

    def action(self, run_id: str, action: str) -> str:
        return f"{self.run(run_id)}/{action}"

    def runs(self, **params: Any) -> str:
        """The runs list with ``params`` (``None`` and empty values left out)."""
        pairs = [(k, str(v)) for k, v in params.items() if v is not None and v != ""]
        return f"{self.home}?{urlencode(pairs)}" if pairs else self.home

    def static(self, name: str) -> str:
        found = static_file(name)
        version = f"?v={found.version}" if found else ""
        return f"{self.home}/static/{name}{version}"

    @property
    def sign_in(self) -> str:
        return f"{self.home}/sign-in"

    @property
    def sign_out(self) -> str:
        return f"{self.home}/sign-out"

    @property
    def docs(self) -> str:
        return f"{self.root}/docs"

    @property
    def openapi(self) -> str:
        return f"{self.root}/openapi.json"


@cache
def _environment() -> Environment:
    try:
        from jinja2 import Environment, PackageLoader, StrictUndefined

        from heron.functions.dashboard import _format
    except ImportError:
        raise MissingExtra(
            "the dashboard needs jinja2: pip install 'heron[api]' (on Lambda, add jinja2 to the "
            "function's requirements)",
            extra="api",
        ) from None

    env = Environment(
        loader=PackageLoader(_PACKAGE, "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["visible"] = _format.visible
    env.filters["printable"] = _format.printable
    env.filters["duration"] = _format.duration
    env.globals.update(
        absolute=_format.absolute,
        relative=_format.relative,
        iso=_format.iso,
        show_json=_format.show_json,
        visible=_format.visible,
    )
    return env


def render(template: str, **context: Any) -> str:
    """``templates/<template>`` filled with ``context`` (every value escaped unless it is
    :class:`markupsafe.Markup` made by :mod:`._format`)."""
    return _environment().get_template(template).render(**context)
