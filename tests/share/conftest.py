"""Helpers for the share tests: members who befriend and share, and a ready-made world with every role.

The roles of the access rule (API.md, 共享人操作云备份，受共享人操作云共享):
owner (共享人), recipient (受共享人, active share), former recipient (share cancelled), friend without a share,
and stranger.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from eacct.netdisk.models import Pack
from tests.conftest import Desktop, new_ledger_id


def error_code(body: dict | bytes | None) -> str | None:
    """The `error.code` of an error answer, parsed JSON or the raw bytes of a download (None otherwise)."""
    if isinstance(body, bytes):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    return body["error"].get("code")


async def befriend(member: Desktop, friend: Desktop) -> dict:
    """我的好友 → 添加好友 with the friend's account and nickname."""
    status, body, _ = await member.call("POST", "/friends", json={"account": friend.account, "nickname": friend.nickname})
    assert status == 201, body
    return body


async def share(owner: Desktop, ledger_id: str, *friends: Desktop) -> list[dict]:
    """共享给好友; returns the shares."""
    status, body, _ = await owner.call("POST", "/shares", json={"ledger_id": ledger_id, "friend_ids": [f.id for f in friends]})
    assert status == 201, body
    return body["shares"]


async def cancel(owner: Desktop, share_id: str) -> None:
    """取消共享."""
    status, body, _ = await owner.call("DELETE", f"/shares/{share_id}")
    assert status == 204, body


async def messages(member: Desktop, **filters: str | list[str]) -> dict:
    """消息中心, with `status=` / `kind=` filters (lists repeat the parameter)."""
    query = urlencode(filters, doseq=True)
    status, body, _ = await member.call("GET", "/messages" + (f"?{query}" if query else ""))
    assert status == 200, body
    return body


async def cloud_shares(member: Desktop) -> list[dict]:
    """我的云共享: the sharers list."""
    status, body, _ = await member.call("GET", "/cloud-shares", netdisk=True)
    assert status == 200, body
    return body["sharers"]


async def used_bytes(member: Desktop) -> int:
    status, body, _ = await member.call("GET", "/netdisk")
    assert status == 200, body
    return body["used_bytes"]


async def versions_of(owner: Desktop, ledger_id: str, year: int) -> list[dict]:
    """Every kept version of the owner's (ledger, year), newest first ([] when the year has none)."""
    status, body, _ = await owner.call("GET", f"/backups/{ledger_id}/years/{year}", netdisk=True)
    if status == 404:
        return []
    assert status == 200, body
    return body["versions"]


async def pending_packs(sessions) -> int:
    """Pack rows of uploads that never committed (a refused upload must leave none)."""
    async with sessions() as session:
        return await session.scalar(select(func.count()).select_from(Pack).where(Pack.committed.is_(False)))


async def blob_keys(blobs) -> set[str]:
    return {info.key async for info in blobs.list("packs/")}


async def committed_pack_keys(sessions) -> set[str]:
    async with sessions() as session:
        return set(await session.scalars(select(Pack.blob_key).where(Pack.committed.is_(True))))


@dataclass
class World:
    """Owner A's ledger "123" (2017 and 2018) and one member in every role towards it."""

    owner: Desktop
    recipient: Desktop
    former: Desktop
    friend: Desktop
    stranger: Desktop
    ledger: str
    contents: dict[int, bytes] = field(default_factory=dict)
    versions: dict[int, dict] = field(default_factory=dict)
    share_id: str = ""

    def role(self, name: str) -> Desktop:
        return {"owner": self.owner, "recipient": self.recipient, "former recipient": self.former,
                "friend without share": self.friend, "stranger": self.stranger}[name]


ROLES = ["owner", "recipient", "former recipient", "friend without share", "stranger"]


@pytest.fixture
async def world(desktop) -> World:
    owner = await desktop("13564271675", "小王")
    recipient = await desktop("13800000002", "小李")
    former = await desktop("13800000003", "小张")
    friend = await desktop("13800000004", "小赵")
    stranger = await desktop("13800000005", "小陈")
    ledger = new_ledger_id()
    world = World(owner, recipient, former, friend, stranger, ledger)
    for year in (2017, 2018):
        content = os.urandom(20_000)
        status, version, _ = await owner.upload("backups", ledger, year, content, remark=f"{year}年1期", name="123")
        assert status == 201, version
        world.contents[year], world.versions[year] = content, version
    for member in (recipient, former, friend):
        await befriend(owner, member)
    shares = await share(owner, ledger, recipient, former)
    world.share_id = next(s["share_id"] for s in shares if s["recipient"]["id"] == recipient.id)
    await cancel(owner, next(s["share_id"] for s in shares if s["recipient"]["id"] == former.id))
    return world
