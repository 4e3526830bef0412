"""Rule 18's WeChat half: bound members also get their personal messages as WeChat template messages.

End to end over HTTP with the real app and a fake WeChat API (tests/wechat_api_server.py): members bind via
the bot and the H5 page, share events happen through the REST API, and the fake records what WeChat would
have delivered. Sends happen after the event's commit, in the background: a rolled-back event sends nothing,
and a slow or failing WeChat neither delays nor fails the REST call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import pytest

import tests.conftest
from eacct import app as app_module
from eacct.app import create_app
from eacct.share.notify import MessageCenterNotifier
from eacct.web import NOTIFIER
from eacct.wechat.notify import REMARK, WechatTemplateNotifier
from tests.conftest import Desktop, new_ledger_id
from tests.share.conftest import befriend, cancel, error_code, messages, share
from tests.wechat.test_callback import APPID, TOKEN, WeChat, bind_via_link
from tests.wechat_api_server import start_wechat_api

SECRET = "wechat-secret-6c1f0e9d2b"
TEMPLATE_ID = "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY"
WHEN = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$")


@pytest.fixture
async def wechat_api():
    api = await start_wechat_api(APPID, SECRET, template_ids={TEMPLATE_ID})
    yield api
    await api.close()


@pytest.fixture
def apps(monkeypatch) -> list:
    """The apps `make_server` builds, so a test can wait for their WeChat sends to settle."""
    made = []

    def create_and_keep(*args, **kwargs):
        made.append(create_app(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tests.conftest, "create_app", create_and_keep)
    return made


def wechat_settings(settings, api_base: str, **overrides):
    return settings.with_overrides(**{
        "wechat_token": TOKEN, "wechat_appid": APPID, "wechat_secret": SECRET, "wechat_template_id": TEMPLATE_ID,
        "wechat_api_base": api_base, "public_url": "http://eacct.example", **overrides})


@dataclass
class Service:
    """The running service as members and WeChat see it."""

    base_url: str
    http: aiohttp.ClientSession
    wechat: WeChat
    channel: WechatTemplateNotifier

    async def member(self, account: str, nickname: str, openid: str | None = None) -> Desktop:
        """A member with an open netdisk; bound to the WeChat `openid` through the bot and the H5 page."""
        member = await (await Desktop(self.http, self.base_url, account, nickname).register()).open_netdisk()
        if openid is not None:
            reply = await self.wechat.say(openid, "会员中心")
            status, page = await bind_via_link(self.http, self.wechat, reply, account, member.password, nickname)
            assert status == 200 and "绑定成功" in page
        return member

    async def settled(self) -> None:
        """Every template message started so far has been sent or has failed."""
        await asyncio.wait_for(self.channel.drain(), 10)


async def start_service(make_server, apps, settings, blobs, http, api_base: str, **overrides) -> Service:
    base_url = await make_server(wechat_settings(settings, api_base, **overrides), blobs)
    notifier = apps[-1][NOTIFIER]
    assert isinstance(notifier, MessageCenterNotifier)
    [channel] = notifier.extra_channels
    return Service(base_url, http, WeChat(http, base_url, safe=False), channel)


@pytest.fixture
async def service(make_server, apps, settings, blobs, http, wechat_api) -> Service:
    return await start_service(make_server, apps, settings, blobs, http, wechat_api.base_url)


def assert_template(payload: dict, openid: str, message: dict) -> None:
    """A template message to `openid` carrying the message center's `message`."""
    assert set(payload) == {"touser", "template_id", "data", "url"}
    assert payload["url"] == "http://eacct.example/wx/messages"  # the message opens the message center page
    assert payload["touser"] == openid and payload["template_id"] == TEMPLATE_ID
    data = payload["data"]
    assert set(data) == {"first", "keyword1", "keyword2", "remark"}
    assert data["first"] == {"value": message["title"]}
    assert data["keyword1"] == {"value": message["body"]}
    assert WHEN.match(data["keyword2"]["value"])
    assert data["remark"] == {"value": REMARK}


