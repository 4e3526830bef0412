"""The WeChat callback (`/wechat`) and the H5 bind page, both thin: WeChat's protocol here, rules in service.

Callback order: check the signature → decrypt (safe mode) → parse → route → reply. Every answer only reads
(one read-only unit of work, which refuses writes), so the callback never takes or waits for SQLite's write
lock, and a redelivery (WeChat retries a MsgId up to 3 times when an answer takes over 5 s) is simply answered
again: the same answer, with nothing done twice. A command with effects would need its MsgId claimed, with its
answer kept, in the transaction of the effect.
"""

from __future__ import annotations

import html
import logging

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from eacct import errors
from eacct.config import Settings
from eacct.schemas import Nickname
from eacct.web import HASHING, SESSIONS, SETTINGS, read_transaction, status_for
from eacct.wechat import service

routes = web.RouteTableDef()
log = logging.getLogger("eacct.wechat")

NICKNAME = TypeAdapter(Nickname)
MAX_CALLBACK_BODY = 64 * 1024


def _configured(settings: Settings) -> None:
    if not settings.wechat_token:
        raise errors.NotFound("公众号未配置（EACCT_WECHAT_TOKEN）")


def _check_signature(request: web.Request, settings: Settings) -> None:
    # wechatpy is imported on the first callback, so a server without WeChat never loads it.
    from wechatpy.exceptions import InvalidSignatureException
    from wechatpy.utils import check_signature

    query = request.query
    try:
        check_signature(settings.wechat_token, query.get("signature", ""), query.get("timestamp", ""),
                        query.get("nonce", ""))
    except InvalidSignatureException as exc:
        raise errors.Forbidden("签名校验失败") from exc


@routes.get("/wechat")
async def verify_url(request: web.Request) -> web.Response:
    """WeChat's server URL check: answer `echostr` when the signature is ours."""
    settings = request.app[SETTINGS]
    _configured(settings)
    _check_signature(request, settings)
    return web.Response(text=request.query.get("echostr", ""))


def cdata_safe(text: str) -> str:
    """Text that stays inside the reply's CDATA section: wechatpy puts it there as is, so a nickname or ledger
    name containing `]]>` would end the section early and break (or inject into) the reply XML."""
    return text.replace("]]>", "]]]]><![CDATA[>")


def _incoming(message) -> service.Incoming | None:
    if message.type == "text":
        return service.Incoming(message.source, "text", message.content or "")
    if message.type == "event":
        event = (message.event or "").lower()
        if event == "subscribe" or event == "subscribe_scan":
            return service.Incoming(message.source, "subscribe")
        if event == "click":
            return service.Incoming(message.source, "click", message.key or "")
    return service.Incoming(message.source, "other")


@routes.post("/wechat")
async def callback(request: web.Request) -> web.Response:
    """Messages and events from followers, in plain or safe (encrypted) mode."""
    settings = request.app[SETTINGS]
    _configured(settings)
    _check_signature(request, settings)
    from wechatpy import create_reply, parse_message
    from wechatpy.crypto import WeChatCrypto
    from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException

    if request.content_length and request.content_length > MAX_CALLBACK_BODY:
        raise errors.BadRequest("消息过大")
    body = await request.read()
    query = request.query
    crypto = None
    if settings.wechat_aes_key:
        crypto = WeChatCrypto(settings.wechat_token, settings.wechat_aes_key, settings.wechat_appid)
        try:
            body = crypto.decrypt_message(body, query.get("msg_signature", ""), query.get("timestamp", ""),
                                          query.get("nonce", ""))
        except (InvalidSignatureException, InvalidAppIdException) as exc:
            raise errors.Forbidden("消息签名或 AppID 校验失败") from exc
        except Exception as exc:  # malformed XML or ciphertext: the sender is not WeChat
            raise errors.BadRequest("无法解密的消息") from exc
    try:
        message = parse_message(body)
    except Exception as exc:
        raise errors.BadRequest("无法解析的消息") from exc
    incoming = _incoming(message)
    text = None
    if service.answers(incoming):
        async with read_transaction(request) as session:
            text = await service.answer(session, settings, incoming)
    if text is None:
        return web.Response(text="success")
    reply = create_reply(cdata_safe(text), message=message, render=True)
    if crypto is not None:
        reply = crypto.encrypt_message(reply, query.get("nonce", ""), query.get("timestamp") or None)
    return web.Response(text=reply, content_type="application/xml")


# -------------------------------------------------------------------------------------- H5 bind page


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(status=status, content_type="text/html", charset="utf-8", text=f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:28em}}label{{display:block;margin:.8em 0 .2em}}
input{{width:100%;padding:.5em;font-size:1em;box-sizing:border-box}}button{{margin-top:1.2em;padding:.6em 2em;font-size:1em}}
.error{{color:#b00020}}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>""")


def _form(token: str, error: str = "", account: str = "", nickname: str = "") -> str:
    notice = f'<p class="error">{html.escape(error)}</p>' if error else ""
    return f"""{notice}<p>输入您激活 e会计 软件的会员账号、密码，以及您自己设置的昵称。</p>
<form method="post"><input type="hidden" name="t" value="{html.escape(token)}">
<label for="account">会员账号</label><input id="account" name="account" value="{html.escape(account)}" required>
<label for="password">密码</label><input id="password" name="password" type="password" required>
<label for="nickname">昵称</label><input id="nickname" name="nickname" value="{html.escape(nickname)}" maxlength="20" required>
<button type="submit">绑定</button></form>"""


@routes.get("/wechat/h5/bind")
async def bind_page(request: web.Request) -> web.Response:
    """会员中心: the bind form, reached from the link the bot sent."""
    token = request.query.get("t", "")
    try:
        service.openid_of_bind_token(request.app[SETTINGS], token)
    except errors.DomainError as exc:
        return _page("会员中心", f'<p class="error">{html.escape(exc.message)}</p>', status=403)
    return _page("会员中心 · 绑定会员账号", _form(token))


@routes.post("/wechat/h5/bind")
async def bind_submit(request: web.Request) -> web.Response:
    """Bind the follower the link was made for to the member whose account and password are given."""
    settings = request.app[SETTINGS]
    form = await request.post()
    token, account = str(form.get("t", "")), str(form.get("account", "")).strip()
    password, nickname = str(form.get("password", "")), str(form.get("nickname", ""))
    try:
        openid = service.openid_of_bind_token(settings, token)
        try:
            nickname = NICKNAME.validate_python(nickname)
        except ValidationError as exc:
            raise errors.Invalid("昵称应为 1 到 20 个字符") from exc
        member = await service.bind(request.app[SESSIONS], settings, openid, account, password, nickname,
                                    request.app[HASHING])
    except errors.DomainError as exc:
        return _page("会员中心 · 绑定会员账号", _form(token, exc.message, account, nickname), status=status_for(exc))
    return _page("绑定成功", f"<p>已绑定会员账号 {html.escape(member.account)}，昵称：{html.escape(member.nickname)}。"
                           "回到公众号即可使用【我的好友】【我的网盘】等功能。</p>")
