"""The content-addressed store as a service: dedup, quota, retention, version cap, atomicity, gc (rules 7, 15)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate

import pytest
import zstandard
from sqlalchemy import func, select, update

from eacct import errors
from eacct.chunks import digests, frames
from eacct.db import unit_of_work
from eacct.netdisk.hooks import NetdiskHooks, ledger_for_backup
from eacct.netdisk import store, versions
from eacct.chunks.manifest import iter_manifest
from eacct.netdisk.store import read, upload as upload_module
from eacct.netdisk.store.common import DECODED_BUFFERS_KEPT, DOWNLOAD_BLOCK
from eacct.netdisk.models import Chunk, Ledger, Netdisk, Pack, Version, VersionManifest
from tests.netdisk.ledgers import body_of, edit_rows, make_ledger_db, tar_year


async def put(sessions, blobs, settings, owner, ledger_id, year, content, *, body=None, **kwargs):
    claim = store.IncomingVersion(ledger_id=ledger_id, year=year, size=len(content),
                                sha256=kwargs.pop("sha256", hashlib.sha256(content).hexdigest()),
                                ledger_name="账套", **kwargs)
    return await versions.backup_upload(sessions, blobs, settings, NetdiskHooks(), owner, claim, body or body_of(content))


async def used(sessions, owner) -> int:
    async with sessions() as session:
        return await store.used_bytes(session, owner)


async def read_all(sessions, blobs, version_id: str, start=0, end=None) -> bytes:
    async with sessions() as session:
        version = await session.scalar(select(Version).where(Version.public_id == version_id))
    return b"".join([block async for block in store.read_version(sessions, blobs, version, start, end)])


async def test_rule_7_identical_content_is_stored_once(sessions, blobs, settings, owner):
    content = os.urandom(500_000)
    first = await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2018, content)
    packs_after_first = len([info async for info in blobs.list("packs/")])
    second = await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2019, content)
    assert await used(sessions, owner) == len(content)
    assert len([info async for info in blobs.list("packs/")]) == packs_after_first
    assert await read_all(sessions, blobs, second.version_id) == content
    assert await read_all(sessions, blobs, first.version_id) == content


async def test_rule_7_a_day_of_bookkeeping_stores_only_the_changed_pages(sessions, blobs, settings, owner, tmp_path):
    db = make_ledger_db(tmp_path / "ledger.db", rows=60_000)
    ledger = str(uuid.uuid4())
    await put(sessions, blobs, settings, owner, ledger, 2018, tar_year({"data.db": db}))
    before = await used(sessions, owner)
    edit_rows(db, list(range(100, 60_000, 461)))  # 130 scattered entries
    day2 = tar_year({"data.db": db})
    version = await put(sessions, blobs, settings, owner, ledger, 2018, day2)
    growth = await used(sessions, owner) - before
    assert growth <= 2 * 130 * 4096 + 64 * 1024, growth
    assert await read_all(sessions, blobs, version.version_id) == day2


async def test_reads_of_any_range_match_the_content(sessions, blobs, settings, owner):
    content = os.urandom(700_000)
    version = await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2018, content)
    for start, end in ((0, 1), (5, 70_000), (65_535, 65_537), (699_999, 700_000), (123_456, 654_321)):
        assert await read_all(sessions, blobs, version.version_id, start, end) == content[start:end]


async def test_reads_across_windows_and_blocks_match_the_content(sessions, blobs, settings, owner, monkeypatch):
    """Ranges that start and end at and inside chunks, windows and blocks, with windows of a few chunks and blocks
    of a few runs, so every edge of the read plan is crossed."""
    content = os.urandom(900_000)
    version = await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2018, content)
    async with sessions() as session:
        row = await session.scalar(select(Version).where(Version.public_id == version.version_id))
        entries = await session.scalar(select(VersionManifest.entries).where(VersionManifest.version_id == row.id))
    monkeypatch.setattr(read, "FIRST_READ_WINDOW", 2)
    monkeypatch.setattr(read, "READ_WINDOW", 3)
    monkeypatch.setattr(read, "DOWNLOAD_BLOCK", 70_000)
    monkeypatch.setattr(read, "MAX_COALESCED_READ", 50_000)
    cuts = list(accumulate(size for _, size in iter_manifest(entries)))
    assert len(cuts) > 12
    edges = [0, 1, cuts[0] - 1, cuts[0], cuts[0] + 1, cuts[2], cuts[3] - 1, cuts[3], cuts[5] + 7, cuts[-2],
             len(content) - 1, len(content)]
    for start in edges:
        for end in [*edges, None]:
            if end is None or end >= start:
                got = await read_all(sessions, blobs, version.version_id, start, end)
                assert got == content[start:end], (start, end)
    assert await read_all(sessions, blobs, version.version_id, len(content) + 5) == b""


class RecordingExecutor(ThreadPoolExecutor):
    """A bulk executor that remembers what it was given to run."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.ran: list[str] = []

    def submit(self, function, /, *args, **kwargs):
        self.ran.append(getattr(function, "__name__", repr(function)))
        return super().submit(function, *args, **kwargs)


