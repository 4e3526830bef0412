"""The content-addressed ledger store: chunk, deduplicate, pack, index, read back, release, collect garbage.

A version is a manifest of chunks in file order (sha256 digest + raw size each). A chunk is stored once per
owner, zstd-compressed, appended to a pack blob of a few MiB; the `chunks` table says where it lives and how
many versions use it. Quota is the sum of the raw sizes of an owner's chunks in use.

An upload streams: bytes are hashed, cut by the format-aware chunker, looked up, and only new chunks are
compressed into a spooled pack, which is put to the blob store (registered first as *pending*) whenever it
is full. Nothing is visible until one final transaction, under the owner's lock, re-checks access, the
expected version and the quota, inserts the chunk rows, the version and its manifest, counts references,
marks the packs committed and prunes old versions. If anything fails before that commit, the pending packs
are deleted; if the process dies, `collect_garbage` deletes them later (after a grace period, since a
pending pack may belong to an upload still running in another process).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import zstandard
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.config import Settings
from eacct.db import unit_of_work, utcnow
from eacct.netdisk.blobstore import BlobNotFound, BlobStore, BlobStoreError
from eacct.netdisk.chunker import ArchiveChunker
from eacct.netdisk.delta import read_delta
from eacct.netdisk.models import Chunk, Netdisk, Pack, Version, VersionManifest

__all__ = [
    "IncomingVersion",
    "collect_garbage",
    "read_version",
    "receive_version",
    "release_versions",
    "used_bytes",
]

log = logging.getLogger("eacct.store")
T = TypeVar("T")

ENTRY = struct.Struct(">32sI")
NEW_CHUNK = struct.Struct("<IQII")
INSERT_BATCH = 2000
LOOKUP_BATCH = 500
WAITING_BYTES = 4 * 1024 * 1024
PUTS_IN_FLIGHT = 2
DOWNLOAD_BLOCKS_AHEAD = 2
BODY_BLOCKS_AHEAD = 8
STOP_GRACE_SECONDS = 2.0
READ_WINDOW = 512
MAX_COALESCED_READ = 4 * 1024 * 1024
ZSTD_LEVEL = 1


async def used_bytes(session: AsyncSession, owner_id: int) -> int:
    """Quota in use: every distinct chunk a version of the owner refers to, counted once, uncompressed."""
    total = await session.scalar(
        select(func.coalesce(func.sum(Chunk.raw_size), 0)).where(Chunk.owner_id == owner_id, Chunk.refs > 0)
    )
    return int(total or 0)


def iter_manifest(entries: bytes) -> Iterable[tuple[bytes, int]]:
    """(digest, raw size) of each chunk of a manifest, in file order."""
    return ENTRY.iter_unpack(entries)


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


def _batched(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------------------------------- upload


@dataclass
class IncomingVersion:
    """What an upload claims before its bytes arrive, and where it goes."""

    owner_id: int
    ledger_id: str
    year: int
    uploader_id: int
    via: str
    size: int
    sha256: str
    remark: str = ""
    client_version: str = ""
    if_match: str | None = None
    # A delta upload's body holds the manifest and only the chunks the server lacks (eacct.netdisk.delta);
    # `size` is then the whole year's size and `body_size` the body's.
    delta: bool = False
    body_size: int | None = None

    @property
    def body_bytes(self) -> int:
        return self.size if self.body_size is None else self.body_size


# Called inside the commit transaction, with the owner locked: re-checks that the uploader may still write
# (a share cancelled meanwhile), creates the ledger on a first upload, and may add rows (a notification).
CommitHook = Callable[[AsyncSession, Version], Awaitable[None]]


def pack_blob_key(owner_id: int, pack_id: str) -> str:
    """Where a pack lives in the blob store: a new key for every pack, never overwritten."""
    return f"packs/{owner_id}/{pack_id[:2]}/{pack_id}"


@dataclass
class _PackWriter:
    """Spools compressed chunks into one local file until it is big enough to become a pack blob."""

    directory: Path
    owner_id: int
    pack_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    size: int = 0
    handle: object | None = None

    @property
    def path(self) -> Path:
        return self.directory / f"{self.pack_id}.pack"

    @property
    def blob_key(self) -> str:
        return pack_blob_key(self.owner_id, self.pack_id)

    def append(self, frame: bytes) -> int:
        if self.handle is None:
            self.handle = open(self.path, "wb")
        offset = self.size
        self.handle.write(frame)
        self.size += len(frame)
        return offset

    def close(self) -> None:
        # No fsync here: the blob store's `put` is what makes a pack durable (the local one fsyncs it).
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        self.path.unlink(missing_ok=True)


class _Upload:
    """The state of one streaming upload; CPU work runs in a worker thread, database and blob I/O on the loop."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, settings: Settings,
                 incoming: IncomingVersion, free_bytes: int) -> None:
        self.sessions = sessions
        self.blobs = blobs
        self.settings = settings
        self.incoming = incoming
        self.free_bytes = free_bytes
        self.hasher = hashlib.sha256()
        self.chunker = ArchiveChunker()
        self.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self.received = 0
        self.manifest = bytearray()
        # Chunks this upload stored itself: digest → NEW_CHUNK-packed (pack number, offset, stored length,
        # raw size); packed because a 1 GB year has ~100k of them and tuples of ints cost three times as much.
        self.new_chunks: dict[bytes, bytes] = {}
        self.pack_ids: list[str] = []
        self.new_bytes = 0
        # (digest, bytes, raw size) in file order; bytes is None for a chunk a delta upload did not send.
        self.waiting: list[tuple[bytes, bytes | None, int]] = []
        self.waiting_bytes = 0
        self.pack = _PackWriter(blobs.spool_dir(), incoming.owner_id)
        self.pending_packs: list[tuple[str, str]] = []  # (pack id, blob key) registered, not committed
        # Full packs go to the blob store in the background while the body keeps streaming.
        self.puts: set[asyncio.Task[None]] = set()
        self.cutting: asyncio.Future[list[tuple[bytes, bytes, int]]] | None = None

    def _cut(self, data: bytes, final: bool) -> list[tuple[bytes, bytes, int]]:
        if data:
            self.hasher.update(data)
        pieces = self.chunker.feed(data) if data else []
        if final:
            pieces += self.chunker.finish()
        return [(hashlib.sha256(piece).digest(), piece, len(piece)) for piece in pieces]

    async def feed(self, data: bytes) -> None:
        """Take the next block of the body. Cutting and hashing it runs on a worker thread while the
        previous block's chunks are looked up and spooled (cuts stay in order: one runs at a time)."""
        self._count(len(data))
        previous = await self._cut_result()
        self.cutting = asyncio.ensure_future(asyncio.to_thread(self._cut, data, False))
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
        await self._seal_pack()
        await self._wait_for_puts(0)

    async def finish(self) -> str:
        """Store the rest; return the whole year's sha256 (a delta upload's is read back from the store)."""
        if not self.incoming.delta:
            await self._take(await self._cut_result())
            self.waiting += await asyncio.to_thread(self._cut, b"", True)
        await self.flush()
        if self.received != self.incoming.body_bytes:
            raise errors.BadRequest("上传的数据不完整：收到的字节数与 Content-Length 不符")
        if not self.incoming.delta:
            return self.hasher.hexdigest()
        # The client sent only what was new: the year as the store will give it back is what is checked.
        digest = hashlib.sha256()
        size = 0
        async for block in _read_entries(self.sessions, self.blobs, self.incoming.owner_id, bytes(self.manifest),
                                         0, None, self._new_location):
            size += len(block)
            await asyncio.to_thread(digest.update, block)
        if size != self.incoming.size:
            raise errors.BadRequest("清单中的数据块大小之和与 X-Archive-Size 不符")
        return digest.hexdigest()

    def _new_location(self, digest: bytes) -> tuple[str, int, int] | None:
        packed = self.new_chunks.get(digest)
        if packed is None:
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
            async with unit_of_work(self.sessions, read_only=True) as session:
                rows = await session.scalars(
                    select(Chunk.digest).where(Chunk.owner_id == self.incoming.owner_id, Chunk.digest.in_(unknown))
                )
                unknown.difference_update(rows)
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
            raise errors.Conflict("云端缺少部分数据块，请重新上传（将发送完整数据）", code="missing_chunks",
                                  missing=missing[:1000])
        if not to_store:
            return
        self.new_bytes += sum(len(piece) for _, piece in to_store)
        if self.new_bytes > self.free_bytes:
            raise _quota_exceeded(self.new_bytes, self.free_bytes)
        await asyncio.to_thread(self._spool, to_store)
        if self.pack.size >= self.settings.pack_target_bytes:
            await self._seal_pack()

    def _spool(self, chunks: list[tuple[bytes, bytes]]) -> None:
        for digest, piece in chunks:
            frame = self.compressor.compress(piece)
            offset = self.pack.append(frame)
            self.new_chunks[digest] = NEW_CHUNK.pack(len(self.pack_ids), offset, len(frame), len(piece))

    async def _seal_pack(self) -> None:
        """Send the current pack to the blob store in the background, registered as pending first so gc
        can find it; at most `PUTS_IN_FLIGHT` packs travel at once."""
        pack = self.pack
        if pack.size == 0:
            return
        self.pack_ids.append(pack.pack_id)
        self.pack = _PackWriter(self.blobs.spool_dir(), self.incoming.owner_id)
        await asyncio.to_thread(pack.close)
        async with unit_of_work(self.sessions) as session:
            session.add(Pack(id=pack.pack_id, owner_id=pack.owner_id, blob_key=pack.blob_key, size=pack.size))
        self.pending_packs.append((pack.pack_id, pack.blob_key))
        self.puts.add(asyncio.create_task(self._put(pack)))
        await self._wait_for_puts(PUTS_IN_FLIGHT - 1)

    async def _put(self, pack: _PackWriter) -> None:
        try:
            await self.blobs.put(pack.blob_key, pack.path)
        except BlobStoreError as exc:
            log.warning("pack %s could not be stored: %s", pack.pack_id, exc)
            raise errors.StorageUnavailable() from exc
        finally:
            await asyncio.to_thread(pack.discard)

    async def _wait_for_puts(self, allowed_in_flight: int) -> None:
        """Wait until at most `allowed_in_flight` puts are still running; a failed put fails the upload."""
        while len(self.puts) > allowed_in_flight:
            done, _ = await asyncio.wait(self.puts, return_when=asyncio.FIRST_COMPLETED)
            self.puts -= done
            for task in done:
                task.result()

    def chunk_rows(self) -> Iterator[dict]:
        """The `chunks` rows of what this upload stored, made as they are inserted."""
        for digest, packed in self.new_chunks.items():
            pack_number, offset, stored, raw = NEW_CHUNK.unpack(packed)
            yield {"owner_id": self.incoming.owner_id, "digest": digest, "pack_id": self.pack_ids[pack_number],
                   "offset": offset, "stored_length": stored, "raw_size": raw, "refs": 0}

    async def abandon(self) -> None:
        """Undo what a failed upload stored: its spool file, its pending packs and their rows."""
        for task in self.puts:
            task.cancel()
        await asyncio.gather(*self.puts, *([self.cutting] if self.cutting else []), return_exceptions=True)
        await asyncio.to_thread(self.pack.discard)
        for pack_id, blob_key in self.pending_packs:
            try:
                await self.blobs.delete(blob_key)
                async with unit_of_work(self.sessions) as session:
                    await session.execute(delete(Pack).where(Pack.id == pack_id, Pack.committed.is_(False)))
            except Exception:
                log.warning("could not remove pending pack %s; gc will", pack_id, exc_info=True)


