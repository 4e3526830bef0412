"""Shared fixtures: a database per test (SQLite file or a PostgreSQL schema per run), a blob store, the real
app on a free port, and a small HTTP client that speaks API.md the way the desktop program does.

Set EACCT_TEST_DATABASE_URL=postgresql+asyncpg://… to run every database test on PostgreSQL; each run gets
its own schema (dropped at the end) and each test starts from empty tables. Set EACCT_TEST_STORAGE=oss to
keep the blobs in the OSS backend (against a local OSS-protocol server) instead of a local folder. Set
EACCT_TEST_SERVERS=2 to serve every live-server test from two real `eacct serve` processes behind a round-robin
proxy, with `eacct gc` looping in a third (tests/several_servers.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from sqlalchemy import text

from eacct.app import create_app
from eacct.config import Settings
from eacct.db import create_engine, make_session_factory
from eacct.migrate import upgrade
from eacct.models import Base
from eacct.storage import LocalBlobStore

POSTGRES_URL = os.environ.get("EACCT_TEST_DATABASE_URL", "")
STORAGE = os.environ.get("EACCT_TEST_STORAGE", "local")
SERVERS = int(os.environ.get("EACCT_TEST_SERVERS", "1"))
# The environment a server subprocess needs to reach a test's OSS blob store, by id() of the store object.
OSS_ENV: dict[int, dict[str, str]] = {}


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def database_template(tmp_path_factory) -> dict:
    """Migrate once per run: a template SQLite file to copy, or a fresh PostgreSQL schema."""
    if POSTGRES_URL:
        schema = f"eacct_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"

        async def create() -> None:
            engine = create_engine(POSTGRES_URL)
            async with engine.begin() as connection:
                await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            await engine.dispose()
            engine = create_engine(POSTGRES_URL, schema=schema)
            await upgrade(engine)
            await engine.dispose()

        async def drop() -> None:
            engine = create_engine(POSTGRES_URL)
            async with engine.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            await engine.dispose()

        run(create())
        yield {"url": POSTGRES_URL, "schema": schema}
        run(drop())
    else:
        template = tmp_path_factory.mktemp("db") / "template.db"

        async def create() -> None:
            engine = create_engine(f"sqlite+aiosqlite:///{template}")
            await upgrade(engine)
            await engine.dispose()

        run(create())
        yield {"template": template}


@pytest.fixture
def database_url(database_template, tmp_path) -> str:
    if "template" in database_template:
        target = tmp_path / "eacct.db"
        shutil.copyfile(database_template["template"], target)
        return f"sqlite+aiosqlite:///{target}"
    return database_template["url"]


@pytest.fixture
def db_schema(database_template) -> str | None:
    return database_template.get("schema")


async def empty_tables(engine) -> None:
    """PostgreSQL tests share one schema per run: each test leaves it empty for the next."""
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
async def engine(database_url, db_schema):
    engine = create_engine(database_url, schema=db_schema)
    yield engine
    if db_schema:
        await empty_tables(engine)
    await engine.dispose()


@pytest.fixture
def cli_env(database_url, db_schema, tmp_path, monkeypatch) -> dict[str, str]:
    """Environment for running the `eacct` command against this test's database (for sync tests)."""
    env = {
        "EACCT_DATABASE_URL": database_url,
        "EACCT_DATABASE_SCHEMA": db_schema or "",
        "EACCT_STORAGE_URL": f"file://{tmp_path / 'blobs'}",
        "EACCT_ARGON2_TIME_COST": "1",
        "EACCT_ARGON2_MEMORY_KIB": "1024",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env
    if db_schema:

        async def clean() -> None:
            engine = create_engine(database_url, schema=db_schema)
            await empty_tables(engine)
            await engine.dispose()

        run(clean())


@pytest.fixture
def sessions(engine):
    return make_session_factory(engine)


@pytest.fixture
async def blobs(tmp_path):
    """The blob store of the run: a local folder, or with EACCT_TEST_STORAGE=oss the OSS backend talking to a
    local OSS-protocol server (tests/oss_server.py)."""
    if STORAGE != "oss":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    from eacct.storage.oss import OssBlobStore, RetryPolicy
    from tests.oss_server import start_oss_server

    _, server = await start_oss_server("LTAI5tTestKey", "test-secret", "eacct-test")
    store = OssBlobStore.from_url(server.storage_url(region="cn-hangzhou", prefix="eacct/"), "LTAI5tTestKey",
                                  "test-secret", retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01),
                                  multipart_threshold=512 * 1024, part_size=256 * 1024)
    OSS_ENV[id(store)] = {
        "EACCT_STORAGE_URL": server.storage_url(region="cn-hangzhou", prefix="eacct/"),
        "EACCT_OSS_ACCESS_KEY_ID": "LTAI5tTestKey",
        "EACCT_OSS_ACCESS_KEY_SECRET": "test-secret",
    }
    try:
        yield store
    finally:
        OSS_ENV.pop(id(store), None)
        await store.close()
        await server.close()


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    return Settings(
        database_url=database_url,
        storage_url=f"file://{tmp_path / 'blobs'}",
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        pack_target_bytes=1024 * 1024,
    )


