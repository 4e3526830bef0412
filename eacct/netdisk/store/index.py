"""The chunk index: pending chunk rows written while an upload streams, made a version's by the short commit
transaction, versions released.

A chunk row whose pack is still pending (not committed) belongs to a running upload: it carries the one reference
that upload's version will hold (refs 1), yet nothing counts on it (every lookup and the quota want a committed
pack), and it goes with its pack (ON DELETE CASCADE) when the upload is abandoned or gc reclaims the pack after its
lease lapsed. The commit marks the packs committed and checks that its rows are all still there, so a large year
holds the database's write lock neither while ~130k rows are inserted nor while their references are counted."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.chunks.manifest import iter_manifest
from eacct.db import driver_list_markers, driver_placeholders, execute_together, unit_of_work, utcnow
from eacct.netdisk.models import Chunk, Pack, UploadClaim, UploadLease, Version, VersionManifest
from eacct.netdisk.store.common import CommittableUpload, batched

# Rows per pending-index transaction (about one 8 MB pack): each holds SQLite's write lock for some ten
# milliseconds, and a 1 GB upload takes the lock ~65 times instead of once for seconds.
PENDING_BATCH = 2000
# Digests per statement when the commit counts references (an IN list each).
LOOKUP_BATCH = 500

__all__ = [
    "CHUNK_COLUMNS", "CommitRules", "chunks_to_claim", "claim_references", "commit", "index_pending_chunks",
    "insert_chunk_rows", "refresh_lease", "release_claims", "release_versions",
]


class CommitRules(Protocol):
    """The netdisk service's rules, applied inside the commit transaction; the store itself knows none of them."""

    async def before_insert(self, session: AsyncSession, version: Version) -> None:
        """Lock the owner and re-check what must still hold (access, expected version, version cap)."""

    async def after_insert(self, session: AsyncSession, version: Version, new_bytes: int) -> None:
        """Apply what follows from the new version (retention) and refuse it when it breaks a limit (quota)."""


async def index_pending_chunks(sessions: async_sessionmaker[AsyncSession], rows: Iterable[tuple], pack_id: str) -> bool:
    """Insert the chunk rows of a sealed pending pack, in short transactions of `PENDING_BATCH` rows each, so
    other members' writes interleave with a large upload's indexing; True if every row went in (none was
    already there from a concurrent upload)."""
    rows = list(rows)
    for batch in batched(rows, PENDING_BATCH):
        async with unit_of_work(sessions, durable=False) as session:
            await insert_chunk_rows(session, batch)
    async with unit_of_work(sessions, read_only=True) as session:
        return await session.scalar(select(func.count()).where(Chunk.pack_id == pack_id)) == len(rows)


# A concurrent upload of the same owner may have stored the same chunk first; its row wins, and the commit
# counts on it only once its pack is committed. Handed to the driver as it is (the same SQL on SQLite and
# PostgreSQL, in the driver's parameter style): SQLAlchemy would build a parameter dictionary per row, which
# cost the event loop ~1 s of CPU per GB uploaded, and a 1 GB year has ~130k rows.
CHUNK_COLUMNS = ("owner_id", "digest", "pack_id", "offset", "stored_length", "raw_size", "refs")
_INSERT_CHUNK = ('INSERT INTO chunks (owner_id, digest, pack_id, "offset", stored_length, raw_size, refs) '
                 "VALUES ({}) ON CONFLICT (owner_id, digest) DO NOTHING")


async def insert_chunk_rows(session: AsyncSession, rows: list[tuple]) -> None:
    """Insert chunk rows (tuples in `CHUNK_COLUMNS` order); a row another upload inserted first stays as it is."""
    connection = await session.connection()
    for operation, batch in _chunk_row_statements(connection.dialect, rows):
        await connection.exec_driver_sql(operation, batch)


def _chunk_row_statements(dialect, rows: list[tuple]) -> list[tuple[str, list[tuple]]]:
    """The inserts of these chunk rows, `PENDING_BATCH` rows a statement."""
    insert = _INSERT_CHUNK.format(driver_placeholders(dialect, len(CHUNK_COLUMNS)))
    return [(insert, batch) for batch in batched(rows, PENDING_BATCH)]


