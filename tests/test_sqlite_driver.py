"""eacct/sqlite_driver.py: SQLAlchemy's aiosqlite adapter with one trip to the connection thread per statement."""

from __future__ import annotations

import asyncio
import sqlite3
from types import SimpleNamespace

import aiosqlite
import pytest
from sqlalchemy import event, exc, text

from eacct.cli import run_serving
from eacct.db import (
    SQLITE_POOL, create_engine, driver_list_markers, driver_placeholders, execute_together, make_session_factory,
    read_scalars, unit_of_work,
)


@pytest.fixture
async def engine(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    yield engine
    await engine.dispose()


@pytest.fixture
def trips(monkeypatch):
    """Counts every function aiosqlite runs on a connection's thread."""
    counted = []
    original = aiosqlite.Connection._execute

    async def counting(self, fn, *args, **kwargs):
        counted.append(fn)
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return counted


async def test_each_statement_is_one_trip_to_the_connection_thread(engine, trips):
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))  # connects, begins
        before = len(trips)
        rows = (await connection.execute(text("SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3"))).all()
        await connection.execute(text("SELECT 4"))
        assert [r[0] for r in rows] == [1, 2, 3]
        assert len(trips) - before == 2  # SQLAlchemy's own adapter makes four per statement


async def test_rows_rowcount_lastrowid_and_executemany_are_those_of_sqlite3(engine):
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
        inserted = await connection.execute(text("INSERT INTO t (name) VALUES ('a')"))
        assert inserted.lastrowid == 1 and inserted.rowcount == 1
        many = await connection.execute(text("INSERT INTO t (name) VALUES (:name)"), [{"name": n} for n in "bcd"])
        assert many.rowcount == 3
        updated = await connection.execute(text("UPDATE t SET name = name || '!' WHERE id > 2"))
        assert updated.rowcount == 2
        result = await connection.execute(text("SELECT id, name FROM t ORDER BY id"))
        assert list(result.keys()) == ["id", "name"]
        assert [tuple(r) for r in result] == [(1, "a"), (2, "b"), (3, "c!"), (4, "d!")]
        assert (await connection.execute(text("SELECT name FROM t WHERE id = 99"))).first() is None


async def test_database_errors_arrive_as_sqlalchemy_errors_and_the_connection_stays_usable(engine):
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
        await connection.execute(text("INSERT INTO t (name) VALUES ('a')"))
    async with engine.connect() as connection:
        with pytest.raises(exc.IntegrityError):
            await connection.execute(text("INSERT INTO t (name) VALUES ('a')"))
        await connection.rollback()
        with pytest.raises(exc.OperationalError):
            await connection.execute(text("SELECT nothing FROM nowhere"))
        await connection.rollback()
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar() == 1


def test_serving_runs_on_uvloop():
    async def loop_module() -> str:
        import asyncio

        return type(asyncio.get_running_loop()).__module__

    assert run_serving(loop_module()).startswith("uvloop")


async def test_every_connection_is_durable_waits_for_locks_and_keeps_a_small_page_cache(engine):
    """WAL with full fsync, foreign keys, a minute's busy wait, and a 512 KiB private page cache per pooled
    connection (the operating system's cache of the file is shared by all of them)."""
    async with engine.connect() as connection:
        settings = [(await connection.execute(text(f"PRAGMA {name}"))).scalar()
                    for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "cache_size")]
    assert settings == ["wal", 2, 1, 60000, -512]


async def test_a_one_statement_unit_of_work_costs_two_trips_and_returning_its_connection_none(engine, trips):
    """BEGIN travels with the first statement; COMMIT is the second trip; the pool's reset of a connection with
    no transaction open makes none (SQLAlchemy's adapter: BEGIN, statement, COMMIT, ROLLBACK on return)."""
    sessions = make_session_factory(engine)
    async with unit_of_work(sessions, read_only=True) as session:
        await session.execute(text("SELECT 1"))  # connects first: counted from the next unit on
    for read_only in (True, False):
        before = len(trips)
        async with unit_of_work(sessions, read_only=read_only) as session:
            assert (await session.execute(text("SELECT 7"))).scalar() == 7
        assert len(trips) - before == 2
    before = len(trips)
    async with unit_of_work(sessions) as session:
        pass  # a unit that ran no statement began nothing: nothing to commit, nothing to roll back
    assert len(trips) == before