def _quota_exceeded(needed: int, free: int) -> errors.QuotaExceeded:
    mib = 1024 * 1024
    return errors.QuotaExceeded(
        f"云盘空间不足：本次上传需要 {needed / mib:.2f} MB，可用空间只有 {max(free, 0) / mib:.2f} MB",
        needed_bytes=needed,
        free_bytes=max(free, 0),
    )


async def lock_owner(session: AsyncSession, owner_id: int) -> Netdisk:
    """Take the owner's write lock (their netdisk row); commits, deletes and share changes of one owner queue here."""
    netdisk = await session.scalar(select(Netdisk).where(Netdisk.member_id == owner_id).with_for_update())
    if netdisk is None:
        raise errors.NotFound("云盘尚未开通")
    return netdisk


async def lock_owner_if_opened(session: AsyncSession, owner_id: int) -> None:
    """Take the owner's write lock when they have a netdisk (without one they own no ledger to race on)."""
    await session.execute(select(Netdisk.member_id).where(Netdisk.member_id == owner_id).with_for_update())


async def latest_version(session: AsyncSession, ledger_id: str, year: int) -> Version | None:
    """The newest version of a (ledger, year)."""
    return await session.scalar(
        select(Version).where(Version.ledger_id == ledger_id, Version.year == year).order_by(Version.id.desc()).limit(1)
    )


