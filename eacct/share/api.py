"""REST handlers for friends, shares, the recipient's cloud share and the message center."""

from __future__ import annotations

from aiohttp import web

from eacct import errors
from eacct.netdisk.api import (
    ASCII_DIGITS, body_blocks, continue_sender, ledger_id_of, no_automatic_continue, send_chunks, send_version, upload_claim,
    year_of,
)
from eacct.netdisk import upload_api
from eacct.netdisk.downloads import Download
from eacct.netdisk.schemas import (
    ChunkBatch, ChunkQuery, ChunksStored, ManifestOut, MissingChunks, UploadSessionIn, UploadSessionOut, VersionOut,
)
from eacct.netdisk import service as netdisk_service
from eacct.openapi import DOWNLOAD_HEADERS, UPLOAD_HEADERS, Query, endpoint
from eacct.share import service
from eacct.share.schemas import CloudShares, FriendIn, FriendOut, FriendsOut, MessagesOut, ShareIn, ShareList, SharesCreated
from eacct.web import (
    BLOBS, NOTIFIER, SESSIONS, SETTINGS, answer, authenticated_read, read_body, require_member,
    require_netdisk, transaction,
)

routes = web.RouteTableDef()


MAX_ID = 2**31 - 1  # ids are 32-bit integers; PostgreSQL refuses a larger query argument outright


def _int_path(request: web.Request, name: str) -> int:
    """A numeric id of the path. Digits are ASCII only: "①" or "２" is 422, never read as a number; any other
    segment that is not a plain number (or too long to be an id) names nothing, 404."""
    raw = request.match_info[name]
    if not raw.isascii():
        raise errors.Invalid(f"{name} 应为数字（0-9）")
    if not ASCII_DIGITS.fullmatch(raw) or len(raw) > 10 or int(raw) > MAX_ID:
        raise errors.NotFound()
    return int(raw)


# -------------------------------------------------------------------------------------------- friends


@routes.get("/api/v1/friends")
@endpoint(answer=FriendsOut, summary="我的好友")
async def list_friends(request: web.Request) -> web.Response:
    async with authenticated_read(request) as (caller, session):
        return answer(FriendsOut, {"friends": await service.list_friends(session, caller.member_id)})


@routes.post("/api/v1/friends")
@endpoint(body=FriendIn, answer=FriendOut, status=201, also={200: "已经是好友：原来的好友"}, errors=(404, 429),
          summary="添加好友（会员账号和昵称都要对）")
async def add_friend(request: web.Request) -> web.Response:
    caller = await require_member(request)
    body = await read_body(request, FriendIn)
    friend, created = await service.add_friend(request.app[SESSIONS], request.app[SETTINGS], caller.member_id,
                                               body.account, body.nickname)
    return answer(FriendOut, friend, status=201 if created else 200)


@routes.delete("/api/v1/friends/{member_id}")
@endpoint(status=204, summary="删除好友（同时取消我给他的共享）")
async def remove_friend(request: web.Request) -> web.Response:
    caller = await require_member(request)
    friend_id = _int_path(request, "member_id")
    async with transaction(request) as session:
        await service.remove_friend(session, request.app[NOTIFIER], caller.member_id, friend_id)
    return web.Response(status=204)


# --------------------------------------------------------------------------------------------- shares


@routes.post("/api/v1/shares")
@endpoint(body=ShareIn, answer=SharesCreated, status=201, errors=(403, 404), summary="共享给好友")
async def create_shares(request: web.Request) -> web.Response:
    caller = await require_member(request)
    body = await read_body(request, ShareIn)
    ledger_id = netdisk_service.canonical_ledger_id(body.ledger_id)
    async with transaction(request) as session:
        shares = await service.create_shares(session, request.app[NOTIFIER], caller.member_id, ledger_id, body.friend_ids)
    return answer(SharesCreated, {"shares": shares}, status=201)


@routes.get("/api/v1/shares")
@endpoint(answer=ShareList, summary="共享列表")
async def list_shares(request: web.Request) -> web.Response:
    async with authenticated_read(request) as (caller, session):
        return answer(ShareList, await service.list_shares(session, caller.member_id))


@routes.delete("/api/v1/shares/{share_id}")
@endpoint(status=204, summary="取消共享")
async def cancel_share(request: web.Request) -> web.Response:
    caller = await require_member(request)
    async with transaction(request) as session:
        await service.cancel_share(session, request.app[NOTIFIER], caller.member_id, request.match_info["share_id"])
    return web.Response(status=204)


# -------------------------------------------------------------------------------------- cloud share


@routes.get("/api/v1/cloud-shares")
@endpoint(answer=CloudShares, auth="netdisk", summary="我的云共享")
async def cloud_shares(request: web.Request) -> web.Response:
    async with authenticated_read(request, netdisk=True) as (caller, session):
        return answer(CloudShares, {"sharers": await service.cloud_shares(session, caller.member_id)})


@routes.get("/api/v1/cloud-shares/{ledger_id}/years/{year}/versions/{version_id}/content")
@endpoint(auth="netdisk", binary_answer=True, headers=DOWNLOAD_HEADERS, errors=(403,), summary="下载共享账套的一个年度（latest 为最新）")
async def download_shared(request: web.Request) -> web.StreamResponse:
    return await send_version(request, await _share_download(request))


