"""The chunk index inside the commit transaction: insert chunk rows, count references, release versions."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.chunks.manifest import iter_manifest
from eacct.db import dialect_insert, unit_of_work, utcnow
from eacct.netdisk.models import Chunk, Pack, UploadLease, Version, VersionManifest
from eacct.netdisk.store.common import INSERT_BATCH, LOOKUP_BATCH, CommittableUpload, batched

__all__ = ["CommitRules", "commit", "release_versions"]


class CommitRules(Protocol):
    """The netdisk service's rules, applied inside the commit transaction; the store itself knows none of them."""

    async def before_insert(self, session: AsyncSession, version: Version) -> None:
        """Lock the owner and re-check what must still hold (access, expected version, version cap)."""

    async def after_insert(self, session: AsyncSession, version: Version, new_bytes: int) -> None:
        """Apply what follows from the new version (retention) and refuse it when it breaks a limit (quota)."""


async def _upsert_chunks(session: AsyncSession, rows: Iterable[dict]) -> None:
    # A concurrent upload of the same owner may have stored the same chunk first; its copy wins.
    statement = dialect_insert(session, Chunk).on_conflict_do_nothing(index_elements=["owner_id", "digest"])
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == INSERT_BATCH:
            await session.execute(statement, batch)  # executemany: compiled once, a bounded batch in memory
            batch = []
    if batch:
        await session.execute(statement, batch)


async def commit(sessions: async_sessionmaker[AsyncSession], upload: CommittableUpload, rules: CommitRules) -> Version:
    """Make a fully received, verified upload a version: one transaction inserts the version, its manifest and
    chunk rows, counts references and marks its packs committed, with the service's rules around it."""
    incoming = upload.incoming
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
        session.add(VersionManifest(version_id=version.id, entries=bytes(upload.manifest)))
        if upload.pending_packs:
            result = await session.execute(
                update(Pack)
                .where(Pack.id.in_([pack_id for pack_id, _ in upload.pending_packs]), Pack.committed.is_(False))
                .values(committed=True, lease_id=None)
            )
            if result.rowcount != len(upload.pending_packs):
                raise errors.RetryUpload()
        if upload.lease_taken:
            result = await session.execute(delete(UploadLease).where(UploadLease.id == upload.lease_id))
            if result.rowcount != 1:  # gc reclaimed this upload's lease: its spool files may be gone
                raise errors.RetryUpload()
        await _upsert_chunks(session, upload.chunk_rows())
        distinct = list({digest for digest, _ in iter_manifest(upload.manifest)})
        await _add_refs(session, incoming.owner_id, distinct, +1)
        await rules.after_insert(session, version, upload.new_bytes)
        upload.commit_sent = True  # leaving the block sends COMMIT
    upload.pending_packs.clear()
    return version


async def _add_refs(session: AsyncSession, owner_id: int, digests: list[bytes], delta: int) -> None:
    for batch in batched(digests, LOOKUP_BATCH):
        result = await session.execute(
            update(Chunk).where(Chunk.owner_id == owner_id, Chunk.digest.in_(batch)).values(refs=Chunk.refs + delta)
        )
        if delta > 0 and result.rowcount != len(batch):
            # gc removed an unreferenced chunk this upload counted on; the client simply uploads again.
            raise errors.RetryUpload()


async def release_versions(session: AsyncSession, owner_id: int, version_ids: list[int]) -> None:
    """Delete versions and drop their references; chunks nobody uses stop counting against the quota at once."""
    for version_id in version_ids:
        entries = await session.scalar(select(VersionManifest.entries).where(VersionManifest.version_id == version_id))
        digests = list({digest for digest, _ in iter_manifest(entries or b"")})
        await _add_refs(session, owner_id, digests, -1)
        await session.execute(delete(VersionManifest).where(VersionManifest.version_id == version_id))
        await session.execute(delete(Version).where(Version.id == version_id))
