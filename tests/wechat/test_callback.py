"""The WeChat official account over its callback and H5 bind page, as WeChat and a follower's phone drive them
(DESIGN.md rules 1–3 and 8; API.md "Operations": GET/POST /wechat, plain and safe mode)."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from urllib.parse import urlsplit

import pytest
import xmltodict
from wechatpy.crypto import WeChatCrypto

from tests.conftest import new_ledger_id

TOKEN = "eacct-wechat-token"
APPID = "wx1234567890abcdef"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


class WeChat:
    """WeChat's servers: sign and deliver followers' messages to the callback, read the replies."""

    def __init__(self, http, base_url: str, safe: bool) -> None:
        self.http, self.base_url, self.safe = http, base_url, safe
        self.crypto = WeChatCrypto(TOKEN, AES_KEY, APPID)
        self.msg_id = 1000

    async def deliver(self, xml: str, *, tamper: bool = False) -> tuple[int, str]:
        timestamp, nonce = str(int(time.time())), uuid.uuid4().hex[:10]
        params = {"signature": sign(TOKEN, timestamp, nonce), "timestamp": timestamp, "nonce": nonce,
                  "openid": "x"}
        if tamper:
            params["signature"] = "0" * 40
        body = xml
        if self.safe:
            encrypted = xmltodict.parse(self.crypto.encrypt_message(xml, nonce, timestamp))["xml"]
            body = f"<xml><ToUserName><![CDATA[gh_eacct]]></ToUserName><Encrypt><![CDATA[{encrypted['Encrypt']}]]></Encrypt></xml>"
            params.update(encrypt_type="aes", msg_signature=encrypted["MsgSignature"])
        async with self.http.post(self.base_url + "/wechat", params=params, data=body.encode()) as response:
            text = await response.text()
            if self.safe and response.status == 200 and text != "success":
                reply = xmltodict.parse(text)["xml"]
                text = self.crypto.decrypt_message(text, reply["MsgSignature"], reply["TimeStamp"], reply["Nonce"])
            return response.status, text

    async def say(self, openid: str, content: str, msg_id: int | None = None) -> str:
        self.msg_id += 1
        xml = (f"<xml><ToUserName><![CDATA[gh_eacct]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
               f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
               f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id or self.msg_id}</MsgId></xml>")
        status, text = await self.deliver(xml)
        assert status == 200, text
        if text == "success":
            return text
        return xmltodict.parse(text)["xml"]["Content"]

    async def click(self, openid: str, key: str) -> str:
        self.msg_id += 1
        xml = (f"<xml><ToUserName><![CDATA[gh_eacct]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
               f"<CreateTime>{int(time.time()) + self.msg_id}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
               f"<Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[{key}]]></EventKey></xml>")
        status, text = await self.deliver(xml)
        assert status == 200, text
        return xmltodict.parse(text)["xml"]["Content"]


@pytest.fixture(params=["plain", "safe"])
async def wechat(request, make_server, settings, blobs, http):
    safe = request.param == "safe"
    settings = settings.with_overrides(wechat_token=TOKEN, wechat_appid=APPID, wechat_secret="secret",
                                       wechat_aes_key=AES_KEY if safe else "", public_url="http://eacct.example")
    base_url = await make_server(settings, blobs)
    return WeChat(http, base_url, safe)


async def bind_via_link(http, wechat: WeChat, reply: str, account: str, password: str, nickname: str):
    link = re.search(r"http://eacct\.example(/wechat/h5/bind\?t=\S+)", reply).group(1)
    async with http.get(wechat.base_url + link) as response:
        assert response.status == 200 and "会员账号" in await response.text()
    token = urlsplit(link).query.split("=", 1)[1]
    async with http.post(wechat.base_url + "/wechat/h5/bind", data={
            "t": token, "account": account, "password": password, "nickname": nickname}) as response:
        return response.status, await response.text()


async def test_url_check_answers_echostr_only_with_our_signature(wechat, http):
    timestamp, nonce = "1700000000", "n0nce"
    params = {"signature": sign(TOKEN, timestamp, nonce), "timestamp": timestamp, "nonce": nonce, "echostr": "hello123"}
    async with http.get(wechat.base_url + "/wechat", params=params) as response:
        assert response.status == 200 and await response.text() == "hello123"
    async with http.get(wechat.base_url + "/wechat", params={**params, "signature": "f" * 40}) as response:
        assert response.status == 403


async def test_rule_3_unbound_follower_is_told_how_to_bind_and_nothing_else(wechat, desktop):
    await desktop("13564271675", "小王")
    for command in ("会员信息", "我的好友", "我的网盘", "共享列表"):
        reply = await wechat.say("openid-stranger", command)
        assert "绑定" in reply and "/wechat/h5/bind?t=" in reply, command
        assert "13564271675" not in reply and "小王" not in reply


async def test_rule_1_binding_sets_the_nickname_and_moves_between_wechats(wechat, desktop, http):
    member = await desktop("13564271675", "旧昵称")
    reply = await wechat.click("openid-phone-1", "MEMBER_CENTER")
    status, page = await bind_via_link(http, wechat, reply, "13564271675", member.password, "小王")
    assert status == 200 and "绑定成功" in page
    _, me, _ = await member.call("GET", "/me")
    assert me["nickname"] == "小王" and me["wechat_bound"] is True
    assert "13564271675" in await wechat.say("openid-phone-1", "会员信息")

    reply = await wechat.say("openid-phone-2", "会员中心")
    status, _ = await bind_via_link(http, wechat, reply, "13564271675", member.password, "小王2")
    assert status == 200
    assert "13564271675" in await wechat.say("openid-phone-2", "会员信息")
    assert "/wechat/h5/bind" in await wechat.say("openid-phone-1", "会员信息")  # the binding moved


async def test_rule_1_binding_needs_the_right_password_and_a_genuine_link(wechat, desktop, http):
    member = await desktop("wang05", "小王")
    reply = await wechat.say("openid-3", "会员中心")
    status, page = await bind_via_link(http, wechat, reply, "wang05", "wrong-password", "小王")
    assert status == 401 and "会员账号或密码错误" in page
    status, page = await bind_via_link(http, wechat, reply, "wang05", member.password, "x" * 21)
    assert status == 422
    async with http.post(wechat.base_url + "/wechat/h5/bind", data={
            "t": "forged.token", "account": "wang05", "password": member.password, "nickname": "x"}) as response:
        assert response.status == 403
    _, me, _ = await member.call("GET", "/me")
    assert me["wechat_bound"] is False


async def test_rule_2_member_info_shows_account_nickname_and_id(wechat, desktop, http):
    member = await desktop("13564271675", "小王")
    reply = await wechat.say("openid-4", "会员中心")
    await bind_via_link(http, wechat, reply, "13564271675", member.password, "小王")
    info = await wechat.click("openid-4", "MEMBER_INFO")
    assert "13564271675" in info and "小王" in info and str(member.id) in info


async def test_rule_8_empty_netdisk_list_says_to_upload_a_backup_first(wechat, desktop, http):
    member = await desktop("wang06", "小王")
    await bind_via_link(http, wechat, await wechat.say("openid-5", "会员中心"), "wang06", member.password, "小王")
    assert "上传云备份" in await wechat.say("openid-5", "我的网盘")
    await member.upload("backups", new_ledger_id(), 2018, b"ledger", name="账套123")
    listing = await wechat.say("openid-5", "我的网盘")
    assert "账套123" in listing and "2018" in listing


async def test_friends_and_share_list_on_the_phone(wechat, desktop, http):
    owner = await desktop("owner07", "小王")
    friend = await desktop("friend07", "小李")
    ledger = new_ledger_id()
    await owner.upload("backups", ledger, 2018, b"ledger", name="123")
    await owner.call("POST", "/friends", json={"account": "friend07", "nickname": "小李"})
    await owner.call("POST", "/shares", json={"ledger_id": ledger, "friend_ids": [friend.id]})
    await bind_via_link(http, wechat, await wechat.say("openid-6", "会员中心"), "owner07", owner.password, "小王")
    assert "小李（friend07）" in await wechat.say("openid-6", "我的好友")
    shares = await wechat.click("openid-6", "MY_SHARES")
    assert "1 个账套给 1 位好友" in shares and "开始共享给小李" in shares


async def test_a_redelivered_message_gets_the_same_answer(wechat):
    """WeChat redelivers a message (same MsgId, up to 3 times) when the answer took over 5 s and drops the late
    one: only the redelivery's answer reaches the follower, so it must be the same answer, not `success`."""
    answers = [await wechat.say("openid-7", "帮助", msg_id=777) for _ in range(3)]
    assert "会员中心" in answers[0] and answers[0] == answers[1] == answers[2]


