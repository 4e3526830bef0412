"""The member pages (WeChat H5 and the web console), server-rendered with jinja2: thin handlers over the same
services the REST API uses (members, share, netdisk). The frame they run in (session, OAuth, CSRF, rendering)
is `page_kit`; who is visiting is `eacct.wechat.visitors`' business.

Every page needs a session: in WeChat's browser a visitor without one goes through WeChat OAuth, anywhere else
they get the console's login form. A WeChat follower not bound yet is sent to the bind form. Every form carries
a CSRF token; every POST answers with a page that says what happened, and a refused POST shows the form again
with what was typed (never the password).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from eacct import errors
from eacct.formats import BEIJING
from eacct.members import service as members
from eacct.netdisk import service as netdisk
from eacct.schemas import Nickname
from eacct.share import service as share
from eacct.web import NOTIFIER, SESSIONS, SETTINGS, client_ip, status_for, transaction
from eacct.wechat import oauth, service, visitors
from eacct.wechat.page_kit import (
    PAGE_COOKIE, PAGES, PRE_COOKIE, STATIC_ROUTE, Ctx, PageState, cookie_options, csrf_ok, form_text, member_page,
    notice_page, page_context, redirect, render, safe_next, same_secret, wechat_oauth_on,
)
from eacct.wechat.visitors import WEB, WECHAT, Visitor

__all__ = ["routes", "setup_pages"]

routes = web.RouteTableDef()

PACKAGE_DIR = Path(__file__).parent
NICKNAME = TypeAdapter(Nickname)
MIB = 1024 * 1024


def setup_pages(app: web.Application) -> None:
    """Register the pages, their templates and their stylesheet with the app."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["mb"] = lambda size: f"{(size or 0) / MIB:.2f}MB"
    env.filters["beijing"] = _beijing
    app[PAGES] = PageState(env)
    app.router.add_static("/wx/static", PACKAGE_DIR / "static", name=STATIC_ROUTE, append_version=True)
    app.add_routes(routes)


def _beijing(value: datetime) -> str:
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


# --------------------------------------------------------------------------------- login, OAuth, logout


@routes.get("/wx")
@routes.get("/wx/")
async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/wx/member")


@routes.get("/wx/oauth")
async def oauth_callback(request: web.Request) -> web.StreamResponse:
    """WeChat's OAuth comes back here: the state must be this browser's, then the code gives the openid."""
    ctx = await page_context(request)
    settings = request.app[SETTINGS]
    next_path = safe_next(request.query.get("next"))
    state, code = request.query.get("state", ""), request.query.get("code", "")
    if ctx.new_pre or not same_secret(state, ctx.keys.oauth_state(request.cookies.get(PRE_COOKIE, ""))):
        return notice_page(ctx, "授权校验失败", "授权校验失败，请关闭页面后从公众号菜单重新进入", 403)
    if not code or not wechat_oauth_on(settings):
        return notice_page(ctx, "未能授权", "没有得到微信授权，请从公众号菜单重新进入", 403)
    try:
        openid = await oauth.openid_for_code(settings, code)
    except errors.DomainError as exc:
        return notice_page(ctx, "未能授权", exc.message, status_for(exc))
    async with transaction(request) as session:
        token = await visitors.open_wechat_session(session, openid)
    response = redirect(ctx, next_path)
    response.set_cookie(PAGE_COOKIE, ctx.keys.sign(WECHAT, token), max_age=visitors.WECHAT_SESSION_SECONDS,
                        **cookie_options(request))
    return response


@routes.post("/wx/login")
async def login(request: web.Request) -> web.StreamResponse:
    """The web console's login: member account and password, throttled exactly as POST /sessions."""
    ctx = await page_context(request)
    form = await request.post()
    ctx.form = {key: value for key, value in form.items() if isinstance(value, str)}
    account, password = form_text(ctx, "account"), str(ctx.form.get("password", ""))
    next_path = safe_next(ctx.form.get("next"))
    if not csrf_ok(ctx):
        return render(ctx, "login.html", 403, next=next_path, account=account, error="页面已过期，请重新输入后登录")
    settings = request.app[SETTINGS]
    try:
        token, _, _ = await members.log_in(request.app[SESSIONS], settings, account, password, client_ip(request))
    except errors.DomainError as exc:
        response = render(ctx, "login.html", status_for(exc), next=next_path, account=account, error=exc.message)
        if "retry_after" in exc.extra:
            response.headers["Retry-After"] = str(exc.extra["retry_after"])
        return response
    response = redirect(ctx, next_path, 303)
    response.set_cookie(PAGE_COOKIE, ctx.keys.sign(WEB, token), max_age=settings.session_ttl_seconds,
                        **cookie_options(request))
    return response


async def _logout(ctx: Ctx) -> web.StreamResponse:
    async with transaction(ctx.request) as session:
        await visitors.end_session(session, ctx.visitor)
    ctx.visitor = None
    response = notice_page(ctx, "已退出", "您已退出登录", 200, links=[("/wx/member", "重新登录")])
    response.del_cookie(PAGE_COOKIE, path="/wx")
    return response


