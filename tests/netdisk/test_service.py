"""The netdisk service's own rules about when it waits: opening a netdisk hashes its password and answers with
no write turn held (a login holds the hashing slot while it waits for its turn to write)."""

from __future__ import annotations

import asyncio

from eacct.db import unit_of_work
from eacct.members.service import create_member
from eacct.netdisk import service
from eacct.secrets import PasswordHashing, hash_secret

QUICK = 3.0  # seconds; the deadlock this guards against never ends by itself


async def test_opening_the_netdisk_waits_for_a_hashing_slot_without_holding_the_write_turn(sessions, settings):
    password_hash = await hash_secret(settings, "secret-1")
    async with unit_of_work(sessions) as session:
        member = await create_member(session, "opener01", password_hash, "小王")
    hashing = PasswordHashing(slots=1)
    slot_taken = asyncio.Event()

    async def log_in() -> None:
        async with hashing.slot():  # a login holding the only slot ...
            slot_taken.set()
            await asyncio.sleep(0.2)  # ... while the opening waits for that slot ...
            async with unit_of_work(sessions) as session:  # ... then takes its turn to write
                await session.get(type(member), member.id)

    login = asyncio.create_task(log_in())
    await slot_taken.wait()
    opening = asyncio.create_task(
        service.open_netdisk(sessions, settings, member.id, "disk-pass", [("q", "a")], hashing))
    await asyncio.wait_for(asyncio.gather(login, opening), QUICK)
    status = opening.result()
    assert status.opened and status.used_bytes == 0