async def a_shared_ledger(service: Service, owner: Desktop, *friends: Desktop) -> tuple[str, list[dict]]:
    ledger = new_ledger_id()
    assert (await owner.upload("backups", ledger, 2018, b"ledger 2018", remark="2018年3期", name="123"))[0] == 201
    for friend in friends:
        await befriend(owner, friend)
    return ledger, await share(owner, ledger, *friends)


async def test_rule_18_share_created_reaches_the_bound_recipient_and_nobody_else(service, wechat_api):
    owner = await service.member("13564271675", "小王", openid="openid-wang")
    li = await service.member("13800000002", "小李", openid="openid-li")
    zhao = await service.member("13800000004", "小赵")  # not bound
    await a_shared_ledger(service, owner, li, zhao)

    await wechat_api.wait_until(lambda: wechat_api.sent_to("openid-li"))
    await service.settled()
    [created] = (await messages(li))["messages"]  # the message center still has it
    assert created["title"] == "新的共享账套" and "小王（13564271675）" in created["body"] and "123" in created["body"]
    [payload] = wechat_api.sent
    assert_template(payload, "openid-li", created)
    # zhao is not bound: the message center only; the owner is not told about their own action.
    assert [m["title"] for m in (await messages(zhao))["messages"]] == ["新的共享账套"]
    assert (await messages(owner))["messages"] == []
    assert len(wechat_api.send_attempts) == 1 and wechat_api.token_requests == 1


async def test_rule_18_share_cancelled_reaches_the_bound_recipient(service, wechat_api):
    owner = await service.member("13564271675", "小王", openid="openid-wang")
    li = await service.member("13800000002", "小李", openid="openid-li")
    _, [shared] = await a_shared_ledger(service, owner, li)
    await wechat_api.wait_until(lambda: len(wechat_api.sent) == 1)

    await cancel(owner, shared["share_id"])

    await wechat_api.wait_until(lambda: len(wechat_api.sent) == 2)
    await service.settled()
    cancelled, created = (await messages(li))["messages"]
    assert cancelled["title"] == "共享已取消" and "小王（13564271675）已取消共享账套 123" in cancelled["body"]
    assert_template(wechat_api.sent[0], "openid-li", created)
    assert_template(wechat_api.sent[1], "openid-li", cancelled)
    assert wechat_api.sent_to("openid-wang") == []
    assert wechat_api.token_requests == 1  # the access token is fetched once and cached


async def test_rule_18_friends_new_version_via_cloud_share_reaches_the_bound_owner(service, wechat_api):
    owner = await service.member("13564271675", "小王", openid="openid-wang")
    li = await service.member("13800000002", "小李", openid="openid-li")
    ledger, _ = await a_shared_ledger(service, owner, li)
    await wechat_api.wait_until(lambda: wechat_api.sent_to("openid-li"))

    status, version, _ = await li.upload("cloud-shares", ledger, 2018, b"edited by li", remark="2018年4期")
    assert status == 201, version

    await wechat_api.wait_until(lambda: wechat_api.sent_to("openid-wang"))
    await service.settled()
    [uploaded] = (await messages(owner))["messages"]
    assert uploaded["title"] == "好友上传了新版本"
    for part in ("小李（13800000002）", "123", "2018", "2018年4期", "云备份"):
        assert part in uploaded["body"], part
    [payload] = wechat_api.sent_to("openid-wang")
    assert_template(payload, "openid-wang", uploaded)
    assert len(wechat_api.sent_to("openid-li")) == 1  # the uploader is not told about their own upload


async def test_rule_18_a_share_refused_for_a_non_friend_sends_nothing(service, wechat_api):
    owner = await service.member("13564271675", "小王", openid="openid-wang")
    chen = await service.member("13800000005", "小陈", openid="openid-chen")  # bound, but not a friend
    ledger = new_ledger_id()
    assert (await owner.upload("backups", ledger, 2018, b"ledger", name="123"))[0] == 201

    status, body, _ = await owner.call("POST", "/shares", json={"ledger_id": ledger, "friend_ids": [chen.id]})

    assert status == 403 and error_code(body) == "not_a_friend", body
    await service.settled()
    assert wechat_api.send_attempts == [] and (await messages(chen))["messages"] == []