async def commit(sessions: async_sessionmaker[AsyncSession], upload: CommittableUpload, rules: CommitRules) -> Version:
    """Make a fully received, verified upload a version: one short transaction inserts the version and its
    manifest, marks its packs committed and counts references (its chunk rows are already indexed, pending),
    with the service's rules around it."""
    incoming = upload.incoming
    # The chunks this upload neither stored nor claimed, which the commit counts on: worked out before the write
    # lock is taken (a 1 GB year's manifest is ~130k entries).
    others = {digest for digest, _ in iter_manifest(upload.manifest)
              if digest not in upload.new_chunks and digest not in upload.claimed}
    async with unit_of_work(sessions) as session:
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
        await rules.before_insert(session, version)
        session.add(version)
        await session.flush()
        own_packs = [pack_id for pack_id, _ in upload.pending_packs]
        counted = 0  # rows in this upload's packs, each the new version's reference
        # The packs and the lease are checked before any row may name a pack gc has reclaimed meanwhile.
        for writes in _commit_writes(sessions.dialect, upload, version.id, own_packs, others):
            counts = await execute_together(session, [(operation, parameters) for operation, parameters, _ in writes])
            for (_, _, expected), count in zip(writes, counts, strict=True):
                if expected is _COUNTED:
                    counted += count or 0
                elif expected is not None and count != expected:
                    # A pack no longer pending or the lease gone: gc reclaimed this upload (its spool files may be
                    # gone). A chunk counted on is gone: gc removed it unreferenced. Either way the client uploads
                    # again.
                    raise errors.RetryUpload()
        if counted != len(upload.new_chunks):
            elsewhere = await _stored_elsewhere(session, incoming.owner_id, list(upload.new_chunks), own_packs)
            await _take_over_pending(session, upload, elsewhere)
            await _add_refs(session, incoming.owner_id, list(elsewhere), +1)
        await rules.after_insert(session, version, upload.new_bytes)
        upload.commit_sent = True  # leaving the block sends COMMIT
    upload.pending_packs.clear()
    return version


# How `commit` checks a write's row count: the count it must be, none to check, or references counted on own packs.
_COUNTED = object()
Write = tuple[str, "tuple | list[tuple]", "int | object | None"]


def _commit_writes(dialect, upload: CommittableUpload, version_id: int, own_packs: list[str],
                   others: set[bytes]) -> tuple[list[Write], list[Write]]:
    """The commit's writes after the version row, each with the row count it must have, in two groups that each go
    to the database together (`execute_together`) while the write lock is held: the manifest, the packs and the
    lease; then the chunk rows, the count of this upload's rows and the references on others."""
    manifest = f"INSERT INTO version_manifests (version_id, entries) VALUES ({driver_placeholders(dialect, 2)})"
    settling: list[Write] = [(manifest, (version_id, bytes(upload.manifest)), None)]
    if own_packs:
        sizes = upload.pack_sizes_at_commit
        markers = iter(driver_placeholders(dialect, 2 * len(sizes) + len(own_packs)).split(", "))
        cases = "".join(f" WHEN {next(markers)} THEN {next(markers)}" for _ in sizes)
        set_size = f", size = CASE id{cases} ELSE size END" if sizes else ""
        listed = ", ".join(next(markers) for _ in own_packs)
        settling.append((f"UPDATE packs SET committed = TRUE, lease_id = NULL{set_size} "
                         f"WHERE id IN ({listed}) AND NOT committed",
                         (*[value for pair in sizes.items() for value in pair], *own_packs), len(own_packs)))
    if upload.lease_taken:
        settling.append((f"DELETE FROM upload_leases WHERE id = {driver_placeholders(dialect, 1)}",
                         (upload.lease_id,), 1))
    rows = list(upload.chunk_rows(upload.index_at_commit))
    counting: list[Write] = [(*statement, None) for statement in _chunk_row_statements(dialect, rows)]
    for batch in batched(own_packs, LOOKUP_BATCH):
        # Every row in this upload's packs is a distinct chunk of its manifest, which went in with its reference
        # (refs 1); a row that did not (written by an older server) gets it here. Then they are counted.
        listed = driver_placeholders(dialect, len(batch))
        counting.append((f"UPDATE chunks SET refs = 1 WHERE pack_id IN ({listed}) AND refs = 0", tuple(batch), None))
        counting.append((f"SELECT count(*) FROM chunks WHERE pack_id IN ({listed})", tuple(batch), _COUNTED))
    counting += [(operation, parameters, len(parameters) - 2)
                 for operation, parameters in _add_refs_statements(dialect, upload.incoming.owner_id, list(others), +1)]
    return settling, counting


