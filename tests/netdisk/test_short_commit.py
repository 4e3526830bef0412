"""A big commit does not block other members: an upload indexes its chunk rows as pending rows (in its pending
packs, each with the reference its version will hold) while it streams, in short transactions; the commit only checks
them and counts references on the chunks it found stored (issue 11)."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from eacct import errors
from eacct.netdisk import store, versions
from eacct.netdisk.hooks import NetdiskHooks
from eacct.db import utcnow
from eacct.netdisk.models import Chunk, Pack, UploadClaim, UploadLease, Version
from eacct.netdisk.store import index, upload as upload_module


async def body_of(content: bytes, block: int = 256 * 1024):
    for start in range(0, len(content), block):
        yield content[start : start + block]


async def put(sessions, blobs, settings, owner, content, ledger_id=None):
    claim = store.IncomingVersion(ledger_id=ledger_id or str(uuid.uuid4()), year=2018, size=len(content),
                                  sha256=hashlib.sha256(content).hexdigest(), ledger_name="账套")
    return await versions.backup_upload(sessions, blobs, settings, NetdiskHooks(), owner, claim, body_of(content))


async def chunk_refs(sessions, owner) -> list[tuple[int, bool]]:
    async with sessions() as session:
        rows = await session.execute(select(Chunk.refs, Pack.committed).join(Pack, Pack.id == Chunk.pack_id)
                                     .where(Chunk.owner_id == owner))
        return [tuple(row) for row in rows]


async def read_all(sessions, blobs, version_id: str) -> bytes:
    async with sessions() as session:
        version = await session.scalar(select(Version).where(Version.public_id == version_id))
    return b"".join([block async for block in store.read_version(sessions, blobs, version, 0, None)])


async def test_chunk_rows_are_indexed_pending_before_the_commit_and_gc_keeps_them(sessions, blobs, settings, owner,
                                                                                  monkeypatch):
    seen_before_commit = []
    gc_reports = []

    async def commit_after_looking(sessions_, upload, rules):
        seen_before_commit.extend(await chunk_refs(sessions, owner))
        gc_reports.append(await store.collect_garbage(sessions, blobs, settings))
        return await index.commit(sessions_, upload, rules)

    monkeypatch.setattr(upload_module, "commit", commit_after_looking)
    content = os.urandom(12_000_000)  # about 12 packs of 1 MB: all but the last are indexed while streaming
    version = await put(sessions, blobs, settings, owner, content)
    # Before the commit the rows are there in pending packs, with the reference to come; gc left all of them.
    assert seen_before_commit and all(refs == 1 and not committed for refs, committed in seen_before_commit)
    assert gc_reports[0]["chunks"] == 0 and gc_reports[0]["pending_packs"] == 0
    after = await chunk_refs(sessions, owner)
    assert len(seen_before_commit) >= len(after) // 2
    assert all(refs == 1 and committed for refs, committed in after)
    assert await read_all(sessions, blobs, version.version_id) == content


async def test_an_abandoned_upload_leaves_no_pending_chunk_rows(sessions, blobs, settings, owner, monkeypatch):
    async def failing_commit(sessions_, upload, rules):
        raise OSError("connection lost before the commit")

    monkeypatch.setattr(upload_module, "commit", failing_commit)
    with pytest.raises(OSError):
        await put(sessions, blobs, settings, owner, os.urandom(3_000_000))
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Chunk)) == 0
        assert await session.scalar(select(func.count()).select_from(Pack)) == 0


async def used_and_missing(sessions, owner) -> tuple[int, int]:
    """(the owner's quota in use, how many of the chunks in the owner's index, up to 50, and of one never stored the
    store says it lacks)."""
    async with sessions() as session:
        indexed = [digest.hex() for digest in await session.scalars(
            select(Chunk.digest).where(Chunk.owner_id == owner).order_by(Chunk.id.desc()).limit(50))]
        return (await store.used_bytes(session, owner),
                len(await versions.missing_chunks(session, owner, indexed + ["00" * 32])))


@pytest.mark.parametrize("first_then", ["is_abandoned", "commits"])
async def test_an_upload_does_not_count_on_another_uploads_pending_chunks(sessions, blobs, settings, owner,
                                                                          first_then):
    """A pending row carries the reference its own upload's version will hold: nobody else counts on it, the quota
    does not charge it, and an upload that needs the chunk first takes the row over with a reference of its own."""
    content = os.urandom(12_000_000)
    ledger_id = str(uuid.uuid4())
    await put(sessions, blobs, settings, owner, b"the ledger's first year", ledger_id)
    used_before, missing = await used_and_missing(sessions, owner)
    assert missing == 1
    # A first upload of the same content has stored everything and not committed yet (its rows are pending) ...
    claim = store.IncomingVersion(ledger_id=ledger_id, year=2019, size=len(content),
                                  sha256=hashlib.sha256(content).hexdigest(), ledger_name="账套", owner_id=owner,
                                  uploader_id=owner)
    first = upload_module.Upload(sessions, blobs, settings, claim, free_bytes=1 << 40)
    async for block in body_of(content):
        await first.feed(block)
    await first.finish()
    pending = await chunk_refs(sessions, owner)
    assert sum(1 for _, committed in pending if not committed) >= 50
    used, missing = await used_and_missing(sessions, owner)
    assert used == used_before and missing == 51  # the pending rows are nobody's yet
    # ... while a second upload of the same content commits.
    version = await put(sessions, blobs, settings, owner, content)
    assert {refs for refs, _ in await chunk_refs(sessions, owner)} == {1}
    if first_then == "is_abandoned":
        # Its pending packs and rows go, the second version must not.
        await first.abandon()
        references = 1
    else:
        async def admit(session, version_):
            pass

        first_version = await index.commit(sessions, first, versions.UploadRules(settings, first.incoming, admit))
        await first.release_lease()
        references = 2
    await store.collect_garbage(sessions, blobs, settings)
    async with sessions() as session:  # the content's chunks: all but the first year's one
        refs = list(await session.scalars(select(Chunk.refs).where(
            Chunk.owner_id == owner, Chunk.digest != hashlib.sha256(b"the ledger's first year").digest())))
    assert len(refs) > 50 and set(refs) == {references}
    assert await read_all(sessions, blobs, version.version_id) == content
    if first_then == "commits":
        assert await read_all(sessions, blobs, first_version.public_id) == content
    used, _ = await used_and_missing(sessions, owner)
    assert used == used_before + len(content)


async def test_a_small_upload_writes_twice_and_its_packs_end_up_with_their_sizes(sessions, blobs, settings, owner,
                                                                                 monkeypatch):
    """Every write waits its turn on SQLite: a small upload registers its pack with its lease (one write) and
    commits (the second); the pack's size, unknown when it was registered, is recorded by the commit."""
    writes = []
    real_unit_of_work = upload_module.unit_of_work

    def counting_unit_of_work(factory, **kw):
        if not kw.get("read_only"):
            writes.append("upload")
        return real_unit_of_work(factory, **kw)

    real_commit = index.commit

    async def counting_commit(sessions_, upload, rules):
        writes.append("commit")
        return await real_commit(sessions_, upload, rules)

    monkeypatch.setattr(upload_module, "unit_of_work", counting_unit_of_work)
    monkeypatch.setattr(upload_module, "commit", counting_commit)
    small = os.urandom(40_000)
    await put(sessions, blobs, settings, owner, small)
    assert writes == ["upload", "commit"]

    writes.clear()
    big = os.urandom(3_500_000)  # several packs (1 MB each in tests): later ones are registered as they are sealed
    version = await put(sessions, blobs, settings, owner, big)
    assert await read_all(sessions, blobs, version.version_id) == big
    async with sessions() as session:
        packs = list(await session.execute(select(Pack.blob_key, Pack.size, Pack.committed)))
    assert len(packs) >= 3 and all(committed for _, _, committed in packs)
    for blob_key, size, _ in packs:
        assert size == sum(len(block) for block in [await blobs.get(blob_key)]) > 0