async def upload_waiting_for_go(http, member: Desktop, ledger: str, year: int, content: bytes,
                                accepted: asyncio.Event, go: asyncio.Event):
    """A cloud-share upload that asks `Expect: 100-continue` and sends its body only once told: `accepted` is
    set when the server has checked access and quota and asked for the body."""

    async def body():
        accepted.set()
        await go.wait()
        yield content

    headers = member.headers(True, **{
        "Content-Type": "application/octet-stream", "Content-Length": str(len(content)),
        "X-Content-SHA256": hashlib.sha256(content).hexdigest(), "X-Remark": quote("2018年5期")})
    async with http.post(f"{member.base}/cloud-shares/{ledger}/years/{year}/versions", data=body(),
                         headers=headers, expect100=True) as response:
        return response.status, await response.json()


async def test_rule_18_an_event_rolled_back_after_it_was_announced_sends_nothing(
        make_server, apps, settings, blobs, http, wechat_api):
    # The friend's upload passes the quota check before its body arrives; the owner's own upload then fills
    # the quota, so the friend's commit — which has already written "好友上传了新版本" — rolls back.
    service = await start_service(make_server, apps, settings.with_overrides(netdisk_quota_bytes=1_000_000), blobs,
                                  http, wechat_api.base_url)
    owner = await service.member("13564271675", "小王", openid="openid-wang")
    li = await service.member("13800000002", "小李", openid="openid-li")
    ledger, _ = await a_shared_ledger(service, owner, li)
    accepted, go = asyncio.Event(), asyncio.Event()
    friends_upload = asyncio.create_task(
        upload_waiting_for_go(http, li, ledger, 2019, os.urandom(600_000), accepted, go))
    await asyncio.wait_for(accepted.wait(), 10)
    assert (await owner.upload("backups", ledger, 2020, os.urandom(600_000)))[0] == 201
    go.set()

    status, body = await friends_upload
    assert status == 413 and error_code(body) == "quota_exceeded", body
    await service.settled()
    assert (await messages(owner))["messages"] == []
    assert wechat_api.sent_to("openid-wang") == []

    # What does commit is announced, once.
    assert (await li.upload("cloud-shares", ledger, 2018, b"small edit", remark="2018年6期"))[0] == 201
    await service.settled()
    [uploaded] = (await messages(owner))["messages"]
    [payload] = wechat_api.sent_to("openid-wang")
    assert_template(payload, "openid-wang", uploaded)
    assert "2018年6期" in payload["data"]["keyword1"]["value"]


async def test_rule_18_a_slow_wechat_delays_neither_the_answer_nor_the_owners_next_change(service, wechat_api):
    owner = await service.member("13564271675", "小王", openid="openid-wang")
    li = await service.member("13800000002", "小李", openid="openid-li")
    wechat_api.hold_sends()  # WeChat now takes as long as the test wants

    # Answered (201) although WeChat has not answered yet; were the answer waiting for WeChat, this would time out.
    _, [shared] = await asyncio.wait_for(a_shared_ledger(service, owner, li), 10)
    await wechat_api.wait_until(lambda: wechat_api.held == 1)
    assert wechat_api.sent == []  # the answer arrived while WeChat is still busy with the message
    # The owner's lock is free: cancelling (which takes it) answers while the first message is still held.
    await asyncio.wait_for(cancel(owner, shared["share_id"]), 10)
    await wechat_api.wait_until(lambda: wechat_api.held == 2)
    titles = [m["title"] for m in (await messages(li))["messages"]]
    assert titles == ["共享已取消", "新的共享账套"] and wechat_api.sent == []

    wechat_api.release_sends()
    await wechat_api.wait_until(lambda: len(wechat_api.sent) == 2)
    await service.settled()
    assert sorted(p["data"]["first"]["value"] for p in wechat_api.sent_to("openid-li")) == sorted(titles)