async def test_forged_and_garbled_callbacks_are_refused(wechat):
    status, _ = await wechat.deliver("<xml><MsgType>text</MsgType></xml>", tamper=True)
    assert status == 403
    status, _ = await wechat.deliver("this is not xml")
    assert status == 400


async def test_callback_is_off_when_wechat_is_not_configured(http, base_url):
    async with http.get(base_url + "/wechat", params={"echostr": "x"}) as response:
        assert response.status == 404


async def test_bound_follower_gets_a_short_answer_and_the_page_link(wechat, desktop, http):
    member = await desktop("wang08", "小王")
    await bind_via_link(http, wechat, await wechat.say("openid-8", "会员中心"), "wang08", member.password, "小王")
    for word, page in (("我的好友", "/wx/friends"), ("我的网盘", "/wx/netdisk"), ("共享列表", "/wx/shares"),
                       ("消息中心", "/wx/messages"), ("会员信息", "/wx/info")):
        assert f"http://eacct.example{page}" in await wechat.say("openid-8", word), word
    unbound = await wechat.say("openid-9", "我的好友")
    assert "/wechat/h5/bind?t=" in unbound and "/wx/friends" not in unbound


async def test_user_text_with_cdata_end_is_escaped_in_replies(wechat, desktop, http):
    member = await desktop("wang09", "a]]>b")
    await bind_via_link(http, wechat, await wechat.say("openid-10", "会员中心"), "wang09", member.password,
                        "x]]><y/>")
    await member.upload("backups", new_ledger_id(), 2018, b"ledger", name="账套]]><Content>z")
    info = await wechat.say("openid-10", "会员信息")
    assert "昵称：x]]><y/>" in info
    assert "账套]]><Content>z" in await wechat.say("openid-10", "我的网盘")