@pytest.fixture
async def make_server(aiohttp_server, engine, db_schema, tmp_path, blobs):
    """Start the real app on 127.0.0.1 and a free port; returns its base URL. With EACCT_TEST_SERVERS=N, N
    `eacct serve` processes on the same database and blob store behind a round-robin proxy, gc looping."""
    started = []

    async def start(settings: Settings, blobs=None) -> str:
        if SERVERS > 1:
            from tests.several_servers import SeveralServers

            group = SeveralServers(settings, count=SERVERS, schema=db_schema, storage_env=OSS_ENV.get(id(blobs)),
                                   log_dir=tmp_path / f"servers{len(started)}")
            started.append(group)
            return await group.start()
        app = create_app(settings, engine=engine, blobs=blobs, collect_garbage_on_start=False)
        server = await aiohttp_server(app, host="127.0.0.1")
        return str(server.make_url("")).rstrip("/")

    yield start
    for group in started:
        await group.stop()
        assert group.gc.failures() == 0, (group.gc.log_path.read_text())[-2000:]


@pytest.fixture
async def base_url(make_server, settings, blobs) -> str:
    return await make_server(settings, blobs)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Desktop:
    """One member at the desktop program: speaks API.md over HTTP."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, account: str, nickname: str) -> None:
        self.http = http
        self.base = base_url + "/api/v1"
        self.account = account
        self.nickname = nickname
        self.password = f"pw-{account}"
        self.netdisk_password = f"disk-{account}"
        self.token = ""
        self.netdisk_token = ""
        self.id = 0

    def headers(self, netdisk: bool = False, **extra: str) -> dict[str, str]:
        token = self.netdisk_token if netdisk else self.token
        return {"Authorization": f"Bearer {token}", **extra}

    async def call(self, method: str, path: str, *, netdisk: bool = False, json=None, headers=None, data=None):
        """Send a request; return (status, parsed JSON or None, response headers)."""
        async with self.http.request(method, self.base + path, json=json, data=data,
                                     headers=self.headers(netdisk, **(headers or {}))) as response:
            body = await response.read()
            parsed = None
            if body and response.content_type == "application/json":
                parsed = await response.json()
            return response.status, parsed, response.headers

    async def register(self) -> "Desktop":
        status, body, _ = await self.call("POST", "/members", json={
            "account": self.account, "password": self.password, "nickname": self.nickname})
        assert status == 201, body
        self.id = body["id"]
        status, body, _ = await self.call("POST", "/sessions", json={"account": self.account, "password": self.password})
        assert status == 201, body
        self.token = body["token"]
        return self

    async def open_netdisk(self) -> "Desktop":
        status, body, _ = await self.call("POST", "/netdisk", json={
            "password": self.netdisk_password,
            "questions": [{"question": "我的出生地?", "answer": "杭州"}, {"question": "第一所学校?", "answer": "Yuying"}],
        })
        assert status == 201, body
        status, body, _ = await self.call("POST", "/netdisk/unlock", json={"password": self.netdisk_password})
        assert status == 201, body
        self.netdisk_token = body["netdisk_token"]
        return self

    async def upload(self, side: str, ledger_id: str, year: int, content: bytes, *, remark: str = "",
                     name: str | None = None, if_match: str | None = None, sha256: str | None = None,
                     client_version: str = "e会计 6.0"):
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Content-SHA256": sha256 or hashlib.sha256(content).hexdigest(),
            "X-Remark": quote(remark),
            "X-Client-Version": quote(client_version),
        }
        if name is not None:
            headers["X-Ledger-Name"] = quote(name)
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        return await self.call("POST", f"/{side}/{ledger_id}/years/{year}/versions", netdisk=True,
                               data=content, headers=headers)

    async def download(self, side: str, ledger_id: str, year: int, version: str = "latest", headers=None):
        async with self.http.get(f"{self.base}/{side}/{ledger_id}/years/{year}/versions/{version}/content",
                                 headers=self.headers(True, **(headers or {}))) as response:
            return response.status, await response.read(), response.headers


@pytest.fixture
def desktop(http, base_url):
    """Make members: `await desktop("13564271675", "小王")` registers, logs in and opens the netdisk."""

    async def make(account: str, nickname: str, *, netdisk: bool = True) -> Desktop:
        member = await Desktop(http, base_url, account, nickname).register()
        if netdisk:
            await member.open_netdisk()
        return member

    return make


@pytest.fixture
def chunk_checks(monkeypatch) -> list[int]:
    """The chunks the store hashes to verify them as it reads them back, one entry (a count) per native call."""
    from eacct.netdisk.store import read as store_read

    checks: list[int] = []
    real_spans = store_read.sha256_spans

    def counting_spans(data, sizes):
        checks.append(len(sizes))
        return real_spans(data, sizes)

    monkeypatch.setattr(store_read, "sha256_spans", counting_spans)
    return checks


def new_ledger_id() -> str:
    return str(uuid.uuid4())


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