@pytest.mark.parametrize("size", [100_000, 3_000_000], ids=["small", "large"])
async def test_a_transfer_is_bulk_work_only_beyond_its_first_bytes(sessions, blobs, settings, owner, monkeypatch,
                                                                     size):
    """A small upload or download never waits in the low-priority bulk pool behind a large one: its blocks run at
    the request path's priority; a large one's first bytes do too, the rest on the blob store's bulk executor."""
    threshold = 1_500_000
    monkeypatch.setattr(upload_module, "INTERACTIVE_TRANSFER_BYTES", threshold)
    monkeypatch.setattr(read, "INTERACTIVE_TRANSFER_BYTES", threshold)
    monkeypatch.setattr(read, "DOWNLOAD_BLOCK", 256 * 1024)
    bulk = RecordingExecutor()
    monkeypatch.setattr(blobs, "bulk_executor", bulk)
    read_ranges = blobs.read_ranges
    block_is_bulk: list[bool] = []  # each download block, in the order asked for

    async def recording(ranges, consume, *, bulk: bool = False):
        block_is_bulk.append(bulk)
        return await read_ranges(ranges, consume, bulk=bulk)

    monkeypatch.setattr(blobs, "read_ranges", recording)
    try:
        content = os.urandom(size)
        version = await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2018, content)
        uploaded, bulk.ran = bulk.ran, []
        assert await read_all(sessions, blobs, version.version_id) == content
        downloaded = bulk.ran
    finally:
        bulk.shutdown()
    if size < threshold:
        assert uploaded == [] and downloaded == [] and not any(block_is_bulk)
    else:
        assert {"_cut", "update", "_compress", "_spool"} <= set(uploaded)
        # Blocks of at most 256 KiB, so at least 6 start within the first 1.5 MB: those at the request path's
        # priority, the rest in bulk, each of them on the bulk executor.
        interactive = block_is_bulk.index(True)
        assert 6 <= interactive <= 12 and all(block_is_bulk[interactive:]), block_is_bulk
        assert len(downloaded) == len(block_is_bulk) - interactive


async def test_downloaded_blocks_kept_by_the_reader_stay_intact_while_later_ones_reuse_buffers(
        sessions, blobs, settings, owner):
    content = os.urandom((DECODED_BUFFERS_KEPT + 6) * DOWNLOAD_BLOCK)
    version = await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2018, content)
    async with sessions() as session:
        row = await session.scalar(select(Version).where(Version.public_id == version.version_id))
    kept, position, count = [], 0, 0
    async for block in store.read_version(sessions, blobs, row):
        assert bytes(block) == content[position : position + len(block)]
        if count % 3 == 0:  # a slow transport still sending some blocks while the next are decoded
            kept.append((position, block))
        position += len(block)
        count += 1
    assert position == len(content) and count > DECODED_BUFFERS_KEPT + 3
    assert all(bytes(block) == content[start : start + len(block)] for start, block in kept)


