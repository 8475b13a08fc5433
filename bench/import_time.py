"""Cold-start import time of each Lambda handler, against importing aioboto3 alone.

    python bench/import_time.py             # 9 runs of each, the median
    python bench/import_time.py --runs 21
    python bench/import_time.py --python /tmp/lean/bin/python   # another environment's Python

``--python`` measures with another interpreter, for instance a virtualenv holding only what the
resume function ships (``pip install aioboto3 aws-lambda-powertools``): this project's dev
environment also has httpx, which aiobotocore imports when it is there (and httpx its CLI's
rich and click), so there ``import aioboto3`` itself costs more.

Each figure is ``python -X importtime -c "<statement>"`` in a fresh interpreter: the top-level
imports summed, less what ``python -c pass`` imports (the interpreter's own start-up), median of
``--runs`` runs taken round-robin over the statements, so a busy machine slows all alike.
The handlers are configured as deployed on DynamoDB with SQS: ``HERON_STORE=dynamodb://...``,
``HERON_QUEUE_URL=...``, ``HERON_APP`` the example app.

Two rows per handler:

* ``import heron.functions.X``: what Lambda's init phase imports (the handler module alone);
* ``cold start``: that plus what the first invocation imports before its first request: the
  user's app, the store module for ``HERON_STORE`` and aioboto3 (the store and the SQS
  dispatcher import it on first use).

The goal (issue 4) is a resume cold start of at most 1.3 x ``import aioboto3``: the handler's
own share (Powertools, the engine, the store module) stays small next to the SDK it needs
anyway. On a shared machine two interpreters can differ by more than that share, so the ratio
is also taken within one interpreter: ``import aioboto3``, then the handler and its first
invocation's imports, timed apart (``perf_counter``), the median of the per-run ratios.
Our own packages are byte-compiled first (``compileall``, into the git-ignored
``__pycache__``), as a deployment package should ship them: with ``PYTHONDONTWRITEBYTECODE`` set
and no ``.pyc``, every import would compile the sources again, and measure that instead.
Figures only; the test suite never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ENV = {
    "HERON_STORE": "dynamodb://heron-runs?region=us-east-1",
    "HERON_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/heron-resume",
    "HERON_APP": "heron.functions.demo:rt",
    "HERON_API_TOKEN": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}

FIRST_INVOCATION = (
    "from heron.functions import _lambda; _lambda.get_runtime().store; "
    "import aioboto3, heron.functions._sqs"
)

CASES: list[tuple[str, str]] = [
    ("import aioboto3 (the baseline)", "import aioboto3"),
    ("import heron.functions.resume", "import heron.functions.resume"),
    ("resume: cold start", f"import heron.functions.resume; {FIRST_INVOCATION}"),
    ("import heron.functions.sweep", "import heron.functions.sweep"),
    ("sweep: cold start", f"import heron.functions.sweep; {FIRST_INVOCATION}"),
    ("import heron.functions.api", "import heron.functions.api"),
    ("api: cold start", f"import heron.functions.api; {FIRST_INVOCATION}"),
]

_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S.*)$")


PYTHON = sys.executable


def import_seconds(statement: str) -> float | None:
    """Seconds of top-level imports that ``statement`` did, per ``-X importtime``; ``None`` if it
    fails (the interpreter lacks a package: the API's FastAPI in a lean environment)."""
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", statement],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return None
    total_us = 0
    for line in done.stderr.splitlines():
        match = _LINE.match(line)
        if match and len(match.group(3)) == 1:  # a top-level import: no indent after "| "
            total_us += int(match.group(2))
    return total_us / 1e6


_IN_ONE = """
import json, time
t0 = time.perf_counter()
import aioboto3
t1 = time.perf_counter()
import {handler}
{first}
t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1]))
"""


def in_one_interpreter(handler: str) -> tuple[float, float]:
    """(seconds to import aioboto3, seconds the handler and its first invocation add)."""
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    code = _IN_ONE.format(handler=handler, first=FIRST_INVOCATION)
    done = subprocess.run(
        [PYTHON, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    sdk, handler_share = json.loads(done.stdout)
    return float(sdk), float(handler_share)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each statement (median)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure")
    args = parser.parse_args()
    global PYTHON
    PYTHON = args.python

    import compileall

    for folder in ("src", "runtime", "stores", "functions"):
        compileall.compile_dir(ROOT / folder, quiet=1)
    # warm the file system cache, and leave out what this interpreter cannot import
    cases = [(label, stmt) for label, stmt in CASES if import_seconds(stmt) is not None]
    samples: dict[str, list[float]] = {label: [] for label, _ in cases}
    startup: list[float] = []
    for _ in range(args.runs):
        startup.append(import_seconds("pass") or 0.0)
        for label, statement in cases:
            samples[label].append(import_seconds(statement) or 0.0)
    base = statistics.median(startup)
    results = {label: statistics.median(values) - base for label, values in samples.items()}

    baseline = results[CASES[0][0]]
    version = subprocess.run(
        [PYTHON, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"Python {version} ({PYTHON}), median of {args.runs} runs, -X importtime")
    print()
    print(f"| {'what is imported':<32} | {'ms':>6} | {'x aioboto3':>10} |")
    print(f"| {'-' * 32} | {'-' * 6}:| {'-' * 10}:|")
    for label, _ in CASES:
        if label not in results:
            print(f"| {label:<32} | {'n/a':>6} | {'':>10} |")
            continue
        seconds = results[label]
        print(f"| {label:<32} | {seconds * 1000:6.0f} | {seconds / baseline:10.2f} |")
    print()
    print("In one interpreter (import aioboto3, then the handler and its first invocation):")
    print()
    print(f"| {'handler':<8} | {'aioboto3 ms':>11} | {'+ handler ms':>12} | {'ratio':>5} |")
    print(f"| {'-' * 8} | {'-' * 11}:| {'-' * 12}:| {'-' * 5}:|")
    resume_line = ""
    for handler in ("resume", "sweep", "api"):
        if f"import heron.functions.{handler}" not in results:
            continue
        runs = [in_one_interpreter(f"heron.functions.{handler}") for _ in range(args.runs)]
        sdk = statistics.median(r[0] for r in runs)
        extra = statistics.median(r[1] for r in runs)
        ratio = statistics.median((r[0] + r[1]) / r[0] for r in runs)
        print(f"| {handler:<8} | {sdk * 1000:11.0f} | {extra * 1000:12.0f} | {ratio:5.2f} |")
        if handler == "resume":
            verdict = "within" if ratio <= 1.3 else "OVER"
            resume_line = (
                f"resume cold start / import aioboto3 = {ratio:.2f} ({verdict} the 1.3 goal)"
            )
    print()
    print(resume_line)


if __name__ == "__main__":
    main()
