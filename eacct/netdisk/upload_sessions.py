"""Resumable uploads: a session claims an upload as its headers would (every header-time check as today),
receives the year's new chunks in batches that are durable as they arrive, says which it holds, and commits a
manifest into a version with every commit-time check of `versions.UploadRules`.

A session's chunks are pending data under its own lease (charged to no one until the commit); the lease's
heartbeat is set `SESSION_SECONDS` ahead, so gc reclaims an abandoned session's packs a day after its last batch.
Only the member who opened a session may use it, on the path (ledger, year, backup or share) it was opened on.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.chunks.digests import sha256_many
from eacct.chunks.errors import ChunkFormatError
from eacct.chunks.manifest import ENTRY, decode_manifest
from eacct.config import Settings
from eacct.db import driver_list_markers, unit_of_work, utcnow
from eacct.members.models import Member
from eacct.netdisk.hooks import NetdiskHooks, ledger_for_backup
from eacct.netdisk.models import Chunk, Ledger, Pack, UploadLease, UploadSession, UploadSessionPack, Version, VersionInfo
from eacct.netdisk.store.common import INTERACTIVE_TRANSFER_BYTES, batched, lease_holder
from eacct.netdisk.store.sessions import UNINDEXED, Held, commit_session, held_chunks, store_chunks
from eacct.netdisk.store.upload import IncomingVersion
from eacct.netdisk.versions import UploadRules, admission, admit_claim
from eacct.storage import BlobStore

__all__ = ["MAX_BATCH_BYTES", "SESSION_SECONDS", "SessionState", "UploadPath", "backup_path", "commit",
           "open_session", "put_chunks", "session_state"]

SESSION_SECONDS = 24 * 3600
MAX_BATCH_BYTES = 32 * 1024 * 1024
MAX_MANIFEST_ENTRIES = 200_000


@dataclass(frozen=True)
class UploadPath:
    """Whose backup an upload goes into, who sends it, by which path, and the path's access rule."""

    owner_id: int
    uploader_id: int
    via: str
    authorize: Callable[[AsyncSession], Awaitable[Ledger | None]]
    after_commit: Callable[[AsyncSession, Ledger, Version], Awaitable[None]] | None = None


@dataclass(frozen=True)
class SessionState:
    """An upload session as the API shows it: which chunks (hex) it already holds."""

    upload_id: str
    expires_at: object
    size: int
    sha256: str
    held: list[str]
    stored: int = 0


def backup_path(hooks: NetdiskHooks, member_id: int, ledger_id: str) -> UploadPath:
    """上传云备份: the owner uploads into their own backup (a new ledger on its first upload)."""

    async def authorize(session: AsyncSession) -> Ledger | None:
        return await ledger_for_backup(session, hooks, member_id, ledger_id, may_be_new=True)

    return UploadPath(member_id, member_id, "backup", authorize)


def _incoming(row: UploadSession) -> IncomingVersion:
    return IncomingVersion(ledger_id=row.ledger_id, year=row.year, size=row.size, sha256=row.sha256, remark=row.remark,
                           ledger_name=row.ledger_name, client_version=row.client_version, if_match=row.if_match,
                           owner_id=row.owner_id, uploader_id=row.uploader_id, via=row.via)


async def open_session(sessions: async_sessionmaker[AsyncSession], settings: Settings, claim: IncomingVersion,
                       path: UploadPath) -> SessionState:
    """Start a resumable upload: the checks a streamed upload passes from its headers, then a session and its lease."""
    incoming, _, _ = await admit_claim(sessions, settings, claim, owner_id=path.owner_id, uploader_id=path.uploader_id,
                                       via=path.via, authorize=path.authorize)
    now = utcnow()
    expires_at = now + timedelta(seconds=SESSION_SECONDS)
    row = UploadSession(
        id=uuid.uuid4().hex, owner_id=incoming.owner_id, uploader_id=incoming.uploader_id, ledger_id=incoming.ledger_id,
        year=incoming.year, via=incoming.via, size=incoming.size, sha256=incoming.sha256, remark=incoming.remark,
        ledger_name=incoming.ledger_name, client_version=incoming.client_version, if_match=incoming.if_match,
        lease_id=uuid.uuid4().hex, created_at=now, expires_at=expires_at,
    )
    async with unit_of_work(sessions) as session:
        session.add(UploadLease(id=row.lease_id, holder=lease_holder(), created_at=now,
                                heartbeat_at=_heartbeat_for(settings, expires_at)))
        await session.flush()
        session.add(row)
    return SessionState(row.id, expires_at, row.size, row.sha256, [])


