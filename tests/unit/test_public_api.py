"""The public surface: ``heron.runtime.__all__`` and ``heron.stores.__all__`` are sorted and
complete, and ``import heron`` stays light (no pydantic, no store backends, no cloud SDKs)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from heron import runtime, stores
from heron.runtime import _clock, _context, _dispatch, _errors, _runtime
from heron.runtime._errors import HeronError

ROOT = Path(__file__).resolve().parents[2]

#: The names DESIGN.md section 3 fixes.
DESIGN_NAMES = [
    "Conflict",
    "Context",
    "FatalError",
    "NonDeterminismError",
    "PayloadTooLarge",
    "RetryPolicy",
    "RunNotFound",
    "Runtime",
    "StepFailed",
    "WorkflowFailed",
    "WorkflowNotFound",
    "step_key",
]


def public_members(module: ModuleType, packages: tuple[str, ...]) -> list[str]:
    """Public classes and functions of ``module`` that come from one of our ``packages``."""
    names = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        module_name = str(getattr(value, "__module__", ""))
        if any(module_name == p or module_name.startswith(p + ".") for p in packages):
            names.append(name)
    return sorted(names)


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_design_names_are_importable_from_runtime(name: str) -> None:
    assert name in runtime.__all__
    assert getattr(runtime, name) is not None


def test_runtime_all_is_sorted_and_complete() -> None:
    assert runtime.__all__ == sorted(runtime.__all__)
    assert len(set(runtime.__all__)) == len(runtime.__all__)
    functions_and_classes = [name for name in runtime.__all__ if not name.isupper()]
    assert functions_and_classes == public_members(runtime, ("heron.runtime", "heron.stores"))


@pytest.mark.parametrize("module", [_clock, _context, _dispatch, _errors, _runtime])
def test_public_names_of_runtime_modules_are_exported(module: ModuleType) -> None:
    assert set(module.__all__) <= set(runtime.__all__)
    for name in module.__all__:
        assert getattr(runtime, name) is getattr(module, name)


def test_every_heron_error_defined_by_the_engine_is_exported() -> None:
    errors = [
        value
        for value in vars(_errors).values()
        if inspect.isclass(value) and issubclass(value, HeronError)
    ]
    assert errors
    for error in errors:
        assert error.__name__ in runtime.__all__, error


def test_conflict_is_the_store_contracts_own() -> None:
    from heron.stores.contract import Conflict

    assert runtime.Conflict is Conflict
    assert issubclass(runtime.Conflict, runtime.HeronError)


def test_suspension_is_private_and_not_an_exception() -> None:
    assert "Suspend" not in runtime.__all__
    assert not issubclass(_errors.Suspend, Exception)
    assert issubclass(_errors.Suspend, BaseException)


def test_stores_all_is_sorted_and_complete() -> None:
    assert stores.__all__ == sorted(stores.__all__)
    functions_and_classes = [name for name in stores.__all__ if not name.isupper()]
    assert functions_and_classes == public_members(stores, ("heron.stores",))
    for name in stores.__all__:
        assert getattr(stores, name) is not None


def test_testing_module_exports() -> None:
    from heron.runtime import testing

    assert testing.__all__ == sorted(testing.__all__)
    defined_here = [
        name
        for name in public_members(testing, ("heron.runtime",))
        if getattr(testing, name).__module__ == testing.__name__
    ]
    assert testing.__all__ == defined_here


def modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


HEAVY = ["pydantic", "sqlite3", "_sqlite3", "heron.stores.sqlite", "boto3", "aioboto3", "botocore"]
HEAVY += ["redis", "heron.stores.memory", "functions"]


@pytest.mark.parametrize(
    "statement", ["import heron.runtime", "import heron.stores", "import heron.runtime.testing"]
)
def test_import_is_light(statement: str) -> None:
    loaded = modules_after(statement)
    assert {m for m in loaded if m in HEAVY or m.split(".")[0] in HEAVY} == set()


def test_the_facade_exports_every_public_name_once_lazily() -> None:
    import heron

    assert heron.__all__ == sorted(heron.__all__)
    for name in heron.__all__:
        value = getattr(heron, name)
        if name != "__version__":
            home = stores if name in stores.__all__ else runtime
            assert value is getattr(home, name), name
    # every public name of the engine and of the stores' front door, bar the plumbing
    plumbing = {
        "Loaded",
        "Acquired",
        "MAX_DEPTH",
        "MAX_PENDING_SIGNALS",
        "MAX_RUN_ID",
        "RESERVED_PREFIX",
        "check_run_id",
        "check_signal_name",
    }
    expected = (set(runtime.__all__) | set(stores.__all__)) - plumbing | {"HeronError"}
    assert expected - {"__version__"} <= set(heron.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        heron.nothing  # noqa: B018


def test_the_design_names_import_from_heron() -> None:
    code = (
        "from heron import Runtime, Context, RetryPolicy, FatalError, open_store, StepFailed, "
        "NonDeterminismError, WorkflowNotFound, RunNotFound, PayloadTooLarge, WorkflowFailed, "
        "Conflict; import sys; print('heron.runtime._runtime' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
    lazy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import heron, sys; print(sorted(m for m in sys.modules if m.startswith('heron')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert lazy.stdout.strip() == "['heron']"


def test_heron_testing_is_the_runtime_harness() -> None:
    import heron.testing
    from heron.runtime import testing

    assert heron.testing.__all__ == testing.__all__
    for name in testing.__all__:
        assert getattr(heron.testing, name) is getattr(testing, name)
