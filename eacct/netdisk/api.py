"""REST handlers for the netdisk and the owner's cloud backup, and the HTTP side of every transfer."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote, unquote

import zstandard
from aiohttp import web

from eacct import errors
from eacct.chunks import delta as delta_format
from eacct.netdisk import downloads, service, store, versions
from eacct.netdisk.downloads import Download
from eacct.netdisk.schemas import (
    ChunkBatch, ChunkQuery, ManifestOut, MissingChunks, DeletionsOut, LedgerOut, LedgerRename, LedgersOut, NetdiskOut, OpenNetdisk, PasswordChange, QuestionsOut, Reset,
    Unlock, UnlockOut, VersionOut, YearOut,
)
from eacct.openapi import DOWNLOAD_HEADERS, PASSWORD_HEADER, UPLOAD_HEADERS, endpoint
from eacct.storage.buffers import BufferPool
from eacct.web import (
    BLOBS, HASHING, NETDISK_HOOKS, SESSIONS, SETTINGS, abort_connection, answer, authenticated_read, bearer_token,
    client_ip, header_text, read_body, require_member, require_netdisk, transaction,
)

routes = web.RouteTableDef()
log = logging.getLogger("eacct.netdisk")

SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
ETAG = re.compile(r'^\s*(?:W/)?"([^"]{1,64})"\s*$')
RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")  # [0-9], not \d: "bytes=¹-" is no range
# \d and str.isdigit() also take "２０１８", "٢٠١٨" and "¹"; use fullmatch, as "$" lets "2018\n" through.
ASCII_DIGITS = re.compile(r"[0-9]+")
# Past this many digits a byte position exceeds any version (and int() of 4300+ digits raises).
POSITION_DIGITS = 18
BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
BODY_BLOCK = 1024 * 1024
# Body buffers an upload keeps for reuse: the blocks alive at once (read ahead, being cut, chunks waiting for their
# lookup or compression) are about five; a block beyond these gets a buffer of its own.
BODY_BUFFERS_KEPT = 8

# -------------------------------------------------------------------------------------- path values


def ledger_id_of(request: web.Request) -> str:
    """The `{ledger_id}` of the path as a canonical UUID string (422 when it is not a UUID)."""
    return service.canonical_ledger_id(request.match_info["ledger_id"])


def year_of(request: web.Request) -> int:
    """The `{year}` of the path, 1990–2100 (422 invalid_year)."""
    return service.fiscal_year(request.match_info["year"])


# ----------------------------------------------------------------------------------------- transfers


def upload_claim(request: web.Request) -> store.IncomingVersion:
    """Read and check an upload's headers (API.md "Uploading a version"; a delta upload adds X-Archive-Size)."""
    if request.content_length is None:
        raise errors.LengthRequired()
    delta = request.content_type == delta_format.MEDIA_TYPE
    size = request.content_length
    if delta:
        raw = request.headers.get("X-Archive-Size", "")
        if not ASCII_DIGITS.fullmatch(raw) or len(raw) > 15:
            raise errors.Invalid("增量上传需要 X-Archive-Size（整个年度数据的字节数）")
        size = int(raw)
    sha = request.headers.get("X-Content-SHA256", "")
    if not SHA256_HEX.match(sha):
        raise errors.Invalid("需要 X-Content-SHA256（64 位十六进制 SHA-256）")
    if_match = None
    if "If-Match" in request.headers:
        match = ETAG.match(request.headers["If-Match"])
        if not match:
            raise errors.Invalid('If-Match 的格式应为 "<version_id>"')
        if_match = match.group(1)
    return store.IncomingVersion(
        ledger_id=ledger_id_of(request),
        year=year_of(request),
        size=size,
        delta=delta,
        body_size=request.content_length,
        sha256=sha.lower(),
        remark=header_text(request, "X-Remark", max_length=200) or "",
        ledger_name=header_text(request, "X-Ledger-Name", max_length=100) or None,
        client_version=header_text(request, "X-Client-Version", max_length=64) or "",
        if_match=if_match,
    )


