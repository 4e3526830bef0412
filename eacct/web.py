"""The HTTP edge shared by every api module: app keys, the error middleware, body parsing, auth, JSON."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import unquote

from aiohttp import web, web_protocol
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import async_sessionmaker

from eacct import errors
from eacct.config import Settings
from eacct.db import unit_of_work
from eacct.formats import iso
from eacct.members import service as members
from eacct.members.service import Caller
from eacct.netdisk.hooks import NetdiskHooks
from eacct.secrets import PasswordHashing
from eacct.storage import BlobStore
from eacct.text import has_unsafe_characters

__all__ = [
    "BLOBS", "NOTIFIER", "SESSIONS", "SETTINGS", "Caller", "client_ip", "error_middleware", "iso", "json_response",
    "abort_connection", "authenticated_read", "install_json_protocol_errors", "read_body", "read_transaction",
    "remember_started_response", "require_member", "require_netdisk", "transaction",
]

log = logging.getLogger("eacct.web")

SETTINGS = web.AppKey("settings", Settings)
SESSIONS = web.AppKey("sessions", async_sessionmaker)
BLOBS = web.AppKey("blobs", BlobStore)
NETDISK_HOOKS = web.AppKey("netdisk_hooks", NetdiskHooks)
NOTIFIER = web.AppKey("notifier", object)
HASHING = web.AppKey("hashing", PasswordHashing)
# When no database connection could be had in time, the client is told to come back after this long.
POOL_BUSY_RETRY_AFTER_SECONDS = 1

STATUS_BY_ERROR: dict[type[errors.DomainError], int] = {
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.VersionConflict: 412,
    errors.QuotaExceeded: 413,
    errors.TooManyVersions: 413,
    errors.ChecksumMismatch: 400,
    errors.BadRequest: 400,
    errors.Invalid: 422,
    errors.TooManyAttempts: 429,
    errors.StorageUnavailable: 503,
    errors.UploadStalled: 408,
    errors.Busy: 503,
}


def status_for(error: errors.DomainError) -> int:
    """The HTTP status of a domain error: that of its nearest mapped class."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A UTF-8 JSON answer that keeps Chinese readable."""
    return web.json_response(data, status=status, headers=headers, dumps=lambda v: json.dumps(v, ensure_ascii=False))


def answer(schema: type[BaseModel], data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Serialize what a service returned with the answer schema the OpenAPI document is built from (pydantic
    writes the UTF-8 JSON itself, Chinese kept readable)."""
    return web.Response(body=schema.model_validate(data).model_dump_json().encode(), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The error body of API.md; `retry_after` also becomes the Retry-After header."""
    headers = {}
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra["retry_after"])
    return json_response({"error": {"code": code, "message": message, **extra}}, status=status, headers=headers)


HTTP_ERROR_CODES = {
    400: ("bad_request", "请求格式不正确"),
    404: ("not_found", "找不到请求的内容"),
    405: ("method_not_allowed", "不支持该请求方法"),
    411: ("length_required", "上传需要 Content-Length"),
    413: ("payload_too_large", "请求内容过大"),
    416: ("range_not_satisfiable", "请求的字节范围超出了文件大小"),
}


# Request key: the answer whose status and headers are already on their way (see `remember_started_response`).
STARTED_RESPONSE = web.RequestKey("started_response", web.StreamResponse)


