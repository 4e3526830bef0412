"""Reading a version back: manifest → chunk runs in packs → ranged reads → verified, decompressed bytes."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable

import zstandard
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.db import unit_of_work
from eacct.storage import BlobNotFound, BlobStore, BlobStoreError
from eacct.chunks.manifest import iter_manifest
from eacct.netdisk.models import Chunk, Pack, Version, VersionManifest
from eacct.netdisk.store.common import DOWNLOAD_BLOCKS_AHEAD, MAX_COALESCED_READ, READ_WINDOW, log, read_ahead

__all__ = ["read_entries", "read_version"]


def read_version(
    sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, version: Version, start: int = 0, end: int | None = None
) -> AsyncIterator[bytes]:
    """Yield bytes `start`..`end` (exclusive) of a version, reading adjacent chunks of a pack in one request;
    the next blocks are fetched while the caller sends the current one."""
    return read_ahead(_read_version(sessions, blobs, version, start, end), DOWNLOAD_BLOCKS_AHEAD)


async def _read_version(
    sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, version: Version, start: int, end: int | None
) -> AsyncIterator[bytes]:
    async with unit_of_work(sessions, read_only=True) as session:
        entries = await session.scalar(select(VersionManifest.entries).where(VersionManifest.version_id == version.id))
    if entries is None:
        raise errors.NotFound("该版本已不存在")
    async for block in read_entries(sessions, blobs, version.owner_id, entries, start, end):
        yield block


Locator = Callable[[bytes], "tuple[str, int, int] | None"]


async def read_entries(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, owner_id: int, entries: bytes,
                       start: int, end: int | None,
                        local: Locator | None = None) -> AsyncIterator[bytes]:
    """Bytes `start`..`end` of the file a manifest describes; `local` places chunks not (yet) in the index."""
    end = sum(size for _, size in iter_manifest(entries)) if end is None else end
    position = 0
    window: list[tuple[bytes, int, int, int]] = []  # digest, raw size, skip, take
    for digest, raw_size in iter_manifest(entries):
        chunk_start, position = position, position + raw_size
        if position <= start:
            continue
        if chunk_start >= end:
            break
        skip = max(start - chunk_start, 0)
        take = min(end, position) - chunk_start - skip
        window.append((digest, raw_size, skip, take))
        if len(window) >= READ_WINDOW:
            async for block in _read_window(sessions, blobs, owner_id, window, local):
                yield block
            window = []
    if window:
        async for block in _read_window(sessions, blobs, owner_id, window, local):
            yield block


async def _read_window(sessions, blobs: BlobStore, owner_id: int, window, local: Locator | None) -> AsyncIterator[bytes]:
    digests = list({digest for digest, *_ in window})
    where = {}
    if local is not None:
        where = {digest: place for digest in digests if (place := local(digest)) is not None}
    indexed = [digest for digest in digests if digest not in where]
    if indexed:
        async with unit_of_work(sessions, read_only=True) as session:
            rows = (
                await session.execute(
                    select(Chunk.digest, Pack.blob_key, Chunk.offset, Chunk.stored_length)
                    .join(Pack, Pack.id == Chunk.pack_id)
                    .where(Chunk.owner_id == owner_id, Chunk.digest.in_(indexed))
                )
            ).all()
        where.update({digest: (key, offset, length) for digest, key, offset, length in rows})
    if len(where) != len(digests):
        raise errors.NotFound("该版本的数据已不完整")
    # Runs of chunks stored back to back in one pack are fetched with a single ranged read.
    runs: list[tuple[str, int, int, list]] = []
    for item in window:
        key, offset, length = where[item[0]]
        if runs and runs[-1][0] == key and runs[-1][1] + runs[-1][2] == offset and runs[-1][2] + length <= MAX_COALESCED_READ:
            runs[-1] = (key, runs[-1][1], runs[-1][2] + length, runs[-1][3] + [(item, length)])
        else:
            runs.append((key, offset, length, [(item, length)]))
    decompressor = zstandard.ZstdDecompressor()
    batch: list[tuple[str, int, int, list]] = []
    batch_bytes = 0
    for index, run in enumerate(runs):
        batch.append(run)
        batch_bytes += run[2]
        if batch_bytes < MAX_COALESCED_READ and index + 1 < len(runs):
            continue
        try:
            datas = await blobs.get_many([(key, offset, length) for key, offset, length, _ in batch])
        except BlobNotFound as exc:
            raise errors.NotFound("该版本的数据已不完整") from exc
        except BlobStoreError as exc:
            log.warning("packs could not be read: %s", exc)
            raise errors.StorageUnavailable("云存储暂时不可用，请稍后重新下载") from exc
        yield await asyncio.to_thread(_decode_runs, decompressor, datas, [items for *_, items in batch])
        batch, batch_bytes = [], 0


def _decode_runs(decompressor: zstandard.ZstdDecompressor, datas: list[bytes], runs: list) -> bytes:
    return b"".join(_decode_run(decompressor, data, items) for data, items in zip(datas, runs))


def _decode_run(decompressor: zstandard.ZstdDecompressor, data: bytes, items) -> bytes:
    out = []
    position = 0
    for (digest, raw_size, skip, take), length in items:
        raw = decompressor.decompress(data[position : position + length], max_output_size=raw_size)
        position += length
        if hashlib.sha256(raw).digest() != digest:
            raise errors.NotFound("该版本的数据已损坏")
        out.append(raw[skip : skip + take] if (skip or take != raw_size) else raw)
    return b"".join(out)