async def test_rule_18_a_failing_wechat_does_not_fail_the_request_and_is_logged(service, wechat_api, caplog):
    caplog.set_level(logging.INFO)
    owner = await service.member("13564271675", "小王", openid="openid-wang")
    li = await service.member("13800000002", "小李", openid="openid-li")
    wechat_api.fail_sends(43004, "require subscribe")  # e.g. li has unfollowed the official account

    _, [shared] = await a_shared_ledger(service, owner, li)

    await service.settled()
    assert [a["errcode"] for a in wechat_api.send_attempts] == [43004] and wechat_api.sent == []
    assert [m["title"] for m in (await messages(li))["messages"]] == ["新的共享账套"]
    failures = [r for r in caplog.records if r.name == "eacct.wechat.notify" and r.levelno == logging.WARNING]
    assert len(failures) == 1 and "43004" in failures[0].getMessage() and str(li.id) in failures[0].getMessage()
    assert SECRET not in caplog.text

    wechat_api.clear_faults()  # WeChat is fine again: the next event is delivered
    await cancel(owner, shared["share_id"])
    await service.settled()
    assert [p["data"]["first"]["value"] for p in wechat_api.sent_to("openid-li")] == ["共享已取消"]


async def test_rule_18_an_expired_access_token_is_renewed_and_the_message_still_sent(service, wechat_api):
    owner = await service.member("13564271675", "小王", openid="openid-wang")
    li = await service.member("13800000002", "小李", openid="openid-li")
    _, [shared] = await a_shared_ledger(service, owner, li)
    await service.settled()
    assert len(wechat_api.sent) == 1 and wechat_api.token_requests == 1

    wechat_api.expire_tokens()
    await cancel(owner, shared["share_id"])

    await service.settled()
    assert [a["errcode"] for a in wechat_api.send_attempts] == [0, 42001, 0]
    assert wechat_api.token_requests == 2
    assert [p["data"]["first"]["value"] for p in wechat_api.sent] == ["新的共享账套", "共享已取消"]


async def test_rule_18_a_wrong_secret_is_logged_without_the_secret(make_server, apps, settings, blobs, http,
                                                                    wechat_api, caplog):
    caplog.set_level(logging.DEBUG, logger="eacct")
    wrong = "not-the-secret-71a3b9"
    service = await start_service(make_server, apps, settings, blobs, http, wechat_api.base_url, wechat_secret=wrong)
    owner = await service.member("13564271675", "小王", openid="openid-wang")
    li = await service.member("13800000002", "小李", openid="openid-li")

    await a_shared_ledger(service, owner, li)

    await service.settled()
    assert wechat_api.token_requests >= 1 and wechat_api.send_attempts == []
    assert [m["title"] for m in (await messages(li))["messages"]] == ["新的共享账套"]
    [failure] = [r for r in caplog.records if r.name == "eacct.wechat.notify" and r.levelno == logging.WARNING]
    assert "40001" in failure.getMessage()
    assert wrong not in caplog.text


async def test_rule_18_an_unreachable_wechat_is_logged_without_the_secret(make_server, apps, settings, blobs, http,
                                                                          caplog):
    caplog.set_level(logging.DEBUG, logger="eacct")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    service = await start_service(make_server, apps, settings, blobs, http, f"http://127.0.0.1:{closed_port}")
    owner = await service.member("13564271675", "小王", openid="openid-wang")
    li = await service.member("13800000002", "小李", openid="openid-li")

    await a_shared_ledger(service, owner, li)

    await service.settled()
    assert [m["title"] for m in (await messages(li))["messages"]] == ["新的共享账套"]
    [failure] = [r for r in caplog.records if r.name == "eacct.wechat.notify" and r.levelno == logging.WARNING]
    assert "ConnectionError" in failure.getMessage() and "secret=***" in failure.getMessage()
    assert SECRET not in caplog.text


