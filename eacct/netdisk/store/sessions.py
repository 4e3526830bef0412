"""Resumable uploads' mechanics: store a batch of verified chunks as pending data under a session's lease, and
commit a session's manifest as a version (the same commit as a streamed upload's).

As for a streamed upload, the commit does not insert the chunk rows while it holds the database's write lock: a
batch's rows go into the index as pending rows with its pack. Unlike a streamed upload, the commit still counts
the references on the chunks a session repeats from stored versions: claimed ahead, they would be recorded under
the session's lease, which every commit attempt of the session shares, so one attempt could not tell its claims
from another's."""

from __future__ import annotations

import asyncio
import hashlib
import struct
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.config import Settings
from eacct.db import unit_of_work
from eacct.chunks.frames import FrameCompressor, batch_bound
from eacct.netdisk.models import Chunk, Pack, UploadSessionPack, Version
from eacct.netdisk.store.common import INTERACTIVE_TRANSFER_BYTES, NEW_CHUNK, ZSTD_LEVEL, log
from eacct.netdisk.store.index import CommitRules, commit, insert_chunk_rows
from eacct.netdisk.store.read import read_entries
from eacct.netdisk.store.spool import PackWriter
from eacct.netdisk.store.upload import IncomingVersion, Upload
from eacct.storage import BlobStore, BlobStoreError

__all__ = ["UNINDEXED", "Held", "StoredBatch", "commit_session", "held_chunks", "store_chunks"]

# Chunks of a stored batch compressed and written together (at most a few hundred KiB of frames).
_CHUNKS_PER_WRITE = 32
# (digest, pack id, offset, stored length, raw size) of a chunk a session holds.
Held = tuple[bytes, str, int, int, int]
# A held chunk whose index row is not in its pack (another upload's row for it came first): digest, offset, stored
# length, raw size; `UploadSessionPack.unindexed` is a run of these.
UNINDEXED = struct.Struct("<32sQII")


@dataclass(frozen=True)
class StoredBatch:
    """A batch stored as one pending pack: how many chunks and raw bytes it holds, and those of its chunks whose
    index row is not in it (`UNINDEXED` entries)."""

    pack_id: str
    chunk_count: int
    raw_bytes: int
    unindexed: bytes


async def store_chunks(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, owner_id: int, lease_id: str,
                       chunks: list[tuple[bytes, bytes]]) -> StoredBatch:
    """Compress verified chunks into one pack registered as pending under `lease_id` (before its blob is put,
    so gc can always find it), with its chunks' pending index rows, then put it durably."""
    pack = PackWriter(blobs.spool_dir(), owner_id, lease_id, write_behind=blobs.spool_write_behind)
    placed: list[Held] = []

    def spool() -> None:
        compressor = FrameCompressor(ZSTD_LEVEL)
        frames = bytearray()
        # A few hundred KiB of frames at a time, written together: one write per group, not one per chunk.
        for start in range(0, len(chunks), _CHUNKS_PER_WRITE):
            group = chunks[start : start + _CHUNKS_PER_WRITE]
            pieces = [piece for _, piece in group]
            needed = batch_bound(sum(len(piece) for piece in pieces), len(pieces))
            if len(frames) < needed:
                frames = bytearray(needed)
            lengths = compressor.compress_into(pieces, frames)
            with memoryview(frames)[: sum(lengths)] as written:
                offset = pack.append([written])
            for (digest, piece), length in zip(group, lengths):
                placed.append((digest, pack.pack_id, offset, length, len(piece)))
                offset += length
        pack.close()

    try:
        await blobs.off_loop(sum(len(piece) for _, piece in chunks) > INTERACTIVE_TRANSFER_BYTES, spool)
        # Not durable (no wait for the disk while SQLite's write lock is held): should a crash lose the rows, the blob
        # put next is a stray gc removes, as for a streamed upload's packs.
        async with unit_of_work(sessions, durable=False) as session:
            session.add(Pack(id=pack.pack_id, owner_id=owner_id, blob_key=pack.blob_key, size=pack.size, lease_id=lease_id))
            await session.flush()  # the pack's row before its chunks' rows
            # Pending rows, each with the reference the session's version will hold (`index`), indexed now rather
            # than all at once by the session's commit, under its lock.
            await insert_chunk_rows(session, [(owner_id, digest, pack_id, offset, stored, raw, 1)
                                              for digest, pack_id, offset, stored, raw in placed])
            unindexed = await _unindexed(session, pack.pack_id, placed)
        try:
            await blobs.put(pack.blob_key, pack.path)
        except BaseException as exc:
            # Its rows would name a blob that is not there: gone with the pack's row now (or, should that fail too,
            # never the session's, since only a batch that was put is held; gc reclaims them with the lease).
            await asyncio.shield(_discard_pack_row(sessions, pack.pack_id))
            if isinstance(exc, BlobStoreError):
                log.warning("pack %s could not be stored: %s", pack.pack_id, exc)
                raise errors.StorageUnavailable() from exc
            raise
    finally:
        await asyncio.to_thread(pack.discard)
    return StoredBatch(pack.pack_id, len(placed), sum(raw for *_, raw in placed), unindexed)