@routes.get("/api/v1/cloud-shares/{ledger_id}/years/{year}/versions/{version_id}/manifest")
@endpoint(answer=ManifestOut, auth="netdisk", errors=(403,), summary="块级下载：共享账套版本的数据块清单")
async def shared_manifest(request: web.Request) -> web.Response:
    download = await _share_download(request)
    return answer(ManifestOut, await download.manifest_info())


@routes.post("/api/v1/cloud-shares/{ledger_id}/years/{year}/versions/{version_id}/chunks")
@endpoint(body=ChunkBatch, stream_answer=True, auth="netdisk", errors=(403,), summary="块级下载共享账套：按请求顺序取回数据块")
async def shared_chunks(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, ChunkBatch)
    return await send_chunks(request, await _share_download(request), body)


async def _share_download(request: web.Request) -> Download:
    caller = await require_netdisk(request)
    ledger_id, year = ledger_id_of(request), year_of(request)
    return await service.share_download(request.app[SESSIONS], request.app[BLOBS], caller.member_id, ledger_id, year,
                                        request.match_info["version_id"])


@routes.post("/api/v1/cloud-shares/{ledger_id}/years/{year}/versions", expect_handler=no_automatic_continue)
@endpoint(answer=VersionOut, status=201, auth="netdisk", binary_body=True, headers=UPLOAD_HEADERS, errors=(403,),
          summary="上传云共享（存入共享人的云备份）")
async def upload_shared(request: web.Request) -> web.Response:
    caller = await require_netdisk(request)
    claim = upload_claim(request)
    app = request.app
    version = await service.share_upload(app[SESSIONS], app[BLOBS], app[SETTINGS], app[NOTIFIER], caller.member_id,
                                         claim, body_blocks(request), on_accepted=continue_sender(request))
    return answer(VersionOut, version, status=201)


async def _share_path(request: web.Request, caller, ledger_id: str):
    return await service.share_upload_path(request.app[SESSIONS], request.app[NOTIFIER], caller.member_id, ledger_id)


SHARED_UPLOADS = "/api/v1/cloud-shares/{ledger_id}/years/{year}/uploads"


@routes.post(SHARED_UPLOADS)
@endpoint(body=UploadSessionIn, answer=UploadSessionOut, status=201, auth="netdisk", errors=(403, 409, 412, 413),
          summary="可续传上传云共享：开始（与整体上传相同的检查）")
async def open_shared_upload(request: web.Request) -> web.Response:
    return await upload_api.open_upload(request, _share_path)


@routes.get(SHARED_UPLOADS + "/{upload_id}")
@endpoint(answer=UploadSessionOut, auth="netdisk", errors=(403,), summary="可续传上传云共享：云端已收到哪些数据块")
async def shared_upload_state(request: web.Request) -> web.Response:
    return await upload_api.upload_state(request, _share_path)


@routes.put(SHARED_UPLOADS + "/{upload_id}/chunks")
@endpoint(binary_body=True, body_media=upload_api.BINARY, answer=ChunksStored, auth="netdisk", errors=(403,),
          summary="可续传上传云共享：发送一批数据块")
async def put_shared_chunks(request: web.Request) -> web.Response:
    return await upload_api.upload_chunks(request, _share_path)


@routes.post(SHARED_UPLOADS + "/{upload_id}/commit")
@endpoint(binary_body=True, body_media=upload_api.BINARY, answer=VersionOut, status=201, auth="netdisk", errors=(403,),
          summary="可续传上传云共享：提交清单，成为共享人云备份中的新版本")
async def commit_shared_upload(request: web.Request) -> web.Response:
    return await upload_api.commit_upload(request, _share_path)


@routes.post("/api/v1/cloud-shares/{ledger_id}/years/{year}/chunks/missing")
@endpoint(body=ChunkQuery, answer=MissingChunks, auth="netdisk", errors=(403,), summary="增量上传云共享前：云端缺少哪些数据块")
async def shared_missing_chunks(request: web.Request) -> web.Response:
    caller = await require_netdisk(request)
    ledger_id, _ = ledger_id_of(request), year_of(request)
    body = await read_body(request, ChunkQuery)
    async with transaction(request) as session:
        missing = await service.share_missing_chunks(session, caller.member_id, ledger_id, body.chunks)
    return answer(MissingChunks, {"missing": missing})


# ------------------------------------------------------------------------------------------ messages


def _filter(request: web.Request, name: str, allowed: set[str]) -> set[str]:
    values = set(request.query.getall(name, []))
    if values - allowed:
        raise errors.Invalid(f"{name} 只能是 {' 或 '.join(sorted(allowed))}")
    return values


@routes.get("/api/v1/messages")
@endpoint(answer=MessagesOut, summary="消息中心", query={
    "status": Query("unread 或 read，可重复", ("unread", "read")),
    "kind": Query("system 或 personal，可重复", ("system", "personal")),
})
async def list_messages(request: web.Request) -> web.Response:
    async with authenticated_read(request) as (caller, session):
        statuses = _filter(request, "status", {"unread", "read"})
        kinds = _filter(request, "kind", {"system", "personal"})
        return answer(MessagesOut, await service.list_messages(session, caller.member_id, statuses, kinds))


@routes.post("/api/v1/messages/{id}/read")
@endpoint(status=204, summary="标为已读")
async def mark_read(request: web.Request) -> web.Response:
    caller = await require_member(request)
    message_id = _int_path(request, "id")
    async with transaction(request) as session:
        await service.mark_read(session, caller.member_id, message_id)
    return web.Response(status=204)
