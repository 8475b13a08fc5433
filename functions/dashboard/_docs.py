"""``GET /docs``: the API's reference as one self-contained page, made from the app's OpenAPI
document (routes, parameters, bodies, responses, schemas, a ``curl`` line each).

Swagger UI would load its scripts from a CDN (a blank page offline) or, served from the
package, add a megabyte and a half of JavaScript to the Lambda bundle; the pip packages that
ship it lag the upstream releases. This page needs nothing but the dashboard's stylesheet, so
it works offline, behind a firewall and under the dashboard's Content-Security-Policy.
``/openapi.json`` stays for tools (and for Swagger UI wherever one runs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from heron.functions.dashboard._render import Urls, render
from heron.functions.dashboard._routes import SECURITY_HEADERS

__all__ = ["docs_page"]

#: (text, the schema it names or None): a type as linked words, "array of" + "Step".
Words = list[tuple[str, str | None]]

_METHOD_ORDER = {"get": 0, "post": 1, "put": 2, "patch": 3, "delete": 4}
_CONSTRAINTS = {
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minimum": "≥ {}",
    "maximum": "≤ {}",
    "exclusiveMinimum": "> {}",
    "exclusiveMaximum": "< {}",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "pattern": "matches {}",
    "format": "format {}",
}


@dataclass
class Param:
    name: str
    where: str
    required: bool
    type: Words
    description: str
    constraints: list[str]
    default: str | None


@dataclass
class Reply:
    code: str
    description: str
    type: Words


@dataclass
class Operation:
    method: str
    path: str
    anchor: str
    summary: str
    description: str
    secured: bool
    params: list[Param]
    body: Words | None
    body_required: bool
    replies: list[Reply]
    curl: str


@dataclass
class Schema:
    name: str
    description: str
    fields: list[Param] = field(default_factory=list)
    type: Words | None = None  # a schema that is not an object


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def words(schema: Any) -> Words:
    """A schema as words a person reads: ``string | null``, ``array of Step``, ``any JSON``."""
    if not isinstance(schema, dict) or not schema:
        return [("any JSON", None)]
    if "$ref" in schema:
        name = _ref_name(str(schema["$ref"]))
        return [(name, name)]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            out: Words = []
            for i, option in enumerate(schema[key]):
                if i:
                    out.append((" | " if key != "allOf" else " & ", None))
                out.extend(words(option))
            return out
    if "enum" in schema:
        return [("one of " + ", ".join(json.dumps(v) for v in schema["enum"]), None)]
    if "const" in schema:
        return [(json.dumps(schema["const"]), None)]
    kind = schema.get("type")
    if isinstance(kind, list):
        return [(" | ".join(str(k) for k in kind), None)]
    if kind == "array":
        return [("array of ", None), *words(schema.get("items"))]
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        if extra is True or extra == {}:
            return [("object", None)]
        return [("object of ", None), *words(extra)]
    if kind is None:
        return [("any JSON", None)]
    return [(str(kind), None)]


def constraints(schema: Any) -> list[str]:
    found: list[str] = []
    if not isinstance(schema, dict):
        return found
    for key, text in _CONSTRAINTS.items():
        if key in schema:
            found.append(text.format(schema[key]))
    for option in schema.get("anyOf", []):
        found.extend(constraints(option))
    return found


def _default(schema: Any) -> str | None:
    if isinstance(schema, dict) and "default" in schema:
        return json.dumps(schema["default"], ensure_ascii=False)
    return None


def _body_schema(content: Any) -> Any:
    if isinstance(content, dict):
        for kind in ("application/json", *content):
            if kind in content:
                return content[kind].get("schema", {})
    return None


def _curl(method: str, path: str, secured: bool, body: Any) -> str:
    parts = ["curl"]
    if method != "get":
        parts.append(f"-X {method.upper()}")
    parts.append(f'"$API{path}"')
    if secured:
        parts.append('-H "Authorization: Bearer $HERON_API_TOKEN"')
    if body is not None:
        parts.append("-H 'content-type: application/json' -d '{...}'")
    return " ".join(parts)


def build(document: dict[str, Any]) -> tuple[list[Operation], list[Schema]]:
    """The operations, in path then method order, and the schemas they use."""
    operations: list[Operation] = []
    for path, item in document.get("paths", {}).items():
        for method, op in sorted(item.items(), key=lambda kv: _METHOD_ORDER.get(kv[0], 9)):
            if method not in _METHOD_ORDER:
                continue
            params = [
                Param(
                    name=str(p.get("name")),
                    where=str(p.get("in")),
                    required=bool(p.get("required")),
                    type=words(p.get("schema")),
                    description=str(
                        p.get("description") or p.get("schema", {}).get("description") or ""
                    ),
                    constraints=constraints(p.get("schema")),
                    default=_default(p.get("schema")),
                )
                for p in op.get("parameters", [])
            ]
            body = op.get("requestBody")
            body_schema = _body_schema(body.get("content")) if isinstance(body, dict) else None
            replies = [
                Reply(
                    code=str(code),
                    description=str(reply.get("description", "")),
                    type=words(_body_schema(reply.get("content"))) if reply.get("content") else [],
                )
                for code, reply in sorted(op.get("responses", {}).items())
            ]
            secured = bool(op.get("security"))
            operations.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    anchor=f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""),
                    summary=str(op.get("summary", "")),
                    description=str(op.get("description", "")).replace("``", ""),
                    secured=secured,
                    params=params,
                    body=words(body_schema) if body_schema is not None else None,
                    body_required=bool(isinstance(body, dict) and body.get("required")),
                    replies=replies,
                    curl=_curl(method, path, secured, body_schema),
                )
            )
    schemas: list[Schema] = []
    for name, schema in sorted(document.get("components", {}).get("schemas", {}).items()):
        entry = Schema(name=name, description=str(schema.get("description", "")).replace("``", ""))
        properties = schema.get("properties")
        if isinstance(properties, dict):
            required = set(schema.get("required", []))
            entry.fields = [
                Param(
                    name=prop,
                    where="",
                    required=prop in required,
                    type=words(spec),
                    description=str(spec.get("description", "")) if isinstance(spec, dict) else "",
                    constraints=constraints(spec),
                    default=_default(spec),
                )
                for prop, spec in properties.items()
            ]
        else:
            entry.type = words(schema)
        schemas.append(entry)
    return operations, schemas


async def docs_page(request: Request) -> Response:
    """The reference page (open to all, as ``/openapi.json`` is)."""
    document: dict[str, Any] = request.app.openapi()
    operations, schemas = build(document)
    root = request.scope.get("root_path", "").rstrip("/")
    body = render(
        "docs.html",
        u=Urls(root),
        mode="docs",
        session=None,
        flash=None,
        info=document.get("info", {}),
        operations=operations,
        schemas=schemas,
        schemes=document.get("components", {}).get("securitySchemes", {}),
    )
    return HTMLResponse(body, headers=SECURITY_HEADERS)
