"""One provider of what the service runs on — the database engine, its session factory and the blob store —
used by `create_app` and by every `eacct` command (serve, gc, member create, wechat menu …), so the server
and the commands open them from the same settings in the same way and close them in the same order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from eacct.config import Settings
from eacct.db import engine_for, make_session_factory
from eacct.startup import open_database, open_storage
from eacct.storage import BlobStore, open_blob_store

__all__ = ["Resources", "provide"]


@dataclass(frozen=True)
class Resources:
    """What a server or command works with; `blobs` is None when it asked for no storage."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    blobs: BlobStore | None


@asynccontextmanager
async def provide(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    blobs: BlobStore | None = None,
    storage: bool = True,
    checked: bool = True,
    migrate: bool = True,
    revision: str = "head",
    probe_writes: bool = False,
) -> AsyncIterator[Resources]:
    """Open the blob store (unless `storage` is off), then the database, yield them, and close what was opened
    here (a given `engine` or `blobs` is used, not closed). `checked`: a bad setting is one-line `SettingError`
    and the database is migrated to `revision` when `migrate`; unchecked opens them as they are (the app,
    whose caller checked)."""
    own_blobs = storage and blobs is None
    if own_blobs:
        blobs = open_storage(settings, probe_writes=probe_writes) if checked else open_blob_store(
            settings.storage_url,
            oss_access_key_id=settings.oss_access_key_id,
            oss_access_key_secret=settings.oss_access_key_secret,
        )
    try:
        own_engine = engine is None
        if own_engine:
            engine = await open_database(settings, revision, migrate=migrate) if checked else engine_for(settings)
        try:
            yield Resources(settings, engine, make_session_factory(engine), blobs)
        finally:
            if own_engine:
                await engine.dispose()
    finally:
        if own_blobs:
            await blobs.close()