async def test_writes_together_begin_and_run_in_order_in_one_trip_with_their_row_counts(engine, trips):
    """A unit holding SQLite's write lock sends its writes together (`execute_together`), with a count among them."""
    sessions = make_session_factory(engine)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
    async with unit_of_work(sessions, read_only=True) as session:
        await session.execute(text("SELECT 1"))  # connects first: counted from the next unit on
    before = len(trips)
    async with unit_of_work(sessions) as session:
        counts = await execute_together(session, [
            ("INSERT INTO t (name) VALUES (?)", [("a",), ("b",), ("c",)]),
            ("UPDATE t SET name = name || '!' WHERE id > ?", (1,)),
            ("SELECT count(*) FROM t WHERE name LIKE ?", ("%!",)),
            ("DELETE FROM t WHERE name = ?", ("none such",)),
            ("SELECT name FROM t WHERE id > ?", (5,)),
        ])
        assert counts == [3, 2, 2, 0, None]
        assert len(trips) - before == 1  # with the unit's BEGIN IMMEDIATE
    assert len(trips) - before == 2  # and its COMMIT
    async with unit_of_work(sessions, read_only=True) as session:
        assert list(await session.scalars(text("SELECT name FROM t ORDER BY id"))) == ["a", "b!", "c!"]


async def test_writes_together_that_fail_raise_sqlalchemys_error_and_their_unit_rolls_back_whole(engine):
    sessions = make_session_factory(engine)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
        await connection.execute(text("INSERT INTO t (name) VALUES ('a')"))
    with pytest.raises(exc.IntegrityError):
        async with unit_of_work(sessions) as session:
            await execute_together(session, [("INSERT INTO t (name) VALUES (?)", ("b",)),
                                             ("INSERT INTO t (name) VALUES (?)", ("a",))])
    async with unit_of_work(sessions) as session:  # the connection is usable, and holds no half of the unit
        assert await execute_together(session, [("UPDATE t SET name = ?", ("z",))]) == [1]
    async with unit_of_work(sessions, read_only=True) as session:
        assert list(await session.scalars(text("SELECT name FROM t"))) == ["z"]
        with pytest.raises(RuntimeError):
            await execute_together(session, [("DELETE FROM t", ())])


async def test_a_single_read_is_one_trip_and_leaves_no_transaction_open(engine, trips):
    sessions = make_session_factory(engine)
    assert await read_scalars(sessions, text("SELECT 1")) == [1]  # connects first
    before = len(trips)
    assert await read_scalars(sessions, text("SELECT 2 UNION ALL SELECT 3")) == [2, 3]
    assert len(trips) - before == 1
    async with engine.connect() as connection:
        assert not (await connection.get_raw_connection()).driver_connection._conn.in_transaction


async def test_a_deferred_begin_still_opens_the_transaction_its_unit_asked_for(engine, tmp_path):
    """A writer's first statement takes the write lock (BEGIN IMMEDIATE) and holds it until the commit; a
    reader's first statement pins its snapshot (deferred BEGIN) until the unit ends."""
    sessions = make_session_factory(engine)
    async with unit_of_work(sessions) as session:
        await session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    other = sqlite3.connect(tmp_path / "driver.db", timeout=0, isolation_level=None)
    try:
        async with unit_of_work(sessions) as session:
            await session.execute(text("SELECT count(*) FROM t"))  # reads only, but the unit may write
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        async with unit_of_work(sessions, read_only=True) as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 0
            other.execute("INSERT INTO t DEFAULT VALUES")  # committed by another connection meanwhile
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 0  # same snapshot
        async with unit_of_work(sessions, read_only=True) as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 1
    finally:
        other.close()


