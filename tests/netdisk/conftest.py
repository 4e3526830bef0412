"""Fixtures of the netdisk tests."""

from __future__ import annotations

import pytest

from eacct.db import unit_of_work
from eacct.members.service import create_member
from eacct.netdisk import service
from eacct.secrets import hash_secret


@pytest.fixture
async def owner(sessions, settings) -> int:
    """A member with an opened netdisk (password disk-pass); its id."""
    password_hash = await hash_secret(settings, "secret-1")
    async with unit_of_work(sessions) as session:
        member = await create_member(session, "owner01", password_hash, "小王")
    await service.open_netdisk(sessions, settings, member.id, "disk-pass", [("q", "a")])
    return member.id
