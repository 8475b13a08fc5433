# =================================================================================================
# HARNESS STAND-IN, NOT CLOUDFLARE CODE. Runs in a private namespace of the harness's Pyodide (the
# worker cannot import it). What workerd does around a Python entrypoint, in our own code:
#
#   collect_entrypoints()  which classes of the main module subclass WorkerEntrypoint
#                          (workerd: src/pyodide/internal/introspection.py)
#   call_method()          python_from_rpc() on every JavaScript argument, call the handler
#                          (fetch "relaxed": extra arguments dropped), await it, python_to_rpc()
#                          on the result (workerd: introspection.py's wrapper)
#   TopLevelGuard          an approximation of workerd's import-time ("snapshot") rules while
#                          the main module is imported: the random module's functions and
#                          os.urandom refuse unless an allowance is open (the Workers SDK's own
#                          patches open one for the packages known to need it); JavaScript's
#                          fetch, timers and crypto.getRandomValues are guarded in harness.mjs.
# =================================================================================================
import os
import sys
from functools import wraps
from inspect import isawaitable, isclass
from types import FunctionType, ModuleType

import js
from pyodide.code import relaxed_call


def _public_methods(cls):
    def raw(name):
        for base in cls.__mro__:
            if name in base.__dict__:
                return base.__dict__[name]
        return None

    return sorted(n for n in dir(cls) if not n.startswith("_") and isinstance(raw(n), FunctionType))


def collect_entrypoints(module):
    import workers

    names = getattr(module, "__all__", None) or [k for k in dir(module) if not k.startswith("_")]
    found = {"workerEntrypoints": [], "durableObjects": [], "workflowEntrypoints": []}
    kinds = {
        "workerEntrypoints": workers.WorkerEntrypoint,
        "durableObjects": workers.DurableObject,
        "workflowEntrypoints": workers.WorkflowEntrypoint,
    }
    for name in names:
        value = getattr(module, name)
        for kind, base in kinds.items():
            if isclass(value) and issubclass(value, base) and value is not base:
                found[kind].append({"name": name, "methodNames": _public_methods(value)})
    return found


async def call_method(relaxed, instance, prop, *args):
    from workers import python_from_rpc, python_to_rpc

    method = getattr(instance, prop)
    py_args = [python_from_rpc(a) for a in args]
    result = relaxed_call(method, *py_args) if relaxed else method(*py_args)
    if isawaitable(result):
        result = await result
    return python_to_rpc(result)


def _allowance():
    return js.globalThis.__heronHarness.entropyAllowance


class _BlockedRandom(ModuleType):
    """The `random` module while the main module is imported: its functions refuse."""

    def __init__(self, module, guard):
        super().__init__(module.__name__)
        object.__setattr__(self, "_mod", module)
        object.__setattr__(self, "_guard", guard)

    def __getattribute__(self, key):
        module = object.__getattribute__(self, "_mod")
        guard = object.__getattribute__(self, "_guard")
        value = getattr(module, key)
        if guard.released or not callable(value) or key in ("Random", "SystemRandom"):
            return value

        @wraps(value)
        def blocked(*args, **kwargs):
            if not guard.released and _allowance() <= 0:
                what = f"{module.__name__}.{key}()"
                raise RuntimeError(f"Cannot use {what} outside of request context")
            return value(*args, **kwargs)

        return blocked

    def __setattr__(self, key, value):
        setattr(object.__getattribute__(self, "_mod"), key, value)


class TopLevelGuard:
    def __init__(self):
        self.released = True
        self._urandom = None
        self._random = None

    def enter(self):
        import random

        self.released = False
        self._urandom = urandom = os.urandom

        @wraps(urandom)
        def guarded_urandom(*args):
            if not self.released and _allowance() <= 0:
                raise OSError(29, "Cannot get entropy outside of request context")
            return urandom(*args)

        os.urandom = guarded_urandom
        self._random = random
        sys.modules["random"] = _BlockedRandom(random, self)

    def exit(self):
        self.released = True
        if self._urandom is not None:
            os.urandom = self._urandom
        if self._random is not None:
            sys.modules["random"] = self._random
            self._random.seed()  # workerd reseeds before the first request


def imported_modules(prefix):
    """The modules imported from under ``prefix`` (the worker's files and packages)."""
    return sorted(
        name
        for name, module in sys.modules.items()
        if (getattr(module, "__file__", None) or "").startswith(prefix)
    )
