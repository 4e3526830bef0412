"""The OpenAPI 3 document, built from the same pydantic models the handlers validate with.

Handlers declare their shapes with `@endpoint(...)` (placed under the route decorator); the document is
assembled from the app's router, so a route without a declaration still appears, and nothing is listed twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

__all__ = ["endpoint", "openapi_document"]

_ATTRIBUTE = "__eacct_endpoint__"


@dataclass(frozen=True)
class EndpointSpec:
    """What the document says about one handler."""

    summary: str = ""
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    status: int = 200
    auth: bool | str = True
    binary_body: bool = False
    binary_answer: bool = False
    query: dict[str, str] = field(default_factory=dict)


def endpoint(**spec: Any) -> Callable:
    """Attach an `EndpointSpec` to a handler."""

    def mark(handler: Callable) -> Callable:
        setattr(handler, _ATTRIBUTE, EndpointSpec(**spec))
        return handler

    return mark


def _schema_ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def openapi_document(app: web.Application) -> dict[str, Any]:
    """Describe every route of `app` under /api/v1."""
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or not path.startswith("/api/v1") or route.method in ("HEAD", "*"):
            continue
        spec: EndpointSpec = getattr(route.handler, _ATTRIBUTE, EndpointSpec())
        operation: dict[str, Any] = {"summary": spec.summary or route.handler.__name__, "responses": {}}
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(path)
        ]
        parameters += [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": text}
            for name, text in spec.query.items()
        ]
        if parameters:
            operation["parameters"] = parameters
        if spec.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema_ref(spec.body, components)}},
            }
        elif spec.binary_body:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        answer: dict[str, Any] = {"description": "OK"}
        if spec.answer is not None:
            answer["content"] = {"application/json": {"schema": _schema_ref(spec.answer, components)}}
        elif spec.binary_answer:
            answer["content"] = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        operation["responses"][str(spec.status)] = answer
        operation["responses"]["default"] = {
            "description": "错误",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        if spec.auth:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[route.method.lower()] = operation
    components["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "eacct REST API", "version": "1"},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