def _heartbeat_for(settings: Settings, expires_at):
    # gc reclaims a lease once its heartbeat is older than upload_lease_seconds: this one lapses at expires_at.
    return expires_at - timedelta(seconds=settings.upload_lease_seconds)


async def _session(session: AsyncSession, upload_id: str, path: UploadPath, ledger_id: str, year: int) -> UploadSession:
    row = await session.get(UploadSession, upload_id[:32])
    if (row is None or row.uploader_id != path.uploader_id or row.via != path.via or row.ledger_id != ledger_id
            or row.year != year or row.expires_at <= utcnow()):
        raise errors.NotFound("没有这个上传会话（或已过期），请重新开始上传")
    await path.authorize(session)  # access withdrawn meanwhile (a cancelled share) ends the session's use
    return row


async def session_state(sessions: async_sessionmaker[AsyncSession], upload_id: str, path: UploadPath, ledger_id: str,
                        year: int) -> SessionState:
    """Which chunks the session already holds, so an interrupted upload sends only the rest."""
    async with unit_of_work(sessions, read_only=True) as session:
        row = await _session(session, upload_id, path, ledger_id, year)
        held, _ = await held_chunks(session, row.id)
        return SessionState(row.id, row.expires_at, row.size, row.sha256,
                            list(dict.fromkeys(digest.hex() for digest, *_ in held)))


def parse_batch(body: bytes | bytearray) -> list[tuple[bytes, memoryview]]:
    """A batch body: for each chunk its manifest entry (sha256, big-endian u32 size) then its raw bytes; each
    chunk is verified against its digest. The chunks are views into `body` (no copy of up to 32 MiB)."""
    chunks, position = [], 0
    view = memoryview(body)
    while position < len(body):
        if len(body) - position < ENTRY.size:
            raise errors.BadRequest("数据块批次的格式不正确（条目不完整）")
        digest, size = ENTRY.unpack_from(body, position)
        position += ENTRY.size
        piece = view[position : position + size]
        if size == 0 or len(piece) != size:
            raise errors.BadRequest("数据块批次的格式不正确（数据块长度不符）")
        chunks.append((digest, piece))
        position += size
    if not chunks:
        raise errors.BadRequest("数据块批次为空")
    # One native call for the batch, without the GIL (eacct.chunks.digests).
    if sha256_many([piece for _, piece in chunks]) != [digest for digest, _ in chunks]:
        raise errors.ChecksumMismatch("数据块校验失败，本批次未保存")
    return chunks


