"""`eacct.db.after_commit`: work that must happen only once a transaction is durable (WeChat messages, rule 18)
runs after the commit, in order, and never for what rolled back — savepoints included."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from eacct.db import after_commit, unit_of_work, utcnow
from eacct.share.models import Message
from eacct.share.notify import SYSTEM


def note(session, title: str) -> None:
    session.add(Message(member_id=None, kind=SYSTEM, title=title, body="", created_at=utcnow()))


async def titles(sessions) -> list[str]:
    async with sessions() as session:
        return list(await session.scalars(select(Message.title).order_by(Message.id)))


async def test_callbacks_run_in_order_once_the_transaction_has_committed(sessions):
    ran = []
    async with unit_of_work(sessions) as session:
        note(session, "a")
        after_commit(session, lambda: ran.append(1))
        await session.flush()
        after_commit(session, lambda: ran.append(2))
        assert ran == []
    assert ran == [1, 2]
    assert await titles(sessions) == ["a"]


async def test_callbacks_are_dropped_when_the_transaction_rolls_back(sessions):
    ran = []
    with pytest.raises(ZeroDivisionError):
        async with unit_of_work(sessions) as session:
            note(session, "a")
            after_commit(session, lambda: ran.append(1))
            await session.flush()
            1 / 0
    assert ran == [] and await titles(sessions) == []


async def test_a_rolled_back_savepoint_drops_only_its_own_callbacks(sessions):
    ran = []
    async with unit_of_work(sessions) as session:
        after_commit(session, lambda: ran.append("outer"))
        with pytest.raises(ZeroDivisionError):
            async with session.begin_nested():
                note(session, "undone")
                after_commit(session, lambda: ran.append("undone"))
                async with session.begin_nested():  # released, but inside the savepoint that rolls back
                    after_commit(session, lambda: ran.append("undone too"))
                await session.flush()
                1 / 0
        async with session.begin_nested():
            note(session, "kept")
            after_commit(session, lambda: ran.append("kept"))
        assert ran == []  # releasing a savepoint is not a commit
        after_commit(session, lambda: ran.append("last"))
    assert ran == ["outer", "kept", "last"]
    assert await titles(sessions) == ["kept"]


async def test_callbacks_of_a_session_that_never_commits_do_not_leak_into_its_next_transaction(sessions):
    ran = []
    async with sessions() as session:
        await session.begin()
        after_commit(session, lambda: ran.append("rolled back"))
        await session.rollback()
        await session.begin()
        after_commit(session, lambda: ran.append("closed"))
        await session.close()
        await session.begin()
        after_commit(session, lambda: ran.append("committed"))
        note(session, "a")
        await session.commit()  # an explicit commit works like unit_of_work's
    assert ran == ["committed"]


async def test_a_failing_callback_neither_undoes_the_commit_nor_stops_the_others(sessions, caplog):
    ran = []

    def broken() -> None:
        raise RuntimeError("boom")

    async with unit_of_work(sessions) as session:
        note(session, "a")
        after_commit(session, broken)
        after_commit(session, lambda: ran.append("after"))
    assert ran == ["after"] and await titles(sessions) == ["a"]
    assert "after-commit callback" in caplog.text and "boom" in caplog.text


async def test_after_commit_needs_a_transaction(sessions):
    async with sessions() as session:
        with pytest.raises(RuntimeError):
            after_commit(session, lambda: None)
        assert await session.scalar(select(func.count()).select_from(Message)) == 0