async def test_rule_15_retention_prunes_and_releases_quota(sessions, blobs, settings, owner):
    settings = settings.with_overrides(versions_kept_per_year=2)
    ledger = str(uuid.uuid4())
    contents = [os.urandom(100_000) for _ in range(3)]
    for content in contents:
        await put(sessions, blobs, settings, owner, ledger, 2018, content)
    assert await used(sessions, owner) == 200_000
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Version)) == 2


async def test_rule_15_pruning_never_removes_the_only_verified_copy(sessions, blobs, settings, owner):
    settings = settings.with_overrides(versions_kept_per_year=1)
    ledger = str(uuid.uuid4())
    kept = await put(sessions, blobs, settings, owner, ledger, 2018, b"verified copy" * 1000)
    with pytest.raises(errors.ChecksumMismatch):
        await put(sessions, blobs, settings, owner, ledger, 2018, os.urandom(20_000), sha256="0" * 64)
    assert await read_all(sessions, blobs, kept.version_id) == b"verified copy" * 1000
    newer = await put(sessions, blobs, settings, owner, ledger, 2018, b"newer copy" * 1000)
    async with sessions() as session:
        ids = list(await session.scalars(select(Version.public_id)))
    assert ids == [newer.version_id]


async def test_rule_15_at_most_100_versions_per_member(sessions, blobs, settings, owner):
    settings = settings.with_overrides(max_versions_per_member=3)
    ledgers = [str(uuid.uuid4()) for _ in range(4)]
    for ledger in ledgers[:3]:
        await put(sessions, blobs, settings, owner, ledger, 2018, os.urandom(1000))
    with pytest.raises(errors.TooManyVersions) as refused:
        await put(sessions, blobs, settings, owner, ledgers[3], 2018, os.urandom(1000))
    assert "3" in refused.value.message
    # A year whose retention is full prunes as it adds, so it may still take a new version.
    settings = settings.with_overrides(versions_kept_per_year=1)
    await put(sessions, blobs, settings, owner, ledgers[0], 2018, os.urandom(1000))


async def test_crash_before_commit_leaves_nothing(sessions, blobs, settings, owner):
    content = os.urandom(3 * 1024 * 1024)

    async def dies_halfway():
        yield content[: 2 * 1024 * 1024]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2018, content, body=dies_halfway())
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Version)) == 0
        assert await session.scalar(select(func.count()).select_from(Ledger)) == 0
        assert await session.scalar(select(func.count()).select_from(Pack)) == 0
        assert await session.scalar(select(func.count()).select_from(Chunk)) == 0
    assert [info async for info in blobs.list("packs/")] == []
    assert await used(sessions, owner) == 0


async def test_gc_reclaims_a_dead_process_pending_packs_once_its_lease_lapses(sessions, blobs, settings, owner):
    """A process that died mid-upload leaves a pending pack row and its blob; gc removes them once the upload's
    lease is no longer refreshed (issue 7 item 5: not after the 6 h grace period)."""
    content = os.urandom(3 * 1024 * 1024)
    upload = store.Upload(sessions, blobs, settings, store.IncomingVersion(
        owner_id=owner, ledger_id=str(uuid.uuid4()), year=2018, uploader_id=owner, via="backup",
        size=len(content), sha256=hashlib.sha256(content).hexdigest()), free_bytes=10**9)
    await upload.feed(content[: 2 * 1024 * 1024])
    await upload.flush()  # durable, registered as pending, never committed: then the process "dies"
    assert len([info async for info in blobs.list("packs/")]) >= 1

    report = await store.collect_garbage(sessions, blobs, settings)
    assert report["pending_packs"] == 0  # still young: an upload in another process may be writing it
    assert len([info async for info in blobs.list("packs/")]) >= 1

    await upload.release_lease()  # the process "dies": its heartbeats stop
    report = await store.collect_garbage(sessions, blobs, settings.with_overrides(upload_lease_seconds=0))
    assert report["pending_packs"] >= 1
    assert [info async for info in blobs.list("packs/")] == []
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Pack)) == 0


