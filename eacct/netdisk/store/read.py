"""Reading a version back: manifest → chunk runs in packs → ranged reads → verified, decompressed bytes."""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import aclosing
from collections.abc import AsyncIterator, Callable, Iterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.db import driver_list_markers, read_rows, unit_of_work
from eacct.storage import BlobNotFound, BlobStore, BlobStoreError
from eacct.storage.buffers import BufferPool
from eacct.chunks.digests import sha256_many
from eacct.chunks.frames import FrameDecompressor, FrameError
from eacct.chunks.manifest import iter_manifest
from eacct.netdisk.models import Version, VersionManifest
from eacct.netdisk.store.common import (
    DECODED_BUFFERS_KEPT, DECODES_IN_FLIGHT, DOWNLOAD_BLOCK, DOWNLOAD_BLOCKS_AHEAD, MAX_COALESCED_READ, READ_WINDOW, log, read_ahead,
)

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
    # Closed explicitly when the reader stops early: its blocks in flight are cancelled now, not when collected.
    async with aclosing(read_entries(sessions, blobs, version.owner_id, entries, start, end)) as blocks:
        async for block in blocks:
            yield block


Locator = Callable[[bytes], "tuple[str, int, int] | None"]


async def read_entries(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, owner_id: int, entries: bytes,
                       start: int, end: int | None,
                       local: Locator | None = None) -> AsyncIterator[bytes]:
    """Bytes `start`..`end` of the file a manifest describes; `local` places chunks not (yet) in the index.

    Blocks of about `DOWNLOAD_BLOCK` raw bytes are fetched and decoded (decompressed, verified) on worker threads,
    up to `DECODES_IN_FLIGHT` at once, while the next chunks are located; they come out in file order."""
    in_flight: deque[asyncio.Task[memoryview]] = deque()
    # Decoded blocks are written into reused buffers: a fresh MiB per block costs a page fault per 4 KiB.
    buffers = BufferPool(keep=DECODED_BUFFERS_KEPT)
    try:
        async for block in _located_blocks(sessions, owner_id, entries, start, end, local):
            in_flight.append(asyncio.create_task(_fetch_and_decode(blobs, block, buffers)))
            if len(in_flight) > DECODES_IN_FLIGHT:
                yield await in_flight.popleft()
        while in_flight:
            yield await in_flight.popleft()
    finally:
        for task in in_flight:  # the consumer stopped early, or a block failed: the rest is not wanted
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)


async def _located_blocks(sessions, owner_id: int, entries: bytes, start: int, end: int | None,
                          local: Locator | None) -> AsyncIterator[list[Run]]:
    """The chunks of `start`..`end`, located `READ_WINDOW` at a time, as blocks of runs to read."""
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
            for block in _blocks(window, await _locate(sessions, owner_id, window, local)):
                yield block
            window = []
    if window:
        for block in _blocks(window, await _locate(sessions, owner_id, window, local)):
            yield block


# Handed to the driver as it is, with a marker per digest: SQLAlchemy would expand and process the IN list of ~2000
# digests on the event loop's thread for every window (a 1 GB year has ~130k chunks to locate).
_LOCATE = ('SELECT chunks.digest, packs.blob_key, chunks."offset", chunks.stored_length FROM chunks '
           "JOIN packs ON packs.id = chunks.pack_id WHERE chunks.owner_id = {} AND chunks.digest IN ({})")


async def _locate(sessions, owner_id: int, window, local: Locator | None) -> dict[bytes, tuple[str, int, int]]:
    """Where each chunk of the window lies: digest → (blob key, offset, stored length)."""
    digests = list({digest for digest, *_ in window})
    where = {}
    if local is not None:
        where = {digest: place for digest in digests if (place := local(digest)) is not None}
    indexed = [digest for digest in digests if digest not in where]
    if indexed:
        # One statement, one round trip (db.read_rows): a chunk's place never changes while a version refers to it.
        owner, markers = driver_list_markers(sessions.dialect, 1, len(indexed))
        rows = await read_rows(sessions, _LOCATE.format(owner, markers), (owner_id, *indexed))
        where.update({digest: (key, offset, length) for digest, key, offset, length in rows})
    if len(where) != len(digests):
        raise errors.NotFound("该版本的数据已不完整")
    return where