async def _stored_elsewhere(session: AsyncSession, owner_id: int, digests: list[bytes],
                            own_packs: list[str]) -> set[bytes]:
    """Of the chunks this upload stored, those whose row a concurrent upload inserted first (its copy wins)."""
    found: set[bytes] = set()
    for batch in batched(digests, LOOKUP_BATCH):
        found.update(await session.scalars(
            select(Chunk.digest).where(Chunk.owner_id == owner_id, Chunk.digest.in_(batch),
                                       Chunk.pack_id.not_in(own_packs))
        ))
    return found


async def _take_over_pending(session: AsyncSession, upload: CommittableUpload, digests: set[bytes]) -> None:
    """Point rows that sit in another upload's pending pack at this upload's copy (now committed): that upload
    may still be abandoned, and a retry must not fail while a dead attempt of it waits for gc."""
    table = Chunk.__table__
    statement = (
        table.update()
        .where(table.c.owner_id == bindparam("owner"), table.c.digest == bindparam("chunk_digest"),
               table.c.pack_id.in_(select(Pack.id).where(Pack.committed.is_(False))))
        # Its pending reference was the other upload's: this one's is counted next.
        .values(pack_id=bindparam("new_pack"), offset=bindparam("new_offset"),
                stored_length=bindparam("new_stored"), raw_size=bindparam("new_raw"), refs=0)
    )
    rows = [{"owner": owner, "chunk_digest": digest, "new_pack": pack_id, "new_offset": offset, "new_stored": stored,
             "new_raw": raw} for owner, digest, pack_id, offset, stored, raw, _ in upload.chunk_rows(sorted(digests))]
    for batch in batched(rows, LOOKUP_BATCH):
        await session.execute(statement, batch)


# Reference counting on many chunks at once (a re-upload of a 1 GB year counts on ~60k chunks it did not store),
# handed to the driver as it is: SQLAlchemy would build and process each long IN list on the event loop while
# the commit holds SQLite's write lock. A chunk is counted on only where its pack is committed: a row of another
# upload's pending pack may still be abandoned (checked per row by primary key, not against every pack).
_ADD_REFS = "UPDATE chunks SET refs = refs + {} WHERE owner_id = {} AND digest IN ({})"
_IN_COMMITTED_PACK = " AND EXISTS (SELECT 1 FROM packs WHERE packs.id = chunks.pack_id AND packs.committed)"
REFS_BATCH = 2000
# Known chunks an upload counts on ahead of its commit, per transaction (`claim_references`): only an upload
# with at least this many does, so a small upload writes no more often than before.
CLAIM_BATCH = REFS_BATCH


async def _add_refs(session: AsyncSession, owner_id: int, digests: list[bytes], delta: int) -> None:
    connection = await session.connection()
    for operation, parameters in _add_refs_statements(connection.dialect, owner_id, digests, delta):
        result = await connection.exec_driver_sql(operation, parameters)
        if delta > 0 and result.rowcount != len(parameters) - 2:
            # gc removed an unreferenced chunk this upload counted on; the client simply uploads again.
            raise errors.RetryUpload()