def _check_expected_version(latest: Version | None, if_match: str | None) -> None:
    if if_match is None:
        return
    current = latest.public_id if latest is not None else None
    if current != if_match:
        extra = {"latest_version_id": current}
        raise errors.VersionConflict(
            "云端已有更新的版本（在您开始修改之后有人上传过），请先下载最新版本再上传；您的数据未被覆盖", **extra
        )


async def check_before_upload(session: AsyncSession, settings: Settings, incoming: IncomingVersion) -> int:
    """Refuse what can be refused from the headers alone, before any body byte; return the free bytes.

    The quota check counts the whole upload as new, less what the current version of this (ledger, year)
    could share with it: a re-upload of a changed ledger is mostly known chunks. The exact count of new
    bytes is enforced again while the body streams, before any byte past the quota is stored.
    """
    netdisk = await session.get(Netdisk, incoming.owner_id)
    if netdisk is None:
        raise errors.NotFound("共享人的云盘尚未开通")
    latest = await latest_version(session, incoming.ledger_id, incoming.year)
    _check_expected_version(latest, incoming.if_match)
    await _check_version_cap(session, settings, incoming)
    free = netdisk.quota_bytes - await used_bytes(session, incoming.owner_id)
    reusable = latest.size if latest is not None else 0
    # New bytes are at most the body (a delta body carries only new chunks) and at most what the kept
    # version cannot share.
    needed = min(incoming.size - reusable, incoming.body_bytes)
    if needed > free:
        raise _quota_exceeded(needed, free)
    return free


