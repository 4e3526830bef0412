"""The WeChat callback only reads: a bound follower's 会员信息 / 会员中心 and WeChat's redeliveries of them
write nothing (no write lock taken on SQLite, no INSERT/UPDATE/DELETE anywhere), and the callback answers while
another writer holds SQLite's write lock.

The server here is always in this process (not `make_server`'s N processes under EACCT_TEST_SERVERS), because
the statements are watched on this process's engine."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
import xmltodict
from sqlalchemy import event

from eacct.app import create_app
from tests.conftest import Desktop
from tests.test_read_only_units import writer_holding_the_lock
from tests.wechat.test_callback import AES_KEY, APPID, TOKEN, WeChat, bind_via_link

QUICK = 3.0  # seconds; a callback waiting for the writer below would wait until it ends (never, in the test)
WRITES = ("INSERT", "UPDATE", "DELETE", "SAVEPOINT", "BEGIN IMMEDIATE")


@pytest.fixture(params=["plain", "safe"])
async def local_wechat(request, aiohttp_server, engine, settings, blobs, http):
    safe = request.param == "safe"
    settings = settings.with_overrides(wechat_token=TOKEN, wechat_appid=APPID, wechat_secret="secret",
                                       wechat_aes_key=AES_KEY if safe else "", public_url="http://eacct.example")
    server = await aiohttp_server(create_app(settings, engine=engine, blobs=blobs, collect_garbage_on_start=False),
                                  host="127.0.0.1")
    return WeChat(http, str(server.make_url("")).rstrip("/"), safe)


async def bound_follower(http, wechat: WeChat, openid: str, account: str) -> Desktop:
    member = await Desktop(http, wechat.base_url, account, "小王").register()
    status, _ = await bind_via_link(http, wechat, await wechat.say(openid, "会员中心"), account, member.password, "小王")
    assert status == 200
    return member


class Statements:
    """Every SQL statement this process's engine sends while the block runs."""

    def __init__(self, engine) -> None:
        self.engine, self.seen = engine.sync_engine, []

    def _record(self, _conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        self.seen.append(" ".join(statement.split()).upper())

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *_exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def writes(self) -> list[str]:
        return [statement for statement in self.seen if statement.startswith(WRITES)]


def redelivered_click(openid: str, key: str, create_time: int) -> str:
    return (f"<xml><ToUserName><![CDATA[gh_eacct]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[{key}]]></EventKey></xml>")


async def test_a_bound_followers_messages_and_their_redeliveries_write_nothing(local_wechat, engine, http):
    member = await bound_follower(http, local_wechat, "openid-r1", "reads01")
    click = redelivered_click("openid-r1", "MEMBER_CENTER", int(time.time()))
    with Statements(engine) as statements:
        infos = [await local_wechat.say("openid-r1", "会员信息", msg_id=4242) for _ in range(3)]
        centers = [await local_wechat.deliver(click) for _ in range(3)]
    assert [status for status, _ in centers] == [200] * 3
    centers = [xmltodict.parse(reply)["xml"]["Content"] for _, reply in centers]
    assert f"会员ID：{member.id}" in infos[0] and infos[0] == infos[1] == infos[2]
    # Each answer carries a freshly signed bind link whose expiry counts in seconds from the answer: redeliveries
    # that straddle a second differ there and only there.
    assert all(re.search(r"/wechat/h5/bind\?t=[\w-]+\.[0-9a-f]{32}\n", center) for center in centers)
    unsigned = [re.sub(r"\?t=[\w.-]+", "?t=…", center) for center in centers]
    assert "reads01" in centers[0] and unsigned[0] == unsigned[1] == unsigned[2]
    assert any(statement.startswith("SELECT") for statement in statements.seen)  # the watch does see the callback
    assert statements.writes() == []


async def test_the_callback_answers_while_another_writer_holds_the_write_lock(local_wechat, sessions, http):
    await bound_follower(http, local_wechat, "openid-r2", "reads02")
    async with writer_holding_the_lock(sessions):
        info = await asyncio.wait_for(local_wechat.say("openid-r2", "会员信息"), QUICK)
        unbound = await asyncio.wait_for(local_wechat.say("openid-r3", "会员中心"), QUICK)
    assert "reads02" in info and "还没有绑定" in unbound
