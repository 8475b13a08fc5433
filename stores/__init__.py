"""Storage backends behind one contract, opened by URL.

``open_store(url)`` imports only the backend the URL names, so a Lambda that runs on DynamoDB
never imports redis, and ``import stores`` costs next to nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

from heron.stores.contract import (
    Checkpoint,
    Conflict,
    Loaded,
    Run,
    RunPage,
    RunQuery,
    SchemaMissing,
    Signal,
    StoreError,
    WorkflowStore,
)

__all__ = [
    "Checkpoint",
    "Conflict",
    "Loaded",
    "Run",
    "RunPage",
    "RunQuery",
    "SchemaMissing",
    "Signal",
    "StoreError",
    "WorkflowStore",
    "open_store",
]

#: URL scheme -> (module, class). Modules are imported on first use only.
_BACKENDS: dict[str, tuple[str, str]] = {
    "memory": ("heron.stores.memory", "MemoryStore"),
    "sqlite": ("heron.stores.sqlite", "SqliteStore"),
    "dynamodb": ("heron.stores.dynamodb", "DynamoDBStore"),
}

DEFAULT_STORE_URL = "sqlite:///.heron/heron.db"


def open_store(url: str, **options: Any) -> WorkflowStore:
    """Open the store a URL names: ``memory://``, ``sqlite:///path.db``, ...

    Keyword ``options`` go to the backend's ``from_url`` (``auto_schema=False``, ``client=...``).
    """
    scheme, sep, _ = url.partition("://")
    if not sep and url.startswith("file:"):
        scheme = "file"
    scheme = scheme.lower()
    backend = _BACKENDS.get(scheme) or (_BACKENDS.get("kv") if scheme.startswith("kv+") else None)
    if backend is None:
        known = ", ".join(f"{s}://" for s in sorted(_BACKENDS))
        raise ValueError(f"unknown store URL scheme {scheme!r} in {url!r}; known schemes: {known}")
    module_name, class_name = backend
    cls = getattr(importlib.import_module(module_name), class_name)
    if hasattr(cls, "from_url"):
        store: WorkflowStore = cls.from_url(url, **options)
    else:
        store = cls(**options)
    return store
