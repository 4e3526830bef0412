"""Reading a version back: manifest → chunk runs in packs → ranged reads → verified, decompressed bytes."""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from collections import deque
from contextlib import aclosing
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.db import driver_list_markers, read_rows, unit_of_work
from eacct.storage import BlobNotFound, BlobStore, BlobStoreError
from eacct.storage.buffers import BufferPool
from eacct.chunks.digests import sha256_spans
from eacct.chunks.frames import FrameDecompressor, FrameError
from eacct.chunks.manifest import ENTRY, iter_manifest
from eacct.netdisk.models import Version, VersionManifest
from eacct.netdisk.store.common import (
    DECODED_BUFFERS_KEPT, DECODES_IN_FLIGHT, DOWNLOAD_BLOCK, DOWNLOAD_BLOCKS_AHEAD, FIRST_READ_WINDOW,
    INTERACTIVE_TRANSFER_BYTES, MAX_COALESCED_READ, READ_WINDOW, log, read_ahead,
)

__all__ = ["MANIFEST_ENTRIES", "read_entries", "read_version"]


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
        entries = (await session.execute(MANIFEST_ENTRIES, {"version_id": version.id})).scalar()
    if entries is None:
        raise errors.NotFound("该版本已不存在")
    # Closed explicitly when the reader stops early: its blocks in flight are cancelled now, not when collected.
    async with aclosing(read_entries(sessions, blobs, version.owner_id, entries, start, end)) as blocks:
        async for block in blocks:
            yield block


# A version's manifest, read by every download: built once (bench.load --cost).
MANIFEST_ENTRIES = select(VersionManifest.entries).where(VersionManifest.version_id == bindparam("version_id"))

Locator = Callable[[bytes], "tuple[str, int, int] | None"]


async def read_entries(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, owner_id: int, entries: bytes,
                       start: int, end: int | None,
                       local: Locator | None = None, *, verify_chunks: bool = True) -> AsyncIterator[bytes]:
    """Bytes `start`..`end` of the file a manifest describes; `local` places chunks not (yet) in the index.

    Blocks of about `DOWNLOAD_BLOCK` raw bytes are fetched and decoded (decompressed, verified) on worker threads,
    up to `DECODES_IN_FLIGHT` at once, while the next chunks are located; they come out in file order.
    `verify_chunks=False` is for a caller that checks the whole file's sha256 against what its client declared
    (an upload reading its year back): a damaged chunk fails that check, and no chunk is hashed twice."""
    in_flight: deque[asyncio.Task[memoryview]] = deque()
    # Decoded blocks are written into reused buffers: a fresh MiB per block costs a page fault per 4 KiB.
    buffers = BufferPool(keep=DECODED_BUFFERS_KEPT)
    try:
        scheduled = 0  # raw bytes of the blocks handed to worker threads so far
        async for window, runs in _located_blocks(sessions, owner_id, entries, start, end, local):
            bulk = scheduled >= INTERACTIVE_TRANSFER_BYTES
            scheduled += sum(sum(window.sizes[first:stop]) for *_, first, stop in runs)
            in_flight.append(asyncio.create_task(_fetch_and_decode(blobs, window, runs, buffers, bulk,
                                                                   verify_chunks)))
            if len(in_flight) > DECODES_IN_FLIGHT:
                yield await in_flight.popleft()
        while in_flight:
            yield await in_flight.popleft()
    finally:
        for task in in_flight:  # the consumer stopped early, or a block failed: the rest is not wanted
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)


@dataclass(slots=True)
class Window:
    """Up to `READ_WINDOW` consecutive chunks of a read, column by column (one list per field, not a tuple per chunk):
    a download plans and verifies ~130k chunks a GB, and each Python object per chunk is loop time.

    Only the window's first chunk may be cut at its start (`head_skip` bytes not wanted) and only its last at its end
    (wanted up to `tail_end`): a read is one range of the file."""

    digests: list[bytes]
    sizes: list[int]
    head_skip: int
    tail_end: int
    stored: list[int] = field(default_factory=list)  # stored (compressed) lengths, once located

    def partial(self, index: int) -> bool:
        """Whether only part of this chunk is wanted."""
        last = len(self.sizes) - 1
        return (index == 0 and self.head_skip > 0) or (index == last and self.tail_end != self.sizes[last])

    def wanted(self, index: int) -> tuple[int, int]:
        """The bytes of this chunk that are wanted: (skip, end)."""
        return (self.head_skip if index == 0 else 0,
                self.tail_end if index == len(self.sizes) - 1 else self.sizes[index])


