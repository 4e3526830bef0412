"""SQLite's in-process write queue (`eacct.db.WriteQueue`): writers of one process are served one at a time in
arrival order, wait holding no pooled connection, pass their turn on whatever ends them (commit, failure,
cancellation while waiting or inside), and a writer nested in another of the same task fails at once instead
of waiting for itself. Writers of another process still meet at SQLite's lock and its busy timeout.
PostgreSQL has no such queue.

These tests use a SQLite file of their own whatever database the suite runs on: the queue is SQLite's."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, text

from eacct.db import NestedWriteError, create_engine, in_writing_unit, make_session_factory, unit_of_work

QUICK = 3.0  # seconds; anything waiting wrongly here waits for ever (or for the 60 s busy timeout)


@pytest.fixture
async def sqlite_url(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}"
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE log (id INTEGER PRIMARY KEY, who TEXT NOT NULL)"))
    await engine.dispose()
    return url


@pytest.fixture
async def engine(sqlite_url):
    engine = create_engine(sqlite_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine):
    return make_session_factory(engine)


async def logged(sessions) -> list[str]:
    async with unit_of_work(sessions, read_only=True) as session:
        return list(await session.scalars(text("SELECT who FROM log ORDER BY id")))


async def log(session, who: str) -> None:
    await session.execute(text("INSERT INTO log (who) VALUES (:who)"), {"who": who})


async def until(condition) -> None:
    async with asyncio.timeout(QUICK):
        while not condition():
            await asyncio.sleep(0.005)


class Holder:
    """A writer inside its unit of work (it has written) until `release()`, or until it fails with `fail()`."""

    def __init__(self, sessions, who: str = "holder") -> None:
        self.inside, self.leave, self.failure = asyncio.Event(), asyncio.Event(), None
        self.task = asyncio.create_task(self._run(sessions, who))

    async def _run(self, sessions, who: str) -> None:
        async with unit_of_work(sessions) as session:
            await log(session, who)
            self.inside.set()
            await self.leave.wait()
            if self.failure is not None:
                raise self.failure

    async def entered(self) -> Holder:
        await asyncio.wait_for(self.inside.wait(), QUICK)
        return self

    def release(self) -> None:
        self.leave.set()

    def fail(self, failure: BaseException) -> None:
        self.failure = failure
        self.leave.set()


async def writer(sessions, who: str) -> None:
    async with unit_of_work(sessions) as session:
        await log(session, who)


async def test_sqlite_writers_are_served_in_arrival_order(sessions):
    holder = await Holder(sessions).entered()
    writers = []
    for number in range(8):
        writers.append(asyncio.create_task(writer(sessions, f"w{number}")))
        await until(lambda: sessions.write_queue.waiting() == len(writers))
    holder.release()
    await asyncio.wait_for(asyncio.gather(holder.task, *writers), QUICK)
    assert await logged(sessions) == ["holder"] + [f"w{number}" for number in range(8)]


async def test_waiting_writers_hold_no_pooled_connection(sessions, engine):
    holder = await Holder(sessions).entered()
    writers = [asyncio.create_task(writer(sessions, f"w{number}")) for number in range(12)]
    await until(lambda: sessions.write_queue.waiting() == 12)
    # 12 waiting writers, more than the pool's 5 connections: only the one inside has a connection.
    assert engine.pool.checkedout() == 1
    holder.release()
    await asyncio.wait_for(asyncio.gather(holder.task, *writers), QUICK)
    assert len(await logged(sessions)) == 13 and engine.pool.checkedout() == 0


@pytest.mark.parametrize("when", ["while_queued", "just_as_its_turn_came"])
async def test_a_writer_cancelled_while_waiting_releases_its_place(sessions, when):
    holder = await Holder(sessions).entered()
    cancelled = asyncio.create_task(writer(sessions, "cancelled"))
    await until(lambda: sessions.write_queue.waiting() == 1)
    behind = asyncio.create_task(writer(sessions, "behind"))
    await until(lambda: sessions.write_queue.waiting() == 2)
    if when == "while_queued":
        cancelled.cancel()
        holder.release()
    else:
        holder.release()
        await holder.task  # the turn has been handed to `cancelled`, which has not run yet
        cancelled.cancel()
    await asyncio.wait_for(asyncio.gather(holder.task, behind), QUICK)
    assert cancelled.cancelled()
    assert await logged(sessions) == ["holder", "behind"]
    await asyncio.wait_for(writer(sessions, "later"), QUICK)
    assert sessions.write_queue.waiting() == 0


async def test_a_writer_cancelled_inside_its_transaction_rolls_back_and_passes_the_turn_on(sessions, engine):
    holder = await Holder(sessions, "cancelled inside").entered()
    behind = asyncio.create_task(writer(sessions, "behind"))
    await until(lambda: sessions.write_queue.waiting() == 1)
    holder.task.cancel()
    await asyncio.wait_for(behind, QUICK)
    assert holder.task.cancelled()
    assert await logged(sessions) == ["behind"]
    assert engine.pool.checkedout() == 0


async def test_a_failure_inside_a_writing_unit_rolls_back_and_passes_the_turn_on(sessions):
    holder = await Holder(sessions, "failed").entered()
    behind = asyncio.create_task(writer(sessions, "behind"))
    await until(lambda: sessions.write_queue.waiting() == 1)
    holder.fail(ZeroDivisionError())
    with pytest.raises(ZeroDivisionError):
        await asyncio.wait_for(holder.task, QUICK)
    await asyncio.wait_for(behind, QUICK)
    assert await logged(sessions) == ["behind"]


async def test_a_failed_commit_passes_the_turn_on(sessions, engine):
    """The commit itself failing (a full disk, an I/O error) ends the turn like any other failure."""

    failures = [OSError("disk I/O error")]

    def failing_commit(_connection) -> None:
        if failures:  # only the holder's commit: `behind` may reach its own before the listener is removed
            raise failures.pop()

    holder = await Holder(sessions, "not committed").entered()
    behind = asyncio.create_task(writer(sessions, "behind"))
    await until(lambda: sessions.write_queue.waiting() == 1)
    event.listen(engine.sync_engine, "commit", failing_commit)
    try:
        holder.release()
        with pytest.raises(OSError):
            await asyncio.wait_for(holder.task, QUICK)
    finally:
        event.remove(engine.sync_engine, "commit", failing_commit)
    await asyncio.wait_for(behind, QUICK)
    assert await logged(sessions) == ["behind"]


async def test_a_writing_unit_nested_in_the_same_task_raises_instead_of_deadlocking(sessions):
    with pytest.raises(NestedWriteError):
        async with unit_of_work(sessions) as session:
            await log(session, "outer")
            async with unit_of_work(sessions) as inner:
                await log(inner, "inner")
    assert await logged(sessions) == []
    # Reads inside a writer are fine: they take no turn.
    async with unit_of_work(sessions) as session:
        await log(session, "outer")
        assert await logged(sessions) == []
    assert await logged(sessions) == ["outer"]


async def test_a_writer_of_another_process_is_waited_for_through_the_busy_timeout(sessions, sqlite_url):
    """Another engine on the same file stands for another process: it has a queue of its own, so its writer
    meets ours at SQLite's lock, where BEGIN IMMEDIATE waits (busy timeout) rather than failing."""
    other_engine = create_engine(sqlite_url)
    try:
        other = make_session_factory(other_engine)
        holder = await Holder(other, "other process").entered()
        ours = asyncio.create_task(writer(sessions, "ours"))
        await asyncio.sleep(0.3)
        assert not ours.done() and sessions.write_queue.waiting() == 0  # it waits inside SQLite, not in our queue
        holder.release()
        await asyncio.wait_for(asyncio.gather(holder.task, ours), QUICK)
    finally:
        await other_engine.dispose()
    assert await logged(sessions) == ["other process", "ours"]


