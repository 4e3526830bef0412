"""Start-up checks for the commands: each setting that keeps the service from starting (a port in use, a
database that cannot be reached, a storage folder that cannot be written, …) becomes one `SettingError`
naming the setting and the reason, which the command prints as one line instead of a traceback."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from eacct.config import Settings
from eacct.db import engine_for
from eacct.storage import BlobStore, LocalBlobStore, open_blob_store

__all__ = ["SettingError", "bind_listeners", "check_settings", "open_database", "open_storage"]

# Drivers the service runs on: both are asyncio drivers (a sync one, e.g. `sqlite:///x.db`, cannot serve).
SUPPORTED_DATABASES = {("sqlite", "aiosqlite"), ("postgresql", "asyncpg")}
DATABASE_URL_FORM = "sqlite+aiosqlite:///<文件路径> 或 postgresql+asyncpg://<用户>@<主机>/<数据库>"
# An unreachable database host must not keep start-up waiting for the driver's own (long) timeout.
DATABASE_CONNECT_SECONDS = 15.0


class SettingError(Exception):
    """A setting that keeps a command from running; `str()` is the one line shown to the operator."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting = setting
        self.reason = reason


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error (a driver's own exception inside SQLAlchemy's wrappers)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc.__cause__
        if inner is None:
            break
        exc = inner
    return exc


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def check_settings(settings: Settings) -> None:
    """Settings that are wrong on their own, before anything is opened."""
    try:
        settings.trusted_proxy_networks()
    except ValueError as exc:
        raise SettingError("EACCT_TRUSTED_PROXIES", f"不是 IP 地址或网段的列表：{exc}") from None
    if not 0 <= settings.port <= 65535:
        raise SettingError("EACCT_PORT", f"端口必须在 0–65535 之间，而不是 {settings.port}")


def bind_listeners(settings: Settings, *, reuse_port: bool = False) -> list[socket.socket]:
    """Bind (not yet listen on) EACCT_HOST:EACCT_PORT, one socket per address the host name has; with
    `reuse_port`, several worker processes bind the same port and the kernel spreads connections over them."""
    host, port = settings.host, settings.port
    check_settings(settings)
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SettingError("EACCT_HOST", f"无法解析主机名 {host!r}（{exc.strerror}）") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # Like asyncio's create_server: a restart may bind while old connections linger in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise
                # Like asyncio: an address family this machine has not enabled (e.g. ::1 without IPv6).
                sockets.pop().close()
        if not sockets:
            raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SettingError("EACCT_PORT", f"端口 {port} 已被占用（{host}:{port}: {exc.strerror}）") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise SettingError("EACCT_PORT", f"无权使用端口 {port}（{exc.strerror}）") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise SettingError("EACCT_HOST", f"本机没有地址 {host}（{exc.strerror}）") from None
        raise SettingError("EACCT_HOST", f"无法在 {host}:{port} 上监听（{_one_line(exc)}）") from None
    return sockets


def open_storage(settings: Settings, *, probe_writes: bool = True) -> BlobStore:
    """The blob store EACCT_STORAGE_URL names; a local folder is checked to be writable."""
    try:
        blobs = open_blob_store(settings.storage_url, oss_access_key_id=settings.oss_access_key_id,
                                oss_access_key_secret=settings.oss_access_key_secret)
    except ValueError as exc:
        raise SettingError("EACCT_STORAGE_URL", f"不支持的存储地址（{_one_line(exc)}）；应为 file://<文件夹> 或 "
                                                "oss://<bucket>?endpoint=<url>") from None
    except OSError as exc:
        where = exc.filename or settings.storage_url
        raise SettingError("EACCT_STORAGE_URL", f"无法使用文件夹 {where}（{_one_line(exc)}）") from None
    if probe_writes and isinstance(blobs, LocalBlobStore):
        for folder in (blobs.root, blobs.spool_dir()):
            try:
                with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-"):
                    pass
            except OSError as exc:
                raise SettingError("EACCT_STORAGE_URL", f"文件夹 {folder} 不可写（{_one_line(exc)}）") from None
    return blobs


def _database_setting_error(settings: Settings, exc: BaseException) -> SettingError:
    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    cause = _root_cause(exc)
    if isinstance(cause, (TimeoutError, asyncio.TimeoutError)):
        reason = f"{DATABASE_CONNECT_SECONDS:.0f} 秒内连不上数据库 {shown}"
    elif isinstance(cause, socket.gaierror):
        reason = f"无法解析数据库主机名（{shown}：{cause.strerror}）"
    elif isinstance(cause, OSError) and not isinstance(exc, SQLAlchemyError):
        reason = f"无法连接或打开数据库 {shown}（{_one_line(cause)}）"
    else:
        reason = f"数据库 {shown} 不可用（{_one_line(cause)}）"
    return SettingError("EACCT_DATABASE_URL", reason)


async def _check_database(settings: Settings, engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        if settings.database_schema and engine.dialect.name == "postgresql":
            found = await connection.scalar(
                text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :name"),
                {"name": settings.database_schema})
            if not found:
                raise SettingError("EACCT_DATABASE_SCHEMA",
                                   f"数据库中没有 schema {settings.database_schema!r}（请先 CREATE SCHEMA）")


def _check_sqlite_file(settings: Settings, path: str) -> None:
    """Open the SQLite file once on this thread: a failure inside aiosqlite's worker thread would also print
    that thread's traceback after the loop has closed."""
    try:
        connection = sqlite3.connect(path, timeout=60)
        try:
            # WAL needs to write the file and create `-wal` beside it: a read-only folder fails here.
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise _database_setting_error(settings, exc) from None


async def open_database(settings: Settings, revision: str = "head", *, migrate: bool = True) -> AsyncEngine:
    """An engine for EACCT_DATABASE_URL, reachable and (unless `migrate` is off: a worker whose parent did it)
    migrated to `revision`; the caller disposes it."""
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        raise SettingError("EACCT_DATABASE_URL", f"不是有效的数据库地址；应为 {DATABASE_URL_FORM}") from None
    if (url.get_backend_name(), url.get_driver_name()) not in SUPPORTED_DATABASES:
        raise SettingError("EACCT_DATABASE_URL",
                           f"不支持的数据库驱动 {url.drivername!r}（需要异步驱动）；应为 {DATABASE_URL_FORM}")
    try:
        engine = engine_for(settings)
    except OSError as exc:  # SQLite: the data folder cannot be made
        folder = exc.filename or Path(url.database or "").parent
        raise SettingError("EACCT_DATABASE_URL", f"无法创建数据文件夹 {folder}（{_one_line(exc)}）") from None
    try:
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            _check_sqlite_file(settings, url.database)
        try:
            await asyncio.wait_for(_check_database(settings, engine), DATABASE_CONNECT_SECONDS)
        except (SQLAlchemyError, OSError, ImportError, asyncio.TimeoutError) as exc:
            raise _database_setting_error(settings, exc) from None
        # A failing migration on a reachable database is a bug, not a setting: it keeps its traceback.
        if migrate:
            from eacct.migrate import upgrade  # here: alembic stays out of processes that do not migrate

            await upgrade(engine, revision)
    except BaseException:
        await engine.dispose()
        raise
    return engine
