"""Garbage collection: unreferenced chunks, packs nobody uses, lapsed uploads' data, stray blobs and leftovers."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct.config import Settings
from eacct.db import unit_of_work, utcnow
from eacct.storage import BlobStore, Leftover
from eacct.netdisk.models import Chunk, Pack, UploadLease, UploadSession
from eacct.netdisk.store.index import release_claims


async def collect_garbage(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, settings: Settings) -> dict[str, int]:
    """Delete unreferenced chunks, packs nothing uses, abandoned uploads' data and blobs no pack row names.

    Blobs no row names are left alone while younger than the grace period (`gc_grace_seconds`).
    """
    horizon = utcnow() - timedelta(seconds=settings.gc_grace_seconds)
    # Listed before the rows are read: a blob is put only after its row is committed, so a listed blob
    # whose row is missing below had its row deleted (nothing can refer to it any more).
    listed = [info async for info in blobs.list("packs/")]
    report = {"chunks": 0, "packs": 0}
    async with unit_of_work(sessions) as session:
        # Rows of pending packs belong to running uploads (their refs the version's to come): they go with their pack.
        result = await session.execute(
            delete(Chunk).where(Chunk.refs <= 0, Chunk.pack_id.in_(select(Pack.id).where(Pack.committed.is_(True))))
        )
        report["chunks"] = result.rowcount or 0
        # A committed pack no chunk row points at can never be used again (commits only add chunk rows
        # that point at the committing upload's own packs): row first, blob after the commit.
        dead = (
            await session.execute(
                delete(Pack)
                .where(Pack.committed.is_(True), ~select(Chunk.id).where(Chunk.pack_id == Pack.id).exists())
                .returning(Pack.blob_key)
                .execution_options(synchronize_session=False)
            )
        ).scalars().all()
    for blob_key in dead:
        await blobs.delete(blob_key)
        report["packs"] += 1
    report.update(await reclaim_abandoned_uploads(sessions, blobs, settings))
    async with unit_of_work(sessions, read_only=True) as session:
        known = set(await session.scalars(select(Pack.blob_key)))
    report["stray_blobs"] = 0
    for info in listed:
        if info.key not in known and info.modified < horizon:
            await blobs.delete(info.key)
            report["stray_blobs"] += 1
    return report


async def reclaim_abandoned_uploads(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore,
                                    settings: Settings) -> dict[str, int]:
    """Delete what uploads of dead processes left: pending packs and spool and staging files whose lease has
    lapsed (no heartbeat for `upload_lease_seconds`). A live upload's data is never touched.

    Pending packs without a lease (written before leases existed) wait `gc_grace_seconds` as before.
    """
    now = utcnow()
    horizon = now - timedelta(seconds=settings.gc_grace_seconds)
    # Listed before the leases are read: a lease is committed before its upload writes any file, so a file
    # listed here whose lease is missing below belongs to an upload that has ended or died.
    leftovers = await blobs.leftovers()
    async with unit_of_work(sessions) as session:
        # Locked (PostgreSQL): an upload refreshing its heartbeat or claiming references meanwhile either goes
        # first (and its lease is no longer lapsed here) or finds its lease gone.
        lapsed = list(await session.scalars(
            select(UploadLease.id)
            .where(UploadLease.heartbeat_at < now - timedelta(seconds=settings.upload_lease_seconds))
            .with_for_update()
        ))
        # In one transaction with the lease check, so a commit racing this either wins (the pack is committed
        # and not matched) or finds its pack rows gone and fails.
        stale = (
            await session.execute(
                delete(Pack)
                .where(
                    Pack.committed.is_(False),
                    (Pack.lease_id.is_(None) & (Pack.created_at < horizon))
                    | Pack.lease_id.in_(lapsed)
                    | (Pack.lease_id.is_not(None) & ~select(UploadLease.id).where(UploadLease.id == Pack.lease_id).exists()),
                )
                .returning(Pack.blob_key)
                .execution_options(synchronize_session=False)
            )
        ).scalars().all()
        await release_claims(session, lapsed)
        leases = (await session.execute(delete(UploadLease).where(UploadLease.id.in_(lapsed)))).rowcount or 0
        # Upload sessions past their day (their lease lapsed with them: its packs are reclaimed just above), or
        # ended by a commit whose clean-up did not finish; a row per session and one per batch.
        expired = (await session.execute(delete(UploadSession).where(UploadSession.expires_at < now))).rowcount or 0
        live_leases = set(await session.scalars(select(UploadLease.id)))
        pending_keys = set(await session.scalars(select(Pack.blob_key).where(Pack.committed.is_(False))))
    report = {"pending_packs": 0, "leases": leases, "leftovers": 0, "upload_sessions": expired}
    for blob_key in stale:  # their rows are gone for good
        await blobs.delete(blob_key)
        report["pending_packs"] += 1
    for leftover in leftovers:
        if _leftover_is_garbage(leftover, live_leases, pending_keys, horizon):
            await blobs.remove_leftover(leftover)
            report["leftovers"] += 1
    return report


def _leftover_is_garbage(leftover: Leftover, live_leases: set[str], pending_keys: set[str], horizon) -> bool:
    if leftover.kind == "staged":
        # A put in progress belongs to a pending pack still alive; anything else is a crashed put's remains.
        return leftover.key not in pending_keys
    lease_id, dot, _ = leftover.path.name.partition(".")
    if dot and len(lease_id) == 32:
        return lease_id not in live_leases
    return leftover.modified < horizon  # not named by a lease (an older version's spool file)
