"""我的好友: add by account and nickname, list, remove (DESIGN.md rule 4, API.md "Friends and shares")."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update

from eacct.db import utcnow
from eacct.throttle import AttemptCounter
from tests.conftest import new_ledger_id
from tests.share.conftest import befriend, cloud_shares, error_code, messages, share

FRIEND_ATTEMPTS = 10  # Settings.friend_attempts_per_window


async def add(member, account: str, nickname: str):
    return await member.call("POST", "/friends", json={"account": account, "nickname": nickname})


async def test_rule_4_add_friend_by_account_and_nickname(desktop):
    wang = await desktop("13564271675", "小王", netdisk=False)
    li = await desktop("13800000002", "小李", netdisk=False)
    zhang = await desktop("13800000003", "小张", netdisk=False)
    status, friend, _ = await add(wang, li.account, "小李")
    assert status == 201
    assert {k: friend[k] for k in ("id", "account", "nickname")} == {"id": li.id, "account": li.account, "nickname": "小李"}
    assert friend["added_at"].endswith("Z")
    await befriend(wang, zhang)
    status, body, _ = await wang.call("GET", "/friends")
    assert status == 200
    assert [f["id"] for f in body["friends"]] == [li.id, zhang.id]
    assert body["friends"][0] == friend
    # My friend list is mine: adding 小李 does not put me in 小李's list.
    assert (await li.call("GET", "/friends"))[1] == {"friends": []}


async def test_rule_4_wrong_nickname_and_wrong_account_answer_the_same(desktop):
    wang = await desktop("13564271675", "小王", netdisk=False)
    li = await desktop("13800000002", "小李", netdisk=False)
    wrong_nickname = await add(wang, li.account, "小张")
    wrong_account = await add(wang, "13899999999", "小李")
    both_wrong = await add(wang, "13899999999", "小张")
    nickname_of_someone_else = await add(wang, li.account, "小王")
    for status, body, _ in (wrong_nickname, wrong_account, both_wrong, nickname_of_someone_else):
        assert status == 404 and body == wrong_nickname[1]
    assert error_code(wrong_nickname[1]) == "member_not_found"
    assert (await wang.call("GET", "/friends"))[1] == {"friends": []}


async def test_rule_4_only_the_current_nickname_matches(desktop):
    wang = await desktop("13564271675", "小王", netdisk=False)
    li = await desktop("13800000002", "小李", netdisk=False)
    status, _, _ = await li.call("PATCH", "/me", json={"nickname": "李会计"})
    assert status == 200
    status, body, _ = await add(wang, li.account, "小李")
    assert status == 404 and error_code(body) == "member_not_found"
    status, body, _ = await add(wang, li.account, "李会计")
    assert status == 201 and body["nickname"] == "李会计"


async def test_rule_4_adding_yourself_is_refused(desktop):
    wang = await desktop("13564271675", "小王", netdisk=False)
    status, body, _ = await add(wang, wang.account, "小王")
    assert status == 422 and error_code(body) == "cannot_add_self"
    assert (await wang.call("GET", "/friends"))[1] == {"friends": []}


async def test_rule_4_adding_twice_is_harmless(desktop):
    wang = await desktop("13564271675", "小王", netdisk=False)
    li = await desktop("13800000002", "小李", netdisk=False)
    first = await befriend(wang, li)
    status, again, _ = await add(wang, li.account, "小李")
    assert status == 200 and again == first
    assert (await wang.call("GET", "/friends"))[1] == {"friends": [first]}


async def test_rule_4_adding_the_same_friend_twice_at_once_is_harmless(desktop):
    """A double click on 添加好友 sends the same request twice at the same moment."""
    wang = await desktop("13564271675", "小王", netdisk=False)
    li = await desktop("13800000002", "小李", netdisk=False)
    answers = await asyncio.gather(*[add(wang, li.account, "小李") for _ in range(8)])
    assert sorted(status for status, _, _ in answers) == [200] * 7 + [201], [body for _, body, _ in answers]
    assert len({body["added_at"] for _, body, _ in answers}) == 1
    assert [f["id"] for f in (await wang.call("GET", "/friends"))[1]["friends"]] == [li.id]


async def test_rule_4_add_friend_attempts_are_throttled_per_member(desktop):
    prober = await desktop("13564271675", "小王", netdisk=False)
    li = await desktop("13800000002", "小李", netdisk=False)
    other = await desktop("13800000003", "小张", netdisk=False)
    for attempt in range(FRIEND_ATTEMPTS):
        status, body, _ = await add(prober, f"1390000{attempt:04d}", "小李")
        assert status == 404 and error_code(body) == "member_not_found", attempt
    assert "locked_until" in body["error"]  # the failure that locks says until when
    # Locked: even the right account and nickname get the same refusal, so a probe learns nothing.
    status, body, headers = await add(prober, li.account, "小李")
    assert status == 429 and error_code(body) == "too_many_attempts"
    assert int(headers["Retry-After"]) == body["error"]["retry_after"] > 0
    assert (await prober.call("GET", "/friends"))[1] == {"friends": []}
    # Per member: somebody else is not held back by it.
    status, _, _ = await add(other, li.account, "小李")
    assert status == 201


async def test_rule_4_a_successful_add_does_not_reset_the_attempt_budget(desktop):
    """Otherwise a prober resets the counter by re-adding a puppet account between probes."""
    prober = await desktop("13564271675", "小王", netdisk=False)
    puppet = await desktop("13800000009", "马甲", netdisk=False)
    li = await desktop("13800000002", "小李", netdisk=False)
    for _ in range(3):
        for _ in range((FRIEND_ATTEMPTS - 1) // 3):
            assert (await add(prober, "13900000000", "小李"))[0] == 404
        assert (await add(prober, puppet.account, "马甲"))[0] == 201
        assert (await prober.call("DELETE", f"/friends/{puppet.id}"))[0] == 204
    status, body, _ = await add(prober, "13900000000", "小李")
    assert status == 404 and "locked_until" in body["error"]
    status, body, _ = await add(prober, li.account, "小李")
    assert status == 429 and error_code(body) == "too_many_attempts"


async def test_rule_4_failed_attempts_count_within_a_window(desktop, sessions):
    prober = await desktop("13564271675", "小王", netdisk=False)
    li = await desktop("13800000002", "小李", netdisk=False)
    for attempt in range(FRIEND_ATTEMPTS - 1):
        assert (await add(prober, f"1390000{attempt:04d}", "小李"))[0] == 404
    # The window (10 minutes) passes: the old failures no longer count.
    async with sessions() as session, session.begin():
        await session.execute(update(AttemptCounter).values(window_started_at=utcnow() - timedelta(minutes=11)))
    status, body, _ = await add(prober, "13900009999", "小李")
    assert status == 404 and "locked_until" not in body["error"]
    assert (await add(prober, li.account, "小李"))[0] == 201


async def test_rule_4_removing_a_friend_cancels_the_shares_i_gave_them(desktop):
    wang = await desktop("13564271675", "小王")
    li = await desktop("13800000002", "小李")
    mine = [new_ledger_id(), new_ledger_id()]
    for ledger in mine:
        assert (await wang.upload("backups", ledger, 2018, b"wang's books " + ledger.encode(), name="123"))[0] == 201
    theirs = new_ledger_id()
    assert (await li.upload("backups", theirs, 2018, b"li's books", name="456"))[0] == 201
    await befriend(wang, li)
    await befriend(li, wang)
    for ledger in mine:
        await share(wang, ledger, li)
    await share(li, theirs, wang)

    status, _, _ = await wang.call("DELETE", f"/friends/{li.id}")
    assert status == 204
    assert (await wang.call("GET", "/friends"))[1] == {"friends": []}
    # The shares I gave 小李 ended at once ...
    assert await cloud_shares(li) == []
    assert (await wang.call("GET", "/shares"))[1]["ledger_count"] == 0
    for ledger in mine:
        status, body, _ = await li.download("cloud-shares", ledger, 2018)
        assert status == 404 and error_code(body) == "not_found"
    cancelled = (await messages(li, kind="personal"))["messages"]
    assert [m["title"] for m in cancelled].count("共享已取消") == 2
    # ... while 小李's share to me is 小李's to give: it stays, and so does 小李's friend list.
    [sharer] = await cloud_shares(wang)
    assert sharer["member"]["id"] == li.id and [l["ledger_id"] for l in sharer["ledgers"]] == [theirs]
    assert [f["id"] for f in (await li.call("GET", "/friends"))[1]["friends"]] == [wang.id]
    # Removing again: not a friend any more.
    status, body, _ = await wang.call("DELETE", f"/friends/{li.id}")
    assert status == 404 and error_code(body) == "not_found"


async def test_rule_4_removing_a_friend_twice_at_once_removes_once(desktop):
    wang = await desktop("13564271675", "小王")
    li = await desktop("13800000002", "小李")
    ledger = new_ledger_id()
    await wang.upload("backups", ledger, 2018, b"books", name="123")
    await befriend(wang, li)
    await share(wang, ledger, li)
    answers = await asyncio.gather(*[wang.call("DELETE", f"/friends/{li.id}") for _ in range(4)])
    assert sorted(status for status, _, _ in answers) == [204, 404, 404, 404]
    assert [m["title"] for m in (await messages(li))["messages"]] == ["共享已取消", "新的共享账套"]
    assert await cloud_shares(li) == []


async def test_rule_4_re_adding_a_removed_friend_does_not_bring_shares_back(desktop):
    wang = await desktop("13564271675", "小王")
    li = await desktop("13800000002", "小李")
    ledger = new_ledger_id()
    await wang.upload("backups", ledger, 2018, b"books", name="123")
    await befriend(wang, li)
    await share(wang, ledger, li)
    assert (await wang.call("DELETE", f"/friends/{li.id}"))[0] == 204
    await befriend(wang, li)
    assert await cloud_shares(li) == []
    assert (await li.download("cloud-shares", ledger, 2018))[0] == 404


async def test_friends_need_a_login(desktop, http, base_url):
    async with http.get(base_url + "/api/v1/friends") as response:
        assert response.status == 401 and (await response.json())["error"]["code"] == "unauthenticated"
    wang = await desktop("13564271675", "小王", netdisk=False)
    for path in ("/friends/abc", "/friends/99999999999"):
        status, body, _ = await wang.call("DELETE", path)
        assert status == 404 and error_code(body) == "not_found"


async def test_ids_beyond_32_bits_in_paths_are_not_found_on_every_database(desktop):
    """schemathesis found these as 500s on PostgreSQL (an out-of-range query argument): they are 404."""
    wang = await desktop("13564271690", "小王", netdisk=False)
    for method, path in (("DELETE", "/friends/2147483648"), ("POST", "/messages/2147483648/read"),
                         ("DELETE", "/friends/9999999999")):
        status, body, _ = await wang.call(method, path)
        assert status == 404 and error_code(body) == "not_found", (method, path, status, body)