async def test_read_only_units_do_not_wait_in_the_write_queue(sessions):
    holder = await Holder(sessions).entered()
    assert await asyncio.wait_for(logged(sessions), QUICK) == []  # the holder's row is not committed yet
    holder.release()
    await holder.task


def test_postgresql_writers_do_not_queue_in_process():
    """PostgreSQL writers wait for the rows they lock, not for one database-wide lock: no queue there."""
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1/none")  # never connects
    assert make_session_factory(engine).write_queue is None


async def test_a_writing_unit_nested_in_the_same_task_raises_on_the_suites_database_too(database_url, db_schema):
    """PostgreSQL has no write queue, but a nested writing unit is refused there as well, so a nesting that only
    PostgreSQL runs reach is found by its test run before it deadlocks a SQLite server."""
    suite_engine = create_engine(database_url, schema=db_schema)
    try:
        suite = make_session_factory(suite_engine)
        with pytest.raises(NestedWriteError):
            async with unit_of_work(suite):
                async with unit_of_work(suite):
                    pass
    finally:
        await suite_engine.dispose()


async def test_a_task_started_inside_a_writing_unit_is_not_inside_it(sessions):
    """Work a unit starts in the background (after-commit notices, pack uploads) writes in units of its own."""
    async with unit_of_work(sessions) as session:
        await log(session, "outer")
        background = asyncio.create_task(writer(sessions, "background"))
        assert in_writing_unit()
    await asyncio.wait_for(background, QUICK)
    assert not in_writing_unit()
    assert await logged(sessions) == ["outer", "background"]
