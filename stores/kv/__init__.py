"""``KVStore``: the store contract on a key-value driver, and the drivers.

```python
from heron.stores import open_store
from heron.stores.kv import FileDriver, KVStore

store = open_store("kv+redis://localhost:6379/0")
store = KVStore(FileDriver("/var/lib/heron"))
```

Drivers: :class:`MemoryDriver`, :class:`FileDriver`, ``RedisDriver`` (redis-py) and
``UpstashDriver`` (Upstash's REST API over an ``HttpTransport``). The last two are imported on
first use (PEP 562), so ``import heron.stores.kv`` never imports redis or httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from heron.stores.kv._driver import KVDriver, Version
from heron.stores.kv._store import KVStore
from heron.stores.kv.file import FileDriver
from heron.stores.kv.memory import MemoryDriver

if TYPE_CHECKING:
    from heron.stores.kv.redis import RedisDriver
    from heron.stores.kv.upstash import UpstashDriver

__all__ = [
    "FileDriver",
    "KVDriver",
    "KVStore",
    "MemoryDriver",
    "RedisDriver",
    "UpstashDriver",
    "Version",
]


def __getattr__(name: str) -> Any:
    if name == "RedisDriver":
        from heron.stores.kv.redis import RedisDriver

        return RedisDriver
    if name == "UpstashDriver":
        from heron.stores.kv.upstash import UpstashDriver

        return UpstashDriver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
