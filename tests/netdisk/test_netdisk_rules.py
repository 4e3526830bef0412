"""Netdisk security over HTTP: opening, unlock, reset by answers, password change, lockout (rules 5–7)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from eacct.members.models import AccessToken
from eacct.netdisk.models import Netdisk, SecurityQuestion
from eacct.secrets import hash_token
from tests.conftest import Desktop


async def test_rule_5_first_use_sets_password_and_questions(desktop, sessions):
    member = await desktop("disk01", "小王", netdisk=False)
    status, disk, _ = await member.call("GET", "/netdisk")
    assert status == 200 and disk["opened"] is False and disk["quota_bytes"] == 419430400
    status, body, _ = await member.call("POST", "/netdisk/unlock", json={"password": "anything"})
    assert status == 404 and body["error"]["code"] == "netdisk_not_opened"
    await member.open_netdisk()
    _, disk, _ = await member.call("GET", "/netdisk")
    assert disk == {"opened": True, "quota_bytes": 419430400, "used_bytes": 0, "free_bytes": 419430400}
    _, me, _ = await member.call("GET", "/me")
    assert me["netdisk_opened"] is True
    status, questions, _ = await member.call("GET", "/netdisk/questions")
    assert questions == {"questions": ["我的出生地?", "第一所学校?"]}


async def test_rule_5_secrets_are_stored_as_argon2_hashes_only(desktop, sessions):
    member = await desktop("disk02", "小王")
    async with sessions() as session:
        netdisk = await session.get(Netdisk, member.id)
        answers = list(await session.scalars(select(SecurityQuestion.answer_hash)))
        tokens = list(await session.scalars(select(AccessToken.token_hash)))
    assert netdisk.password_hash.startswith("$argon2id$") and member.netdisk_password not in netdisk.password_hash
    assert all(a.startswith("$argon2id$") and "杭州" not in a for a in answers)
    assert hash_token(member.netdisk_token) in tokens and member.netdisk_token not in tokens


async def test_rule_5_opening_twice_is_409(desktop):
    member = await desktop("disk03", "小王")
    status, body, _ = await member.call("POST", "/netdisk", json={
        "password": "another1", "questions": [{"question": "q", "answer": "a"}]})
    assert status == 409 and body["error"]["code"] == "netdisk_already_opened"


@pytest.mark.parametrize("questions", [[], [{"question": "q", "answer": "a"}] * 4,
                                       [{"question": "q", "answer": "a"}, {"question": "q", "answer": "b"}],
                                       [{"question": "q", "answer": "   "}]])
async def test_rule_5_one_to_three_distinct_questions(desktop, questions):
    member = await desktop("disk04", "小王", netdisk=False)
    status, body, _ = await member.call("POST", "/netdisk", json={"password": "secret1", "questions": questions})
    assert status == 422 and body["error"]["code"] == "invalid"


async def test_rule_5_reset_by_answers_trimmed_and_case_folded(desktop):
    member = await desktop("disk05", "小王")
    status, body, _ = await member.call("POST", "/netdisk/reset", json={"answers": [" 杭州 ", "YUYING"],
                                                                        "new_password": "brand-new"})
    assert status == 204, body
    # Reset ends netdisk logins made with the old password.
    assert (await member.call("GET", "/backups", netdisk=True))[0] == 401
    assert (await member.call("POST", "/netdisk/unlock", json={"password": member.netdisk_password}))[0] == 401
    assert (await member.call("POST", "/netdisk/unlock", json={"password": "brand-new"}))[0] == 201


async def test_rule_5_reset_with_wrong_answers_is_401(desktop):
    member = await desktop("disk06", "小王")
    for answers in (["杭州", "wrong"], ["杭州"], ["wrong", "yuying"]):
        status, body, _ = await member.call("POST", "/netdisk/reset", json={"answers": answers, "new_password": "brand-new"})
        assert status == 401 and body["error"]["code"] == "bad_answers"
    assert (await member.call("POST", "/netdisk/unlock", json={"password": member.netdisk_password}))[0] == 201


async def test_password_change_needs_the_old_password(desktop):
    member = await desktop("disk07", "小王")
    status, body, _ = await member.call("PUT", "/netdisk/password", json={"old_password": "wrong", "new_password": "newpass1"})
    assert status == 401 and body["error"]["code"] == "bad_netdisk_password"
    status, _, _ = await member.call("PUT", "/netdisk/password", json={
        "old_password": member.netdisk_password, "new_password": "newpass1"})
    assert status == 204
    assert (await member.call("POST", "/netdisk/unlock", json={"password": "newpass1"}))[0] == 201


async def test_rule_6_five_wrong_passwords_lock_with_retry_after(desktop):
    member = await desktop("lock01", "小王")
    for attempt in range(5):
        status, body, _ = await member.call("POST", "/netdisk/unlock", json={"password": "wrong"})
        assert status == 401 and body["error"]["code"] == "bad_netdisk_password", attempt
    assert "locked_until" in body["error"]  # the fifth answer already says until when
    status, body, headers = await member.call("POST", "/netdisk/unlock", json={"password": member.netdisk_password})
    assert status == 429 and body["error"]["code"] == "too_many_attempts"
    assert int(headers["Retry-After"]) == body["error"]["retry_after"] > 0
    assert body["error"]["locked_until"].endswith("Z") and "北京时间" in body["error"]["message"]


async def test_rule_6_lockout_backs_off_exponentially(desktop, sessions):
    from eacct.throttle import AttemptCounter

    member = await desktop("lock02", "小王")
    retry_afters = []
    for _ in range(3):
        for _ in range(5):
            status, body, _ = await member.call("POST", "/netdisk/unlock", json={"password": "wrong"})
            if status == 429:
                break
        status, body, _ = await member.call("POST", "/netdisk/unlock", json={"password": "wrong"})
        assert status == 429
        retry_afters.append(body["error"]["retry_after"])
        # Let the lock run out without waiting: move it into the past, keeping the failure count.
        async with sessions() as session, session.begin():
            await session.execute(update(AttemptCounter).values(locked_until=AttemptCounter.window_started_at))
        status, body, _ = await member.call("POST", "/netdisk/unlock", json={"password": "wrong"})
        assert status == 401
    assert retry_afters[0] < retry_afters[1] < retry_afters[2]


async def test_rule_6_success_clears_the_count(desktop):
    member = await desktop("lock03", "小王")
    for _ in range(4):
        await member.call("POST", "/netdisk/unlock", json={"password": "wrong"})
    assert (await member.call("POST", "/netdisk/unlock", json={"password": member.netdisk_password}))[0] == 201
    for _ in range(4):
        assert (await member.call("POST", "/netdisk/unlock", json={"password": "wrong"}))[0] == 401
    assert (await member.call("POST", "/netdisk/unlock", json={"password": member.netdisk_password}))[0] == 201


async def test_rule_6_wrong_answers_lock_too(desktop):
    member = await desktop("lock04", "小王")
    for _ in range(5):
        await member.call("POST", "/netdisk/reset", json={"answers": ["x", "y"], "new_password": "newpass1"})
    status, body, headers = await member.call("POST", "/netdisk/reset", json={"answers": ["杭州", "yuying"],
                                                                              "new_password": "newpass1"})
    assert status == 429 and "Retry-After" in headers


async def test_rule_6_lockout_is_shared_by_server_processes(make_server, settings, blobs, http):
    """Two app instances on one database (as behind a load balancer) count failures together."""
    first = await make_server(settings, blobs)
    second = await make_server(settings, blobs)
    member = await (await Desktop(http, first, "lock05", "小王").register()).open_netdisk()
    other = Desktop(http, second, "lock05", "小王")
    other.token = member.token
    for index in range(5):
        client = member if index % 2 else other
        assert (await client.call("POST", "/netdisk/unlock", json={"password": "wrong"}))[0] == 401
    assert (await other.call("POST", "/netdisk/unlock", json={"password": member.netdisk_password}))[0] == 429
    assert (await member.call("POST", "/netdisk/unlock", json={"password": member.netdisk_password}))[0] == 429


async def test_netdisk_token_expires_after_30_minutes_idle(desktop, sessions):
    member = await desktop("idle01", "小王")
    assert (await member.call("GET", "/backups", netdisk=True))[0] == 200
    async with sessions() as session:
        token = await session.get(AccessToken, hash_token(member.netdisk_token))
        remaining = token.expires_at - token.created_at
    assert timedelta(minutes=29) < remaining <= timedelta(minutes=30, seconds=5)
    async with sessions() as session, session.begin():
        await session.execute(update(AccessToken).where(AccessToken.token_hash == hash_token(member.netdisk_token))
                              .values(expires_at=AccessToken.created_at))
    status, body, _ = await member.call("GET", "/backups", netdisk=True)
    assert status == 401 and body["error"]["code"] == "unauthenticated"


async def test_netdisk_token_use_slides_the_expiry(desktop, sessions):
    member = await desktop("idle02", "小王")
    async with sessions() as session, session.begin():
        token = await session.get(AccessToken, hash_token(member.netdisk_token))
        token.expires_at = token.created_at + timedelta(minutes=1)
    assert (await member.call("GET", "/backups", netdisk=True))[0] == 200
    async with sessions() as session:
        token = await session.get(AccessToken, hash_token(member.netdisk_token))
    from eacct.db import utcnow

    assert timedelta(minutes=29) < token.expires_at - utcnow() <= timedelta(minutes=30)


async def test_netdisk_token_use_writes_the_expiry_at_most_about_once_a_minute(desktop, sessions):
    """Using the netdisk is not a write per request: the expiry is written only when it would move by more
    than a minute; otherwise the stored expiry stays as it was."""
    from eacct.db import utcnow

    member = await desktop("idle03", "小王")
    recent = utcnow() + timedelta(minutes=29, seconds=30)  # as if written 30 s ago
    async with sessions() as session, session.begin():
        await session.execute(update(AccessToken).where(AccessToken.token_hash == hash_token(member.netdisk_token))
                              .values(expires_at=recent))
    for _ in range(3):
        assert (await member.call("GET", "/backups", netdisk=True))[0] == 200
    async with sessions() as session:
        token = await session.get(AccessToken, hash_token(member.netdisk_token))
    assert abs(token.expires_at - recent) < timedelta(milliseconds=1)