routes.post("/wx/logout")(member_page(_logout, bound=False))


# ------------------------------------------------------------------------------------ 会员中心 / 会员信息


async def _member_get(ctx: Ctx) -> web.StreamResponse:
    if ctx.member is None or ctx.request.query.get("rebind"):
        if ctx.visitor.kind != WECHAT:
            return redirect(ctx, "/wx/member")
        return render(ctx, "bind.html", account="", nickname=ctx.member.nickname if ctx.member else "", error="")
    return render(ctx, "member.html")


async def _member_post(ctx: Ctx) -> web.StreamResponse:
    if ctx.visitor.kind != WECHAT:
        return notice_page(ctx, "会员中心", "网页版用会员账号登录，无需绑定微信", 400, links=[("/wx/member", "返回会员中心")])
    request = ctx.request
    account, password, nickname = form_text(ctx, "account"), str(ctx.form.get("password", "")), form_text(ctx, "nickname", 40)
    try:
        try:
            nickname = NICKNAME.validate_python(nickname)
        except ValidationError as exc:
            raise errors.Invalid("昵称应为 1 到 20 个字符，且不能含控制字符") from exc
        member = await service.bind(request.app[SESSIONS], request.app[SETTINGS], ctx.visitor.openid, account,
                                    password, nickname)
    except errors.DomainError as exc:
        return render(ctx, "bind.html", status_for(exc), account=account, nickname=nickname, error=exc.message)
    ctx.visitor = Visitor(WECHAT, ctx.visitor.token, ctx.visitor.openid, member)
    return render(ctx, "member.html", notice=f"绑定成功：已绑定会员账号 {member.account}，昵称 {member.nickname}")


routes.get("/wx/member")(member_page(_member_get, bound=False))
routes.post("/wx/member")(member_page(_member_post, bound=False))


async def _info(ctx: Ctx) -> web.StreamResponse:
    async with transaction(ctx.request) as session:
        profile = await members.profile(session, ctx.member.id, netdisk.is_opened)
    return render(ctx, "info.html", profile=profile)


routes.get("/wx/info")(member_page(_info))


# ------------------------------------------------------------------------------------------ 我的好友


async def _friends_page(ctx: Ctx, status: int = 200, **values) -> web.StreamResponse:
    async with transaction(ctx.request) as session:
        friends = await share.list_friends(session, ctx.member.id)
    values.setdefault("account", "")
    values.setdefault("nickname", "")
    return render(ctx, "friends.html", status, friends=friends, **values)


async def _friends_get(ctx: Ctx) -> web.StreamResponse:
    return await _friends_page(ctx)


async def _friends_post(ctx: Ctx) -> web.StreamResponse:
    request = ctx.request
    account, nickname = form_text(ctx, "account"), form_text(ctx, "nickname", 40)
    if not account or not nickname:
        return await _friends_page(ctx, 422, account=account, nickname=nickname, error="请输入好友的会员账号和昵称")
    try:
        friend, created = await share.add_friend(request.app[SESSIONS], request.app[SETTINGS], ctx.member.id, account,
                                                 nickname)
    except errors.DomainError as exc:
        return await _friends_page(ctx, status_for(exc), account=account, nickname=nickname, error=exc.message)
    said = "已添加好友" if created else "已经是您的好友"
    return await _friends_page(ctx, notice=f"{said}：{friend.nickname}（{friend.account}）")


def _friend_id(ctx: Ctx, raw: str | None) -> int:
    raw = (raw or "").strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        raise errors.NotFound("该会员不在您的好友列表中")
    return int(raw)


async def _remove_get(ctx: Ctx) -> web.StreamResponse:
    try:
        friend_id = _friend_id(ctx, ctx.request.query.get("friend_id"))
        async with transaction(ctx.request) as session:
            friends = {f.id: f for f in await share.list_friends(session, ctx.member.id)}
        if friend_id not in friends:
            raise errors.NotFound("该会员不在您的好友列表中")
    except errors.DomainError as exc:
        return notice_page(ctx, "删除好友", exc.message, status_for(exc), links=[("/wx/friends", "返回我的好友")])
    return render(ctx, "friend_remove.html", friend=friends[friend_id])


async def _remove_post(ctx: Ctx) -> web.StreamResponse:
    request = ctx.request
    try:
        friend_id = _friend_id(ctx, ctx.form.get("friend_id"))
        async with transaction(request) as session:
            friend = await members.get_member(session, friend_id)
            await share.remove_friend(session, request.app[NOTIFIER], ctx.member.id, friend_id)
    except errors.DomainError as exc:
        return await _friends_page(ctx, status_for(exc), error=exc.message)
    return await _friends_page(ctx, notice=f"已删除好友：{friend.nickname}（{friend.account}），您共享给他的账套已取消共享")


