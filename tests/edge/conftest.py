"""What the Workers tests need: Node, Pyodide, the Pyodide wheels, Heron's wheel, the driver.

``edge``  (module scope) one Node process running ``driver.mjs``: the harness, Pyodide loaded
          once per configuration and kept for the module's tests (:class:`Edge`)

Each piece is installed by CI (``.ci/run``); without one the tests skip LOUDLY, naming the
command that installs it, and with ``CI=true`` they fail instead (a skipped test there is a
defect), as the sqld tests do (``tests/backends/libsql.py``):

* ``node`` on the PATH (``NODE_BIN`` overrides), 18 or newer;
* Pyodide 314.0.6: ``npm ci --ignore-scripts --prefix tests/servers`` (``PYODIDE_DIR``);
* the wheels of ``requirements-pyodide.txt``: ``tests/edge/fetch-wheels.sh``
  (``HERON_PYODIDE_WHEELS``);
* Heron's own wheel: built here from the checkout (``pip wheel --no-deps``, from a clean copy
  of ``src/``), once per change of the sources, shared by the xdist workers through a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

from tests.needs import unavailable

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUILD = HERE / "build"  # git-ignored
PYODIDE_DIR = REPO / "tests" / "servers" / "node_modules" / "pyodide"
WHEELS_DIR = BUILD / "wheels"
REQUIREMENTS = HERE / "requirements-pyodide.txt"
NPM_INSTALL = "npm ci --ignore-scripts --prefix tests/servers"
FETCH_WHEELS = "tests/edge/fetch-wheels.sh"


def missing(message: str) -> NoReturn:
    """Skip loudly, or fail in CI."""
    unavailable(message, "Workers tests")


def node_binary() -> str:
    node = os.environ.get("NODE_BIN") or shutil.which("node")
    if not node:
        missing("node is not installed (the Workers harness runs Pyodide in Node 18+)")
    assert node is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    found = re.match(r"v(\d+)", version)
    if not found or int(found.group(1)) < 18:
        missing(f"node {version or '?'} is too old: Pyodide 314 needs Node 18 or newer")
    return node


def pyodide_dir() -> Path:
    directory = Path(os.environ.get("PYODIDE_DIR") or PYODIDE_DIR)
    if not (directory / "pyodide.mjs").is_file():
        missing(f"Pyodide is not installed at {directory}: run `{NPM_INSTALL}`")
    package = json.loads((directory / "package.json").read_text())
    if package.get("version") != "314.0.6":
        missing(
            f"Pyodide {package.get('version')} at {directory}, not 314.0.6: run `{NPM_INSTALL}`"
        )
    return directory


def pyodide_wheels() -> list[Path]:
    directory = Path(os.environ.get("HERON_PYODIDE_WHEELS") or WHEELS_DIR)
    wanted = []
    for line in REQUIREMENTS.read_text().splitlines():
        spec = line.split("#", 1)[0].split("--hash", 1)[0].strip()
        if spec:
            name, _, version = spec.partition("==")
            wanted.append((re.sub(r"[-_.]+", "_", name).lower(), version))
    found = []
    files = {p.name.lower(): p for p in directory.glob("*.whl")} if directory.is_dir() else {}
    for name, version in wanted:
        match = [p for n, p in files.items() if n.startswith(f"{name}-{version}-")]
        if not match:
            missing(
                f"the Pyodide wheel {name}=={version} is not in {directory}: run `{FETCH_WHEELS}`"
            )
        found.append(match[0])
    return found


def _source_digest() -> str:
    """What Heron's wheel is made of: ``src/heron``'s own files and the folders it links."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes())
    paths = [p for p in (REPO / "src" / "heron").iterdir() if p.is_file()]
    for folder in ("runtime", "stores", "functions"):
        paths += [p for p in (REPO / folder).rglob("*") if p.is_file()]
    for path in sorted(paths):
        if "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def heron_wheel() -> Path:
    """Heron's wheel from the checkout, built once per change of the sources (under a lock, so
    the xdist workers build it once between them), from a clean copy of ``src/`` (links
    followed), so the checkout's own ``build/`` never leaks stale files into it."""
    target = BUILD / f"heron-{_source_digest()}"
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD / ".heron-wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = sorted(target.glob("heron-*.whl"))
        if built:
            return built[0]
        with tempfile.TemporaryDirectory(prefix="heron-wheel-") as tmp:
            source = Path(tmp) / "source"
            source.mkdir()
            for name in ("pyproject.toml", "README.md"):
                shutil.copy2(REPO / name, source / name)
            shutil.copytree(
                REPO / "src",
                source / "src",
                symlinks=False,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
            )
            out = Path(tmp) / "wheel"
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--no-deps",
                    str(source),
                    "-w",
                    str(out),
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode != 0:
                raise RuntimeError(f"pip wheel failed:\n{done.stdout}\n{done.stderr}")
            target.mkdir(parents=True, exist_ok=True)
            for wheel in out.glob("*.whl"):
                shutil.copy2(wheel, target / wheel.name)
        for old in BUILD.glob("heron-*"):
            if old.is_dir() and old != target:
                shutil.rmtree(old, ignore_errors=True)
        return sorted(target.glob("heron-*.whl"))[0]


