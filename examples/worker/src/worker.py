"""The Worker's main module (``main`` in ``wrangler.toml``): Heron's entrypoint over the app.

Everything the Worker does (the HTTP API on ``fetch``, the sweep on the Cron Trigger, the
resumes on the queue) is in ``heron.functions.worker``; its configuration is in ``wrangler.toml``
(vars, secrets, bindings). This file only names the app.
"""

from __future__ import annotations

from app import rt

from heron.functions.worker import entrypoint

Default = entrypoint(rt)