async def _check_version_cap(session: AsyncSession, settings: Settings, incoming: IncomingVersion) -> None:
    held = await session.scalar(select(func.count()).select_from(Version).where(Version.owner_id == incoming.owner_id))
    in_year = await session.scalar(
        select(func.count()).select_from(Version).where(
            Version.ledger_id == incoming.ledger_id, Version.year == incoming.year
        )
    )
    # Retention will prune this year's oldest version when it is full, so such an upload adds nothing.
    after = held + 1 - (1 if in_year >= settings.versions_kept_per_year else 0)
    if after > settings.max_versions_per_member:
        raise errors.TooManyVersions(
            f"云盘中最多保存 {settings.max_versions_per_member} 个版本，已达上限；请先删除不需要的账套或年度",
            limit=settings.max_versions_per_member,
        )


async def receive_version(
    sessions: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
    settings: Settings,
    incoming: IncomingVersion,
    body: AsyncIterator[bytes],
    on_commit: CommitHook,
    *,
    free_bytes: int,
) -> Version:
    """Store an uploaded year as a new version; it becomes visible only when complete and verified."""
    upload = _Upload(sessions, blobs, settings, incoming, free_bytes)
    try:
        if incoming.delta:
            async def base() -> bytes:
                return await _base_manifest(sessions, incoming)

            async for entries, body_bytes in read_ahead(read_delta(body, base), BODY_BLOCKS_AHEAD):
                await upload.feed_delta(entries, body_bytes)
        else:
            async for data in read_ahead(body, BODY_BLOCKS_AHEAD):
                await upload.feed(data)
        digest = await upload.finish()
        if digest != incoming.sha256:
            raise errors.ChecksumMismatch(received_sha256=digest)
        return await _commit(sessions, settings, upload, on_commit)
    except BaseException:
        await asyncio.shield(upload.abandon())
        raise