# A run: (blob key, offset, length, first, end): the window's chunks first..end-1, read with one ranged request.
Run = tuple[str, int, int, int, int]


async def _located_blocks(sessions, owner_id: int, entries: bytes, start: int, end: int | None,
                          local: Locator | None) -> AsyncIterator[tuple[Window, list[Run]]]:
    """The chunks of `start`..`end` (None: to the end), located `READ_WINDOW` at a time, as blocks of runs to read."""
    if end is not None and end <= start:
        return
    position = 0  # where the window begins in the file
    first, window_bytes = 0, FIRST_READ_WINDOW * ENTRY.size
    while first < len(entries):
        digests, sizes = _columns(entries[first : first + window_bytes])
        first, window_bytes = first + window_bytes, READ_WINDOW * ENTRY.size
        cumulative = list(accumulate(sizes))
        window_start, position = position, position + cumulative[-1]
        if position <= start:
            continue
        low, head_skip = 0, 0
        if start > window_start:  # the range starts inside this window: at the chunk holding byte `start`
            low = bisect_right(cumulative, start - window_start)
            head_skip = start - window_start - (cumulative[low - 1] if low else 0)
        high, tail_end = len(sizes), sizes[-1]
        if end is not None and end < position:  # it ends inside this window: with the chunk holding byte end - 1
            high = bisect_left(cumulative, end - window_start) + 1
            tail_end = end - window_start - (cumulative[high - 2] if high > 1 else 0)
        window = Window(digests[low:high], sizes[low:high], head_skip, tail_end)
        for runs in _blocks(window, await _locate(sessions, owner_id, window.digests, local)):
            yield window, runs
        if end is not None and position >= end:
            return


def _columns(entries: bytes) -> tuple[list[bytes], list[int]]:
    """The digests and the raw sizes of these manifest entries."""
    digests, sizes = zip(*iter_manifest(entries))
    return list(digests), list(sizes)


# Handed to the driver as it is, with a marker per digest: SQLAlchemy would expand and process the IN list of ~2000
# digests on the event loop's thread for every window (a 1 GB year has ~130k chunks to locate).
_LOCATE = ('SELECT chunks.digest, packs.blob_key, chunks."offset", chunks.stored_length FROM chunks '
           "JOIN packs ON packs.id = chunks.pack_id WHERE chunks.owner_id = {} AND chunks.digest IN ({})")


async def _locate(sessions, owner_id: int, digests: list[bytes], local: Locator | None) -> dict[bytes, tuple]:
    """Where each of these chunks lies: digest → (digest, blob key, offset, stored length)."""
    wanted = set(digests)
    where = {}
    if local is not None:
        where = {digest: (digest, *place) for digest in wanted if (place := local(digest)) is not None}
    indexed = [digest for digest in wanted if digest not in where] if where else list(wanted)
    if indexed:
        # One statement, one round trip (db.read_rows): a chunk's place never changes while a version refers to it.
        owner, markers = driver_list_markers(sessions.dialect, 1, len(indexed))
        rows = await read_rows(sessions, _LOCATE.format(owner, markers), (owner_id, *indexed))
        where.update({row[0]: row for row in rows})
    if len(where) != len(wanted):
        raise errors.NotFound("该版本的数据已不完整")
    return where


def _blocks(window: Window, where: dict[bytes, tuple]) -> Iterator[list[Run]]:
    """The window's chunks as runs (adjacent chunks of one pack in one read), grouped into blocks of about
    `DOWNLOAD_BLOCK` raw bytes; fills in `window.stored`."""
    places = [where[digest] for digest in window.digests]
    window.stored = [place[3] for place in places]
    runs: list[Run] = []
    raw_bytes = 0
    key = None
    run_offset = run_end = run_first = 0
    for index, ((_, place_key, offset, length), size) in enumerate(zip(places, window.sizes)):
        if raw_bytes and raw_bytes + size > DOWNLOAD_BLOCK:
            runs.append((key, run_offset, run_end - run_offset, run_first, index))
            yield runs
            runs, raw_bytes, key = [], 0, None
        if place_key == key and offset == run_end and run_end + length - run_offset <= MAX_COALESCED_READ:
            run_end += length
        else:
            if key is not None:
                runs.append((key, run_offset, run_end - run_offset, run_first, index))
            key, run_offset, run_end, run_first = place_key, offset, offset + length, index
        raw_bytes += size
    if key is not None:
        runs.append((key, run_offset, run_end - run_offset, run_first, len(places)))
        yield runs