async def test_a_small_repeat_upload_makes_few_statements_and_fewer_under_the_owners_lock(
        sessions, blobs, settings, owner, engine, monkeypatch):
    """Every trip to the database passes through the event loop, and those of the commit hold SQLite's write lock (or
    the owner's row lock): a small daily backup that prunes the year's previous version reads the year once before
    its body and once in its commit, reads its reference's first slice with the reference, and its uploader
    before the body."""
    settings = settings.with_overrides(versions_kept_per_year=1)
    ledger = str(uuid.uuid4())
    await put(sessions, blobs, settings, owner, os.urandom(40_000), ledger)
    statements: list[tuple[bool, str]] = []  # (inside the commit, statement)
    committing = False

    def count(connection, cursor, statement, parameters, context, executemany):
        statements.append((committing, statement))

    real_commit = index.commit

    async def marking_commit(sessions_, upload, rules):
        nonlocal committing
        committing = True
        try:
            return await real_commit(sessions_, upload, rules)
        finally:
            committing = False

    real_together = index.execute_together

    async def counting_together(session, writes):
        if engine.dialect.name == "sqlite":  # elsewhere each runs as a statement of its own, counted above
            statements.append((committing, f"{len(writes)} writes together"))
        return await real_together(session, writes)

    monkeypatch.setattr(upload_module, "commit", marking_commit)
    monkeypatch.setattr(index, "execute_together", counting_together)
    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        version = await put(sessions, blobs, settings, owner, os.urandom(40_000), ledger)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    async with sessions() as session:
        assert list(await session.scalars(select(Version.public_id))) == [version.version_id]  # it pruned
    in_commit = [statement for inside, statement in statements if inside]
    # Lock, year, access; version, manifest, packs, lease, rows, the rows' references (any an older server left
    # uncounted) and their count; the pruned version's manifest, references and row; quota.
    # On SQLite the writes go to the database's thread together: the version's manifest, packs and lease in one
    # trip, its rows, their references and count in the next, the pruned version's references and row in another.
    assert len(in_commit) <= (9 if engine.dialect.name == "sqlite" else 14), in_commit
    # Before the body: access, netdisk, year, quota, uploader; the reference with its first slice; the lookup of
    # the new chunks; the lease with its first pack (two rows).
    assert len(statements) - len(in_commit) <= 9, [statement for inside, statement in statements if not inside]


