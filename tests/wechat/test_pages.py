"""The member pages (API.md "Pages") over HTTP, as WeChat's in-app browser and a desktop browser drive them:
OAuth and login, the bind form, friends, sharing and cancelling, messages; CSRF, state, expiry and other
members' ids refused with nothing changed (DESIGN.md rules 1–4 and 8–11, 18)."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import update

from eacct.db import utcnow
from eacct.members.models import AccessToken
from eacct.wechat.models import WechatPageSession
from tests.conftest import new_ledger_id
from tests.share.conftest import befriend, messages, share
from tests.wechat.pages_client import DESKTOP_UA, WECHAT_UA, Browser, authorize_params

APPID = "wxpages000000000001"
SECRET = "pages-secret-7d2c91"


@pytest.fixture
async def browsers(site):
    made: list[Browser] = []

    def make(user_agent: str = DESKTOP_UA) -> Browser:
        made.append(Browser(site, user_agent))
        return made[-1]

    yield make
    for browser in made:
        await browser.close()


async def phone_bound(browsers, wechat_api, member, openid: str) -> Browser:
    """A phone in WeChat, through OAuth, bound to `member`."""
    phone = browsers(WECHAT_UA)
    status, page = await phone.wechat_login(wechat_api, openid)
    assert status == 200 and 'name="nickname"' in page
    status, page, _ = await phone.post("/wx/member", {"account": member.account, "password": member.password,
                                                      "nickname": member.nickname})
    assert status == 200 and "绑定成功" in page, page
    return phone


async def console(browsers, member) -> Browser:
    """A desktop browser logged in to the web console as `member`."""
    browser = browsers(DESKTOP_UA)
    status, page, _ = await browser.get("/wx/friends")
    assert status == 200 and 'action="/wx/login"' in page
    status, page, _ = await browser.post("/wx/login", {"account": member.account, "password": member.password,
                                                       "next": "/wx/friends"})
    assert status == 200 and "我的好友" in page and "添加好友" in page
    return browser


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


# ------------------------------------------------------------------------------------------ who visits


async def test_wechat_visit_without_session_goes_through_oauth_with_state(browsers, wechat_api, desktop):
    await desktop("13564271675", "小王")
    phone = browsers(WECHAT_UA)
    status, _, response = await phone.get("/wx/friends", follow=False)
    assert status == 302
    redirect_uri, state = authorize_params(response.headers["Location"])
    assert redirect_uri.endswith("/wx/oauth?next=%2Fwx%2Ffriends") and len(state) >= 16
    status, page = await phone.wechat_login(wechat_api, "openid-oauth-1", "/wx/friends")
    # Not bound yet: sent on to the bind form; the session cookie is HttpOnly and SameSite=Lax.
    assert status == 200 and 'name="account"' in page and 'name="nickname"' in page
    assert wechat_api.oauth_requests[-1]["appid"] == APPID


async def test_session_cookie_is_signed_httponly_and_lax(browsers, wechat_api, site):
    phone = browsers(WECHAT_UA)
    _, _, response = await phone.get("/wx/member", follow=False)
    redirect_uri, state = authorize_params(response.headers["Location"])
    async with phone.http.get(redirect_uri.replace("http://" + redirect_uri.split("/")[2], site),
                              params={"code": wechat_api.issue_code("openid-c"), "state": state},
                              allow_redirects=False) as answer:
        assert answer.status == 302 and answer.headers["Location"] == "/wx/member"
        cookie = answer.cookies["eacct_page"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/wx"
    value = phone.cookie("eacct_page")
    forged = value[:-1] + ("0" if value[-1] != "0" else "1")
    phone.set_cookie("eacct_page", forged)
    status, _, response = await phone.get("/wx/member", follow=False)
    assert status == 302 and "open.weixin.qq.com" in response.headers["Location"]


async def test_oauth_callback_with_a_wrong_state_is_refused(browsers, wechat_api):
    phone = browsers(WECHAT_UA)
    await phone.get("/wx/member", follow=False)
    code = wechat_api.issue_code("openid-victim")
    status, page, _ = await phone.get("/wx/oauth", code=code, state="0" * 40, next="/wx/member")
    assert status == 403 and "授权校验失败" in page
    assert phone.cookie("eacct_page") is None and wechat_api.oauth_requests == []
    # Another browser's valid state does not work in this one either (CSRF login).
    other = browsers(WECHAT_UA)
    _, _, response = await other.get("/wx/member", follow=False)
    _, state = authorize_params(response.headers["Location"])
    status, _, _ = await phone.get("/wx/oauth", code=code, state=state)
    assert status == 403 and phone.cookie("eacct_page") is None


async def test_oauth_code_refused_by_wechat_gives_no_session(browsers, wechat_api):
    phone = browsers(WECHAT_UA)
    _, _, response = await phone.get("/wx/member", follow=False)
    _, state = authorize_params(response.headers["Location"])
    status, page, _ = await phone.get("/wx/oauth", code="made-up", state=state)
    assert status == 403 and phone.cookie("eacct_page") is None


async def test_oauth_next_cannot_leave_the_pages(browsers, wechat_api):
    phone = browsers(WECHAT_UA)
    _, _, response = await phone.get("/wx/member", follow=False)
    _, state = authorize_params(response.headers["Location"])
    _, _, response = await phone.get("/wx/oauth", follow=False, code=wechat_api.issue_code("o"), state=state,
                                     next="//evil.example/x")
    assert response.headers["Location"] == "/wx/member"


async def test_expired_session_cookie_starts_over(browsers, wechat_api, desktop, engine):
    member = await desktop("wang01", "小王")
    phone = await phone_bound(browsers, wechat_api, member, "openid-exp")
    async with engine.begin() as connection:
        await connection.execute(update(WechatPageSession).values(expires_at=utcnow()))
    status, _, response = await phone.get("/wx/friends", follow=False)
    assert status == 302 and "open.weixin.qq.com" in response.headers["Location"]
    # A form posted with the expired session changes nothing.
    friend = await desktop("li01", "小李")
    status, page, _ = await phone.post("/wx/friends", {"account": "li01", "nickname": "小李"}, csrf="x", follow=False)
    assert status == 401 and "登录已失效" in page
    assert (await member.call("GET", "/friends"))[1]["friends"] == [] and friend.id


async def test_web_console_login_form_then_pages_without_bind_step(browsers, desktop):
    member = await desktop("wang02", "小王")
    browser = browsers(DESKTOP_UA)
    status, page, _ = await browser.get("/wx/netdisk")
    assert status == 200 and 'action="/wx/login"' in page and 'name="password"' in page
    status, page, _ = await browser.post("/wx/login", {"account": "wang02", "password": "wrong!!", "next": "/wx/netdisk"})
    assert status == 401 and "会员账号或密码错误" in page and 'value="wang02"' in page
    status, page, _ = await browser.post("/wx/login", {"account": "wang02", "password": member.password,
                                                       "next": "/wx/netdisk"})
    assert status == 200 and "网盘列表" in page and "网盘空间" in page
    status, page, _ = await browser.get("/wx/member")
    assert status == 200 and "wang02" in page and 'name="password"' not in page


async def test_web_console_expired_login_shows_the_login_form_again(browsers, desktop, engine):
    member = await desktop("wang21", "小王")
    browser = await console(browsers, member)
    async with engine.begin() as connection:
        await connection.execute(update(AccessToken).values(expires_at=utcnow()))
    status, page, _ = await browser.get("/wx/friends")
    assert status == 200 and 'action="/wx/login"' in page and "登录已失效" in page
    status, page, _ = await browser.post("/wx/friends", {"account": "x", "nickname": "y"}, csrf="whatever")
    assert status == 401 and 'action="/wx/login"' in page


async def test_web_console_login_is_throttled_like_post_sessions(browsers, desktop, settings):
    await desktop("wang03", "小王")
    browser = browsers(DESKTOP_UA)
    await browser.get("/wx/member")
    statuses = []
    for _ in range(12):
        status, page, response = await browser.post("/wx/login", {"account": "wang03", "password": "nope-nope"})
        statuses.append(status)
    assert statuses[:10] == [401] * 10 and statuses[-1] == 429
    assert "锁定" in page and int(response.headers["Retry-After"]) > 0


async def test_login_needs_the_csrf_token(browsers, desktop):
    member = await desktop("wang04", "小王")
    browser = browsers(DESKTOP_UA)
    await browser.get("/wx/member")
    status, _, _ = await browser.post("/wx/login", {"account": "wang04", "password": member.password}, csrf="forged")
    assert status == 403 and browser.cookie("eacct_page") is None


async def test_logout_on_both(browsers, wechat_api, desktop):
    member = await desktop("wang05", "小王")
    browser = await console(browsers, member)
    status, page, _ = await browser.post("/wx/logout", {})
    assert status == 200 and "已退出" in page
    status, page, _ = await browser.get("/wx/friends")
    assert 'action="/wx/login"' in page
    phone = await phone_bound(browsers, wechat_api, member, "openid-out")
    cookie = phone.cookie("eacct_page")
    status, page, _ = await phone.post("/wx/logout", {})
    assert status == 200 and "已退出" in page
    phone.set_cookie("eacct_page", cookie)  # the old cookie no longer works
    status, _, response = await phone.get("/wx/info", follow=False)
    assert status == 302 and "open.weixin.qq.com" in response.headers["Location"]


# ------------------------------------------------------------------------------------ 会员中心 / 会员信息


async def test_rule_1_bind_form_sets_nickname_and_rebinding_moves(browsers, wechat_api, desktop):
    member = await desktop("13564271675", "旧昵称")
    phone = browsers(WECHAT_UA)
    await phone.wechat_login(wechat_api, "openid-p1")
    status, page, _ = await phone.post("/wx/member", {"account": "13564271675", "password": "wrong-one",
                                                      "nickname": "小王"})
    assert status == 401 and 'value="13564271675"' in page and 'value="小王"' in page and "wrong-one" not in page
    status, page, _ = await phone.post("/wx/member", {"account": "13564271675", "password": member.password,
                                                      "nickname": "小王"})
    assert status == 200 and "绑定成功" in page and "改绑" in page and "/wx/friends" in page
    assert (await member.call("GET", "/me"))[1]["nickname"] == "小王"
    other_phone = await phone_bound(browsers, wechat_api, member, "openid-p2")
    status, _, response = await phone.get("/wx/info", follow=False)
    assert status == 302 and response.headers["Location"] == "/wx/member"  # the first phone is unbound now
    status, page, _ = await other_phone.get("/wx/info")
    assert status == 200 and "13564271675" in page


async def test_rule_3_unbound_visitor_of_any_page_gets_the_bind_form(browsers, wechat_api, desktop):
    await desktop("wang06", "小王")
    phone = browsers(WECHAT_UA)
    await phone.wechat_login(wechat_api, "openid-unbound")
    for path in ("/wx/info", "/wx/friends", "/wx/netdisk", "/wx/shares", "/wx/messages"):
        status, page, _ = await phone.get(path)
        assert status == 200 and 'action="/wx/member"' in page and 'name="nickname"' in page, path
        assert "wang06" not in page
    status, _, response = await phone.post("/wx/friends", {"account": "wang06", "nickname": "小王"}, follow=False)
    assert status == 303 and response.headers["Location"] == "/wx/member"


async def test_rule_2_info_shows_account_nickname_and_id(browsers, wechat_api, desktop):
    member = await desktop("wang07", "小王")
    phone = await phone_bound(browsers, wechat_api, member, "openid-info")
    status, page, _ = await phone.get("/wx/info")
    assert status == 200 and "wang07" in page and "小王" in page and f">{member.id}<" in page


async def test_bind_with_a_wrong_csrf_token_changes_nothing(browsers, wechat_api, desktop):
    member = await desktop("wang08", "小王")
    phone = browsers(WECHAT_UA)
    await phone.wechat_login(wechat_api, "openid-csrf")
    status, _, _ = await phone.post("/wx/member", {"account": "wang08", "password": member.password,
                                                   "nickname": "新"}, csrf="0" * 40)
    assert status == 403
    assert (await member.call("GET", "/me"))[1]["wechat_bound"] is False


# ------------------------------------------------------------------------------------------ 我的好友


async def test_rule_4_add_friend_form_and_remove_with_confirmation(browsers, wechat_api, desktop):
    member = await desktop("wang09", "小王")
    li = await desktop("li09", "小李")
    phone = await phone_bound(browsers, wechat_api, member, "openid-f")
    await phone.get("/wx/friends")
    status, page, _ = await phone.post("/wx/friends", {"account": "li09", "nickname": "不对"})
    assert status == 404 and 'value="li09"' in page and 'value="不对"' in page
    status, page, _ = await phone.post("/wx/friends", {"account": "wang09", "nickname": "小王"})
    assert status == 422 and "不能添加自己" in page
    status, page, _ = await phone.post("/wx/friends", {"account": "li09", "nickname": "小李"})
    assert status == 200 and "已添加好友：小李（li09）" in text_of(page)
    status, page, _ = await phone.post("/wx/friends", {"account": "li09", "nickname": "小李"})
    assert status == 200 and "已经是您的好友" in page
    status, page, _ = await phone.get("/wx/friends/remove", friend_id=str(li.id))
    assert status == 200 and "确定删除好友 小李" in page and f'name="friend_id" value="{li.id}"' in page
    status, page, _ = await phone.post("/wx/friends/remove", {"friend_id": str(li.id)})
    assert status == 200 and "已删除好友" in page
    assert (await member.call("GET", "/friends"))[1]["friends"] == []


async def test_removing_someone_who_is_not_a_friend_is_404(browsers, wechat_api, desktop):
    member = await desktop("wang10", "小王")
    li = await desktop("li10", "小李")
    await befriend(li, member)
    browser = await console(browsers, member)
    status, _, _ = await browser.get("/wx/friends/remove", friend_id=str(li.id))
    assert status == 404
    await browser.get("/wx/friends")
    status, _, _ = await browser.post("/wx/friends/remove", {"friend_id": str(li.id)})
    assert status == 404
    assert len((await li.call("GET", "/friends"))[1]["friends"]) == 1


# ------------------------------------------------------------------------------------ 我的网盘 / 共享列表


async def test_rule_8_empty_netdisk_list_says_to_upload_a_backup_first(browsers, wechat_api, desktop):
    member = await desktop("wang11", "小王")
    phone = await phone_bound(browsers, wechat_api, member, "openid-empty")
    status, page, _ = await phone.get("/wx/netdisk")
    assert status == 200 and "网盘列表是空白的" in page and "上传云备份" in page
    assert "网盘空间" in page and "400.00MB" in page and "已用空间" in page and "可用空间" in page


async def test_rule_9_share_from_the_netdisk_list_shows_the_notice(browsers, wechat_api, desktop):
    owner = await desktop("wang12", "小王")
    li = await desktop("li12", "小李")
    ledger = new_ledger_id()
    await owner.upload("backups", ledger, 2018, b"ledger 2018" * 100, remark="2018年1期", name="123")
    await befriend(owner, li)
    phone = await phone_bound(browsers, wechat_api, owner, "openid-share")
    status, page, _ = await phone.get("/wx/netdisk")
    assert status == 200 and "123" in page and "2018" in page and "2018年1期" in page and "MB" in page
    assert f'name="ledger_id" value="{ledger}"' in page and f'name="friend_ids" value="{li.id}"' in page
    status, page, _ = await phone.post("/wx/netdisk", [("ledger_id", ledger), ("friend_ids", str(li.id))])
    assert status == 200, page
    assert re.search(r"该账套于\d{4}年\d{1,2}月\d{1,2}日开始共享给小李", page)
    assert [m["title"] for m in (await messages(li))["messages"]] == ["新的共享账套"]


async def test_sharing_to_a_non_friend_or_nobody_is_refused(browsers, wechat_api, desktop):
    owner = await desktop("wang13", "小王")
    stranger = await desktop("zhao13", "小赵")
    ledger = new_ledger_id()
    await owner.upload("backups", ledger, 2018, b"x", name="123")
    browser = await console(browsers, owner)
    await browser.get("/wx/netdisk")
    status, page, _ = await browser.post("/wx/netdisk", [("ledger_id", ledger), ("friend_ids", str(stranger.id))])
    assert status == 403 and "好友" in page
    status, page, _ = await browser.post("/wx/netdisk", [("ledger_id", ledger)])
    assert status == 422 and "选中" in page
    assert (await owner.call("GET", "/shares"))[1]["ledger_count"] == 0


async def test_someone_elses_ledger_is_404_and_nothing_changes(browsers, wechat_api, desktop):
    owner = await desktop("wang14", "小王")
    other = await desktop("sun14", "小孙")
    li = await desktop("li14", "小李")
    theirs = new_ledger_id()
    await other.upload("backups", theirs, 2018, b"x", name="他的")
    await befriend(owner, li)
    browser = await console(browsers, owner)
    await browser.get("/wx/netdisk")
    status, _, _ = await browser.post("/wx/netdisk", [("ledger_id", theirs), ("friend_ids", str(li.id))])
    assert status == 404
    status, _, _ = await browser.post("/wx/netdisk", [("ledger_id", "not-a-uuid"), ("friend_ids", str(li.id))])
    assert status == 404
    assert (await other.call("GET", "/shares"))[1]["ledger_count"] == 0
    assert (await messages(li))["messages"] == []


async def test_rule_10_share_list_counts_and_cancel(browsers, wechat_api, desktop):
    owner = await desktop("wang15", "小王")
    li, zhao = await desktop("li15", "小李"), await desktop("zhao15", "小赵")
    ledger = new_ledger_id()
    await owner.upload("backups", ledger, 2018, b"x", name="123")
    await befriend(owner, li)
    await befriend(owner, zhao)
    [to_li, _] = await share(owner, ledger, li, zhao)
    phone = await phone_bound(browsers, wechat_api, owner, "openid-list")
    status, page, _ = await phone.get("/wx/shares")
    assert status == 200 and "已共享1个账套给2位好友" in page
    assert f'name="share_id" value="{to_li["share_id"]}"' in page and "开始共享给小赵" in page
    status, page, _ = await phone.post("/wx/shares", {"share_id": to_li["share_id"]})
    assert status == 200 and "已取消共享" in page and "已共享1个账套给1位好友" in page
    assert [m["title"] for m in (await messages(li))["messages"]][0] == "共享已取消"


async def test_someone_elses_share_id_is_404_and_nothing_changes(browsers, wechat_api, desktop):
    owner = await desktop("wang16", "小王")
    other, li = await desktop("sun16", "小孙"), await desktop("li16", "小李")
    ledger = new_ledger_id()
    await other.upload("backups", ledger, 2018, b"x", name="他的")
    await befriend(other, li)
    [theirs] = await share(other, ledger, li)
    browser = await console(browsers, owner)
    await browser.get("/wx/shares")
    status, page, _ = await browser.post("/wx/shares", {"share_id": theirs["share_id"]})
    assert status == 404 and "没有这个共享" in page
    assert (await other.call("GET", "/shares"))[1]["friend_count"] == 1


async def test_share_and_cancel_need_the_csrf_token(browsers, wechat_api, desktop):
    owner = await desktop("wang17", "小王")
    li = await desktop("li17", "小李")
    ledger = new_ledger_id()
    await owner.upload("backups", ledger, 2018, b"x", name="123")
    await befriend(owner, li)
    phone = await phone_bound(browsers, wechat_api, owner, "openid-csrf2")
    other = await phone_bound(browsers, wechat_api, li, "openid-csrf3")
    await other.get("/wx/netdisk")
    stolen = other.csrf()  # someone else's token is no good either
    status, _, _ = await phone.post("/wx/netdisk", [("ledger_id", ledger), ("friend_ids", str(li.id))], csrf=stolen)
    assert status == 403
    [made] = await share(owner, ledger, li)
    status, _, _ = await phone.post("/wx/shares", {"share_id": made["share_id"]}, csrf="")
    assert status == 403
    assert (await owner.call("GET", "/shares"))[1]["friend_count"] == 1


# ------------------------------------------------------------------------------------------ 消息中心


async def test_rule_18_messages_page_filters_counts_and_marks_read(browsers, wechat_api, desktop):
    owner = await desktop("wang18", "小王")
    li = await desktop("li18", "小李")
    ledger = new_ledger_id()
    await owner.upload("backups", ledger, 2018, b"x", name="123")
    await befriend(owner, li)
    await share(owner, ledger, li)
    phone = await phone_bound(browsers, wechat_api, li, "openid-msg")
    status, page, _ = await phone.get("/wx/messages")
    assert status == 200 and "新的共享账套" in page and 'class="unread-count">1<' in page
    [message] = (await messages(li))["messages"]
    status, page, _ = await phone.post("/wx/messages", {"message_id": str(message["id"])})
    assert status == 200 and "已标为已读" in page and 'class="unread-count">0<' in page
    status, page, _ = await phone.get("/wx/messages", status="unread")
    assert "新的共享账套" not in page
    status, page, _ = await phone.get("/wx/messages", status="read", kind="personal")
    assert "新的共享账套" in page
    status, _, _ = await phone.post("/wx/messages", {"message_id": "99999"})
    assert status == 404


async def test_a_non_ascii_csrf_token_is_refused_not_a_crash(browsers, desktop):
    member = await desktop("wang19", "小王")
    browser = await console(browsers, member)
    status, _, _ = await browser.post("/wx/friends", {"account": "x", "nickname": "y"}, csrf="令牌")
    assert status == 403
    status, _, _ = await browser.get("/wx/oauth", state="状态", code="c")
    assert status == 403


async def test_pages_load_nothing_from_elsewhere(browsers, desktop, site):
    member = await desktop("wang20", "小王")
    browser = await console(browsers, member)
    for path in ("/wx/member", "/wx/info", "/wx/friends", "/wx/netdisk", "/wx/shares", "/wx/messages"):
        status, page, response = await browser.get(path)
        assert status == 200 and "default-src 'none'" in response.headers["Content-Security-Policy"]
        sources = re.findall(r'(?:href|src|action)="([^"]+)"', page)
        assert sources and all(s.startswith("/wx/") for s in sources), (path, sources)
    stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+)"', page).group(1)
    async with browser.http.get(site + stylesheet) as response:
        css = await response.text()
        assert response.status == 200 and "text/css" in response.headers["Content-Type"] and ".weui-cell" in css
    assert "http" not in re.sub(r"http://www\.w3\.org/2000/svg", "", css)