async def remember_started_response(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: once a handler has sent headers (a streamed download), a failure can only
    cut the connection, so error_middleware must know the answer already began."""
    request[STARTED_RESPONSE] = response


def abort_connection(request: web.Request) -> None:
    """Drop the connection at once, unsent bytes and all: the client sees a short body and EOF."""
    if request.transport is not None:
        request.transport.abort()


def is_disconnect(request: web.Request, exc: BaseException) -> bool:
    """Whether `exc` is the client going away, not a local failure such as a full disk."""
    # A reset from some other socket (the database, object storage) while the client is still there is not one.
    return isinstance(exc, ConnectionError) and (request.transport is None or request.transport.is_closing())


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Every refusal leaves as the JSON error of API.md; an unexpected failure is logged, never shown.

    Once a streamed answer has sent its headers no second answer may follow: the connection is cut instead.
    """
    try:
        return await handler(request)
    except Exception as exc:
        started = request.get(STARTED_RESPONSE)
        if started is None:
            return _error_answer(request, exc)
        if is_disconnect(request, exc):
            log.info("connection lost: %s %s: %s", request.method, request.path, exc)
        else:
            log.warning("%s %s failed after its headers were sent; connection cut", request.method, request.path,
                        exc_info=exc)
        abort_connection(request)
        # aiohttp finishes the already-prepared answer; its write to the aborted transport ends the request.
        return started


def _error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    if isinstance(exc, errors.DomainError):
        return error_response(status_for(exc), exc.code, exc.message, **exc.extra)
    if isinstance(exc, ValidationError):
        details = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        return error_response(422, "invalid", "提交的内容不符合要求", details=details)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code, message = HTTP_ERROR_CODES.get(exc.status, ("http_error", exc.reason))
        response = error_response(exc.status, code, message)
        for name in ("Content-Range", "Allow"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    if isinstance(exc, PoolTimeout) or isinstance(exc, DBAPIError) and exc.connection_invalidated:
        # Every database connection of this process stayed busy for the pool's whole wait, or the one this
        # request had died under it (the pool now replaces it): nothing was done, so the client is told to
        # try again shortly (503 busy), as for any overload, rather than that the server failed.
        log.warning("database pool exhausted or connection lost in %s %s: %s", request.method, request.path, exc)
        error = errors.Busy(retry_after=POOL_BUSY_RETRY_AFTER_SECONDS)
        return error_response(status_for(error), error.code, error.message, **error.extra)
    if is_disconnect(request, exc):
        # The client went away mid-transfer; there is nobody to answer.
        log.info("connection lost: %s %s: %s", request.method, request.path, exc)
        raise exc
    if isinstance(exc, OSError):
        # A local I/O failure (a full disk, an unreadable spool): the blob side of storage is unavailable.
        log.error("storage failure in %s %s: %s", request.method, request.path, exc, exc_info=exc)
        error = errors.StorageUnavailable()
        return error_response(status_for(error), error.code, error.message)
    log.error("unexpected failure in %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal_error", "服务器内部错误，请稍后重试")


def install_json_protocol_errors() -> None:
    """Make aiohttp's own refusals of malformed HTTP (a header over 8190 bytes, a bad Content-Length, a broken
    request line) the JSON error of API.md for eacct's apps.

    aiohttp answers these in plain text before any middleware runs and offers no hook, so its error answer is
    wrapped once per process; other aiohttp servers in the process keep the plain-text answer.
    """
    original = web_protocol.RequestHandler.handle_error
    if getattr(original, "eacct_json", False):
        return

    def handle_error(self, request, status=500, exc=None, message=None):
        answer = original(self, request, status, exc, message)  # logs; raises if the answer already began
        app = getattr(getattr(self._manager, "request_handler", None), "__self__", None)
        if not isinstance(app, web.Application) or SETTINGS not in app:
            return answer
        if status == 500:
            code, text = "internal_error", "服务器内部错误，请稍后重试"
        else:
            code, text = HTTP_ERROR_CODES.get(status, ("http_error", "请求无法处理"))
        json_answer = error_response(status, code, text)
        json_answer.force_close()  # as aiohttp does: the connection's framing can no longer be trusted
        return json_answer

    handle_error.eacct_json = True
    web_protocol.RequestHandler.handle_error = handle_error


ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_body(request: web.Request, model: type[ModelT]) -> ModelT:
    """Parse and validate a JSON body; malformed JSON is 400, a wrong shape 422 with details."""
    raw = await request.read()
    try:
        data = json.loads(raw or b"null")
    except RecursionError as exc:
        raise errors.BadRequest("请求内容的 JSON 嵌套过深") from exc
    except ValueError as exc:  # malformed JSON, not UTF-8, or an integer of thousands of digits
        raise errors.BadRequest("请求内容不是有效的 JSON") from exc
    if not isinstance(data, dict):
        raise errors.Invalid("请求内容应为 JSON 对象")
    if _has_lone_surrogate(data):
        raise errors.BadRequest("请求内容含有无效的 Unicode 字符（孤立的代理项）")
    return model.model_validate(data)


def _has_lone_surrogate(data: Any) -> bool:
    """Whether a parsed JSON value holds a string such as "\\ud800" that is no text at all (cannot be encoded)."""
    stack = [data]
    while stack:  # not recursive: the value may be nested almost as deep as the parser allows
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


@asynccontextmanager
async def transaction(request: web.Request):
    """One unit of work for this request's database work."""
    async with unit_of_work(request.app[SESSIONS]) as session:
        yield session


def bearer_token(request: web.Request) -> str:
    """The bearer token of the request, or Unauthenticated."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthenticated()
    return token.strip()


@asynccontextmanager
async def read_transaction(request: web.Request):
    """A read-only unit of work (on SQLite it does not take the write lock); writing in it raises."""
    async with unit_of_work(request.app[SESSIONS], read_only=True) as session:
        yield session


async def require_member(request: web.Request) -> Caller:
    """Authenticate a session or netdisk token; a netdisk token's expiry is written only when it moves on."""
    token, settings = bearer_token(request), request.app[SETTINGS]
    async with read_transaction(request) as session:
        caller = await members.authenticate(session, settings, token)
    if caller.slide_due:
        async with transaction(request) as session:
            await members.slide_expiry(session, settings, token)
    return caller


@asynccontextmanager
async def authenticated_read(request: web.Request, *, netdisk: bool = False):
    """Authenticate (as `require_member`, or `require_netdisk` with netdisk=True) and read in one read-only
    unit of work: a list request costs one transaction, not two. Yields (caller, session)."""
    token, settings = bearer_token(request), request.app[SETTINGS]
    caller = None
    try:
        async with read_transaction(request) as session:
            caller = await members.authenticate(session, settings, token)
            if netdisk and not caller.netdisk:
                raise errors.NetdiskTokenRequired()
            yield caller, session
    finally:
        if caller is not None and caller.slide_due:
            async with transaction(request) as session:
                await members.slide_expiry(session, settings, token)


async def require_netdisk(request: web.Request) -> Caller:
    """Authenticate a netdisk token; a session token gets `netdisk_token_required`."""
    caller = await require_member(request)
    if not caller.netdisk:
        raise errors.NetdiskTokenRequired()
    return caller


def client_ip(request: web.Request) -> str:
    """The caller's address: the peer, or behind trusted proxies (EACCT_TRUSTED_PROXIES) the last address in
    X-Forwarded-For that none of them added; a forwarded header from anyone else is ignored."""
    trusted = request.app[SETTINGS].trusted_proxy_networks()
    address = request.remote or ""
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    while _in(address, trusted) and hops:
        address = hops.pop()
    return address[:64]


def _in(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


BAD_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def header_text(request: web.Request, name: str, *, max_length: int) -> str | None:
    """A percent-encoded UTF-8 header (X-Remark, X-Ledger-Name), decoded and length-checked."""
    raw = request.headers.get(name)
    if raw is None:
        return None
    if BAD_PERCENT_ESCAPE.search(raw):
        raise errors.Invalid(f"{name} 应为百分号编码的 UTF-8 文本（% 后应为两位十六进制数）")
    try:
        text = unquote(raw, encoding="utf-8", errors="strict").strip()
    except UnicodeDecodeError as exc:
        raise errors.Invalid(f"{name} 应为百分号编码的 UTF-8 文本") from exc
    if len(text) > max_length or has_unsafe_characters(text):
        raise errors.Invalid(f"{name} 过长或含有控制字符")
    return text