async def put_chunks(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, settings: Settings, upload_id: str,
                     path: UploadPath, ledger_id: str, year: int, body: bytes | bytearray) -> SessionState:
    """Store a batch of chunks durably as the session's pending data; chunks the session or the owner's store
    already has are not stored again. A session never holds more than the size it claimed."""
    # Parsed and verified on a worker thread: hashing a 32 MiB batch on the event loop would stall every request.
    chunks = await blobs.off_loop(len(body) > INTERACTIVE_TRANSFER_BYTES, parse_batch, body)
    async with unit_of_work(sessions, read_only=True) as session:
        row = await _session(session, upload_id, path, ledger_id, year)
        held_bytes, known, own_packs = 0, set(), set()
        for pack_id, raw_bytes, unindexed in (await session.execute(
                select(UploadSessionPack.pack_id, UploadSessionPack.raw_bytes, UploadSessionPack.unindexed)
                .where(UploadSessionPack.session_id == row.id))).all():
            own_packs.add(pack_id)
            held_bytes += raw_bytes
            known.update(entry[0] for entry in UNINDEXED.iter_unpack(unindexed or b""))
        known |= await _known_digests(session, row.owner_id, own_packs, list({digest for digest, _ in chunks}))
        lease_id, owner_id, size, session_id = row.lease_id, row.owner_id, row.size, row.id
        fresh = list({digest: piece for digest, piece in chunks if digest not in known}.items())
        fresh_bytes = sum(len(piece) for _, piece in fresh)
        if held_bytes + fresh_bytes > size:
            # Its batches' bytes count chunks it no longer holds (rows another upload's commit took over): held ones
            # counted one by one, only here, near the limit.
            held_bytes = sum(raw for *_, raw in (await held_chunks(session, session_id))[0])
        if held_bytes + fresh_bytes > size:
            raise errors.Invalid("上传的数据块超过了该上传声明的年度数据大小")
    if fresh:
        stored = await store_chunks(sessions, blobs, owner_id, lease_id, fresh)
        expires_at = utcnow() + timedelta(seconds=SESSION_SECONDS)
        # Not durable: should a crash lose this record, the session does not hold the batch and the client, resuming,
        # sends it again; the commit's durable transaction makes it durable with everything before it.
        async with unit_of_work(sessions, durable=False) as session:
            # Each batch keeps the session (and its lease) a day longer.
            lease = await session.execute(update(UploadLease).where(UploadLease.id == lease_id).values(
                heartbeat_at=_heartbeat_for(settings, expires_at)))
            if lease.rowcount != 1:
                raise errors.RetryUpload()
            await session.execute(update(UploadSession).where(UploadSession.id == session_id)
                                  .values(expires_at=expires_at))
            # Held from now on: only a batch whose pack was put is recorded.
            session.add(UploadSessionPack(session_id=session_id, pack_id=stored.pack_id, chunk_count=stored.chunk_count,
                                          raw_bytes=stored.raw_bytes, unindexed=stored.unindexed))
    return SessionState(session_id, None, size, "", [], stored=len(fresh))


# A batch of 32 MiB holds a few thousand chunks. The lookup goes to the driver as it is, with a marker per digest:
# SQLAlchemy would expand each IN list on the event loop's thread, stalling every other member's request for tens of
# milliseconds. A plain join: with the session's packs as a subquery in an OR, PostgreSQL's generic plan for the
# prepared statement took seconds per batch once a session held ~100k rows.
_INDEXED = ("SELECT chunks.digest, chunks.pack_id, chunks.refs, packs.committed FROM chunks "
            "JOIN packs ON packs.id = chunks.pack_id WHERE chunks.owner_id = {} AND chunks.digest IN ({})")
# A commit's manifest work runs on the ordinary worker threads up to this many entries (a small year), beyond it on the
# bulk pool (a large transfer's work, at the lowest priority).
INTERACTIVE_MANIFEST_ENTRIES = 4096
# Digests per lookup statement (well under SQLite's and asyncpg's limits on parameters).
_LOOKUP_BATCH = 2000


async def _known_digests(session: AsyncSession, owner_id: int, own_packs: set[str], digests: list[bytes]) -> set[bytes]:
    """Which of these chunks the session holds in the index (a row in one of `own_packs`) or a version uses (another
    upload's pending row carries the reference its version may never hold: its pack must be committed)."""
    connection = await session.connection()
    found: set[bytes] = set()
    for batch in batched(digests, _LOOKUP_BATCH):
        owner_marker, markers = driver_list_markers(connection.dialect, 1, len(batch))
        result = await connection.exec_driver_sql(_INDEXED.format(owner_marker, markers), (owner_id, *batch))
        found.update(bytes(digest) for digest, pack_id, refs, committed in result.fetchall()
                     if pack_id in own_packs or committed and refs > 0)
    return found