async def test_gc_removes_chunks_and_packs_that_no_version_uses(sessions, blobs, settings, owner):
    settings = settings.with_overrides(versions_kept_per_year=1)
    ledger = str(uuid.uuid4())
    await put(sessions, blobs, settings, owner, ledger, 2018, os.urandom(2 * 1024 * 1024))
    latest = await put(sessions, blobs, settings, owner, ledger, 2018, os.urandom(2 * 1024 * 1024))
    report = await store.collect_garbage(sessions, blobs, settings)
    assert report["chunks"] > 0 and report["packs"] > 0
    assert await read_all(sessions, blobs, latest.version_id) is not None
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Chunk).where(Chunk.refs <= 0)) == 0


async def test_gc_removes_stray_blobs_only_after_the_grace_period(sessions, blobs, settings, owner, tmp_path):
    stray = tmp_path / "stray"
    stray.write_bytes(b"left by a crash between put and row")
    await blobs.put("packs/1/aa/stray", stray)
    await store.collect_garbage(sessions, blobs, settings)
    assert [info.key async for info in blobs.list("packs/")] == ["packs/1/aa/stray"]
    await store.collect_garbage(sessions, blobs, settings.with_overrides(gc_grace_seconds=0))
    assert [info.key async for info in blobs.list("packs/")] == []


async def test_upload_counting_on_a_chunk_gc_removed_is_refused_cleanly(sessions, blobs, settings, owner):
    settings = settings.with_overrides(versions_kept_per_year=1)
    ledger = str(uuid.uuid4())
    shared = os.urandom(6 * 1024 * 1024)
    await put(sessions, blobs, settings, owner, ledger, 2018, shared)
    await put(sessions, blobs, settings, owner, ledger, 2018, os.urandom(10_000))  # prunes: `shared` unreferenced
    split = store.WAITING_BYTES + 1024 * 1024  # past the first lookup, which finds the unreferenced chunks
    ledger_id = str(uuid.uuid4())
    upload = store.Upload(sessions, blobs, settings, store.IncomingVersion(
        owner_id=owner, ledger_id=ledger_id, year=2018, uploader_id=owner, via="backup", size=len(shared),
        sha256=hashlib.sha256(shared).hexdigest()), free_bytes=10**9)
    await upload.feed(shared[:split])
    await upload.flush()
    await store.collect_garbage(sessions, blobs, settings)
    await upload.feed(shared[split:])
    await upload.finish()

    async def create_ledger(session, version):
        session.add(Ledger(id=ledger_id, owner_id=owner, name="L"))
        await session.flush()

    with pytest.raises(errors.Conflict):
        await store.commit(sessions, upload, versions.UploadRules(settings, upload.incoming, create_ledger))
    await upload.abandon()
    assert (await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2018, shared)).size == len(shared)


async def test_access_rule_for_backup_allows_new_ledger_ids_only_for_upload(sessions, owner):
    async with sessions() as session:
        assert await ledger_for_backup(session, NetdiskHooks(), owner, str(uuid.uuid4()), may_be_new=True) is None
        with pytest.raises(errors.NotFound):
            await ledger_for_backup(session, NetdiskHooks(), owner, str(uuid.uuid4()))


async def test_quota_check_before_the_body_counts_what_the_current_version_can_share(sessions, settings, owner):
    settings = settings.with_overrides(netdisk_quota_bytes=1000)
    async with unit_of_work(sessions) as session:
        await session.execute(update(Netdisk).values(quota_bytes=1000))
        incoming = store.IncomingVersion(owner_id=owner, ledger_id=str(uuid.uuid4()), year=2018, uploader_id=owner,
                                         via="backup", size=5000, sha256="0" * 64)
        with pytest.raises(errors.QuotaExceeded) as refused:
            await versions.check_before_upload(session, settings, incoming)
    assert refused.value.extra == {"needed_bytes": 5000, "free_bytes": 1000}