@pytest.mark.parametrize("counted", ["by_the_commit", "ahead_of_the_commit"])
@pytest.mark.parametrize("meanwhile", ["gone", "pending_in_another_upload"])
async def test_a_repeat_counts_one_reference_on_every_known_chunk_and_is_refused_when_one_went_missing(
        sessions, blobs, settings, owner, monkeypatch, meanwhile, counted):
    """A year uploaded again stores nothing and counts on the chunks it knows (more than one statement's worth),
    in its commit or, when there are many, in claims ahead of it. If gc removed one of them after the lookup,
    before it was counted, the upload is refused (RetryUpload) and keeps nothing, also when another upload has
    meanwhile put a row for it in a pack not committed yet."""
    content = os.urandom(6_000_000)  # ~700 chunks
    ledger_id = str(uuid.uuid4())
    await put(sessions, blobs, settings, owner, content, ledger_id)
    monkeypatch.setattr(index, "REFS_BATCH", 100)
    monkeypatch.setattr(index, "CLAIM_BATCH", 100 if counted == "ahead_of_the_commit" else 10_000)
    second = await put(sessions, blobs, settings, owner, content, ledger_id)
    assert {refs for refs, _ in await chunk_refs(sessions, owner)} == {2}
    assert await read_all(sessions, blobs, second.version_id) == content

    real_claim = upload_module.Upload.claim_known_chunks

    async def claim_after_a_chunk_went(upload):
        async with sessions() as session, session.begin():
            doomed = await session.scalar(select(Chunk).where(Chunk.owner_id == owner).limit(1))
            await session.execute(Chunk.__table__.delete().where(Chunk.digest == doomed.digest))
            if meanwhile == "pending_in_another_upload":
                pending = Pack(id=uuid.uuid4().hex, owner_id=owner, blob_key="packs/elsewhere", size=1)
                session.add(pending)
                await session.flush()
                session.add(Chunk(owner_id=owner, digest=doomed.digest, pack_id=pending.id, offset=0,
                                  stored_length=1, raw_size=doomed.raw_size, refs=0))
        await real_claim(upload)

    monkeypatch.setattr(upload_module.Upload, "claim_known_chunks", claim_after_a_chunk_went)
    with pytest.raises(errors.RetryUpload):
        await put(sessions, blobs, settings, owner, content, ledger_id)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Version)) == 2
        assert await session.scalar(select(func.count()).select_from(UploadClaim)) == 0
    assert {refs for refs, committed in await chunk_refs(sessions, owner) if committed} == {2}


