"""REST handlers for members and sessions: parse, call the service, serialize."""

from __future__ import annotations

from aiohttp import web
from eacct.members import service
from eacct.members.schemas import Credentials, Me, MemberOut, NewMember, NicknameChange, SessionOut
from eacct.openapi import endpoint
from eacct.web import (
    SESSIONS, SETTINGS, authenticated_read, bearer_token, client_ip, iso, json_response, read_body, require_member,
    transaction,
)

routes = web.RouteTableDef()


@routes.post("/api/v1/members")
@endpoint(body=NewMember, answer=MemberOut, status=201, auth=False, summary="注册会员")
async def create_member(request: web.Request) -> web.Response:
    body = await read_body(request, NewMember)
    async with transaction(request) as session:
        member = await service.create_member(session, request.app[SETTINGS], body.account, body.password, body.nickname)
    return json_response(service.member_view(member), status=201)


@routes.post("/api/v1/sessions")
@endpoint(body=Credentials, answer=SessionOut, status=201, auth=False, summary="登录，取得会话令牌")
async def create_session(request: web.Request) -> web.Response:
    body = await read_body(request, Credentials)
    token, expires_at, member = await service.log_in(request.app[SESSIONS], request.app[SETTINGS], body.account,
                                                     body.password, client_ip(request))
    return json_response({"token": token, "expires_at": iso(expires_at), "member": service.member_view(member)}, 201)


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
        return json_response(await service.profile(session, caller.member_id))


@routes.patch("/api/v1/me")
@endpoint(body=NicknameChange, answer=MemberOut, summary="修改昵称")
async def patch_me(request: web.Request) -> web.Response:
    caller = await require_member(request)
    body = await read_body(request, NicknameChange)
    async with transaction(request) as session:
        member = await service.rename(session, caller.member_id, body.nickname)
        return json_response(service.member_view(member))