def _held_sizes(held: list[Held], entries: list[tuple[bytes, int]]) -> tuple[dict[bytes, int], list[bytes]]:
    """The raw size of each chunk the session holds, and the manifest's other chunks (to look up in the store)."""
    sizes = {digest: raw for digest, _, _, _, raw in held}
    return sizes, list({digest for digest, _ in entries if digest not in sizes})


def _check_manifest(entries: list[tuple[bytes, int]], sizes: dict[bytes, int]) -> None:
    """Every chunk of the manifest is held or stored, with the size the manifest gives it."""
    missing = [digest.hex() for digest in dict.fromkeys(d for d, _ in entries) if digest not in sizes]
    if missing:
        raise errors.MissingChunks(missing=missing[:1000])
    if any(sizes[digest] != size for digest, size in entries):
        raise errors.BadRequest("清单中的数据块大小与已上传的不符")


async def commit(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, settings: Settings, upload_id: str,
                 path: UploadPath, ledger_id: str, year: int, manifest: bytes) -> VersionInfo:
    """Make the session's year a version: `manifest` (entries of eacct.chunks.manifest, in file order) names
    chunks the session holds or the owner's store has; size and whole-file sha256 are verified, then every
    commit-time rule applies (owner's lock, access, If-Match, version cap, retention, quota)."""
    # A 1 GB year's manifest has ~130k entries: the work per entry runs on a worker thread, where the interpreter
    # hands the event loop the GIL every millisecond, instead of holding the loop for a tenth of a second at a time.
    big = len(manifest) > INTERACTIVE_MANIFEST_ENTRIES * ENTRY.size
    try:
        entries = await blobs.off_loop(big, decode_manifest, manifest)
    except ChunkFormatError as exc:
        raise errors.BadRequest(str(exc)) from exc
    if not entries or len(entries) > MAX_MANIFEST_ENTRIES:
        raise errors.BadRequest(f"清单应有 1 到 {MAX_MANIFEST_ENTRIES} 个数据块")
    async with unit_of_work(sessions, read_only=True) as session:
        row = await _session(session, upload_id, path, ledger_id, year)
        incoming = _incoming(row)
        held, unindexed = await held_chunks(session, row.id)
        # The session's packs are those its batches recorded. Another pending pack of its lease is a batch whose
        # blob was never put (its rows could not be removed, or the process died first): never committed, its rows
        # are taken over like another upload's pending rows, and gc reclaims it once the commit ends the lease.
        holding = set(await session.scalars(select(UploadSessionPack.pack_id)
                                            .where(UploadSessionPack.session_id == row.id)))
        pending = [(pack_id, key) for pack_id, key in (await session.execute(
            select(Pack.id, Pack.blob_key).where(Pack.lease_id == row.lease_id, Pack.committed.is_(False)))).all()
            if pack_id in holding]
        sizes, wanted = await blobs.off_loop(big, _held_sizes, held, entries)
        for start in range(0, len(wanted), 500):
            sizes.update((await session.execute(select(Chunk.digest, Chunk.raw_size).where(
                Chunk.owner_id == row.owner_id, Chunk.digest.in_(wanted[start : start + 500])))).all())
    await blobs.off_loop(big, _check_manifest, entries, sizes)
    admit = admission(incoming, path.authorize, path.after_commit)

    async def admit_and_close(session: AsyncSession, version: Version) -> None:
        await admit(session, version)
        # The session ends with its commit (its row and its batches' rows go with it): a second commit of it, or one
        # racing this, finds nothing.
        ended = await session.execute(delete(UploadSession).where(UploadSession.id == row.id,
                                                                  UploadSession.expires_at > utcnow()))
        if ended.rowcount != 1:
            raise errors.NotFound("没有这个上传会话（或已过期），请重新开始上传")

    rules = UploadRules(settings, incoming, admit_and_close)
    version = await commit_session(sessions, blobs, settings, incoming, row.lease_id, manifest, held, unindexed,
                                   pending, rules)
    async with unit_of_work(sessions, read_only=True) as session:
        uploader = await session.get(Member, incoming.uploader_id)
    return VersionInfo.of(version, uploader)