async def _unindexed(session: AsyncSession, pack_id: str, placed: list[Held]) -> bytes:
    """The `UNINDEXED` entries of the chunks just placed in this pack whose index row another upload inserted
    first (one count in the common case, where every row went in)."""
    if await session.scalar(select(func.count()).where(Chunk.pack_id == pack_id)) == len(placed):
        return b""
    indexed = set(await session.scalars(select(Chunk.digest).where(Chunk.pack_id == pack_id)))
    return b"".join(UNINDEXED.pack(digest, offset, stored, raw)
                    for digest, _, offset, stored, raw in placed if digest not in indexed)


async def held_chunks(session: AsyncSession, session_id: str) -> tuple[list[Held], list[bytes]]:
    """The chunks an upload session holds (the index rows in its packs and the chunks they record as unindexed),
    and the digests of the unindexed ones.

    A 1 GB session holds ~130k chunks in ~64 packs, read a pack at a time: as one result, asyncpg would decode them
    all on the event loop in one go, and as ORM objects they would cost several times more."""
    held: list[Held] = []
    unindexed_digests: list[bytes] = []
    for pack_id, unindexed in (await session.execute(
            select(UploadSessionPack.pack_id, UploadSessionPack.unindexed)
            .where(UploadSessionPack.session_id == session_id).order_by(UploadSessionPack.pack_id))).all():
        held += (await session.execute(
            select(Chunk.digest, Chunk.pack_id, Chunk.offset, Chunk.stored_length, Chunk.raw_size)
            .where(Chunk.pack_id == pack_id))).all()
        for digest, offset, stored, raw in UNINDEXED.iter_unpack(unindexed or b""):
            held.append((digest, pack_id, offset, stored, raw))
            unindexed_digests.append(digest)
    return held, unindexed_digests


async def _discard_pack_row(sessions: async_sessionmaker[AsyncSession], pack_id: str) -> None:
    """Delete a pending pack's row (its chunk rows go with it) after its blob could not be put; failures are logged."""
    try:
        async with unit_of_work(sessions, durable=False) as session:
            await session.execute(delete(Pack).where(Pack.id == pack_id, Pack.committed.is_(False)))
    except Exception:
        log.warning("could not remove the row of pack %s, whose blob was not stored; gc will", pack_id, exc_info=True)


def _places(held: list[Held], pack_ids: list[str]) -> tuple[dict[bytes, bytes], int]:
    """Where each chunk a session holds lies (`NEW_CHUNK`-packed, by pack number), and their raw bytes in all."""
    number = {pack_id: index for index, pack_id in enumerate(pack_ids)}
    places = {digest: NEW_CHUNK.pack(number[pack_id], offset, stored, raw)
              for digest, pack_id, offset, stored, raw in held}
    return places, sum(raw for *_, raw in held)


async def commit_session(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, settings: Settings,
                         incoming: IncomingVersion, lease_id: str, manifest: bytes, held: list[Held],
                         unindexed: list[bytes], pending_packs: list[tuple[str, str]], rules: CommitRules) -> Version:
    """Verify the year a manifest describes (its size and whole-file sha256, read back from the store) and
    commit it: the session's packs become committed, its chunks indexed, with `rules` inside the commit."""
    upload = Upload(sessions, blobs, settings, incoming, free_bytes=0)
    upload.lease_id, upload.lease_taken = lease_id, True
    upload.pending_packs = list(pending_packs)
    upload.pack_ids = [pack_id for pack_id, _ in pending_packs]
    # On a worker thread for a large session (~130k chunks a GB): the GIL goes back to the event loop every millisecond.
    upload.new_chunks, upload.new_bytes = await blobs.off_loop(incoming.size > INTERACTIVE_TRANSFER_BYTES, _places,
                                                               held, upload.pack_ids)
    # Rows its batches could not index (another upload's row came first) are inserted by the commit; any other
    # upload's row still there is handled by the commit as for a streamed upload.
    upload.index_at_commit = unindexed
    upload.manifest = bytearray(manifest)
    digest = hashlib.sha256()
    size = 0
    # Each chunk was hashed when its batch arrived; what is checked now is the year as the store gives it back, whole.
    async for block in read_entries(sessions, blobs, incoming.owner_id, manifest, 0, None, upload._new_location,
                                    verify_chunks=False):
        size += len(block)
        await blobs.off_loop(size > INTERACTIVE_TRANSFER_BYTES, digest.update, block)
    if size != incoming.size:
        raise errors.BadRequest("清单中的数据块大小之和与声明的年度数据大小不符")
    if digest.hexdigest() != incoming.sha256:
        raise errors.ChecksumMismatch(received_sha256=digest.hexdigest())
    return await commit(sessions, upload, rules)
