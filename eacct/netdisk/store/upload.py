"""The upload pipeline: stream, cut, deduplicate, compress into spooled packs, put them, hold a lease."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.config import Settings
from eacct.db import driver_list_markers, read_scalars, unit_of_work, utcnow
from eacct.storage import BlobStore, BlobStoreError
from eacct.storage.buffers import BufferPool
from eacct.chunks.chunker import ArchiveChunker
from eacct.chunks.digests import sha256_many
from eacct.chunks.frames import FrameCompressor, batch_bound
from eacct.chunks.manifest import ENTRY
from eacct.netdisk.models import Pack, UploadLease, Version
from eacct.netdisk.store.common import (
    BODY_BLOCKS_AHEAD, COMPRESSIONS_IN_FLIGHT, HEARTBEATS_PER_LEASE, INTERACTIVE_TRANSFER_BYTES, LOOKUP_BATCH,
    NEW_CHUNK, PUTS_IN_FLIGHT, WAITING_BYTES, ZSTD_LEVEL, lease_holder, log, pack_blob_key, read_ahead,
)
from eacct.netdisk.store.deltas import delta_entries
from eacct.netdisk.store.index import (
    CommitRules, chunks_to_claim, claim_references, commit, index_pending_chunks, refresh_lease, release_claims,
)
from eacct.netdisk.store.read import read_entries
from eacct.netdisk.store.reference import ReferenceManifest
from eacct.netdisk.store.spool import PackWriter

__all__ = ["IncomingVersion", "Upload", "receive_version"]

# A new chunk's entry in `Upload.new_chunks` when no place is kept for it: its batch is still being compressed,
# or its row is in the index (the 20-odd bytes of a place per chunk are a few MiB for a 1 GB year).
_NOT_KEPT = b""
# Which of these chunks the owner already has. Only chunks in committed packs count: another upload's pending
# rows may still be abandoned. Plain SQL: no per-value type processing (a 1 GB year looks up ~130k digests).
# Handed to the driver as it is, with a marker per digest: SQLAlchemy would expand and process the IN list on the
# event loop's thread for every lookup.
_KNOWN = ("SELECT chunks.digest FROM chunks JOIN packs ON packs.id = chunks.pack_id "
          "WHERE chunks.owner_id = {} AND chunks.digest IN ({}) AND packs.committed")


@dataclass(frozen=True, slots=True)
class IncomingVersion:
    """What an upload claims before its bytes arrive (its headers), and, once the service decided, whose it is."""

    ledger_id: str
    year: int
    size: int
    sha256: str
    remark: str = ""
    ledger_name: str | None = None
    client_version: str = ""
    if_match: str | None = None
    # A delta upload's body holds the manifest and only the chunks the server lacks (eacct.chunks.delta);
    # `size` is then the whole year's size and `body_size` the body's.
    delta: bool = False
    body_size: int | None = None
    # Set by the service: whose backup the version goes into, who sends it, and by which path.
    owner_id: int = 0
    uploader_id: int = 0
    via: str = "backup"

    @property
    def body_bytes(self) -> int:
        """How many bytes the request body carries."""
        return self.size if self.body_size is None else self.body_size


class Upload:
    """The state of one streaming upload; CPU work runs on worker threads, database and blob I/O on the loop.

    Four stages overlap: the body is read ahead; one thread hashes and cuts the next block; batches of new
    chunks compress on other threads (up to `COMPRESSIONS_IN_FLIGHT` at once, each with its own zstd context)
    while the loop looks up the next batch; compressed batches are appended to the spooled pack in file order.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, settings: Settings,
                 incoming: IncomingVersion, free_bytes: int) -> None:
        self.sessions = sessions
        self.blobs = blobs
        self.settings = settings
        self.incoming = incoming
        self.free_bytes = free_bytes
        self.hasher = hashlib.sha256()
        # Chunks are views into the body blocks (bytes, never changed): no copy per chunk; a block is freed once
        # its chunks are looked up, compressed and written.
        self.chunker = ArchiveChunker(views=True)
        # zstd contexts are not thread-safe: each compression job takes one from here (or makes one).
        self.compressors: list[FrameCompressor] = []
        # A batch's frames are written into one of these and spooled from it: no fresh memory per frame.
        self.frame_buffers = BufferPool(keep=COMPRESSIONS_IN_FLIGHT + 2)
        self.received = 0
        self.manifest = bytearray()
        # Chunks this upload stored itself: digest → NEW_CHUNK-packed (pack number, offset, stored length,
        # raw size); packed because a 1 GB year has ~100k of them and tuples of ints cost three times as much.
        self.new_chunks: dict[bytes, bytes] = {}
        self.pack_ids: list[str] = []
        # The version this upload most likely repeats (read when the first batch is placed): its chunks need no
        # lookup.
        self.reference: ReferenceManifest | None = None
        self.unindexed: list[bytes] = []  # digests spooled into the current pack, indexed when it is sealed
        # The last pack's rows (at most one pack's worth) go in with the commit: a small upload then takes no
        # extra write transaction; a large one has indexed all but its last pack while streaming.
        self.finishing = False
        self.index_at_commit: list[bytes] = []
        self.claimed: set[bytes] = set()
        self.new_bytes = 0
        # (digest, bytes, raw size) in file order; bytes is None for a chunk a delta upload did not send.
        self.waiting: list[tuple[bytes, bytes | None, int]] = []
        self.waiting_bytes = 0
        self.lease_id = uuid.uuid4().hex
        self.lease_taken = False
        self.lease_lost = False
        self.lease_stop = asyncio.Event()
        self.heartbeat: asyncio.Task[None] | None = None
        # Set once the commit is sent: from then on a failure leaves its outcome unknown.
        self.commit_sent = False
        self.pack = self._new_pack()
        self.sealed: list[PackWriter] = []  # spool files handed to a put, removed by it (or by abandon)
        self.pending_packs: list[tuple[str, str]] = []  # (pack id, blob key) registered, not committed
        # The first pack's row goes in with the lease, before its size is known; the commit records the size.
        self.early_pack: str | None = None
        self.pack_sizes_at_commit: dict[str, int] = {}
        self.spooling: asyncio.Future[None] | None = None
        # Batches of new chunks being compressed, oldest first: (chunks, future of their frames and frame lengths).
        self.compressing: deque[tuple[list[tuple[bytes, bytes]], asyncio.Future[tuple[memoryview, list[int]]]]] = deque()
        # Full packs go to the blob store in the background while the body keeps streaming.
        self.puts: set[asyncio.Task[None]] = set()
        self.indexing: set[asyncio.Task[None]] = set()  # a sealed pack's rows going into the index
        self.cutting: asyncio.Future[list[tuple[bytes, bytes, int]]] | None = None
        self.hashing: asyncio.Future[None] | None = None

    def _new_pack(self) -> PackWriter:
        return PackWriter(self.blobs.spool_dir(), self.incoming.owner_id, self.lease_id,
                          write_behind=self.blobs.spool_write_behind)

    async def _take_lease(self, *, with_first_pack: bool = True) -> None:
        """Register the lease before the first file is written (or the first reference claimed), and keep it
        alive while the upload is."""
        if self.lease_taken:
            return
        pack = self.pack
        async with unit_of_work(self.sessions, durable=False) as session:
            now = utcnow()
            session.add(UploadLease(id=self.lease_id, holder=lease_holder(), heartbeat_at=now, created_at=now))
            if with_first_pack:
                # Registered now rather than when sealed: a small upload then writes once before its commit, not
                # twice, and on SQLite every write waits its turn behind everyone else's.
                session.add(Pack(id=pack.pack_id, owner_id=pack.owner_id, blob_key=pack.blob_key, size=0,
                                 lease_id=self.lease_id))
        self.lease_taken = True
        if with_first_pack:
            self.early_pack = pack.pack_id
        self.heartbeat = asyncio.create_task(self._keep_lease())

    async def claim_known_chunks(self) -> None:
        """Count the references on the chunks this upload found stored ahead of its commit, under its lease."""
        if known := chunks_to_claim(self):
            await self._take_lease(with_first_pack=False)
            await claim_references(self.sessions, self, known)

    async def _keep_lease(self) -> None:
        interval = max(self.settings.upload_lease_seconds / HEARTBEATS_PER_LEASE, 0.05)
        while True:
            try:
                await asyncio.wait_for(self.lease_stop.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                async with unit_of_work(self.sessions, durable=False) as session:
                    alive = await refresh_lease(session, self.lease_id)
                if not alive:
                    # gc took the lease (heartbeats failed for too long): this upload cannot commit any more.
                    self.lease_lost = True
                    log.warning("upload lease %s was reclaimed by gc", self.lease_id)
                    return
            except Exception:
                log.warning("could not refresh upload lease %s", self.lease_id, exc_info=True)

    async def release_lease(self) -> None:
        """Stop refreshing the lease (its row is deleted by the commit or by `abandon`, else it lapses)."""
        self.lease_stop.set()
        if self.heartbeat is not None:
            # Not cancelled: a heartbeat torn mid-transaction could leave SQLite's write lock behind.
            await asyncio.gather(asyncio.shield(self.heartbeat), return_exceptions=True)

    def _off_loop(self, function: Callable, *args) -> asyncio.Future:
        """A block's work on a worker thread: the blob store's bulk one past the first INTERACTIVE_TRANSFER_BYTES."""
        return self.blobs.off_loop(self.received > INTERACTIVE_TRANSFER_BYTES, function, *args)

    def _cut(self, data: bytes, final: bool) -> list[tuple[bytes, bytes, int]]:
        pieces = self.chunker.feed(data) if data else []
        if final:
            pieces += self.chunker.finish()
        # One native call for the block's chunks: hashing them one by one would hand the GIL back and forth
        # with the event loop a hundred times per MiB (eacct.chunks.digests).
        return [(digest, piece, len(piece)) for digest, piece in zip(sha256_many(pieces), pieces)]

    async def feed(self, data: bytes) -> None:
        """Take the next block of the body. Hashing it and cutting it run on two worker threads while the
        previous block's chunks are looked up and spooled (each stays in order: one block at a time)."""
        self._count(len(data))
        previous = await self._cut_result()
        if data:
            self.hashing = self._off_loop(self.hasher.update, data)
        self.cutting = self._off_loop(self._cut, data, False)
        await self._take(previous)

    def _count(self, size: int) -> None:
        self.received += size
        if self.received > self.incoming.body_bytes:
            raise errors.BadRequest("上传的数据比 Content-Length 声明的多")

    async def feed_delta(self, entries: list[tuple[bytes, bytes | None, int]], body_bytes: int) -> None:
        """Take the next entries of a delta upload, already cut (and verified) by the client's chunker."""
        self._count(body_bytes)
        await self._take(entries)

    async def _cut_result(self) -> list[tuple[bytes, bytes, int]]:
        if self.hashing is not None:
            hashing, self.hashing = self.hashing, None
            await hashing
        if self.cutting is None:
            return []
        cutting, self.cutting = self.cutting, None
        return await cutting

    async def _take(self, cut: list[tuple[bytes, bytes | None, int]]) -> None:
        self.waiting += cut
        self.waiting_bytes += sum(len(piece) for _, piece, _ in cut if piece is not None)
        if len(self.waiting) >= LOOKUP_BATCH or self.waiting_bytes >= WAITING_BYTES:
            await self._place_waiting()

    async def flush(self) -> None:
        """Store everything received so far as pending packs (the stream may go on afterwards)."""
        await self._take(await self._cut_result())
        await self._place_waiting()
        await self._write_compressed(0)
        await self._seal_pack()
        await self._wait_for(self.indexing, 0)
        await self._wait_for(self.puts, 0)

    async def finish(self) -> str:
        """Store the rest; return the whole year's sha256 (a delta upload's is read back from the store)."""
        if not self.incoming.delta:
            await self._take(await self._cut_result())
            self.waiting += await self._off_loop(self._cut, b"", True)
        await self._place_waiting()
        await self._write_compressed(1)  # packs filled before the last batch are indexed now, as while streaming
        self.finishing = True
        await self.flush()
        if self.received != self.incoming.body_bytes:
            raise errors.BadRequest("上传的数据不完整：收到的字节数与 Content-Length 不符")
        if not self.incoming.delta:
            return self.hasher.hexdigest()
        # The client sent only what was new: the year as the store will give it back is what is checked.
        digest = hashlib.sha256()
        size = 0
        async for block in read_entries(self.sessions, self.blobs, self.incoming.owner_id, bytes(self.manifest),
                                         0, None, self._new_location, verify_chunks=False):
            size += len(block)
            await self._off_loop(digest.update, block)
        if size != self.incoming.size:
            raise errors.BadRequest("清单中的数据块大小之和与 X-Archive-Size 不符")
        return digest.hexdigest()

    def _new_location(self, digest: bytes) -> tuple[str, int, int] | None:
        packed = self.new_chunks.get(digest)
        if not packed:  # unknown here, or in the index (where the reader finds it)
            return None
        pack_number, offset, stored, _ = NEW_CHUNK.unpack(packed)
        return pack_blob_key(self.incoming.owner_id, self.pack_ids[pack_number]), offset, stored

    async def _place_waiting(self) -> None:
        """Record the waiting chunks in the manifest; compress and spool those the owner doesn't have yet."""
        batch, self.waiting, self.waiting_bytes = self.waiting, [], 0
        if not batch:
            return
        unknown = {digest for digest, _, _ in batch if digest not in self.new_chunks}
        if unknown:
            if self.reference is None:
                self.reference = await ReferenceManifest.of(self.sessions, self.incoming.owner_id,
                                                             self.incoming.ledger_id, self.incoming.year)
            unknown.difference_update(await self.reference.known(digest for digest, _, _ in batch))
        if unknown:
            # One statement, one round trip: an upload makes hundreds of these while every core is busy.
            owner, digests = driver_list_markers(self.sessions.dialect, 1, len(unknown))
            unknown.difference_update(await read_scalars(
                self.sessions, _KNOWN.format(owner, digests), (self.incoming.owner_id, *unknown)))
        to_store = []
        missing = []
        for digest, piece, size in batch:
            self.manifest += ENTRY.pack(digest, size)
            if digest in unknown:
                unknown.discard(digest)
                if piece is None:
                    missing.append(digest.hex())
                else:
                    to_store.append((digest, piece))
        if missing:
            raise errors.MissingChunks(missing=missing[:1000])
        if not to_store:
            return
        self.new_bytes += sum(len(piece) for _, piece in to_store)
        if self.new_bytes > self.free_bytes:
            raise errors.QuotaExceeded.for_upload(self.new_bytes, self.free_bytes)
        await self._take_lease()
        if self.pack.handle is None:
            # Tracked like a write: `abandon` waits for it, so the file cannot appear after it was discarded.
            self.spooling = asyncio.ensure_future(asyncio.to_thread(self.pack.open))
            await asyncio.shield(self.spooling)
        for digest, _ in to_store:  # placed once compressed; known from now on, so a repeat is not stored twice
            self.new_chunks[digest] = _NOT_KEPT
        self.compressing.append((to_store, self._off_loop(self._compress, to_store)))
        await self._write_compressed(COMPRESSIONS_IN_FLIGHT)

    def _compress(self, chunks: list[tuple[bytes, bytes]]) -> tuple[memoryview, list[int]]:
        """The batch's frames, one after another in a reused buffer, and their lengths."""
        compressor = self.compressors.pop() if self.compressors else self.new_compressor()
        try:
            pieces = [piece for _, piece in chunks]
            buffer = self.frame_buffers.take(batch_bound(sum(len(piece) for piece in pieces), len(pieces)))
            lengths = compressor.compress_into(pieces, buffer)
            return memoryview(buffer)[: sum(lengths)], lengths
        finally:
            self.compressors.append(compressor)

    def new_compressor(self) -> FrameCompressor:
        """A zstd context for one compression thread at a time."""
        return FrameCompressor(ZSTD_LEVEL)

    async def _write_compressed(self, allowed_in_flight: int) -> None:
        """Append compressed batches to the spooled pack, in file order, until at most `allowed_in_flight`
        are still compressing; seal the pack when it is full."""
        while len(self.compressing) > allowed_in_flight:
            chunks, compressing = self.compressing[0]
            # Shielded: if this task is cancelled the threads still run, and `abandon` waits for them.
            compressed = await asyncio.shield(compressing)
            self.compressing.popleft()
            self.spooling = self._off_loop(self._spool, chunks, compressed)
            await asyncio.shield(self.spooling)
            if self.pack.size >= self.settings.pack_target_bytes:
                await self._seal_pack()

    def _spool(self, chunks: list[tuple[bytes, bytes]], compressed: tuple[memoryview, list[int]]) -> None:
        frames, lengths = compressed
        offset = self.pack.append([frames])
        pack_number = len(self.pack_ids)
        for (digest, piece), length in zip(chunks, lengths):
            self.new_chunks[digest] = NEW_CHUNK.pack(pack_number, offset, length, len(piece))
            self.unindexed.append(digest)
            offset += length

    async def _seal_pack(self) -> None:
        """Send the current pack to the blob store in the background, registered as pending first so gc
        can find it; at most `PUTS_IN_FLIGHT` packs travel at once."""
        pack = self.pack
        if pack.size == 0:
            return
        if self.lease_lost:
            raise errors.RetryUpload()
        await asyncio.to_thread(pack.close)
        if pack.pack_id == self.early_pack:
            self.pack_sizes_at_commit[pack.pack_id] = pack.size
        else:
            # The row comes before the writer is replaced: until then `abandon` still finds the spool file.
            async with unit_of_work(self.sessions, durable=False) as session:
                session.add(Pack(id=pack.pack_id, owner_id=pack.owner_id, blob_key=pack.blob_key, size=pack.size,
                                 lease_id=self.lease_id))
        self.pending_packs.append((pack.pack_id, pack.blob_key))
        self.pack_ids.append(pack.pack_id)
        self.sealed.append(pack)
        self.pack = self._new_pack()
        self.puts.add(asyncio.create_task(self._put(pack)))
        digests, self.unindexed = self.unindexed, []
        if self.finishing:
            self.index_at_commit += digests
        else:
            # Indexed as pending rows while the pack travels and the body streams on: the commit then only
            # counts references. One pack's rows at a time (they go in short transactions of their own).
            await self._wait_for(self.indexing, 0)
            self.indexing.add(asyncio.create_task(self._index(pack.pack_id, digests)))
        await self._wait_for(self.puts, PUTS_IN_FLIGHT - 1)

    async def _index(self, pack_id: str, digests: list[bytes]) -> None:
        if await index_pending_chunks(self.sessions, self.chunk_rows(digests), pack_id):
            # All its rows went in: the index says where these chunks are, and no other upload's row can take
            # their place any more; only a row another upload inserted first needs our place kept, for the
            # commit to point it at our copy.
            for digest in digests:
                self.new_chunks[digest] = _NOT_KEPT

    async def _put(self, pack: PackWriter) -> None:
        try:
            await self.blobs.put(pack.blob_key, pack.path)
        except BlobStoreError as exc:
            log.warning("pack %s could not be stored: %s", pack.pack_id, exc)
            raise errors.StorageUnavailable() from exc
        finally:
            await asyncio.to_thread(pack.discard)

    @staticmethod
    async def _wait_for(tasks: set[asyncio.Task[None]], allowed_in_flight: int) -> None:
        """Wait until at most `allowed_in_flight` of these background tasks (puts, indexing) still run; a failed
        one fails the upload. Waiting never cancels them."""
        while len(tasks) > allowed_in_flight:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            tasks -= done
            for task in done:
                task.result()

    def chunk_rows(self, digests: list[bytes]) -> Iterator[tuple]:
        """The pending `chunks` rows of these chunks this upload stored (those whose place it kept), as tuples in
        `CHUNK_COLUMNS` order, each with the reference its version will hold (refs 1, see `index`)."""
        owner_id = self.incoming.owner_id
        for digest in digests:
            packed = self.new_chunks[digest]
            if not packed:
                continue
            pack_number, offset, stored, raw = NEW_CHUNK.unpack(packed)
            yield owner_id, digest, self.pack_ids[pack_number], offset, stored, raw, 1

    async def abandon(self) -> None:
        """Undo what a failed upload stored: spool files, then pending rows, then the blobs of the rows deleted.

        After the commit was sent its outcome is unknown, so nothing stored is touched: the lease lapses and
        gc keeps what the database says is committed and reclaims the rest.
        """
        for task in self.puts:
            task.cancel()
        threads = [future for future in (self.hashing, self.cutting, self.spooling) if future is not None]
        threads += [future for _, future in self.compressing]
        # Indexing is waited for, not cancelled: a transaction torn by a cancellation could leave SQLite's write
        # lock behind, and the rows it adds go with their packs below.
        await asyncio.gather(*self.puts, *self.indexing, *threads, return_exceptions=True)
        for pack in (self.pack, *self.sealed):
            await asyncio.to_thread(pack.discard)
        await self.release_lease()
        if self.commit_sent or not self.lease_taken:
            return
        try:
            async with unit_of_work(self.sessions) as session:
                result = await session.execute(
                    delete(Pack)
                    .where(Pack.lease_id == self.lease_id, Pack.committed.is_(False))
                    .returning(Pack.blob_key)
                    .execution_options(synchronize_session=False)
                )
                removed = list(result.scalars())
                await release_claims(session, [self.lease_id])
                await session.execute(delete(UploadLease).where(UploadLease.id == self.lease_id))
        except Exception:
            log.warning("could not remove the pending packs of upload %s; gc will", self.lease_id, exc_info=True)
            return
        for blob_key in removed:  # their rows are gone for good: nothing can refer to these blobs
            try:
                await self.blobs.delete(blob_key)
            except Exception:
                log.warning("could not delete blob %s; gc will", blob_key, exc_info=True)


async def receive_version(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, settings: Settings,
                          incoming: IncomingVersion, body: AsyncIterator[bytes], rules: CommitRules, *,
                          free_bytes: int) -> Version:
    """Store an uploaded year as a new version; it becomes visible only when complete and verified.

    At most `free_bytes` new bytes are stored (the service's quota); `rules` run inside the commit."""
    upload = Upload(sessions, blobs, settings, incoming, free_bytes)
    try:
        if incoming.delta:
            entries_of = delta_entries(sessions, body, incoming.ledger_id, incoming.year, incoming.if_match)
            async for entries, body_bytes in read_ahead(entries_of, BODY_BLOCKS_AHEAD):
                await upload.feed_delta(entries, body_bytes)
        else:
            async for data in read_ahead(body, BODY_BLOCKS_AHEAD):
                await upload.feed(data)
        digest = await upload.finish()
        if digest != incoming.sha256:
            raise errors.ChecksumMismatch(received_sha256=digest)
        await upload.claim_known_chunks()
        version = await commit(sessions, upload, rules)
    except BaseException:
        await asyncio.shield(upload.abandon())
        raise
    await asyncio.shield(upload.release_lease())
    return version
