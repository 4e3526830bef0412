"""Shared mechanics of the store: constants, the upload lease holder, quota in use, read-ahead, pack keys."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from eacct.netdisk.models import Chunk, Pack

__all__ = [
    "BODY_BLOCKS_AHEAD", "COMPRESSIONS_IN_FLIGHT", "CommittableUpload", "DECODED_BUFFERS_KEPT", "DECODES_IN_FLIGHT", "DOWNLOAD_BLOCK",
    "DOWNLOAD_BLOCKS_AHEAD", "FIRST_READ_WINDOW", "HEARTBEATS_PER_LEASE", "INSERT_BATCH", "INTERACTIVE_TRANSFER_BYTES", "LOOKUP_BATCH",
    "MAX_COALESCED_READ", "NEW_CHUNK", "PUTS_IN_FLIGHT", "READ_WINDOW", "WAITING_BYTES", "ZSTD_LEVEL", "batched",
    "lease_holder", "log", "pack_blob_key", "read_ahead", "used_bytes",
]

log = logging.getLogger("eacct.store")
T = TypeVar("T")

NEW_CHUNK = struct.Struct("<IQII")
INSERT_BATCH = 2000
# An upload looks its chunks up (and compresses the new ones) in batches of this many chunks or bytes: the
# body bytes it holds are a few of these batches, so they bound its memory. bench/transfer.py, 1 GB year:
# 2 MiB batches cost ~8 MiB more peak RSS than 1 MiB ones at the same upload rate (re-uploads, where every
# chunk is known, spend ~0.5 s more CPU on the twice as many lookups).
LOOKUP_BATCH = 250
WAITING_BYTES = 1024 * 1024
PUTS_IN_FLIGHT = 2
# Batches of new chunks an upload compresses on worker threads while it goes on reading, hashing, cutting and
# looking up: one per core but the loop's (zstd releases the GIL), at least one so compression always overlaps.
COMPRESSIONS_IN_FLIGHT = max((os.cpu_count() or 2) - 1, 1)
DOWNLOAD_BLOCKS_AHEAD = 2
# A download is read, decompressed and verified in blocks of about this many raw bytes, several at once on
# worker threads: small enough that the blocks in flight stay a few MiB, large enough to amortise a thread hop.
# (2 MiB blocks halve the ranged GETs on OSS, ~0.1 s of CPU per 100 MB, but add ~8 MiB to a download's RSS.)
DOWNLOAD_BLOCK = 1024 * 1024
DECODES_IN_FLIGHT = max(os.cpu_count() or 1, 1)
# Decoded blocks a download keeps buffers for: those decoding (one more than DECODES_IN_FLIGHT while the next is
# queued), read ahead, the one being sent and the one the transport may still hold.
DECODED_BUFFERS_KEPT = DECODES_IN_FLIGHT + 1 + DOWNLOAD_BLOCKS_AHEAD + 2
# 1 MiB body blocks read ahead of the pipeline: one keeps it fed (the socket buffers the next), each one more
# is 1 MiB more RSS and no faster on loopback.
BODY_BLOCKS_AHEAD = 1
STOP_GRACE_SECONDS = 2.0
# The first bytes of every transfer are worked on at the request path's priority, so a small upload or download
# (a day's delta, a chunk query, a 16 KiB year) is over before it could queue behind a large one; beyond them a
# transfer is bulk, on the blob store's low-priority executor (BlobStore.bulk_executor, bench/commit_block.py).
INTERACTIVE_TRANSFER_BYTES = 8 * 1024 * 1024
READ_WINDOW = 2048
# The first window is smaller: the first byte waits for its lookup, and ~2000 digests take tens of ms to find
# on a busy SQLite; a few blocks' worth gets the download going while the next window is located.
FIRST_READ_WINDOW = 256
MAX_COALESCED_READ = 4 * 1024 * 1024
ZSTD_LEVEL = 1
# Identifies this process in the leases it holds (host, pid, and a random part since pids are reused).
PROCESS_INSTANCE = uuid.uuid4().hex[:8]
HEARTBEATS_PER_LEASE = 4


def lease_holder() -> str:
    """Who holds a lease: this process, as host:pid:instance."""
    return f"{socket.gethostname()}:{os.getpid()}:{PROCESS_INSTANCE}"


async def used_bytes(session: AsyncSession, owner_id: int) -> int:
    """Quota in use: every distinct chunk a version of the owner refers to, counted once, uncompressed."""
    # Pack by pack: a pack's rows went into the index together, so they are read in the table's order, where the
    # owner's digest index would visit a 1 GB year's ~130k rows at random (SQLite: 24 ms against 200 ms, taken in
    # every commit of the owner). Only committed packs: a pending row's reference is a version's only once its
    # upload commits.
    total = (await session.execute(_USED_BYTES, {"owner_id": owner_id})).scalar()
    return int(total or 0)


# Built once: every upload reads it twice (before its body, and in its commit).
_USED_BYTES = (select(func.coalesce(func.sum(Chunk.raw_size), 0)).select_from(Pack)
               .join(Chunk, Chunk.pack_id == Pack.id)
               .where(Pack.owner_id == bindparam("owner_id"), Pack.committed.is_(True), Chunk.refs > 0))


async def stored_chunks(session: AsyncSession, owner_id: int, digests: list[bytes]) -> set[bytes]:
    """Which of these chunks the owner's store has for a version to count on: used by a version, in a committed pack
    (a pending row carries the reference of an upload that may never commit)."""
    have: set[bytes] = set()
    for start in range(0, len(digests), 500):
        have.update(await session.scalars(
            select(Chunk.digest).join(Pack, Pack.id == Chunk.pack_id)
            .where(Chunk.owner_id == owner_id, Chunk.refs > 0, Chunk.digest.in_(digests[start : start + 500]),
                   Pack.committed.is_(True))
        ))
    return have


_END = object()


async def read_ahead(source: AsyncIterator[T], depth: int) -> AsyncIterator[T]:
    """Iterate `source` in a task of its own, up to `depth` items ahead of the consumer.

    Lets I/O on one side (reading a request body, fetching packs) go on while the other side works.
    Errors of the source reach the consumer in order. When the consumer stops early, the source is asked to
    stop after the step it is in and closed, not cancelled mid-step: a step may be a database transaction,
    and one torn by a cancellation can leave SQLite's write lock behind. Only a source that does not stop
    within `STOP_GRACE_SECONDS` is cancelled.
    """
    queue: asyncio.Queue = asyncio.Queue(maxsize=depth)
    stop = asyncio.Event()

    async def pump() -> None:
        try:
            async for item in source:
                if stop.is_set():
                    return
                await queue.put(item)
            await queue.put(_END)
        except Exception as exc:  # handed to the consumer, which raises it where it reads
            if not stop.is_set():
                await queue.put(_Failed(exc))
        finally:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()

    task = asyncio.create_task(pump())
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        while not queue.empty():  # a put the pump is waiting in goes through, and it sees the stop
            queue.get_nowait()
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_SECONDS)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


def batched(items: list, size: int) -> Iterable[list]:
    """`items` in lists of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def pack_blob_key(owner_id: int, pack_id: str) -> str:
    """Where a pack lives in the blob store: a new key for every pack, never overwritten."""
    return f"packs/{owner_id}/{pack_id[:2]}/{pack_id}"


class VersionClaim(Protocol):
    """The fields of an upload's `IncomingVersion` the commit writes into the version row."""

    ledger_id: str
    owner_id: int
    uploader_id: int
    year: int
    remark: str
    size: int
    sha256: str
    via: str
    client_version: str


class CommittableUpload(Protocol):
    """What `index.commit` reads of a fully received `upload.Upload` (a protocol, so index needs no upload import)."""

    incoming: VersionClaim
    manifest: bytearray
    pending_packs: list[tuple[str, str]]
    pack_sizes_at_commit: dict[str, int]  # packs registered before their size was known
    lease_id: str
    lease_taken: bool
    new_bytes: int
    commit_sent: bool
    # Chunks this upload stored itself (digest → where in its packs), and those whose index rows wait for the
    # commit (the last pack's; earlier packs' rows were indexed pending as they were sealed).
    new_chunks: dict[bytes, bytes]
    index_at_commit: list[bytes]
    # Stored chunks whose reference this upload already counted under its lease (`index.claim_references`).
    claimed: set[bytes]

    def chunk_rows(self, digests: list[bytes]) -> Iterable[tuple]:
        """The index rows of these chunks of this upload, as tuples in `CHUNK_COLUMNS` order."""
