"""Reads do not queue behind writers: read-only units of work (and the read-only requests built on them) take
no write lock on SQLite, while writers still take it up front; a read-only unit cannot write."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import aiohttp
import pytest
from sqlalchemy import func, select, update

from eacct.db import read_scalars, unit_of_work, utcnow
from eacct.share.models import Message
from eacct.share.notify import SYSTEM

QUICK = 3.0  # seconds; a read waiting for the writer below would wait until it ends (never, during the test)


@asynccontextmanager
async def writer_holding_the_lock(sessions):
    """A write transaction that has written and stays open until the block ends (then rolls back)."""
    session = sessions()
    transaction = await session.begin()
    session.add(Message(member_id=None, kind=SYSTEM, title="held", body="", created_at=utcnow()))
    await session.flush()
    try:
        yield
    finally:
        await transaction.rollback()
        await session.close()


async def test_read_only_unit_of_work_does_not_wait_for_a_writer(sessions):
    async with writer_holding_the_lock(sessions):

        async def read() -> int:
            async with unit_of_work(sessions, read_only=True) as session:
                return await session.scalar(select(func.count()).select_from(Message))

        assert await asyncio.wait_for(read(), QUICK) == 0  # the writer's row is not committed


async def test_a_single_read_does_not_wait_for_a_writer_and_sees_only_what_is_committed(sessions):
    async with unit_of_work(sessions) as session:
        session.add(Message(member_id=None, kind=SYSTEM, title="committed", body="", created_at=utcnow()))
    async with writer_holding_the_lock(sessions):
        titles = await asyncio.wait_for(read_scalars(sessions, select(Message.title)), QUICK)
    assert titles == ["committed"]


async def test_a_single_read_cannot_write(sessions):
    with pytest.raises(RuntimeError):
        await read_scalars(sessions, update(Message).values(title="changed").returning(Message.id))


async def test_writers_still_queue_for_the_lock_up_front(sessions, database_url):
    """On SQLite a writer takes the write lock when it begins (BEGIN IMMEDIATE), so two writers queue rather
    than one failing halfway; PostgreSQL locks rows, so there an unrelated writer just proceeds."""
    sqlite = database_url.startswith("sqlite")
    order = []
    async with writer_holding_the_lock(sessions):

        async def write() -> None:
            async with unit_of_work(sessions) as session:
                session.add(Message(member_id=None, kind=SYSTEM, title="second", body="", created_at=utcnow()))
                await session.flush()
                order.append("second writer wrote")

        task = asyncio.create_task(write())
        await asyncio.sleep(0.5)
        assert order == ([] if sqlite else ["second writer wrote"])
        order.append("first writer ends")
    await asyncio.wait_for(task, QUICK)
    assert set(order) == {"first writer ends", "second writer wrote"}
    async with sessions() as session:
        assert list(await session.scalars(select(Message.title))) == ["second"]


async def test_read_only_unit_of_work_refuses_to_write(sessions):
    with pytest.raises(RuntimeError, match="read-only"):
        async with unit_of_work(sessions, read_only=True) as session:
            session.add(Message(member_id=None, kind=SYSTEM, title="x", body="", created_at=utcnow()))
            await session.flush()
    with pytest.raises(RuntimeError, match="read-only"):
        async with unit_of_work(sessions, read_only=True) as session:
            await session.execute(update(Message).values(title="y"))
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0


async def test_list_requests_and_healthz_answer_while_a_writer_holds_the_lock(desktop, sessions, http, base_url):
    member = await desktop("reader01", "小王")
    timeout = aiohttp.ClientTimeout(total=QUICK)
    async with writer_holding_the_lock(sessions):
        async with http.get(base_url + "/healthz", timeout=timeout) as response:
            assert response.status == 200
        for path, netdisk in [("/backups", True), ("/cloud-shares", True), ("/messages", False), ("/me", False),
                              ("/netdisk", False), ("/shares", False), ("/friends", False)]:
            status, _, _ = await asyncio.wait_for(member.call("GET", path, netdisk=netdisk), QUICK)
            assert status == 200, path


async def test_download_answers_while_a_writer_holds_the_lock(desktop, sessions):
    """A download reads its manifest and chunk index in read-only units: another member's commit does not
    hold it up."""
    from tests.conftest import new_ledger_id

    member = await desktop("reader02", "小王")
    ledger_id, content = new_ledger_id(), bytes(range(256)) * 4096
    assert (await member.upload("backups", ledger_id, 2025, content, name="账套"))[0] == 201
    async with writer_holding_the_lock(sessions):
        status, body, _ = await asyncio.wait_for(member.download("backups", ledger_id, 2025), QUICK)
    assert status == 200 and body == content