async def _base_manifest(sessions: async_sessionmaker[AsyncSession], incoming: IncomingVersion) -> bytes:
    """The chunk list of the version a delta upload builds on (its If-Match)."""
    if incoming.if_match is None:
        raise errors.BadRequest("增量上传引用基准版本时需要 If-Match")
    async with unit_of_work(sessions, read_only=True) as session:
        entries = await session.scalar(
            select(VersionManifest.entries)
            .join(Version, Version.id == VersionManifest.version_id)
            .where(Version.public_id == incoming.if_match, Version.ledger_id == incoming.ledger_id,
                   Version.year == incoming.year)
        )
    if entries is None:
        raise errors.VersionConflict("增量上传的基准版本已不存在，请先下载最新版本再上传")
    return entries


async def _upsert_chunks(session: AsyncSession, rows: Iterable[dict]) -> None:
    dialect = session.bind.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # A concurrent upload of the same owner may have stored the same chunk first; its copy wins.
    statement = insert(Chunk).on_conflict_do_nothing(index_elements=["owner_id", "digest"])
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == INSERT_BATCH:
            await session.execute(statement, batch)  # executemany: compiled once, a bounded batch in memory
            batch = []
    if batch:
        await session.execute(statement, batch)


async def _commit(sessions, settings: Settings, upload: _Upload, on_commit: CommitHook) -> Version:
    incoming = upload.incoming
    async with unit_of_work(sessions) as session:
        netdisk = await lock_owner(session, incoming.owner_id)
        _check_expected_version(await latest_version(session, incoming.ledger_id, incoming.year), incoming.if_match)
        await _check_version_cap(session, settings, incoming)
        version = Version(
            public_id=uuid.uuid4().hex,
            ledger_id=incoming.ledger_id,
            owner_id=incoming.owner_id,
            year=incoming.year,
            remark=incoming.remark,
            size=incoming.size,
            sha256=incoming.sha256,
            uploaded_at=utcnow(),
            uploaded_by_id=incoming.uploader_id,
            via=incoming.via,
            client_version=incoming.client_version,
        )
        await on_commit(session, version)
        session.add(version)
        await session.flush()
        session.add(VersionManifest(version_id=version.id, entries=bytes(upload.manifest)))
        if upload.pending_packs:
            await session.execute(
                update(Pack).where(Pack.id.in_([pack_id for pack_id, _ in upload.pending_packs])).values(committed=True)
            )
        await _upsert_chunks(session, upload.chunk_rows())
        distinct = list({digest for digest, _ in iter_manifest(upload.manifest)})
        await _add_refs(session, incoming.owner_id, distinct, +1)
        await _prune(session, settings, incoming.ledger_id, incoming.year, incoming.owner_id)
        used = await used_bytes(session, incoming.owner_id)
        if used > netdisk.quota_bytes:
            raise _quota_exceeded(upload.new_bytes, netdisk.quota_bytes - (used - upload.new_bytes))
    upload.pending_packs.clear()
    return version


