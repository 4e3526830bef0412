"""REST handlers for members and sessions: parse, call the service, serialize."""

from __future__ import annotations

from aiohttp import web
from eacct.members import service
from eacct.netdisk import service as netdisk_service
from eacct.members.schemas import Credentials, Me, MemberOut, NewMember, NicknameChange, SessionOut
from eacct.openapi import endpoint
from eacct.web import (
    HASHING, SESSIONS, SETTINGS, answer, authenticated_read, bearer_token, client_ip, read_body, require_member,
    transaction,
)

routes = web.RouteTableDef()


@routes.post("/api/v1/members")
@endpoint(body=NewMember, answer=MemberOut, status=201, auth=False, errors=(409, 429, 503), summary="注册会员")
async def create_member(request: web.Request) -> web.Response:
    body = await read_body(request, NewMember)
    member = await service.register(request.app[SESSIONS], request.app[SETTINGS], request.app[HASHING], body.account,
                                    body.password, body.nickname, client_ip(request))
    return answer(MemberOut, member, status=201)


@routes.post("/api/v1/sessions")
@endpoint(body=Credentials, answer=SessionOut, status=201, auth=False, errors=(401, 429, 503),
          summary="登录，取得会话令牌")
async def create_session(request: web.Request) -> web.Response:
    body = await read_body(request, Credentials)
    token, expires_at, member = await service.log_in(request.app[SESSIONS], request.app[SETTINGS], body.account,
                                                     body.password, client_ip(request), request.app[HASHING])
    return answer(SessionOut, {"token": token, "expires_at": expires_at, "member": member}, status=201)


@routes.delete("/api/v1/sessions/current")
@endpoint(status=204, summary="退出登录")
async def delete_session(request: web.Request) -> web.Response:
    await require_member(request)
    async with transaction(request) as session:
        await service.revoke_token(session, bearer_token(request))
    return web.Response(status=204)


@routes.get("/api/v1/me")
@endpoint(answer=Me, summary="会员信息")
async def get_me(request: web.Request) -> web.Response:
    async with authenticated_read(request) as (caller, session):
        return answer(Me, await service.profile(session, caller.member_id, netdisk_service.is_opened))


@routes.patch("/api/v1/me")
@endpoint(body=NicknameChange, answer=MemberOut, summary="修改昵称")
async def patch_me(request: web.Request) -> web.Response:
    caller = await require_member(request)
    body = await read_body(request, NicknameChange)
    async with transaction(request) as session:
        member = await service.rename(session, caller.member_id, body.nickname)
        return answer(MemberOut, member)