async def test_a_download_stopped_early_leaves_no_block_decoding(sessions, blobs, settings, owner):
    """Blocks are read and decoded several at a time on worker threads; a reader that stops after the first
    block (the client went away) leaves none of them running."""
    content = os.urandom(6 * 1024 * 1024)
    version = await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2018, content)
    async with sessions() as session:
        row = await session.scalar(select(Version).where(Version.public_id == version.version_id))
    blocks = store.read_version(sessions, blobs, row)
    first = await anext(blocks)
    assert content.startswith(first) and len(first) < len(content)
    await blocks.aclose()
    decoding = [task for task in asyncio.all_tasks() if "_fetch_and_decode" in repr(task.get_coro())]
    assert decoding == []
    assert await read_all(sessions, blobs, version.version_id) == content


@pytest.mark.parametrize("native", [True, False], ids=["native-frames", "python-zstandard"])
@pytest.mark.parametrize("where", ["whole", "edge"], ids=["among-whole-chunks", "at-the-edge-of-the-range"])
async def test_a_frame_that_no_longer_decompresses_fails_its_block_as_damaged(
        sessions, blobs, settings, owner, tmp_path, monkeypatch, native, where):
    """A damaged frame in a pack is the store's NotFound ("已损坏"), never a decompressor's own exception."""
    if not native:
        monkeypatch.setattr(frames, "_NativeDecompressor", None)
    content = b"".join(os.urandom(64) * 128 for _ in range(60))  # compressible: frames with sequences to break
    version = await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2018, content)
    async with unit_of_work(sessions, read_only=True) as session:
        chunk, key = (await session.execute(select(Chunk, Pack.blob_key).join(Pack, Pack.id == Chunk.pack_id)
                                            .where(Chunk.owner_id == owner).order_by(Chunk.offset.desc()))).first()
    data = bytearray(await blobs.get(key))
    middle = chunk.offset + chunk.stored_length // 2
    data[middle : middle + 8] = b"\xff" * 8
    pack = tmp_path / "pack"
    pack.write_bytes(bytes(data))
    await blobs.delete(key)
    await blobs.put(key, pack)
    start = 0 if where == "whole" else 3
    with pytest.raises(errors.NotFound, match="损坏"):
        await read_all(sessions, blobs, version.version_id, start)


@pytest.mark.parametrize("native", [True, False], ids=["native-digests", "hashlib"])
@pytest.mark.parametrize("where", ["whole", "edge"], ids=["among-whole-chunks", "at-the-edge-of-the-range"])
async def test_a_chunk_whose_bytes_no_longer_match_its_digest_is_never_handed_out(
        sessions, blobs, settings, owner, tmp_path, monkeypatch, native, where):
    """A frame that decompresses fine but to other bytes (bit rot under a valid frame) fails the read of its
    block, whether the chunk is verified with the block's others or on its own (the edge of a range)."""
    if not native:
        monkeypatch.setattr(digests, "_native_sha256_many", None)
        monkeypatch.setattr(digests, "_native_sha256_spans", None)
    content = os.urandom(400_000)
    version = await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2018, content)
    async with unit_of_work(sessions, read_only=True) as session:
        row = await session.scalar(select(Version).where(Version.public_id == version.version_id))
        entries = await session.scalar(select(VersionManifest.entries).where(VersionManifest.version_id == row.id))
        position = 0
        for digest, size in iter_manifest(entries):  # the chunk holding byte 200,000 of the year
            if position + size > 200_000:
                break
            position += size
        chunk, key = (await session.execute(select(Chunk, Pack.blob_key).join(Pack, Pack.id == Chunk.pack_id)
                                            .where(Chunk.digest == digest))).one()
    pack = tmp_path / "pack"
    data = bytearray(await blobs.get(key))
    impostor = zstandard.ZstdCompressor(level=1).compress(os.urandom(chunk.raw_size))
    assert len(impostor) == chunk.stored_length  # incompressible bytes of one size: frames of one size
    data[chunk.offset : chunk.offset + chunk.stored_length] = impostor
    pack.write_bytes(bytes(data))
    await blobs.delete(key)
    await blobs.put(key, pack)
    assert (await read_all(sessions, blobs, version.version_id, 0, position)) == content[:position]
    start = 0 if where == "whole" else position + 5
    with pytest.raises(errors.NotFound, match="损坏"):
        await read_all(sessions, blobs, version.version_id, start)