async def _add_refs(session: AsyncSession, owner_id: int, digests: list[bytes], delta: int) -> None:
    for batch in _batched(digests, LOOKUP_BATCH):
        result = await session.execute(
            update(Chunk).where(Chunk.owner_id == owner_id, Chunk.digest.in_(batch)).values(refs=Chunk.refs + delta)
        )
        if delta > 0 and result.rowcount != len(batch):
            # gc removed an unreferenced chunk this upload counted on; the client simply uploads again.
            raise errors.Conflict("云端数据正在整理，请重新上传", code="retry_upload")


async def _prune(session: AsyncSession, settings: Settings, ledger_id: str, year: int, owner_id: int) -> None:
    """Keep the newest N versions of the year; the one just committed (verified) is always among them."""
    stale = (
        await session.scalars(
            select(Version.id)
            .where(Version.ledger_id == ledger_id, Version.year == year)
            .order_by(Version.id.desc())
            .offset(max(settings.versions_kept_per_year, 1))
        )
    ).all()
    await release_versions(session, owner_id, list(stale))


async def release_versions(session: AsyncSession, owner_id: int, version_ids: list[int]) -> None:
    """Delete versions and drop their references; chunks nobody uses stop counting against the quota at once."""
    for version_id in version_ids:
        entries = await session.scalar(select(VersionManifest.entries).where(VersionManifest.version_id == version_id))
        digests = list({digest for digest, _ in iter_manifest(entries or b"")})
        await _add_refs(session, owner_id, digests, -1)
        await session.execute(delete(VersionManifest).where(VersionManifest.version_id == version_id))
        await session.execute(delete(Version).where(Version.id == version_id))


# -------------------------------------------------------------------------------------------- download


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
    async for block in _read_entries(sessions, blobs, version.owner_id, entries, start, end):
        yield block


Locator = Callable[[bytes], "tuple[str, int, int] | None"]


async def _read_entries(sessions, blobs: BlobStore, owner_id: int, entries: bytes, start: int, end: int | None,
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


# ------------------------------------------------------------------------------------------------- gc


async def collect_garbage(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, settings: Settings) -> dict[str, int]:
    """Delete unreferenced chunks, packs nothing uses, abandoned pending packs and blobs no pack row names.

    Pending packs and unnamed blobs younger than the grace period are left alone: an upload in another
    process may still be writing them.
    """
    report = {"chunks": 0, "packs": 0, "pending_packs": 0, "stray_blobs": 0}
    horizon = utcnow() - timedelta(seconds=settings.gc_grace_seconds)
    async with unit_of_work(sessions) as session:
        result = await session.execute(delete(Chunk).where(Chunk.refs <= 0))
        report["chunks"] = result.rowcount or 0
        dead = (
            await session.execute(
                select(Pack.id, Pack.blob_key).where(
                    Pack.committed.is_(True), ~select(Chunk.id).where(Chunk.pack_id == Pack.id).exists()
                )
            )
        ).all()
        stale = (
            await session.execute(
                select(Pack.id, Pack.blob_key).where(Pack.committed.is_(False), Pack.created_at < horizon)
            )
        ).all()
        known = set(await session.scalars(select(Pack.blob_key)))
    for label, packs in (("packs", dead), ("pending_packs", stale)):
        for pack_id, blob_key in packs:
            # The row goes first: a pack without a row is only a stray blob, which the next run removes.
            async with unit_of_work(sessions) as session:
                await session.execute(delete(Pack).where(Pack.id == pack_id))
            await blobs.delete(blob_key)
            report[label] += 1
    gone = {key for _, key in dead} | {key for _, key in stale}
    async for info in blobs.list("packs/"):
        if info.key not in known and info.key not in gone and info.modified < horizon:
            await blobs.delete(info.key)
            report["stray_blobs"] += 1
    return report
