"""REST handlers of resumable uploads (upload sessions) on the cloud-backup path, and the HTTP side both paths
share (the cloud-share routes are in share/api.py): read the claim, a batch of chunks, a manifest; answer."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from eacct import errors
from eacct.chunks.manifest import ENTRY
from eacct.netdisk import upload_sessions
from eacct.netdisk.api import body_pieces, ledger_id_of, year_of
from eacct.netdisk.schemas import ChunksStored, UploadSessionIn, UploadSessionOut, VersionOut
from eacct.netdisk.store import IncomingVersion
from eacct.netdisk.upload_sessions import MAX_BATCH_BYTES, MAX_MANIFEST_ENTRIES, UploadPath
from eacct.openapi import endpoint
from eacct.web import BLOBS, NETDISK_HOOKS, SESSIONS, SETTINGS, Caller, answer, read_body, require_netdisk

routes = web.RouteTableDef()

UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
BINARY = ("application/octet-stream",)
# Each chunk of a batch carries a manifest entry ahead of its bytes.
BATCH_LIMIT = MAX_BATCH_BYTES + 64 * 1024 * ENTRY.size

PathFor = Callable[[web.Request, Caller, str], Awaitable[UploadPath]]


def upload_id_of(request: web.Request) -> str:
    """The `{upload_id}` of the path; anything that is not one names no session (404)."""
    raw = request.match_info["upload_id"]
    if not UPLOAD_ID.fullmatch(raw):
        raise errors.NotFound("没有这个上传会话（或已过期），请重新开始上传")
    return raw


async def binary_body(request: web.Request, limit: int) -> bytearray:
    """A bounded binary body (Content-Length required), read with the upload idle timeout.

    Each piece is copied once, straight into a buffer of the announced length: a batch of up to 32 MiB joined
    from blocks at the end would be copied twice, the second time in one piece that holds the GIL (and with it
    every other request) for milliseconds."""
    if request.content_length is None:
        raise errors.LengthRequired()
    if request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    data = bytearray(request.content_length)
    filled = 0
    async for piece in body_pieces(request):
        if filled + len(piece) > len(data):
            raise errors.BadRequest("请求内容不完整：收到的字节数与 Content-Length 不符")
        data[filled : filled + len(piece)] = piece
        filled += len(piece)
    if filled != len(data):
        raise errors.BadRequest("请求内容不完整：收到的字节数与 Content-Length 不符")
    return data


async def open_upload(request: web.Request, path_for: PathFor) -> web.Response:
    caller = await require_netdisk(request)
    ledger_id, year = ledger_id_of(request), year_of(request)
    body = await read_body(request, UploadSessionIn)
    claim = IncomingVersion(ledger_id=ledger_id, year=year, size=body.size, sha256=body.sha256, remark=body.remark.strip(),
                            ledger_name=body.ledger_name, client_version=body.client_version, if_match=body.if_match)
    path = await path_for(request, caller, ledger_id)
    state = await upload_sessions.open_session(request.app[SESSIONS], request.app[SETTINGS], claim, path)
    return answer(UploadSessionOut, state, status=201)


async def upload_state(request: web.Request, path_for: PathFor) -> web.Response:
    caller = await require_netdisk(request)
    ledger_id, year, upload_id = ledger_id_of(request), year_of(request), upload_id_of(request)
    path = await path_for(request, caller, ledger_id)
    return answer(UploadSessionOut, await upload_sessions.session_state(request.app[SESSIONS], upload_id, path, ledger_id, year))


async def upload_chunks(request: web.Request, path_for: PathFor) -> web.Response:
    caller = await require_netdisk(request)
    ledger_id, year, upload_id = ledger_id_of(request), year_of(request), upload_id_of(request)
    path = await path_for(request, caller, ledger_id)
    body = await binary_body(request, BATCH_LIMIT)
    app = request.app
    state = await upload_sessions.put_chunks(app[SESSIONS], app[BLOBS], app[SETTINGS], upload_id, path, ledger_id, year, body)
    return answer(ChunksStored, state)


async def commit_upload(request: web.Request, path_for: PathFor) -> web.Response:
    caller = await require_netdisk(request)
    ledger_id, year, upload_id = ledger_id_of(request), year_of(request), upload_id_of(request)
    path = await path_for(request, caller, ledger_id)
    manifest = bytes(await binary_body(request, MAX_MANIFEST_ENTRIES * ENTRY.size))
    app = request.app
    version = await upload_sessions.commit(app[SESSIONS], app[BLOBS], app[SETTINGS], upload_id, path, ledger_id, year, manifest)
    return answer(VersionOut, version, status=201)


async def backup_path(request: web.Request, caller: Caller, ledger_id: str) -> UploadPath:
    return upload_sessions.backup_path(request.app[NETDISK_HOOKS], caller.member_id, ledger_id)


UPLOADS = "/api/v1/backups/{ledger_id}/years/{year}/uploads"


@routes.post(UPLOADS)
@endpoint(body=UploadSessionIn, answer=UploadSessionOut, status=201, auth="netdisk", errors=(403, 409, 412, 413),
          summary="可续传上传云备份：开始（与整体上传相同的检查）")
async def open_backup_upload(request: web.Request) -> web.Response:
    return await open_upload(request, backup_path)


@routes.get(UPLOADS + "/{upload_id}")
@endpoint(answer=UploadSessionOut, auth="netdisk", errors=(403,), summary="可续传上传：云端已收到哪些数据块")
async def backup_upload_state(request: web.Request) -> web.Response:
    return await upload_state(request, backup_path)


@routes.put(UPLOADS + "/{upload_id}/chunks")
@endpoint(binary_body=True, body_media=BINARY, answer=ChunksStored, auth="netdisk", errors=(403,),
          summary="可续传上传：发送一批数据块（每块：SHA-256 32 字节 + 大端 u32 长度 + 原始数据）")
async def put_backup_chunks(request: web.Request) -> web.Response:
    return await upload_chunks(request, backup_path)


@routes.post(UPLOADS + "/{upload_id}/commit")
@endpoint(binary_body=True, body_media=BINARY, answer=VersionOut, status=201, auth="netdisk", errors=(403,),
          summary="可续传上传：提交清单（每块 SHA-256 32 字节 + 大端 u32 长度，按文件顺序），成为新版本")
async def commit_backup_upload(request: web.Request) -> web.Response:
    return await commit_upload(request, backup_path)
