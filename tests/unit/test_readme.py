"""The README's quickstart is ``examples/shop.py``, word for word, and it runs as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quickstart() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"## Quickstart\n\n```python\n(.*?)```", readme, re.S)
    assert found, "README.md has no Quickstart code block"
    return found.group(1)


def test_the_quickstart_is_the_example_file() -> None:
    assert quickstart() == (ROOT / "examples" / "shop.py").read_text(encoding="utf-8")


def test_the_quickstart_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "shop.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    first, *timeline = done.stdout.splitlines()
    assert first.startswith(
        "{'payment': {'charge': 'ch_o-1', 'key': 'o-1:0'}, 'approved_by': 'ops'"
    )
    assert [line.split()[1:3] for line in timeline] == [
        ["step", "charge"],
        ["sleep", "sleep"],
        ["signal", "approved"],
        ["step", "pack"],
        ["step", "pack"],
    ]
