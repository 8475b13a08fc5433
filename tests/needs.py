"""What a test does when a server or tool it needs is not installed on this machine.

``make test`` on a laptop with only Python runs everything it can and skips the rest LOUDLY
(the reason says what to install); in CI (``CI=true``, which ``.ci/run`` sets) every test must
run, so the same absence fails the test instead.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(message: str, tests: str) -> NoReturn:
    """Skip the calling test saying ``message`` (what is missing and how to install it), or fail
    it in CI, where every one of ``tests`` (e.g. "libSQL tests") must run."""
    if in_ci():
        pytest.fail(f"{message}; in CI every one of the {tests} must run", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {message}")