routes.get("/wx/friends")(member_page(_friends_get))
routes.post("/wx/friends")(member_page(_friends_post))
routes.get("/wx/friends/remove")(member_page(_remove_get))
routes.post("/wx/friends/remove")(member_page(_remove_post))


# ------------------------------------------------------------------------------------- 我的网盘 / 共享


async def _netdisk_page(ctx: Ctx, status: int = 200, **values) -> web.StreamResponse:
    async with transaction(ctx.request) as session:
        ledgers = await netdisk.list_ledgers(session, ctx.member.id)
        space = await netdisk.netdisk_status(session, ctx.request.app[SETTINGS], ctx.member.id)
        friends = await share.list_friends(session, ctx.member.id)
        shares = await share.list_shares(session, ctx.member.id)
    recipients = {entry.ledger_id: entry.recipients for entry in shares.ledgers}
    return render(ctx, "netdisk.html", status, ledgers=ledgers, space=space, friends=friends, recipients=recipients,
                  **values)


async def _netdisk_get(ctx: Ctx) -> web.StreamResponse:
    return await _netdisk_page(ctx)


async def _netdisk_post(ctx: Ctx) -> web.StreamResponse:
    request = ctx.request
    raw_ledger = form_text(ctx, "ledger_id")
    chosen = ctx.form.get("friend_ids", [])
    try:
        ledger_id = netdisk.canonical_ledger_id(raw_ledger, errors.NotFound("云备份中没有这个账套"))
        if not all(v.isascii() and v.isdigit() and len(v) <= 10 for v in chosen):
            raise errors.Invalid("好友选择不正确")
        async with transaction(request) as session:
            created = await share.create_shares(session, request.app[NOTIFIER], ctx.member.id, ledger_id,
                                                [int(v) for v in chosen])
    except errors.DomainError as exc:
        message = exc.message
        if isinstance(exc, errors.NotAFriend):
            message = "只能共享给好友：所选会员不在您的好友列表中，请先添加好友"
        return await _netdisk_page(ctx, status_for(exc), error=message, open_ledger=raw_ledger,
                                   checked=set(chosen))
    return await _netdisk_page(ctx, shared=created, open_ledger=ledger_id)


async def _shares_page(ctx: Ctx, status: int = 200, **values) -> web.StreamResponse:
    async with transaction(ctx.request) as session:
        shares = await share.list_shares(session, ctx.member.id)
    return render(ctx, "shares.html", status, shares=shares, **values)


async def _shares_get(ctx: Ctx) -> web.StreamResponse:
    return await _shares_page(ctx)


async def _shares_post(ctx: Ctx) -> web.StreamResponse:
    request = ctx.request
    share_id = form_text(ctx, "share_id", 33)
    try:
        async with transaction(request) as session:
            ended = await share.cancel_share(session, request.app[NOTIFIER], ctx.member.id, share_id)
    except errors.DomainError as exc:
        return await _shares_page(ctx, status_for(exc), error=exc.message)
    return await _shares_page(
        ctx, notice=f"已取消共享：账套 {ended.ledger_name} 不再共享给{ended.recipient.nickname}")


routes.get("/wx/netdisk")(member_page(_netdisk_get))
routes.post("/wx/netdisk")(member_page(_netdisk_post))
routes.get("/wx/shares")(member_page(_shares_get))
routes.post("/wx/shares")(member_page(_shares_post))


# ------------------------------------------------------------------------------------------ 消息中心

FILTERS = {"status": {"unread", "read"}, "kind": {"system", "personal"}}


def _filters(values: dict[str, list[str]]) -> dict[str, set[str]]:
    return {name: set(values.get(name, [])) & allowed for name, allowed in FILTERS.items()}


async def _messages_page(ctx: Ctx, chosen: dict[str, set[str]], status: int = 200, **values) -> web.StreamResponse:
    async with transaction(ctx.request) as session:
        listing = await share.list_messages(session, ctx.member.id, chosen["status"], chosen["kind"])
    query = urlencode([(name, v) for name, vs in chosen.items() for v in sorted(vs)])
    return render(ctx, "messages.html", status, listing=listing, chosen=chosen, query=query, **values)


async def _messages_get(ctx: Ctx) -> web.StreamResponse:
    query = ctx.request.query
    return await _messages_page(ctx, _filters({name: query.getall(name, []) for name in FILTERS}))


async def _messages_post(ctx: Ctx) -> web.StreamResponse:
    request = ctx.request
    chosen = _filters({name: ctx.form[name] for name in FILTERS})
    raw = form_text(ctx, "message_id", 12)
    try:
        if not raw.isascii() or not raw.isdigit():
            raise errors.NotFound("没有这条消息")
        async with transaction(request) as session:
            await share.mark_read(session, ctx.member.id, int(raw))
    except errors.DomainError as exc:
        return await _messages_page(ctx, chosen, status_for(exc), error=exc.message)
    return await _messages_page(ctx, chosen, notice="已标为已读")


routes.get("/wx/messages")(member_page(_messages_get))
routes.post("/wx/messages")(member_page(_messages_post))