async def _fetch_and_decode(blobs: BlobStore, window: Window, runs: list[Run], buffers: BufferPool,
                            bulk: bool, verify_chunks: bool) -> memoryview:
    try:
        return await blobs.read_ranges([(key, offset, length) for key, offset, length, _, _ in runs],
                                       lambda datas: _decode_runs(datas, window, runs, buffers, verify_chunks),
                                       bulk=bulk)
    except BlobNotFound as exc:
        raise errors.NotFound("该版本的数据已不完整") from exc
    except BlobStoreError as exc:
        log.warning("packs could not be read: %s", exc)
        raise errors.StorageUnavailable("云存储暂时不可用，请稍后重新下载") from exc


def _decode_runs(datas: list[memoryview], window: Window, runs: list[Run], buffers: BufferPool,
                 verify_chunks: bool = True) -> memoryview:
    """The block's wanted bytes, decompressed into a reused buffer and (unless the caller checks the whole file)
    verified chunk by chunk before they are handed on."""
    decompressor = FrameDecompressor()  # one per call: calls run on several threads at once
    sizes, stored, digests = window.sizes, window.stored, window.digests
    stretches_of_runs = [_whole_and_partial(window, first, end) for *_, first, end in runs]
    size = sum(_stretch_bytes(window, low, high) for stretches in stretches_of_runs for low, high in stretches)
    out = buffers.take(size)
    position = 0
    try:
        with memoryview(out)[:size] as target:
            for data, stretches in zip(datas, stretches_of_runs):
                with memoryview(data) as view:
                    read = 0
                    # Whole chunks (all but perhaps the range's first and last) are decompressed straight into the
                    # block in one native call per run, and verified together in one more (eacct.chunks.digests).
                    for low, high in stretches:
                        stored_length = sum(stored[low:high])
                        frames = view[read : read + stored_length]
                        read += stored_length
                        if _is_partial_chunk(window, low, high):
                            position = _decode_partial(decompressor, frames, window, low, target, position)
                            continue
                        raw_total = sum(sizes[low:high])
                        with target[position : position + raw_total] as destination:
                            decompressor.decompress_into(frames, stored[low:high], sizes[low:high], destination)
                            if verify_chunks and sha256_spans(destination, sizes[low:high]) != b"".join(
                                    digests[low:high]):
                                raise errors.NotFound("该版本的数据已损坏")
                        position += raw_total
    except FrameError as exc:
        raise errors.NotFound("该版本的数据已损坏") from exc
    return memoryview(out)[:size]


def _whole_and_partial(window: Window, first: int, end: int) -> list[tuple[int, int]]:
    """A run's chunks first..end-1 as stretches to decode in order: a partly wanted chunk alone, whole ones together."""
    stretches = []
    low, high = first, end
    if window.partial(low):
        stretches.append((low, low + 1))
        low += 1
    tail = high > low and window.partial(high - 1)
    if tail:
        high -= 1
    if high > low:
        stretches.append((low, high))
    if tail:
        stretches.append((high, high + 1))
    return stretches


def _is_partial_chunk(window: Window, low: int, high: int) -> bool:
    """Whether a stretch of `_whole_and_partial` is one chunk only part of which is wanted."""
    return high - low == 1 and window.partial(low)


def _stretch_bytes(window: Window, low: int, high: int) -> int:
    """How many bytes a stretch of `_whole_and_partial` yields."""
    if _is_partial_chunk(window, low, high):
        skip, stop = window.wanted(low)
        return stop - skip
    return sum(window.sizes[low:high])


def _decode_partial(decompressor: FrameDecompressor, frame: memoryview, window: Window, index: int,
                    target: memoryview, position: int) -> int:
    """Decode and verify a chunk only part of which is wanted; copy that part to `position`, return the new position."""
    raw_size = window.sizes[index]
    raw = bytearray(raw_size)
    decompressor.decompress_into(frame, [len(frame)], [raw_size], raw)
    if sha256_spans(raw, [raw_size]) != window.digests[index]:
        raise errors.NotFound("该版本的数据已损坏")
    skip, stop = window.wanted(index)
    target[position : position + stop - skip] = memoryview(raw)[skip:stop]
    return position + stop - skip
