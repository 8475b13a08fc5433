"""Storage backends behind one contract, opened by URL.

``open_store(url)`` imports only the backend the URL names, so a Lambda that runs on DynamoDB
never imports redis, and ``import stores`` costs next to nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from heron.stores.contract import (
    MAX_PENDING_SIGNALS,
    Acquired,
    Checkpoint,
    Conflict,
    HeronError,
    Loaded,
    Run,
    RunPage,
    RunQuery,
    RunSummary,
    SchemaMissing,
    Signal,
    StoreError,
    TooManySignals,
    WorkflowStore,
)

__all__ = [
    "Acquired",
    "Checkpoint",
    "Conflict",
    "HeronError",
    "Loaded",
    "MAX_PENDING_SIGNALS",
    "MissingExtra",
    "Run",
    "RunPage",
    "RunQuery",
    "RunSummary",
    "SchemaMissing",
    "Signal",
    "StoreError",
    "TooManySignals",
    "WorkflowStore",
    "open_store",
]

#: URL scheme -> (module, class, (the SDK it needs, the extra that installs it) or None).
#: Modules are imported on first use only.
_BACKENDS: dict[str, tuple[str, str, tuple[str, str] | None]] = {
    "memory": ("heron.stores.memory", "MemoryStore", None),
    "sqlite": ("heron.stores.sqlite", "SqliteStore", None),
    "dynamodb": ("heron.stores.dynamodb", "DynamoDBStore", ("aioboto3", "dynamodb")),
    # Turso / sqld over Hrana (HTTP, through httpx); file: is a local file through stdlib sqlite3
    "libsql": ("heron.stores.libsql", "LibSQLStore", ("httpx", "libsql")),
    "http": ("heron.stores.libsql", "LibSQLStore", ("httpx", "libsql")),
    "https": ("heron.stores.libsql", "LibSQLStore", ("httpx", "libsql")),
    "file": ("heron.stores.libsql", "LibSQLStore", None),
    # Cloudflare D1 through a Worker's binding (d1://BINDING): the same SQL as SQLite and libSQL
    "d1": ("heron.stores.d1", "D1Store", None),
    # Redis (redis-py); kv+<driver>:// lands on "kv" unless its driver needs an SDK (below)
    "redis": ("heron.stores.redis", "RedisStore", ("redis", "redis")),
    "rediss": ("heron.stores.redis", "RedisStore", ("redis", "redis")),
    "unix": ("heron.stores.redis", "RedisStore", ("redis", "redis")),
    "kv": ("heron.stores.kv", "KVStore", None),
    "kv+redis": ("heron.stores.kv", "KVStore", ("redis", "redis")),
    "kv+rediss": ("heron.stores.kv", "KVStore", ("redis", "redis")),
    "kv+unix": ("heron.stores.kv", "KVStore", ("redis", "redis")),
    "kv+upstash": ("heron.stores.kv", "KVStore", ("httpx", "upstash")),
}

DEFAULT_STORE_URL = "sqlite:///.heron/heron.db"


class MissingExtra(HeronError, ImportError):
    """A backend's SDK is not installed; ``extra`` names the extra of ``heron`` that installs it."""

    def __init__(self, message: str, *, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


def open_store(url: str, **options: Any) -> WorkflowStore:
    """Open the store a URL names: ``memory://``, ``sqlite:///path.db``, ...

    Keyword ``options`` go to the backend's ``from_url`` (``auto_schema=False``, ``client=...``).
    Raises ``ValueError`` for a URL no backend takes (or a bad option), and
    :class:`MissingExtra` when the backend's SDK is not installed.
    """
    scheme, sep, _ = url.partition("://")
    if not sep and url.startswith("file:"):
        scheme = "file"
    scheme = scheme.lower()
    backend = _BACKENDS.get(scheme) or (_BACKENDS.get("kv") if scheme.startswith("kv+") else None)
    if backend is None:
        known = ", ".join(f"{s}://" for s in sorted(_BACKENDS))
        raise ValueError(f"unknown store URL scheme {scheme!r} in {url!r}; known schemes: {known}")
    module_name, class_name, needs = backend
    if needs is not None and needs[0] == "httpx" and options.get("transport") is not None:
        needs = None  # httpx is only the default transport (Pyodide passes a FetchTransport)
    if needs is not None and importlib.util.find_spec(needs[0]) is None:
        sdk, extra = needs
        raise MissingExtra(
            f"the {scheme}:// store needs {sdk}, which Heron's {extra!r} extra installs: "
            f"pip install 'heron[{extra}]'",
            extra=extra,
        )
    cls = getattr(importlib.import_module(module_name), class_name)
    if hasattr(cls, "from_url"):
        store: WorkflowStore = cls.from_url(url, **options)
    else:
        store = cls(**options)
    return store