async def test_rule_18_no_template_messages_unless_appid_secret_and_template_are_set(settings):
    assert WechatTemplateNotifier.configured(wechat_settings(settings, "http://127.0.0.1:9"))
    for missing in ("wechat_appid", "wechat_secret", "wechat_template_id"):
        incomplete = wechat_settings(settings, "http://127.0.0.1:9", **{missing: ""})
        assert not WechatTemplateNotifier.configured(incomplete)
        assert create_app(incomplete)[NOTIFIER].extra_channels == []
    assert isinstance(create_app(wechat_settings(settings, "http://127.0.0.1:9"))[NOTIFIER].extra_channels[0],
                      WechatTemplateNotifier)


async def start_own_server(aiohttp_server, engine, settings, blobs):
    app = create_app(settings, engine=engine, blobs=blobs, collect_garbage_on_start=False)
    server = await aiohttp_server(app, host="127.0.0.1")
    [channel] = app[NOTIFIER].extra_channels
    return server, str(server.make_url("")).rstrip("/"), channel


async def test_rule_18_shutdown_waits_for_messages_on_their_way(aiohttp_server, engine, settings, blobs, http,
                                                               wechat_api):
    server, base_url, channel = await start_own_server(aiohttp_server, engine,
                                                       wechat_settings(settings, wechat_api.base_url), blobs)
    service = Service(base_url, http, WeChat(http, base_url, safe=False), channel)
    owner = await service.member("13564271675", "小王")
    li = await service.member("13800000002", "小李", openid="openid-li")
    wechat_api.hold_sends()
    await a_shared_ledger(service, owner, li)
    await wechat_api.wait_until(lambda: wechat_api.held == 1)

    shutdown = asyncio.create_task(server.close())
    done, _ = await asyncio.wait({shutdown}, timeout=0.5)
    assert not done  # shutdown is waiting for the message
    wechat_api.release_sends()
    await asyncio.wait_for(shutdown, 5)
    assert [p["touser"] for p in wechat_api.sent] == ["openid-li"]


async def test_rule_18_shutdown_waits_a_bounded_time(aiohttp_server, engine, settings, blobs, http, wechat_api,
                                                    monkeypatch, caplog):
    monkeypatch.setattr(app_module, "SHUTDOWN_WAIT_SECONDS", 0.3)
    server, base_url, channel = await start_own_server(aiohttp_server, engine,
                                                       wechat_settings(settings, wechat_api.base_url), blobs)
    service = Service(base_url, http, WeChat(http, base_url, safe=False), channel)
    owner = await service.member("13564271675", "小王")
    li = await service.member("13800000002", "小李", openid="openid-li")
    wechat_api.hold_sends()  # and never released: WeChat hangs
    await a_shared_ledger(service, owner, li)
    await wechat_api.wait_until(lambda: wechat_api.held == 1)

    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(server.close(), 5)
    assert asyncio.get_running_loop().time() - started < 3
    assert channel.pending == 0 and wechat_api.sent == []
    assert "1 WeChat template messages not sent at shutdown" in caplog.text


async def test_rule_18_messages_beyond_the_waiting_bound_are_dropped_not_queued(service, wechat_api, caplog):
    owner = await service.member("13564271675", "小王")
    friends = [await service.member(f"1380000000{i}", f"好友{i}", openid=f"openid-{i}") for i in (2, 3, 4)]
    service.channel.max_pending = 2
    wechat_api.hold_sends()

    await a_shared_ledger(service, owner, *friends)  # three messages at once; two may wait

    assert service.channel.pending == 2
    assert "message to member" in caplog.text and "dropped" in caplog.text
    wechat_api.release_sends()
    await service.settled()
    assert sorted(p["touser"] for p in wechat_api.sent) == ["openid-2", "openid-3"]
    for friend in friends:  # the message center has every one
        assert [m["title"] for m in (await messages(friend))["messages"]] == ["新的共享账套"]
