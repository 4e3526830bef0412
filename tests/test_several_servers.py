"""Two `eacct serve` processes on one database behave as one service: what one process counts (failed netdisk
passwords, add-friend attempts) binds the other."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import Desktop
from tests.several_servers import SeveralServers


@pytest.fixture
async def two_servers(settings, db_schema, engine, blobs, tmp_path):
    """Two real server processes on the test's database and blob store; yields their own base URLs."""
    from tests.conftest import OSS_ENV

    group = SeveralServers(settings.with_overrides(lockout_after_failures=3, friend_attempts_per_window=3),
                           count=2, schema=db_schema, storage_env=OSS_ENV.get(id(blobs)), log_dir=tmp_path / "servers",
                           gc_loop=False)
    await group.start()
    try:
        yield group.urls
    finally:
        await group.stop()


async def test_lockout_reached_through_one_process_holds_on_the_other(two_servers):
    first, second = two_servers
    async with aiohttp.ClientSession() as http:
        member = await (await Desktop(http, first, "13564271675", "小王").register()).open_netdisk()
        for _ in range(3):
            status, body, _ = await member.call("POST", "/netdisk/unlock", json={"password": "wrong"})
            assert status in (401, 403), body
        on_second = Desktop(http, second, member.account, member.nickname)
        on_second.token = member.token
        status, body, headers = await on_second.call("POST", "/netdisk/unlock",
                                                      json={"password": member.netdisk_password})
        assert status == 429, body
        assert body["error"]["code"] == "too_many_attempts"


async def test_friend_attempt_limit_reached_through_one_process_holds_on_the_other(two_servers):
    first, second = two_servers
    async with aiohttp.ClientSession() as http:
        member = await Desktop(http, first, "13564271675", "小王").register()
        friend = await Desktop(http, second, "13800000002", "小李").register()
        for _ in range(3):
            status, body, _ = await member.call("POST", "/friends", json={"account": "13900000009", "nickname": "无"})
            assert status == 404, body
        on_second = Desktop(http, second, member.account, member.nickname)
        on_second.token = member.token
        status, body, _ = await on_second.call("POST", "/friends", json={"account": friend.account,
                                                                         "nickname": friend.nickname})
        assert status == 429, body
        assert body["error"]["code"] == "too_many_attempts"
