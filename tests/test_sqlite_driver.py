"""eacct/sqlite_driver.py: SQLAlchemy's aiosqlite adapter with one trip to the connection thread per statement."""

from __future__ import annotations

import aiosqlite
import pytest
from sqlalchemy import exc, text

from eacct.cli import run_serving
from eacct.db import create_engine


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
