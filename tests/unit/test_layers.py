"""The layers only point down (``functions`` → ``runtime`` → ``stores``), and nothing imports the
old generic top-level names (``runtime``, ``stores``, ``functions`` as packages of their own):
everything goes through the one import root, ``heron``. (``examples/`` is a folder of the
repository, never installed; tests and docs may import it from a checkout.)

Read from the source with :mod:`ast`, so an import inside a function or under ``TYPE_CHECKING``
counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What each layer may import of Heron (besides itself).
ALLOWED: dict[str, tuple[str, ...]] = {
    "stores": (),
    "runtime": ("heron.stores",),
    "functions": ("heron.runtime", "heron.stores"),
}
OLD_ROOTS = ("runtime", "stores", "functions")


def python_files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every import in ``path``; relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    relative_to = path.relative_to(ROOT).with_suffix("").parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(("heron", *relative_to[: len(relative_to) - node.level]))
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module
            if module == "heron":  # from heron import runtime: the subpackage itself
                for alias in node.names:
                    yield node.lineno, f"heron.{alias.name}"


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "heron" and len(parts) > 1 and parts[1] in ALLOWED:
        return parts[1]
    return None


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    wrong = []
    for path in python_files(layer):
        for line, module in imported_modules(path):
            target = layer_of(module)
            if target is None or target == layer:
                continue
            if not any(module == a or module.startswith(a + ".") for a in ALLOWED[layer]):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert wrong == [], f"heron.{layer} may import only {ALLOWED[layer] or 'itself'}"


def test_nothing_imports_the_old_top_level_names() -> None:
    folders = ("src", "runtime", "stores", "functions", "examples", "tests", "bench", "infra")
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in python_files(*folders)
        if "node_modules" not in path.parts and "lambda" not in path.parts
        for line, module in imported_modules(path)
        if module.split(".")[0] in OLD_ROOTS
    ]
    assert wrong == []


def test_the_import_root_links_the_repository_folders() -> None:
    for layer in ALLOWED:
        assert (ROOT / "src" / "heron" / layer).resolve() == ROOT / layer