# A run: (blob key, offset, length, [(window item, stored length), ...]) read with one ranged request.
Run = tuple[str, int, int, list]


def _blocks(window, where: dict) -> Iterator[list[Run]]:
    """The window's chunks as runs, grouped into blocks of about `DOWNLOAD_BLOCK` raw bytes."""
    runs: list[Run] = []
    raw_bytes = 0
    for item in window:
        key, offset, length = where[item[0]]
        if raw_bytes and raw_bytes + item[1] > DOWNLOAD_BLOCK:
            yield runs
            runs, raw_bytes = [], 0
        last = runs[-1] if runs else None
        if last and last[0] == key and last[1] + last[2] == offset and last[2] + length <= MAX_COALESCED_READ:
            last[3].append((item, length))
            runs[-1] = (key, last[1], last[2] + length, last[3])
        else:
            runs.append((key, offset, length, [(item, length)]))
        raw_bytes += item[1]
    if runs:
        yield runs


async def _fetch_and_decode(blobs: BlobStore, runs: list[Run], buffers: BufferPool) -> memoryview:
    items_of_runs = [items for *_, items in runs]
    try:
        return await blobs.read_ranges([(key, offset, length) for key, offset, length, _ in runs],
                                       lambda datas: _decode_runs(datas, items_of_runs, buffers))
    except BlobNotFound as exc:
        raise errors.NotFound("该版本的数据已不完整") from exc
    except BlobStoreError as exc:
        log.warning("packs could not be read: %s", exc)
        raise errors.StorageUnavailable("云存储暂时不可用，请稍后重新下载") from exc


def _decode_runs(datas: list[memoryview], runs: list, buffers: BufferPool) -> memoryview:
    decompressor = FrameDecompressor()  # one per call: calls run on several threads at once
    # A run's whole chunks are decompressed straight into the block, in one native call (eacct.chunks.frames): a
    # download hands the GIL back and forth once per run, not once per chunk, and holds a block's bytes once.
    size = sum(take for items in runs for (_, _, _, take), _ in items)
    out = buffers.take(size)
    position = 0
    # The block's chunks are verified together once it is decoded, in one native call (eacct.chunks.digests).
    # The block is not handed on before that check has passed. A whole chunk is checked where it was decoded to;
    # the first or last chunk of a range, only part of which goes out, is kept whole until then.
    placed: list[memoryview] = []
    checked: list[memoryview | bytearray] = []
    expected: list[bytes] = []
    try:
        with memoryview(out)[:size] as target:
            for data, items in zip(datas, runs):
                if all(skip == 0 and take == raw_size for (_, raw_size, skip, take), _ in items):
                    raw_total = sum(raw_size for (_, raw_size, _, _), _ in items)
                    destination = target[position : position + raw_total]
                    placed.append(destination)
                    decompressor.decompress_into(data, [length for _, length in items],
                                                 [raw_size for (_, raw_size, _, _), _ in items], destination)
                    for (digest, raw_size, _, _), _ in items:
                        chunk = target[position : position + raw_size]
                        placed.append(chunk)
                        checked.append(chunk)
                        expected.append(digest)
                        position += raw_size
                    continue
                with memoryview(data) as view:
                    offset = 0
                    for (digest, raw_size, skip, take), length in items:
                        raw = bytearray(raw_size)
                        decompressor.decompress_into(view[offset : offset + length], [length], [raw_size], raw)
                        offset += length
                        target[position : position + take] = memoryview(raw)[skip : skip + take]
                        checked.append(raw)
                        expected.append(digest)
                        position += take
        if sha256_many(checked) != expected:
            raise errors.NotFound("该版本的数据已损坏")
    except FrameError as exc:
        raise errors.NotFound("该版本的数据已损坏") from exc
    finally:
        for view in placed:
            view.release()
    return memoryview(out)[:size]