async def test_a_begin_that_fails_fails_its_first_statement_and_leaves_the_connection_usable(engine, tmp_path):
    sessions = make_session_factory(engine)
    async with unit_of_work(sessions) as session:
        await session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    async with engine.connect() as connection:  # the pool's one connection: fail at once instead of waiting
        await connection.execute(text("PRAGMA busy_timeout=0"))
        await connection.commit()
    other = sqlite3.connect(tmp_path / "driver.db", timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(exc.OperationalError, match="locked"):
            async with unit_of_work(sessions) as session:
                await session.execute(text("INSERT INTO t DEFAULT VALUES"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with unit_of_work(sessions) as session:
        await session.execute(text("INSERT INTO t DEFAULT VALUES"))
    async with unit_of_work(sessions, read_only=True) as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 1


async def test_a_streamed_result_runs_inside_the_transaction_its_unit_began(engine, tmp_path):
    """A server-side cursor runs its statement through aiosqlite itself: the waiting BEGIN goes first."""
    sessions = make_session_factory(engine)
    async with unit_of_work(sessions) as session:
        await session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        await session.execute(text("INSERT INTO t (id) VALUES (1), (2), (3)"))
    other = sqlite3.connect(tmp_path / "driver.db", timeout=0, isolation_level=None)
    try:
        async with unit_of_work(sessions, read_only=True) as session:
            result = await session.stream(text("SELECT id FROM t ORDER BY id"))
            other.execute("INSERT INTO t (id) VALUES (4)")
            assert [row[0] async for row in result] == [1, 2, 3]
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 3
    finally:
        other.close()


@pytest.mark.parametrize("style,markers", [("qmark", "?, ?, ?"), ("numeric_dollar", "$1, $2, $3")])
def test_driver_placeholders_are_in_the_drivers_own_style(style, markers):
    assert driver_placeholders(SimpleNamespace(paramstyle=style), 3) == markers


@pytest.mark.parametrize("style,markers", [("qmark", ["?", "?", "?, ?, ?"]),
                                           ("numeric_dollar", ["$1", "$2", "$3, $4, $5"])])
def test_driver_list_markers_are_the_singles_then_one_joined_list(style, markers):
    assert driver_list_markers(SimpleNamespace(paramstyle=style), 2, 3) == markers


def test_driver_placeholders_refuse_a_style_they_do_not_know():
    with pytest.raises(NotImplementedError):
        driver_placeholders(SimpleNamespace(paramstyle="pyformat"), 2)


async def test_a_unit_that_need_not_be_durable_skips_the_fsync_and_no_later_unit_inherits_that(engine, trips):
    """An upload's in-progress writes (lease, pending packs and rows, claims) commit at synchronous=NORMAL: no
    fsync while they hold the write lock. Every other writing unit runs at FULL, on whichever pooled connection,
    after a non-durable unit that ran no statement or failed midway; the setting costs no trip of its own."""
    sessions = make_session_factory(engine)

    async def synchronous(durable: bool) -> int:
        async with unit_of_work(sessions, durable=durable) as session:
            return (await session.execute(text("PRAGMA synchronous"))).scalar()

    assert await synchronous(True) == 2  # connects first: trips counted from here
    for _ in range(4):
        before = len(trips)
        assert await synchronous(False) == 1
        assert len(trips) - before == 2
        assert await synchronous(True) == 2
        async with unit_of_work(sessions, durable=False):
            pass
        assert await synchronous(True) == 2
        with pytest.raises(RuntimeError):
            async with unit_of_work(sessions, durable=False) as session:
                await session.execute(text("SELECT 1"))
                raise RuntimeError("failed midway")
        assert await synchronous(True) == 2


async def test_connections_opened_for_a_burst_are_kept_for_the_next_one(engine):
    """Each SQLite connection is a thread, a file open and five PRAGMAs: a busy server that closed the ones a burst
    opened, as SQLAlchemy's default pool does beyond five, opened them again a few times a second."""
    opened = []
    event.listen(engine.sync_engine, "connect", lambda *_: opened.append(1))
    sessions = make_session_factory(engine)
    burst = SQLITE_POOL - 2
    release = asyncio.Event()

    async def reader(arrived: list) -> None:
        async with unit_of_work(sessions, read_only=True) as session:
            await session.execute(text("SELECT 1"))
            arrived.append(1)
            await release.wait()

    for _ in range(2):
        arrived: list = []
        release.clear()
        readers = [asyncio.create_task(reader(arrived)) for _ in range(burst)]
        while len(arrived) < burst:  # every reader holds its connection at once
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*readers)
    assert len(opened) == burst
