"""The OpenAPI 3 document, built from the same pydantic models the handlers validate with.

Handlers declare their shapes with `@endpoint(...)` (placed under the route decorator); the document is
assembled from the app's router, so a route without a declaration still appears, and nothing is listed twice.
Every status an operation can answer is listed with its own schema; there is no catch-all `default`, so a
conformance run (tests/test_openapi_conformance.py) notices any answer the document does not promise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

__all__ = ["DOWNLOAD_HEADERS", "Header", "PASSWORD_HEADER", "Query", "UPLOAD_HEADERS", "endpoint", "openapi_document"]

_ATTRIBUTE = "__eacct_endpoint__"
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_BINARY = {"type": "string", "format": "binary"}
PERCENT_ENCODED = r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@ ]|%[0-9A-Fa-f]{2})*$"
UPLOAD_MEDIA_TYPES = ("application/octet-stream", "application/x-eacct-delta")


@dataclass(frozen=True)
class Header:
    """A request header an operation reads."""

    name: str
    schema: dict[str, Any]
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Query:
    """A query parameter; `values` makes it a repeatable enum."""

    description: str
    values: tuple[str, ...] = ()


UPLOAD_HEADERS = (
    Header("X-Content-SHA256", {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}, True, "整个年度数据的 SHA-256（十六进制）"),
    Header("X-Remark", {"type": "string", "maxLength": 600, "pattern": PERCENT_ENCODED}, False, "备注，百分号编码的 UTF-8"),
    Header("X-Ledger-Name", {"type": "string", "maxLength": 600, "pattern": PERCENT_ENCODED}, False,
           "账套名称，百分号编码的 UTF-8；新账套的首次上传必需"),
    Header("X-Client-Version", {"type": "string", "maxLength": 200, "pattern": PERCENT_ENCODED}, False,
           "e会计 软件版本，百分号编码的 UTF-8"),
    Header("If-Match", {"type": "string", "pattern": '^"[^"]{1,64}"$'}, False, '"<version_id>"：客户端修改所基于的版本'),
    Header("X-Archive-Size", {"type": "string", "pattern": "^[0-9]{1,15}$"}, False,
           "增量上传（application/x-eacct-delta）必需：整个年度数据的字节数"),
)
DOWNLOAD_HEADERS = (
    Header("Range", {"type": "string", "pattern": "^bytes=[0-9]{0,15}-[0-9]{0,15}$"}, False, "单个字节范围"),
    Header("If-None-Match", {"type": "string"}, False, '"<sha256>"：与 ETag 相同时答 304'),
)
PASSWORD_HEADER = Header("X-Netdisk-Password", {"type": "string", "minLength": 1, "pattern": PERCENT_ENCODED}, True,
                         "再次输入的云盘密码，百分号编码的 UTF-8")

# How each path parameter looks; the handlers refuse anything else (422 or 404).
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "ledger_id": {"type": "string", "format": "uuid"},
    "year": {"type": "integer", "minimum": 1990, "maximum": 2100},
    "version_id": {"type": "string", "pattern": "^(latest|[0-9a-f]{32})$"},
    "member_id": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    "id": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    "share_id": {"type": "string", "pattern": "^[0-9A-Za-z_-]{1,32}$"},
    "upload_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}

# What each error status means; the codes are those of API.md.
ERROR_DESCRIPTIONS = {
    400: "bad_request（JSON 格式错误、缺少 Content-Length）、checksum_mismatch（上传未保存）",
    401: "unauthenticated、netdisk_token_required、bad_credentials、bad_netdisk_password、bad_answers",
    403: "forbidden、not_a_friend、owner_uses_backup、recipient_uses_share",
    404: "not_found、member_not_found、netdisk_not_opened",
    408: "upload_stalled：上传内容超过 EACCT_UPLOAD_IDLE_TIMEOUT 秒没有到达，未保存",
    409: "account_taken、netdisk_already_opened、retry_upload、missing_chunks",
    412: "version_conflict：云端已有更新的版本",
    413: "quota_exceeded（needed_bytes、free_bytes）、too_many_versions、payload_too_large",
    416: "range_not_satisfiable（Content-Range: bytes */<size>）",
    422: "invalid（details 列出问题）、invalid_year、cannot_add_self",
    429: "too_many_attempts（retry_after 秒，另有 Retry-After 头）",
    503: "busy（服务器正忙，Retry-After）、storage_unavailable（云存储暂时不可用，未保存任何数据）",
}
RETRY_AFTER = {"Retry-After": {"description": "多少秒后再试", "schema": {"type": "integer", "minimum": 0}}}


@dataclass(frozen=True)
class EndpointSpec:
    """What the document says about one handler: shapes, parameters, and every status it can answer."""

    summary: str = ""
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    status: int = 200
    auth: bool | str = True
    binary_body: bool = False
    binary_answer: bool = False
    # The media types of a binary body, when not those of a version upload.
    body_media: tuple[str, ...] = ()
    # A streamed binary answer without ranges or validators (a batch of chunks).
    stream_answer: bool = False
    query: dict[str, Query] = field(default_factory=dict)
    headers: tuple[Header, ...] = ()
    # Error statuses beyond those implied by the declaration (auth, body, path, upload, download).
    errors: tuple[int, ...] = ()
    # Other success statuses with the same answer, e.g. {200: "已经是好友"}.
    also: dict[int, str] = field(default_factory=dict)


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


def _error_statuses(spec: EndpointSpec, path_params: list[str]) -> set[int]:
    """Every error status the operation can answer: implied by what it reads, plus its declared ones."""
    statuses = set(spec.errors)
    if spec.auth:
        statuses.add(401)
    if spec.body is not None:
        statuses |= {400, 413, 422}  # malformed JSON, over the 1 MiB body limit, wrong shape
    if path_params or spec.query or spec.headers:
        statuses.add(422)
    if path_params:
        statuses.add(404)
    if spec.binary_body:
        statuses |= {400, 404, 408, 409, 412, 413, 422, 503}
    if spec.binary_answer:
        statuses |= {404, 416, 503}
    if spec.stream_answer:
        statuses |= {404, 503}
    return statuses


def _operation(spec: EndpointSpec, path: str, name: str, components: dict[str, Any]) -> dict[str, Any]:
    path_params = _path_params(path)
    operation: dict[str, Any] = {"summary": spec.summary or name, "operationId": name, "responses": {}}
    parameters: list[dict[str, Any]] = [
        {"name": param, "in": "path", "required": True, "schema": PATH_PARAMETERS.get(param, {"type": "string"})}
        for param in path_params
    ]
    for param, query in spec.query.items():
        schema: dict[str, Any] = {"type": "string"}
        if query.values:
            schema = {"type": "array", "items": {"type": "string", "enum": list(query.values)}}
        parameters.append({"name": param, "in": "query", "required": False, "schema": schema, "style": "form",
                           "explode": True, "description": query.description})
    for header in spec.headers:
        parameters.append({"name": header.name, "in": "header", "required": header.required, "schema": header.schema,
                           "description": header.description})
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
            "content": {media_type: {"schema": _BINARY} for media_type in spec.body_media or UPLOAD_MEDIA_TYPES},
        }
    responses: dict[str, Any] = operation["responses"]
    success: dict[str, Any] = {"description": "OK"}
    if spec.answer is not None:
        success["content"] = {"application/json": {"schema": _schema_ref(spec.answer, components)}}
    elif spec.binary_answer:
        success["content"] = {"application/octet-stream": {"schema": _BINARY}}
        success["headers"] = _download_headers()
    elif spec.stream_answer:
        success["content"] = {media_type: {"schema": _BINARY} for media_type in ("application/octet-stream", "application/zstd")}
    responses[str(spec.status)] = success
    for status, description in spec.also.items():
        responses[str(status)] = {**success, "description": description}
    if spec.binary_answer:
        responses["206"] = {**success, "description": "Range 请求的部分内容（Content-Range）"}
        responses["304"] = {"description": "If-None-Match 与 ETag 相同，内容未改变",
                            "headers": {"ETag": {"schema": {"type": "string"}}}}
    for status in sorted(_error_statuses(spec, path_params)):
        answer: dict[str, Any] = {"description": ERROR_DESCRIPTIONS[status], "content": {"application/json": {"schema": _ERROR_REF}}}
        if status in (429, 503):
            answer["headers"] = RETRY_AFTER
        responses[str(status)] = answer
    operation["responses"] = dict(sorted(responses.items()))
    if spec.auth:
        operation["security"] = [{"bearer": []}]
    return operation


def _download_headers() -> dict[str, Any]:
    text = {"schema": {"type": "string"}}
    return {
        "ETag": {**text, "description": '"<sha256>"'},
        "X-Content-SHA256": {**text, "description": "整个年度数据的 SHA-256"},
        "X-Remark": {**text, "description": "备注，百分号编码的 UTF-8"},
        "X-Version-Id": {**text, "description": "版本ID"},
        "Content-Range": {**text, "description": "206 时：bytes <start>-<end>/<size>"},
    }


def openapi_document(app: web.Application) -> dict[str, Any]:
    """Describe every route of `app` under /api/v1, and /healthz (the WeChat callback and pages speak XML/HTML)."""
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or not (path.startswith("/api/v1") or path == "/healthz") or route.method in ("HEAD", "*"):
            continue
        spec: EndpointSpec = getattr(route.handler, _ATTRIBUTE, EndpointSpec())
        paths.setdefault(path, {})[route.method.lower()] = _operation(spec, path, route.handler.__name__, components)
    components["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "pattern": "^[a-z_]+$"},
                    "message": {"type": "string", "minLength": 1},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "problem"],
                            "properties": {"field": {"type": "string"}, "problem": {"type": "string"}},
                        },
                    },
                    "retry_after": {"type": "integer", "minimum": 0},
                    "locked_until": {"type": "string"},
                    "needed_bytes": {"type": "integer"},
                    "free_bytes": {"type": "integer"},
                },
                # Some refusals name what they refer to (the newer version, missing chunks, …).
                "additionalProperties": True,
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
