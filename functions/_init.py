"""``heron init DIR``: a new, deployable project of the user's own, with Heron as a dependency.

::

    DIR/
      src/app.py            the Runtime, one workflow and its steps (HERON_APP=app:rt)
      src/requirements.txt  Heron (from a path, a wheel or an index): sam build installs it
      tests/test_app.py     the workflow tested with heron.testing.environment (no AWS, no waits)
      template.yaml         the same stack as Heron's own, with src/ as the functions' code
      samconfig.toml        sam build / deploy settings
      env.json, events/     variables and sample events for sam local invoke
      pyproject.toml        pytest configuration (src/ on the path)
      infra/                with --cdk: the same stack as a CDK app

The stack is not a copy kept by hand: ``template.yaml``, ``samconfig.toml``, ``env.json``,
``events/`` and the CDK stack ship in this package as links to Heron's own files, and a line
that ends in ``# heron-init: TEXT`` becomes ``TEXT`` here (``{app}``, ``{code}``, ``{stack}``
filled in). Heron reaches the functions through ``src/requirements.txt`` rather than a Lambda
layer: ``sam build`` then resolves it for the functions' platform (arm64) like any other
dependency, and there is no layer version to publish and keep in step with the code.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from heron.runtime import HeronError

__all__ = ["DEFAULT_EXTRAS", "ProjectExists", "Project", "default_requirement", "init_project"]

#: The extras a deployed project needs: the DynamoDB store and the HTTP API.
DEFAULT_EXTRAS = "dynamodb,api"
HERON_HOME = "https://github.com/heron-durable/heron"

#: Where each generated file comes from: (package resource, path in the project, rendering).
_FILES: tuple[tuple[str, str, str], ...] = (
    ("files/app.py.tmpl", "src/app.py", "template"),
    ("files/requirements.txt", "src/requirements.txt", "template"),
    ("files/test_app.py.tmpl", "tests/test_app.py", "template"),
    ("files/pyproject.toml", "pyproject.toml", "template"),
    ("files/README.md", "README.md", "template"),
    ("files/gitignore", ".gitignore", "copy"),
    ("template.yaml", "template.yaml", "markers"),
    ("samconfig.toml", "samconfig.toml", "markers"),
    ("env.json", "env.json", "copy"),
)
_CDK_FILES: tuple[tuple[str, str, str], ...] = (
    ("files/cdk_app.py.tmpl", "infra/app.py", "template"),
    ("heron_stack.py", "infra/heron_stack.py", "copy"),
    ("cdk.json", "infra/cdk.json", "copy"),
    ("package.json", "infra/package.json", "copy"),
    ("package-lock.json", "infra/package-lock.json", "copy"),
)
#: The sample events a project gets, and what each one is retargeted to.
_EVENTS = (
    "api_start_run.json",
    "api_get_run.json",
    "api_list_runs.json",
    "api_signal_run.json",
    "cloudwatch_scheduled_event.json",
    "sqs_resume.json",
    "dynamodb_ttl_remove.json",
)
_MARKER = "# heron-init: "
_BLOCK_START = "# `heron init` writes this file"
_BLOCK_END = "# heron-init-end"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")

#: The example run the events and the README use.
EXAMPLE_RUN = "u-1"
EXAMPLE_INPUT = {"id": "u-1", "email": "ada@example.com"}


class ProjectExists(HeronError, FileExistsError):
    """``heron init`` would overwrite files; ``files`` lists them (relative to the target)."""

    def __init__(self, target: Path, files: list[str]) -> None:
        shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        super().__init__(
            f"{target} is not empty: writing the project would overwrite {shown} "
            "(use --force to overwrite them)"
        )
        self.files = files


@dataclass(frozen=True, slots=True)
class Project:
    """What :func:`init_project` wrote."""

    root: Path
    files: list[Path]
    requirement: str


def default_requirement(extras: str = DEFAULT_EXTRAS) -> str:
    """The requirement line for the Heron that runs this command.

    Installed from a local folder or wheel (Heron is not on a public index yet), that path, as
    a direct reference (``heron[dynamodb,api] @ file:///...``); otherwise the installed
    version (``heron[dynamodb,api]==0.2.0``).
    """
    name = f"heron[{extras}]" if extras else "heron"
    # A checkout can hold build metadata too (heron.egg-info): prefer the installed copy that
    # says where it came from.
    found = list(importlib.metadata.distributions(name="heron"))
    for dist in found:
        direct = dist.read_text("direct_url.json")
        url = json.loads(direct).get("url") if direct else None
        if isinstance(url, str) and url.startswith("file://"):
            return f"{name} @ {url}"
    if found:
        return f"{name}=={found[0].version}"
    from heron import __version__

    return f"{name}=={__version__}"


def init_project(
    target: str | Path,
    *,
    name: str | None = None,
    requirement: str | None = None,
    cdk: bool = False,
    force: bool = False,
) -> Project:
    """Write a new project into ``target`` (made if missing) and return what was written.

    ``name`` (default: the folder's name) names the stack; ``requirement`` is the line that
    installs Heron (default :func:`default_requirement`); ``cdk`` adds ``infra/``, the stack as
    a CDK app. Raises :class:`ProjectExists` naming the files that would be overwritten,
    unless ``force``; ``ValueError`` for a name CloudFormation would refuse.
    """
    root = Path(target).expanduser().resolve()
    stack = name or root.name
    if not _NAME.match(stack):
        raise ValueError(
            f"project name {stack!r} must start with a letter and hold only letters, digits and "
            "'-' (it names the CloudFormation stack); pass --name"
        )
    requirement = requirement or default_requirement()
    if "\n" in requirement or not requirement.strip():
        raise ValueError(f"--heron-requirement must be one requirement line, got {requirement!r}")
    values = {
        "name": stack,
        "stack": stack,
        "app": "app:rt",
        "code": "src/",
        "requirement": requirement.strip(),
        "heron_home": HERON_HOME,
        "cdk_note": _CDK_NOTE if cdk else "",
    }
    planned = {path: _render(source, how, values) for source, path, how in _sources(cdk)}
    planned.update(_events())
    if not force:
        clashes = sorted(p for p in planned if (root / p).exists())
        if clashes:
            raise ProjectExists(root, clashes)
    written = []
    for relative, text in planned.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return Project(root=root, files=written, requirement=values["requirement"])


_CDK_NOTE = (
    "- `infra/` builds the same stack with the CDK (`pip install aws-cdk-lib constructs`, then\n"
    "  `cd infra && npm ci && npx cdk synth`); `infra/heron_stack.py` is Heron's own stack,\n"
    '  `HeronStack(app, "...", settings=Settings(...), code_dir=...)`, to use from your CDK app.'
)


def _sources(cdk: bool) -> tuple[tuple[str, str, str], ...]:
    return _FILES + _CDK_FILES if cdk else _FILES


def _resource(name: str) -> str:
    return (resources.files("heron.functions") / "project" / name).read_text(encoding="utf-8")


def _render(source: str, how: str, values: Mapping[str, str]) -> str:
    text = _resource(source)
    if how == "template":
        return string.Template(text).substitute(values)
    if how == "markers":
        return for_project(text, values)
    return text


def for_project(text: str, values: Mapping[str, str]) -> str:
    """Heron's own ``template.yaml`` or ``samconfig.toml`` as a project's: the block between
    the "heron init writes this file" line and ``# heron-init-end`` (with the blank line after
    it) is left out, and each line ending in ``# heron-init: TEXT`` becomes ``TEXT``, indented
    as it was, with ``{app}``, ``{code}`` and ``{stack}`` filled in."""
    out: list[str] = []
    lines = iter(text.splitlines(keepends=True))
    for line in lines:
        if line.startswith(_BLOCK_START):
            for skipped in lines:
                if skipped.strip() == _BLOCK_END:
                    break
            following = next(lines, "")
            if following.strip():
                out.append(following)
            continue
        code, marker, replacement = line.partition(_MARKER)
        if marker:
            indent = code[: len(code) - len(code.lstrip())]
            line = indent + replacement.strip().format_map(values) + "\n"
        out.append(line)
    return "".join(out)


def _events() -> dict[str, str]:
    """The sample events, retargeted from Heron's example (workflow ``order``, run ``o-1``) to
    the project's (``onboarding``, ``u-1``)."""
    bodies: dict[str, Any] = {
        "api_start_run.json": {"input": EXAMPLE_INPUT, "run_id": EXAMPLE_RUN, "tags": ["web"]},
        "api_signal_run.json": {"payload": {"via": "email-link"}, "signal_id": "activation-1"},
    }
    paths = {
        "api_start_run.json": "/workflows/onboarding/runs",
        "api_get_run.json": f"/runs/{EXAMPLE_RUN}",
        "api_signal_run.json": f"/runs/{EXAMPLE_RUN}/signals/activated",
    }
    events = {}
    for name in _EVENTS:
        text = _resource(f"events/{name}")
        if name in paths:
            event = json.loads(text)
            event["rawPath"] = event["requestContext"]["http"]["path"] = paths[name]
            if name in bodies:
                body = json.dumps(bodies[name]).encode()
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
            text = json.dumps(event, indent=2) + "\n"
        else:
            text = text.replace("o-1", EXAMPLE_RUN)
        events[f"events/{name}"] = text
    return events
