# HARNESS STAND-IN, NOT CLOUDFLARE CODE (see __init__.py): workerd's import patch manager, the
# API the Workers SDK's patch modules call when its .pth loader imports them.
import sys
from functools import partial, wraps
from importlib.machinery import ExtensionFileLoader


class _Patch:
    def __init__(self):
        self.create = None
        self.exec = None
        self.before_first_request = None
        self.after_snapshot = None


patches = {}
IN_REQUEST_CONTEXT = False
ORIG_MODULES = {}


def _register(kind, name, fn=None):
    if fn is None:
        return partial(_register, kind, name)
    setattr(patches.setdefault(name, _Patch()), kind, fn)
    return fn


register_create_patch = partial(_register, "create")
register_exec_patch = partial(_register, "exec")
register_before_first_request = partial(_register, "before_first_request")
register_after_snapshot = partial(_register, "after_snapshot")


class _Loader:
    def __init__(self, loader, patch):
        self.loader = loader
        self.patch = patch

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        if self.patch.create is None:
            return self.loader.create_module(spec)
        with self.patch.create(spec):
            return self.loader.create_module(spec)

    def exec_module(self, module):
        if self.patch.exec is None:
            return self.loader.exec_module(module)
        with self.patch.exec(module):
            return self.loader.exec_module(module)


class PatchFinder:
    def find_spec(self, fullname, path, target=None):
        patch = patches.get(fullname)
        if patch is None or (patch.create is None and patch.exec is None):
            return None
        for finder in sys.meta_path:
            if isinstance(finder, PatchFinder) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if isinstance(spec.loader, ExtensionFileLoader) and patch.create is None:
            return spec
        spec.loader = _Loader(spec.loader, patch)
        return spec

    def invalidate_caches(self):
        pass


def install():
    sys.meta_path.insert(0, PatchFinder())


def remove():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, PatchFinder)]
    unblock_calls()


def after_snapshot_and_before_first_request():
    for name, patch in patches.items():
        module = sys.modules.get(name)
        if module is None:
            continue
        for handler in (patch.after_snapshot, patch.before_first_request):
            if handler is not None:
                handler(module)


def block_calls(module, *, allowlist=()):
    sys.modules[module.__name__] = _BlockedCallModule(module, allowlist)
    ORIG_MODULES[module.__name__] = module


def unblock_calls():
    global IN_REQUEST_CONTEXT
    IN_REQUEST_CONTEXT = True
    for name, module in ORIG_MODULES.items():
        sys.modules[name] = module


class _BlockedCallModule:
    def __init__(self, module, allowlist):
        object.__setattr__(self, "_mod", module)
        object.__setattr__(self, "_allow", allowlist)

    def __getattribute__(self, key):
        mod = object.__getattribute__(self, "_mod")
        value = getattr(mod, key)
        allowed = key in object.__getattribute__(self, "_allow")
        if IN_REQUEST_CONTEXT or not callable(value) or allowed:
            return value

        @wraps(value)
        def blocked(*args, **kwargs):
            if not IN_REQUEST_CONTEXT:
                what = f"{mod.__name__}.{key}()"
                raise RuntimeError(f"Cannot use {what} outside of request context")
            return value(*args, **kwargs)

        return blocked

    def __setattr__(self, key, value):
        setattr(object.__getattribute__(self, "_mod"), key, value)
