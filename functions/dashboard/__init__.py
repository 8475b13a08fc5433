"""The operators' dashboard and the API's reference page, served by the API's ASGI app.

Pages are Jinja2 templates in ``templates/`` (autoescaped), styled and scripted by the files in
``static/``, all shipped in the package: no build step, no CDN, no request to anywhere else.
``heron.functions.asgi.create_app`` adds the routes; nothing here is imported by the worker
functions (resume, sweep, reaper), and Jinja2 itself only on the first page rendered.

* :func:`add_dashboard`: ``/dashboard`` (runs, a run, cancel / retry / signal, sign-in);
* :func:`add_docs`: ``/docs``, the API's reference made from its OpenAPI document.

See ``docs/dashboard.md`` for what each page shows and the security model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from heron.functions.dashboard._routes import add_dashboard

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["add_dashboard", "add_docs"]


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` from ``app``'s own OpenAPI document (open to all, as that is)."""
    from heron.functions.dashboard._docs import docs_page
    from heron.functions.dashboard._routes import guarded

    app.add_route("/docs", guarded(docs_page), methods=["GET"], include_in_schema=False)
