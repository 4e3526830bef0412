"""Delta upload bodies: the client's delta format read against the version it builds on, its errors the server's."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.chunks.delta import read_delta
from eacct.chunks.errors import ChunkChecksumError, ChunkFormatError
from eacct.db import unit_of_work
from eacct.netdisk.models import Version, VersionManifest

__all__ = ["delta_entries"]


async def delta_entries(sessions: async_sessionmaker[AsyncSession], body: AsyncIterator[bytes], ledger_id: str,
                        year: int, if_match: str | None) -> AsyncIterator[tuple[list, int]]:
    """`read_delta` of a delta upload's body (built on the version `if_match` names), with the chunk format's
    errors turned into the server's."""

    async def base() -> bytes:
        return await _base_manifest(sessions, ledger_id, year, if_match)

    try:
        async for item in read_delta(body, base):
            yield item
    except ChunkChecksumError as exc:
        raise errors.ChecksumMismatch(str(exc)) from exc
    except ChunkFormatError as exc:
        raise errors.BadRequest(str(exc)) from exc


async def _base_manifest(sessions: async_sessionmaker[AsyncSession], ledger_id: str, year: int,
                         if_match: str | None) -> bytes:
    """The chunk list of the version a delta upload builds on (its If-Match)."""
    if if_match is None:
        raise errors.BadRequest("增量上传引用基准版本时需要 If-Match")
    async with unit_of_work(sessions, read_only=True) as session:
        entries = await session.scalar(
            select(VersionManifest.entries)
            .join(Version, Version.id == VersionManifest.version_id)
            .where(Version.public_id == if_match, Version.ledger_id == ledger_id, Version.year == year)
        )
    if entries is None:
        raise errors.VersionConflict("增量上传的基准版本已不存在，请先下载最新版本再上传")
    return entries