async def claims_state(sessions, owner) -> tuple[int, int, set[int]]:
    """(claim rows, lease rows, the set of refs counts on the owner's committed chunks)."""
    async with sessions() as session:
        claims = await session.scalar(select(func.count()).select_from(UploadClaim))
        leases = await session.scalar(select(func.count()).select_from(UploadLease))
    return claims, leases, {refs for refs, committed in await chunk_refs(sessions, owner) if committed}


async def test_a_large_repeat_claims_its_references_in_short_transactions_and_the_commit_takes_them_over(
        sessions, blobs, settings, owner, monkeypatch):
    """The commit of a 1 GB re-upload no longer counts ~35k references while holding the write lock: they are
    claimed ahead, 2000 per transaction, under the upload's lease; the commit takes the claims over."""
    content = os.urandom(6_000_000)
    ledger_id = str(uuid.uuid4())
    await put(sessions, blobs, settings, owner, content, ledger_id)
    chunks = len(await chunk_refs(sessions, owner))
    monkeypatch.setattr(index, "CLAIM_BATCH", 100)
    before_commit = []
    real_commit = index.commit

    async def commit_after_looking(sessions_, upload, rules):
        before_commit.append(await claims_state(sessions, owner))
        before_commit.append(sum(1 for refs, _ in await chunk_refs(sessions, owner) if refs == 2))
        return await real_commit(sessions_, upload, rules)

    monkeypatch.setattr(upload_module, "commit", commit_after_looking)
    second = await put(sessions, blobs, settings, owner, content, ledger_id)
    (claims, leases, _), counted_ahead = before_commit
    assert claims == chunks // 100 and leases == 1
    assert counted_ahead == chunks - chunks % 100  # the last, partial batch is the commit's
    assert await claims_state(sessions, owner) == (0, 0, {2})
    assert await read_all(sessions, blobs, second.version_id) == content


async def test_references_claimed_ahead_are_dropped_when_the_upload_fails_before_its_commit(
        sessions, blobs, settings, owner, monkeypatch):
    content = os.urandom(6_000_000)
    ledger_id = str(uuid.uuid4())
    await put(sessions, blobs, settings, owner, content, ledger_id)
    monkeypatch.setattr(index, "CLAIM_BATCH", 100)

    async def failing_commit(sessions_, upload, rules):
        assert upload.claimed
        raise OSError("connection lost before the commit")

    monkeypatch.setattr(upload_module, "commit", failing_commit)
    with pytest.raises(OSError):
        await put(sessions, blobs, settings, owner, content, ledger_id)
    assert await claims_state(sessions, owner) == (0, 0, {1})


async def test_gc_drops_the_claims_of_a_lapsed_upload_once_and_the_upload_cannot_commit_any_more(
        sessions, blobs, settings, owner, monkeypatch):
    """A process that dies after claiming leaves its claims under its lease: gc drops them with the lapsed lease.
    The upload, should it wake up, finds its lease gone, and its own clean-up drops nothing a second time."""
    content = os.urandom(6_000_000)
    ledger_id = str(uuid.uuid4())
    first = await put(sessions, blobs, settings, owner, content, ledger_id)
    monkeypatch.setattr(index, "CLAIM_BATCH", 100)
    claim = store.IncomingVersion(ledger_id=ledger_id, year=2018, size=len(content),
                                  sha256=hashlib.sha256(content).hexdigest(), owner_id=owner, uploader_id=owner)
    stalled = upload_module.Upload(sessions, blobs, settings, claim, free_bytes=1 << 40)
    async for block in body_of(content):
        await stalled.feed(block)
    await stalled.finish()
    await stalled.claim_known_chunks()
    await stalled.release_lease()  # its heartbeats stop, as when the process dies
    assert (await claims_state(sessions, owner))[:2] == (len(await chunk_refs(sessions, owner)) // 100, 1)
    async with sessions() as session, session.begin():
        await session.execute(update(UploadLease).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    report = await store.collect_garbage(sessions, blobs, settings)
    assert report["leases"] == 1
    assert await claims_state(sessions, owner) == (0, 0, {1})
    with pytest.raises(errors.RetryUpload):
        await stalled.claim_known_chunks()
    await stalled.abandon()
    assert await claims_state(sessions, owner) == (0, 0, {1})
    await store.collect_garbage(sessions, blobs, settings)
    assert await read_all(sessions, blobs, first.version_id) == content
