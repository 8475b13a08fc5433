"""Fixtures for the deployment tests: ``template.yaml`` as data, and CDK stacks synthesized once.

Synthesizing starts a node process (jsii): each stack is built once per session, without
bundling the functions' code (no pip download in tests).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

# Node 20 is what this machine has; jsii prints a banner about its end of life on every start.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")


@pytest.fixture(scope="session")
def sam_template() -> dict[str, Any]:
    from tests.infra.cfn import load_template

    return load_template()


@pytest.fixture(scope="session")
def resolved(sam_template: dict[str, Any]) -> dict[str, Any]:
    """``template.yaml`` with every parameter at its default."""
    from tests.infra.cfn import Resolver

    resolve = Resolver(sam_template)
    template = dict(sam_template)
    template["Resources"] = {
        name: resource
        for name, resource in resolve(sam_template["Resources"]).items()
        if "Condition" not in resource or resolve.condition(resource["Condition"])
    }
    template["Globals"] = resolve(sam_template["Globals"])
    return template


@pytest.fixture(scope="session")
def synth() -> Callable[..., dict[str, Any]]:
    """``synth(**settings)``: the CDK stack's template for those settings, made once each."""
    import aws_cdk as cdk

    from infra.heron_stack import HeronStack, Settings

    cache: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}

    def build(**settings: Any) -> dict[str, Any]:
        key = tuple(sorted(settings.items()))
        if key not in cache:
            # Skip bundling (a pip download for arm64): the asset is then the source folder.
            app = cdk.App(context={"aws:cdk:bundling-stacks": []})
            stack = HeronStack(app, "Heron", settings=Settings(**settings))
            cache[key] = dict(cdk.assertions.Template.from_stack(stack).to_json())
        return cache[key]

    return build