async def body_pieces(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as the transport delivers it; a body that sends nothing for `upload_idle_timeout` seconds
    raises UploadStalled."""
    idle_timeout = request.app[SETTINGS].upload_idle_timeout
    while True:
        # A client that stops sending (Content-Length larger than what comes) would hold the upload forever.
        try:
            # asyncio.timeout, not wait_for: no task per read (a 1 GB body is ~16k reads).
            async with asyncio.timeout(idle_timeout):
                # readany(), not readchunk(): a piece per call keeps a busy server's loop on this body for longer and
                # made a big upload and other members' small ones 2-3x slower (bench/commit_block.py).
                data = await request.content.readany()
        except TimeoutError:
            raise errors.UploadStalled(
                f"上传中断：超过 {idle_timeout} 秒没有收到数据，本次上传未保存，请重新上传") from None
        if not data:
            return
        yield data


async def body_blocks(request: web.Request) -> AsyncIterator[memoryview]:
    """The request body in blocks of `BODY_BLOCK` bytes (the last one shorter), so per-block work is amortised;
    a body that sends nothing for `upload_idle_timeout` seconds raises UploadStalled.

    The blocks are read into buffers that are reused once nothing refers to them any more (eacct.storage.buffers):
    a block may be kept, or cut into views, for as long as it is needed."""
    buffers = BufferPool(keep=BODY_BUFFERS_KEPT)
    # A small body (a chunk query, a delta of a day's work) gets a buffer of its own size.
    block_size = max(min(BODY_BLOCK, request.content_length or BODY_BLOCK), 1)
    block: memoryview | None = None  # the buffer being filled (slice assignment to a memoryview copies once)
    filled = 0
    async for data in body_pieces(request):
        rest = memoryview(data)
        while rest:
            if block is None:
                block = memoryview(buffers.take(block_size))[:block_size]
            size = min(len(rest), block_size - filled)
            block[filled : filled + size] = rest[:size]
            filled += size
            rest = rest[size:]
            if filled == block_size:
                yield block.toreadonly()
                block, filled = None, 0
    if block is not None:
        yield block[:filled].toreadonly()


async def no_automatic_continue(request: web.Request) -> None:
    """Route expect-handler: 100 Continue is sent only once the upload passed its checks (see `send_continue`)."""
    return None


def continue_sender(request: web.Request) -> Callable[[], Awaitable[None]]:
    """A callback that answers `Expect: 100-continue` when the service accepts the upload's headers."""

    async def send_continue() -> None:
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    return send_continue


def byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """The single `Range: bytes=` of the request as [start, end), None for the whole; 416 if unsatisfiable."""
    header = request.headers.get("Range")
    if not header:
        return None
    match = RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None  # Multi-range and unknown units: answer the whole content, as RFC 9110 allows.
    first, last = match.groups()
    if first == "":
        start, end = max(size - _position(last), 0), size
    else:
        start, end = _position(first), size if last == "" else min(_position(last) + 1, size)
    if start >= size or start >= end:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return start, end


def _position(digits: str) -> int:
    """A byte position of a Range header; an absurdly long one is just "beyond the end"."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= POSITION_DIGITS else 10**POSITION_DIGITS


async def send_version(request: web.Request, download: Download) -> web.StreamResponse:
    """Stream a version's bytes (whole or a range) with ETag, checksum and remark headers.

    The service's iterator re-checks access as it goes; a refusal after the headers cuts the connection.
    """
    version = download.version
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and if_none_match.strip() in (f'"{version.sha256}"', "*"):
        return web.Response(status=304, headers={"ETag": f'"{version.sha256}"'})
    selected = byte_range(request, version.size)
    start, end = selected or (0, version.size)
    headers = {
        "Content-Type": "application/octet-stream",
        "ETag": f'"{version.sha256}"',
        "X-Content-SHA256": version.sha256,
        "X-Remark": quote(version.remark, safe=""),
        "X-Version-Id": version.public_id,
        "X-Client-Version": quote(version.client_version, safe=""),
        "Last-Modified": version.uploaded_at.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "Accept-Ranges": "bytes",
        "Content-Disposition": f"attachment; filename=\"{version.ledger_id}-{version.year}.tar\"",
    }
    response = web.StreamResponse(status=206 if selected else 200, headers=headers)
    response.content_length = end - start
    if selected:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{version.size}"
    return await stream_blocks(request, response, download.content(start, end))


async def send_chunks(request: web.Request, download: Download, batch: ChunkBatch) -> web.StreamResponse:
    """Answer a batch of a version's chunks: their raw bytes concatenated in the order asked (the client knows
    each size from the manifest), each verified by the server as it is read; as one zstd stream if asked."""
    total, blocks = await download.chunks(batch.chunks)
    if batch.encoding == "zstd":
        response = web.StreamResponse(headers={"Content-Type": "application/zstd", "X-Version-Id": download.version.public_id})
        return await stream_blocks(request, response, _zstd_stream(blocks))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                           "X-Version-Id": download.version.public_id})
    response.content_length = total
    return await stream_blocks(request, response, blocks)


async def _zstd_stream(blocks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    try:
        async for block in blocks:
            if out := await asyncio.to_thread(compressor.compress, block):
                yield out
        yield compressor.flush()
    finally:
        await blocks.aclose()


async def stream_blocks(request: web.Request, response: web.StreamResponse, blocks: AsyncIterator[bytes]) -> web.StreamResponse:
    """Send `blocks` as the body of the prepared-on-first-block `response`.

    An error before the first byte still gets its JSON answer; after it, a refusal (access withdrawn) cuts
    the connection at once, the only honest signal left, and any other failure does so via error_middleware.
    """
    try:
        first = await anext(blocks, None)
        await response.prepare(request)
        while first is not None:
            await response.write(first)
            try:
                first = await anext(blocks, None)
            except errors.DomainError as exc:
                log.info("download of %s ended: %s", request.path, exc.code)
                abort_connection(request)
                return response
    finally:
        await blocks.aclose()  # now, not whenever the generator is collected
    await response.write_eof()
    return response


# ------------------------------------------------------------------------------------------- netdisk


@routes.get("/api/v1/netdisk")
@endpoint(answer=NetdiskOut, summary="云盘状态与空间")
async def get_netdisk(request: web.Request) -> web.Response:
    async with authenticated_read(request) as (caller, session):
        return answer(NetdiskOut, await service.netdisk_status(session, request.app[SETTINGS], caller.member_id))


@routes.post("/api/v1/netdisk")
@endpoint(body=OpenNetdisk, answer=NetdiskOut, status=201, errors=(409,), summary="首次使用：设置云盘密码和密保问题")
async def open_netdisk(request: web.Request) -> web.Response:
    caller = await require_member(request)
    body = await read_body(request, OpenNetdisk)
    settings = request.app[SETTINGS]
    status = await service.open_netdisk(request.app[SESSIONS], settings, caller.member_id, body.password,
                                        [(q.question, q.answer) for q in body.questions], request.app[HASHING])
    return answer(NetdiskOut, status, status=201)


@routes.get("/api/v1/netdisk/questions")
@endpoint(answer=QuestionsOut, errors=(404,), summary="密保问题")
async def get_questions(request: web.Request) -> web.Response:
    async with authenticated_read(request) as (caller, session):
        return answer(QuestionsOut, {"questions": await service.questions(session, caller.member_id)})


@routes.post("/api/v1/netdisk/unlock")
@endpoint(body=Unlock, answer=UnlockOut, status=201, errors=(404, 429, 503), summary="输入云盘密码登录云盘")
async def unlock(request: web.Request) -> web.Response:
    caller = await require_member(request)
    body = await read_body(request, Unlock)
    token, expires_at = await service.unlock(request.app[SESSIONS], request.app[SETTINGS], caller.member_id, body.password,
                                             request.app[HASHING], via_token=bearer_token(request))
    return answer(UnlockOut, {"netdisk_token": token, "expires_at": expires_at}, status=201)


@routes.post("/api/v1/netdisk/reset")
@endpoint(body=Reset, status=204, errors=(404, 429, 503), summary="回答密保问题，重设云盘密码")
async def reset(request: web.Request) -> web.Response:
    caller = await require_member(request)
    body = await read_body(request, Reset)
    await service.reset_password(request.app[SESSIONS], request.app[SETTINGS], caller.member_id, body.answers,
                                 body.new_password, request.app[HASHING])
    return web.Response(status=204)


@routes.put("/api/v1/netdisk/password")
@endpoint(body=PasswordChange, status=204, errors=(404, 429), summary="修改云盘密码")
async def change_password(request: web.Request) -> web.Response:
    caller = await require_member(request)
    body = await read_body(request, PasswordChange)
    await service.change_password(request.app[SESSIONS], request.app[SETTINGS], caller.member_id, body.old_password,
                                  body.new_password, request.app[HASHING])
    return web.Response(status=204)


@routes.get("/api/v1/netdisk/deletions")
@endpoint(answer=DeletionsOut, summary="删除记录")
async def list_deletions(request: web.Request) -> web.Response:
    async with authenticated_read(request) as (caller, session):
        return answer(DeletionsOut, {"deletions": await service.deletions(session, caller.member_id)})


# ------------------------------------------------------------------------------------------ backups


@routes.get("/api/v1/backups")
@endpoint(answer=LedgersOut, auth="netdisk", summary="网盘列表（云备份的账套）")
async def list_backups(request: web.Request) -> web.Response:
    async with authenticated_read(request, netdisk=True) as (caller, session):
        return answer(LedgersOut, {"ledgers": await service.list_ledgers(session, caller.member_id)})


@routes.get("/api/v1/backups/{ledger_id}")
@endpoint(answer=LedgerOut, auth="netdisk", errors=(403,), summary="云备份中的一个账套")
async def get_backup(request: web.Request) -> web.Response:
    async with authenticated_read(request, netdisk=True) as (caller, session):
        ledger_id = ledger_id_of(request)
        return answer(LedgerOut, await service.get_ledger(session, request.app[NETDISK_HOOKS], caller.member_id, ledger_id))


@routes.patch("/api/v1/backups/{ledger_id}")
@endpoint(body=LedgerRename, answer=LedgerOut, auth="netdisk", errors=(403,), summary="修改账套名称")
async def rename_backup(request: web.Request) -> web.Response:
    caller = await require_netdisk(request)
    ledger_id = ledger_id_of(request)
    body = await read_body(request, LedgerRename)
    async with transaction(request) as session:
        return answer(LedgerOut, await service.rename_ledger(session, request.app[NETDISK_HOOKS], caller.member_id, ledger_id, body.name))


def _password_header(request: web.Request) -> str:
    """X-Netdisk-Password, percent-encoded UTF-8 like X-Remark (header values are ASCII); 422 if malformed."""
    raw = request.headers.get("X-Netdisk-Password")
    if not raw:
        raise errors.BadNetdiskPassword("删除前请再次输入云盘密码（X-Netdisk-Password）")
    try:
        if BAD_ESCAPE.search(raw):
            raise ValueError("a % that starts no escape")
        # Not stripped: spaces may belong to the password.
        return unquote(raw, encoding="utf-8", errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.Invalid("X-Netdisk-Password 应为百分号编码的 UTF-8 文本") from exc


@routes.delete("/api/v1/backups/{ledger_id}")
@endpoint(status=204, auth="netdisk", headers=(PASSWORD_HEADER,), errors=(403, 429), summary="删除账套（需再次输入云盘密码）")
async def delete_backup(request: web.Request) -> web.Response:
    caller = await require_netdisk(request)
    ledger_id = ledger_id_of(request)
    await service.delete_backup(request.app[SESSIONS], request.app[SETTINGS], request.app[NETDISK_HOOKS], caller.member_id,
                                ledger_id, None, _password_header(request), client_ip(request), request.app[HASHING])
    return web.Response(status=204)


@routes.get("/api/v1/backups/{ledger_id}/years/{year}")
@endpoint(answer=YearOut, auth="netdisk", errors=(403,), summary="一个年度的所有版本（新的在前）")
async def get_backup_year(request: web.Request) -> web.Response:
    async with authenticated_read(request, netdisk=True) as (caller, session):
        ledger_id, year = ledger_id_of(request), year_of(request)
        return answer(YearOut, await service.backup_year(session, request.app[NETDISK_HOOKS], caller.member_id, ledger_id, year))


@routes.delete("/api/v1/backups/{ledger_id}/years/{year}")
@endpoint(status=204, auth="netdisk", headers=(PASSWORD_HEADER,), errors=(403, 429), summary="删除一个年度（需再次输入云盘密码）")
async def delete_backup_year(request: web.Request) -> web.Response:
    caller = await require_netdisk(request)
    ledger_id, year = ledger_id_of(request), year_of(request)
    await service.delete_backup(request.app[SESSIONS], request.app[SETTINGS], request.app[NETDISK_HOOKS], caller.member_id,
                                ledger_id, year, _password_header(request), client_ip(request), request.app[HASHING])
    return web.Response(status=204)


@routes.post("/api/v1/backups/{ledger_id}/years/{year}/versions", expect_handler=no_automatic_continue)
@endpoint(answer=VersionOut, status=201, auth="netdisk", binary_body=True, headers=UPLOAD_HEADERS, errors=(403,),
          summary="上传云备份（一个年度）")
async def upload_backup(request: web.Request) -> web.Response:
    caller = await require_netdisk(request)
    claim = upload_claim(request)
    app = request.app
    version = await versions.backup_upload(app[SESSIONS], app[BLOBS], app[SETTINGS], app[NETDISK_HOOKS], caller.member_id, claim,
                                          body_blocks(request), on_accepted=continue_sender(request))
    return answer(VersionOut, version, status=201)


@routes.get("/api/v1/backups/{ledger_id}/years/{year}/versions/{version_id}/content")
@endpoint(auth="netdisk", binary_answer=True, headers=DOWNLOAD_HEADERS, errors=(403,), summary="下载云备份的一个版本（latest 为最新）")
async def download_backup(request: web.Request) -> web.StreamResponse:
    return await send_version(request, await _backup_download(request))


@routes.get("/api/v1/backups/{ledger_id}/years/{year}/versions/{version_id}/manifest")
@endpoint(answer=ManifestOut, auth="netdisk", errors=(403,), summary="块级下载：云备份版本的数据块清单")
async def backup_manifest(request: web.Request) -> web.Response:
    download = await _backup_download(request)
    return answer(ManifestOut, await download.manifest_info())


@routes.post("/api/v1/backups/{ledger_id}/years/{year}/versions/{version_id}/chunks")
@endpoint(body=ChunkBatch, stream_answer=True, auth="netdisk", errors=(403,), summary="块级下载：按请求顺序取回数据块")
async def backup_chunks(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, ChunkBatch)
    return await send_chunks(request, await _backup_download(request), body)


async def _backup_download(request: web.Request) -> Download:
    caller = await require_netdisk(request)
    ledger_id, year = ledger_id_of(request), year_of(request)
    return await downloads.backup_download(request.app[SESSIONS], request.app[BLOBS], request.app[NETDISK_HOOKS],
                                           caller.member_id, ledger_id, year, request.match_info["version_id"])


@routes.post("/api/v1/backups/{ledger_id}/years/{year}/chunks/missing")
@endpoint(body=ChunkQuery, answer=MissingChunks, auth="netdisk", errors=(403,), summary="增量上传前：云端缺少哪些数据块")
async def backup_missing_chunks(request: web.Request) -> web.Response:
    caller = await require_netdisk(request)
    ledger_id, _ = ledger_id_of(request), year_of(request)
    body = await read_body(request, ChunkQuery)
    async with transaction(request) as session:
        missing = await versions.backup_missing_chunks(session, request.app[NETDISK_HOOKS], caller.member_id, ledger_id, body.chunks)
    return answer(MissingChunks, {"missing": missing})
