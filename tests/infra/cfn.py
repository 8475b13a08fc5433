"""Reading ``template.yaml`` as data (fixtures that use this live in ``conftest.py``).

CloudFormation's short tags (``!Ref``, ``!Sub``, ...) become their long forms, and
:class:`Resolver` evaluates what depends only on parameter values (``Ref`` to a parameter,
``!FindInMap``, ``!If`` on a condition), so the template can be compared with a CDK stack
synthesized with the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
NO_VALUE = {"Ref": "AWS::NoValue"}


class CloudFormationLoader(yaml.SafeLoader):
    """A YAML loader that reads ``!Ref X`` as ``{"Ref": "X"}``, ``!GetAtt A.B`` as
    ``{"Fn::GetAtt": ["A", "B"]}`` and any other ``!Name v`` as ``{"Fn::Name": v}``."""


def _construct_tag(loader: Any, suffix: str, node: Any) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as file:
        loaded: dict[str, Any] = yaml.load(file, Loader=CloudFormationLoader)  # noqa: S506
    return loaded


class Resolver:
    """Evaluates the intrinsics that depend only on parameter values (the defaults, unless
    ``overrides`` says otherwise); leaves the rest (``!GetAtt``, ``!Sub`` ...) as they are."""

    def __init__(self, template: dict[str, Any], **overrides: str) -> None:
        self.template = template
        self.parameters = {
            name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()
        }
        self.parameters.update(overrides)

    def condition(self, name: str) -> bool:
        return bool(self(self.template["Conditions"][name]))

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            items = (self(item) for item in value)
            return [item for item in items if item != NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and arg in self.parameters:
                return self.parameters[arg]
            if key == "Fn::FindInMap":
                mapping, top, second = (self(part) for part in arg)
                return self.template["Mappings"][mapping][top][second]
            if key == "Fn::Equals":
                left, right = (self(part) for part in arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self(arg[0])
            if key == "Fn::Or":
                return any(self(part) for part in arg)
            if key == "Fn::And":
                return all(self(part) for part in arg)
            if key == "Fn::Split":
                separator, text = (self(part) for part in arg)
                return str(text).split(str(separator))
            if key == "Fn::Select":
                index, items = (self(part) for part in arg)
                return items[int(index)]
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::If":
                name, then, otherwise = arg
                return self(then if self.condition(name) else otherwise)
        resolved = {}
        for key, item in value.items():
            item = self(item)
            if item != NO_VALUE:
                resolved[key] = item
        return resolved


def sam_functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each ``AWS::Serverless::Function``'s properties with the template's Globals merged in."""
    globals_ = template.get("Globals", {}).get("Function", {})
    functions = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = {**globals_, **resource["Properties"]}
        variables = {
            **globals_.get("Environment", {}).get("Variables", {}),
            **resource["Properties"].get("Environment", {}).get("Variables", {}),
        }
        properties["Environment"] = {"Variables": variables}
        functions[name] = properties
    return functions