class EdgeError(AssertionError):
    """The driver answered an error (the JavaScript stack, Python's traceback inside it)."""


class Edge:
    """The Node driver: ``call(op, **arguments)`` sends one request and waits for its answer."""

    def __init__(self, node: str, log: IO[str]) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [node, str(HERE / "driver.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
        )
        self._answers: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._ids = 0
        self.made: dict[str, Any] = {}

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._answers.put(line)

    def call(self, op: str, timeout: float = 90.0, **arguments: Any) -> Any:
        assert self.proc.stdin is not None
        self._ids += 1
        self.proc.stdin.write(json.dumps({"id": self._ids, "op": op, **arguments}) + "\n")
        self.proc.stdin.flush()
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise EdgeError(f"no answer to {op} within {timeout:g}s; log:\n{self.tail()}") from None
        answer = json.loads(line)
        if not answer["ok"]:
            raise EdgeError(f"{op} failed: {answer['error']}\nlog:\n{self.tail()}")
        return answer["result"]

    def tail(self, size: int = 6000) -> str:
        self.log.flush()
        try:
            return Path(self.log.name).read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(autouse=True)
def _heron_logging() -> Iterator[None]:
    """The Worker's handlers give the ``heron`` logger a stderr handler (as a Worker needs):
    take it back after each test, so no other test sees it."""
    import logging

    root = logging.getLogger("heron")
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """One driver per test module: Pyodide is loaded once per configuration it makes."""
    node = node_binary()
    pyodide_dir()
    log_path = tmp_path_factory.mktemp("edge") / "node.log"
    with open(log_path, "w") as log:
        driver = Edge(node, log)
        try:
            yield driver
        finally:
            driver.close()


def harness_options(**overrides: Any) -> dict[str, Any]:
    """The options of a harness running ``examples/worker`` (the wheels found or missing)."""
    options: dict[str, Any] = {
        "pyodideDir": str(pyodide_dir()),
        "workerDir": str(REPO / "examples" / "worker" / "src"),
        "main": "worker.py",
        "wheels": [str(p) for p in [*pyodide_wheels(), heron_wheel()]],
        "vars": {},
        "d1": [],
        "queueProducers": {},
        "queueConsumers": {},
    }
    options.update(overrides)
    return options


def made(edge: Edge, name: str, **overrides: Any) -> dict[str, Any]:
    """The harness ``name`` of this module's driver, made with ``overrides`` on first use."""
    if name not in edge.made:
        started = time.monotonic()
        info = edge.call("create", timeout=110, name=name, options=harness_options(**overrides))
        info["wall"] = time.monotonic() - started
        edge.made[name] = info
    result: dict[str, Any] = edge.made[name]
    return result
