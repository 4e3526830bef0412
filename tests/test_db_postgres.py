"""PostgreSQL connections (eacct/db.py): read-only units without BEGIN/COMMIT, idle connections pinged before
use, connections in steady use not pinged, and a connection that died under a request answered as 503 busy.
PostgreSQL only (CI runs the suite on PostgreSQL too)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text

from eacct.app import create_app
from eacct.db import create_engine, make_session_factory, unit_of_work
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL only: run with EACCT_TEST_DATABASE_URL")


@pytest.fixture
def simple_queries(monkeypatch):
    """Every simple-protocol statement asyncpg sends (BEGIN, COMMIT, ROLLBACK …)."""
    sent = []
    original = asyncpg.connection.Connection.execute

    async def recording(self, query, *args, **kwargs):
        sent.append(query.strip().rstrip(";").upper())
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "execute", recording)
    return sent


@pytest.fixture
def pings(monkeypatch):
    """Counts the pings SQLAlchemy's asyncpg adapter sends."""
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

    counted = []
    original = AsyncAdapt_asyncpg_connection._async_ping

    async def counting(self):
        counted.append(1)
        return await original(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "_async_ping", counting)
    return counted


async def backend_pid(sessions) -> int:
    async with unit_of_work(sessions, read_only=True) as session:
        return await session.scalar(text("SELECT pg_backend_pid()"))


async def terminate(pid: int) -> None:
    killer = create_engine(POSTGRES_URL)
    try:
        async with killer.connect() as connection:
            assert await connection.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await killer.dispose()
    await asyncio.sleep(0.1)  # the backend is gone once the server has processed it


async def test_a_read_only_unit_sends_no_begin_or_commit_and_a_writing_one_does(engine, sessions, simple_queries):
    await backend_pid(sessions)  # connect first: connecting asks the server a few things of its own
    simple_queries.clear()
    async with unit_of_work(sessions, read_only=True) as session:
        assert await session.scalar(text("SELECT 1")) == 1
        assert await session.scalar(text("SELECT 2")) == 2
    assert [q for q in simple_queries if q.startswith(("BEGIN", "COMMIT"))] == []
    async with unit_of_work(sessions) as session:
        await session.execute(text("SELECT 3"))
    assert [q.split()[0] for q in simple_queries] == ["BEGIN", "COMMIT"]


async def test_connections_in_steady_use_are_not_pinged_and_idle_ones_are(db_schema, pings):
    engine = create_engine(POSTGRES_URL, schema=db_schema, ping_idle_seconds=0.3)
    sessions = make_session_factory(engine)
    try:
        for _ in range(20):
            await backend_pid(sessions)
        assert pings == []
        await asyncio.sleep(0.4)
        await backend_pid(sessions)
        assert len(pings) == 1
    finally:
        await engine.dispose()


async def test_an_idle_connection_that_died_is_replaced_before_anyone_uses_it(db_schema):
    engine = create_engine(POSTGRES_URL, schema=db_schema, ping_idle_seconds=0.3)
    sessions = make_session_factory(engine)
    try:
        first = await backend_pid(sessions)
        await terminate(first)  # a database restart, a proxy's idle cut
        await asyncio.sleep(0.4)
        assert await backend_pid(sessions) != first
    finally:
        await engine.dispose()


async def test_a_connection_that_died_under_a_request_is_503_busy_and_the_next_request_works(
        aiohttp_server, settings, blobs, db_schema, http):
    engine = create_engine(POSTGRES_URL, schema=db_schema)  # in steady use: not pinged
    try:
        app = create_app(settings, engine=engine, blobs=blobs, collect_garbage_on_start=False)
        base = str((await aiohttp_server(app, host="127.0.0.1")).make_url("")).rstrip("/")
        assert (await http.get(base + "/healthz")).status == 200
        await terminate(await backend_pid(make_session_factory(engine)))  # the one pooled connection
        async with http.get(base + "/healthz") as response:
            assert response.status == 503
            body = await response.json()
            assert body["error"]["code"] == "busy" and response.headers["Retry-After"] == "1"
        async with http.get(base + "/healthz") as response:
            assert response.status == 200
    finally:
        await engine.dispose()
