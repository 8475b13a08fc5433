"""Heron inside somebody else's project, installed as users install it: a wheel built from this
checkout, installed with ``[dynamodb,api]`` into a fresh virtualenv, used from a project whose
own modules are called ``stores``, ``runtime``, ``functions`` and ``examples``.

Slow (a wheel build and an install of the extras' dependencies: about half a minute), and run
in CI like every other test. ``heron init``'s output is checked here for its own tests, and by
``infra/check.sh`` with ``sam validate --lint`` and ``sam build``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

#: What a wheel is built from: the package, the folders and files its links point to (the
#: layers; the stack, events and CDK app that ``heron init`` writes) and the metadata.
SOURCES = (
    "src",
    "runtime",
    "stores",
    "functions",
    "infra",
    "events",
    "template.yaml",
    "samconfig.toml",
    "env.json",
    "pyproject.toml",
    "README.md",
)

APP = """
import asyncio

import examples
import functions
import runtime
import stores
from heron import Context, Runtime, open_store

rt = Runtime(store=open_store("sqlite:///app.db"))


@rt.step
async def greet(name: str) -> str:
    return stores.greeting(name) + runtime.PUNCTUATION


@rt.workflow("hello")
async def hello(ctx: Context, name: str) -> dict:
    text = await ctx.step(greet, name)
    await ctx.sleep(0.1)
    return {"text": text, "by": functions.NAME, "kind": examples.KIND}


async def main() -> None:
    run_id = await rt.start("hello", "ada", run_id="from-python")
    print("output:", await rt.wait(run_id, timeout=30))


if __name__ == "__main__":
    asyncio.run(main())
"""


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout (so no build files land in it)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(
                path,
                source / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "cdk.out"),
            )
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), "."], source)
    (built,) = out.glob("heron-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtualenv with ``heron[dynamodb,api]`` installed from the wheel."""
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(root)], root)
    python = root / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
        + ["--disable-pip-version-check", f"{wheel}[dynamodb,api]", "pytest"],
        root,
    )
    yield root


def test_the_wheel_holds_only_the_heron_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert {top for top in tops if not top.endswith(".dist-info")} == {"heron"}
    assert {"heron/__init__.py", "heron/runtime/__init__.py", "heron/stores/contract.py"} <= names
    assert "heron/functions/project/template.yaml" in names  # heron init's stack
    assert not any(name.startswith(("heron/tests", "examples/")) for name in names)


def test_a_project_with_its_own_stores_runtime_and_functions_modules(
    venv: Path, tmp_path: Path
) -> None:
    # given a project whose own modules have the names Heron's folders have in its repository
    project = tmp_path / "project"
    (project / "functions").mkdir(parents=True)
    (project / "examples").mkdir()
    (project / "stores.py").write_text("def greeting(name):\n    return f'hello, {name}'\n")
    (project / "runtime.py").write_text("PUNCTUATION = '!'\n")
    (project / "functions" / "__init__.py").write_text("NAME = 'my functions'\n")
    (project / "examples" / "__init__.py").write_text("KIND = 'my examples'\n")
    (project / "app.py").write_text(textwrap.dedent(APP))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERON_", "PYTHON"))}
    env.update(HERON_APP="app:rt", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    python, heron = str(venv / "bin" / "python"), str(venv / "bin" / "heron")

    # when it runs a workflow directly and through the CLI
    direct = run([python, "app.py"], project, env)
    started = run([heron, "start", "hello", '"grace"', "--run-id", "from-cli"], project, env)
    swept = run([heron, "sweep"], project, env)
    shown = run([heron, "inspect", "from-cli"], project, env)

    # then Heron's modules and the project's never shadow each other
    expected = "{'text': 'hello, ada!', 'by': 'my functions', 'kind': 'my examples'}"
    assert f"output: {expected}" in direct
    assert "started run from-cli" in started
    assert "resumed: from-cli (hello) is completed" in swept
    assert "hello, grace!" in shown
    code = "import heron, stores; print(heron.__file__, stores.__file__)"
    where = run([python, "-c", code], project, env)
    assert str(venv) in where.split()[0] and str(project) in where.split()[1]


def test_heron_init_writes_a_project_whose_tests_pass(venv: Path, tmp_path: Path) -> None:
    heron, python = str(venv / "bin" / "heron"), str(venv / "bin" / "python")
    project = tmp_path / "shop"
    out = run([heron, "init", str(project), "--cdk"], tmp_path)
    assert "wrote a Heron project" in out
    assert (project / "src" / "app.py").is_file()
    # the installed Heron's own requirement line: the wheel this venv came from
    assert "heron[dynamodb,api] @ file://" in (project / "src" / "requirements.txt").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERON_", "PYTHON"))}
    tests = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, env)
    assert "4 passed" in tests
    assert "'activated': True" in run([python, "src/app.py"], project, env)


def test_heron_init_refuses_to_overwrite_and_names_the_files(venv: Path, tmp_path: Path) -> None:
    heron = str(venv / "bin" / "heron")
    project = tmp_path / "taken"
    (project / "src").mkdir(parents=True)
    (project / "src" / "app.py").write_text("# mine\n")
    (project / "template.yaml").write_text("# mine\n")
    done = subprocess.run(
        [heron, "init", str(project)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "src/app.py" in done.stderr and "template.yaml" in done.stderr
    assert "--force" in done.stderr
    assert (project / "src" / "app.py").read_text() == "# mine\n"
    forced = run([heron, "init", str(project), "--force"], tmp_path)
    assert "wrote a Heron project" in forced
    assert "heron" in (project / "src" / "app.py").read_text()


def test_a_missing_extra_is_one_line_naming_it(wheel: Path, tmp_path: Path) -> None:
    # given Heron installed without extras: no uvicorn, no FastAPI
    bare = tmp_path / "bare"
    run([sys.executable, "-m", "venv", "--without-pip", str(bare)], tmp_path)
    run(
        [sys.executable, "-m", "pip", "--python", str(bare / "bin" / "python"), "install", "-q"]
        + ["--disable-pip-version-check", str(wheel)],
        tmp_path,
    )
    # when heron dev starts
    done = subprocess.run(
        [str(bare / "bin" / "heron"), "dev"], cwd=tmp_path, capture_output=True, text=True
    )
    # then one line says which extra to install, and no traceback
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "'api' extra" in lines[0] and "pip install 'heron[api]'" in lines[0]
    # and so does a store whose SDK is missing
    done = subprocess.run(
        [str(bare / "bin" / "heron"), "--app", "heron.functions.demo:rt"]
        + ["--store", "dynamodb://runs", "ls"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: the dynamodb:// store needs aioboto3, which Heron's 'dynamodb' extra installs: "
        "pip install 'heron[dynamodb]'"
    ]
