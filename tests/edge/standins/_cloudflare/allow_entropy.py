# HARNESS STAND-IN, NOT CLOUDFLARE CODE (see __init__.py): workerd's entropy allowance.
#
# The counter lives in JavaScript (globalThis.__heronHarness.entropyAllowance), where the
# harness's guard on crypto.getRandomValues (the source of os.urandom and of every package's
# random seed in Pyodide) decrements it; while the worker's main module is imported, a call with
# no allowance left fails, as "Disallowed operation called within global scope" does in workerd.
# Approximation: workerd raises when an allowance is left unused; the harness records it
# (`PythonWorkerHarness.snapshotNotes`) instead of failing, as the number of calls a package
# makes can differ between Pyodide builds.
from contextlib import contextmanager

import js

LEFTOVERS = []


def _state():
    return js.globalThis.__heronHarness


def in_request_context():
    return not _state().importing


def is_bad_entropy_enabled():
    return _state().entropyAllowance > 0


@contextmanager
def allow_bad_entropy_calls(n):
    state = _state()
    old = state.entropyAllowance
    state.entropyAllowance = n
    try:
        yield
    finally:
        if state.entropyAllowance > 0:
            LEFTOVERS.append(int(state.entropyAllowance))
        state.entropyAllowance = old
