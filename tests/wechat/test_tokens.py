"""WeChat's access token lives in the database, shared by every process: one refresh at a time, before expiry
(DESIGN.md: "Rate limits, lockouts and the WeChat access token live in the database")."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, update

from eacct.db import create_engine, make_session_factory, utcnow
from eacct.share.notify import MessageCenterNotifier
from eacct.web import NOTIFIER
from eacct.wechat.models import WechatToken
from eacct.wechat.client import WechatApiClient
from eacct.wechat.tokens import DatabaseTokenStorage
from tests.conftest import Desktop, new_ledger_id
from tests.share.conftest import cancel, share
from tests.wechat.test_callback import WeChat, bind_via_link
from tests.wechat.test_templates import (  # noqa: F401  (fixtures)
    APPID, SECRET, a_shared_ledger, apps, wechat_api, wechat_settings,
)


async def test_two_app_instances_fetch_the_access_token_once_and_refresh_it_once(
        make_server, apps, settings, blobs, http, wechat_api):
    settings = wechat_settings(settings, wechat_api.base_url)
    first_url = await make_server(settings, blobs)
    second_url = await make_server(settings, blobs)
    channels = []
    for app in apps:
        notifier = app[NOTIFIER]
        assert isinstance(notifier, MessageCenterNotifier)
        channels += notifier.extra_channels
    assert len(channels) == 2

    async def settled():
        await asyncio.wait_for(asyncio.gather(*(c.drain() for c in channels)), 10)

    wechat = WeChat(http, first_url, safe=False)
    owner = await (await Desktop(http, first_url, "13564271675", "小王").register()).open_netdisk()
    li = await (await Desktop(http, second_url, "13800000002", "小李").register()).open_netdisk()
    await bind_via_link(http, wechat, await wechat.say("openid-li", "会员中心"), li.account, li.password, "小李")
    _, [shared] = await a_shared_ledger(None, owner, li)  # through the first app
    await settled()
    owner_on_second = Desktop(http, second_url, owner.account, owner.nickname)
    owner_on_second.token = owner.token
    await cancel(owner_on_second, shared["share_id"])  # through the second app
    await settled()
    assert len(wechat_api.sent) == 2 and wechat_api.token_requests == 1

    wechat_api.expire_tokens()
    ledger = new_ledger_id()
    assert (await owner.upload("backups", ledger, 2019, b"ledger 2019", name="456"))[0] == 201
    [again] = await share(owner, ledger, li)
    await settled()
    await cancel(owner_on_second, again["share_id"])
    await settled()
    assert [p["data"]["first"]["value"] for p in wechat_api.sent][2:] == ["新的共享账套", "共享已取消"]
    assert wechat_api.token_requests == 2  # one refresh for both instances


async def test_concurrent_processes_refresh_one_at_a_time(database_url, db_schema, engine, wechat_api):
    # `engine` (the test database fixture) empties the tables afterwards on PostgreSQL.
    wechat_api.token_delay = 0.3
    engines = [create_engine(database_url, schema=db_schema) for _ in range(2)]
    try:
        loop = asyncio.get_running_loop()
        clients = [WechatApiClient(APPID, SECRET, wechat_api.base_url, 5.0,
                                   DatabaseTokenStorage(make_session_factory(engine), loop, poll_seconds=0.02))
                   for engine in engines]
        tokens = await asyncio.gather(*(asyncio.to_thread(lambda c=c: c.access_token) for c in clients * 4))
        assert len(set(tokens)) == 1 and wechat_api.token_requests == 1

        # WeChat refuses the token: every client asks for a new one at once; one fetch serves them all.
        refused = tokens[0]
        for client in clients:
            client._last_token = refused
        await asyncio.gather(*(asyncio.to_thread(c.fetch_access_token) for c in clients * 3))
        renewed = await asyncio.gather(*(asyncio.to_thread(lambda c=c: c.access_token) for c in clients))
        assert len(set(renewed)) == 1 and renewed[0] != refused and wechat_api.token_requests == 2
    finally:
        for engine in engines:
            await engine.dispose()


async def test_token_is_refreshed_before_it_expires(sessions, wechat_api):
    client = WechatApiClient(APPID, SECRET, wechat_api.base_url, 5.0,
                             DatabaseTokenStorage(sessions, asyncio.get_running_loop()))
    first = await asyncio.to_thread(lambda: client.access_token)
    assert await asyncio.to_thread(lambda: client.access_token) == first and wechat_api.token_requests == 1
    async with sessions() as session, session.begin():
        await session.execute(update(WechatToken).values(expires_at=utcnow() + timedelta(minutes=4)))
    second = await asyncio.to_thread(lambda: client.access_token)
    assert second != first and wechat_api.token_requests == 2
    async with sessions() as session:
        row = await session.scalar(select(WechatToken))
    assert row.value == second and row.lease_until is None and row.expires_at > utcnow() + timedelta(hours=1)