def _add_refs_statements(dialect, owner_id: int, digests: list[bytes], delta: int) -> list[tuple[str, tuple]]:
    """The updates adding `delta` references to these chunks, `REFS_BATCH` a statement; the parameters are (delta,
    owner, *digests). A reference is added only where the chunk's pack is committed."""
    statements = []
    for batch in batched(digests, REFS_BATCH):
        delta_marker, owner_marker, digest_markers = driver_list_markers(dialect, 2, len(batch))
        operation = _ADD_REFS.format(delta_marker, owner_marker, digest_markers)
        if delta > 0:
            operation += _IN_COMMITTED_PACK
        statements.append((operation, (delta, owner_id, *batch)))
    return statements


async def release_versions(session: AsyncSession, owner_id: int, version_ids: list[int]) -> None:
    """Delete versions and drop their references; chunks nobody uses stop counting against the quota at once."""
    if not version_ids:
        return
    connection = await session.connection()
    releases = []
    for version_id in version_ids:  # one manifest in memory at a time; read and deleted in one statement
        entries = await session.scalar(
            delete(VersionManifest).where(VersionManifest.version_id == version_id).returning(VersionManifest.entries)
            .execution_options(synchronize_session=False)
        )
        digests = list({digest for digest, _ in iter_manifest(entries or b"")})
        releases += _add_refs_statements(connection.dialect, owner_id, digests, -1)
    # Together with the versions' deletion: a prune inside an upload's commit holds the write lock meanwhile.
    releases.append((f"DELETE FROM versions WHERE id IN ({driver_placeholders(connection.dialect, len(version_ids))})",
                     tuple(version_ids)))
    await execute_together(session, releases)


def chunks_to_claim(upload: CommittableUpload) -> list[bytes]:
    """The distinct stored chunks an upload counts on, as many full `CLAIM_BATCH`es as there are: the rest (and
    a small upload's all) the commit counts, so a small upload writes no more often than before."""
    known = list(dict.fromkeys(digest for digest, _ in iter_manifest(upload.manifest)
                               if digest not in upload.new_chunks))
    return known[: len(known) - len(known) % CLAIM_BATCH]


async def claim_references(sessions: async_sessionmaker[AsyncSession], upload: CommittableUpload,
                           digests: list[bytes]) -> None:
    """Count one reference on each of these stored chunks ahead of the commit, `CLAIM_BATCH` per short
    transaction, recorded under the upload's lease (`UploadClaim`) and in `upload.claimed`; RetryUpload if the
    lease was reclaimed or a chunk is gone.

    A 1 GB re-upload counts on ~35k chunks: in its commit that held SQLite's write lock ~0.3 s while every other
    member's write waited. Claimed, each chunk is safe from gc from then on (refs > 0), and the commit only takes
    the claims over."""
    owner_id = upload.incoming.owner_id
    for batch in batched(digests, CLAIM_BATCH):
        async with unit_of_work(sessions, durable=False) as session:
            # On PostgreSQL the lease's row lock orders this against gc reclaiming the lease.
            if not await refresh_lease(session, upload.lease_id):
                raise errors.RetryUpload()
            await _add_refs(session, owner_id, batch, +1)
            session.add(UploadClaim(lease_id=upload.lease_id, owner_id=owner_id, digests=b"".join(batch)))
        upload.claimed.update(batch)


async def refresh_lease(session: AsyncSession, lease_id: str) -> bool:
    """Renew an upload lease's heartbeat; False if gc has reclaimed the lease."""
    result = await session.execute(update(UploadLease).where(UploadLease.id == lease_id).values(heartbeat_at=utcnow()))
    return result.rowcount == 1


async def release_claims(session: AsyncSession, lease_ids: list[str]) -> None:
    """Drop the references counted ahead by uploads that will not commit (their leases are deleted in the same
    transaction). Each claim row is deleted as its references are dropped: two clean-ups racing (the upload's
    own and gc's) cannot both drop it."""
    if not lease_ids:
        return
    claims = (await session.execute(
        delete(UploadClaim).where(UploadClaim.lease_id.in_(lease_ids))
        .returning(UploadClaim.owner_id, UploadClaim.digests).execution_options(synchronize_session=False)
    )).all()
    for owner_id, digests in claims:
        await _add_refs(session, owner_id, [digests[start : start + 32] for start in range(0, len(digests), 32)], -1)
