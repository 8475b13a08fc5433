"""Cold start: a handler configured for DynamoDB imports only what that needs.

Each check runs in a fresh interpreter, imports the handler and does what a first invocation
does before its first request (load ``HERON_APP``, open ``HERON_STORE``), then lists the
modules that came in beyond what ``import aioboto3`` brings by itself (in this dev environment
the SDK pulls in httpx, and httpx its CLI's rich and click: they are the SDK's cost, not ours).
Timings are for ``bench/import_time.py``; nothing here measures time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "HERON_STORE": "dynamodb://heron-runs?region=us-east-1",
    "HERON_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/heron-resume",
    "HERON_APP": "heron.functions.demo:rt",
    "HERON_API_TOKEN": "t",
    "AWS_DEFAULT_REGION": "us-east-1",
}
FIRST_INVOCATION = (
    "from functions import _lambda; rt = _lambda.get_runtime(); rt.store; rt.dispatcher"
)

#: Never on the path of the resume, sweep and reaper functions.
NOT_FOR_WORKERS = {
    "click",
    "fastapi",
    "mangum",
    "pydantic",
    "redis",
    "rich",
    "sqlite3",
    "starlette",
    "heron.stores.memory",
    "heron.stores.sqlite",
    "typer",
    "uvicorn",
}
#: Never on the path of the API function (it does need fastapi, pydantic and mangum).
NOT_FOR_THE_API = {"click", "redis", "rich", "sqlite3", "heron.stores.sqlite", "typer", "uvicorn"}


def modules_after(code: str) -> set[str]:
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


@cache
def sdk_modules() -> frozenset[str]:
    return frozenset(modules_after("import aioboto3"))


def loaded(names: set[str], modules: set[str]) -> set[str]:
    return {m for m in modules if m in names or m.split(".")[0] in names}


@pytest.mark.parametrize(
    "handler", ["heron.functions.resume", "heron.functions.sweep", "heron.functions.reaper"]
)
def test_the_worker_functions_import_nothing_they_do_not_need(handler: str) -> None:
    modules = modules_after(f"import {handler}\n{FIRST_INVOCATION}\nimport aioboto3")
    assert "heron.stores.dynamodb" in modules
    assert loaded(NOT_FOR_WORKERS, modules - sdk_modules()) == set()


def test_the_api_function_imports_no_cli_and_no_other_store() -> None:
    modules = modules_after(f"import heron.functions.api\n{FIRST_INVOCATION}\nimport aioboto3")
    assert {"fastapi", "mangum", "heron.stores.dynamodb"} <= modules
    assert loaded(NOT_FOR_THE_API, modules - sdk_modules()) == set()


@pytest.mark.parametrize(
    "handler",
    [
        "heron.functions.resume",
        "heron.functions.sweep",
        "heron.functions.reaper",
        "heron.functions.api",
    ],
)
def test_importing_a_handler_opens_nothing_and_imports_no_sdk(handler: str) -> None:
    modules = modules_after(f"import {handler}")
    sdk = {"aioboto3", "aiobotocore", "boto3", "heron.stores.dynamodb", "examples"}
    assert loaded(sdk, modules) == set()
    # Powertools imports botocore's package (to tag its user agent), not the SDK's machinery
    assert {"botocore.session", "botocore.client"} & modules == set()
