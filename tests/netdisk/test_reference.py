"""eacct/netdisk/store/reference.py: a re-upload knows the chunks of the version it repeats without lookups."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from sqlalchemy import delete, select

from eacct import errors
from eacct.chunks.manifest import ENTRY
from eacct.db import unit_of_work
from eacct.netdisk import store, versions
from eacct.netdisk.models import Ledger, Version
from eacct.netdisk.store import reference, upload as upload_module
from tests.netdisk.ledgers import edit_rows, make_ledger_db, tar_year
from tests.netdisk.test_store import put, read_all


@pytest.fixture
def lookups(monkeypatch):
    """The chunk-index lookups uploads make (each a batch of digests)."""
    made: list[int] = []
    real = upload_module.read_scalars

    async def counting(sessions, statement, parameters=None):
        if isinstance(statement, str) and statement.startswith(upload_module._KNOWN.split("{")[0]):
            made.append(len(parameters) - 1)  # the owner, then the digests
        return await real(sessions, statement, parameters)

    monkeypatch.setattr(upload_module, "read_scalars", counting)
    return made


async def upload_twice(sessions, blobs, settings, owner, lookups, first: bytes, second: bytes,
                       second_year: int = 2018) -> list[int]:
    """Upload `first`, then `second` into the same ledger; the lookups the second made (it must read back)."""
    ledger = str(uuid.uuid4())
    await put(sessions, blobs, settings, owner, ledger, 2018, first)
    assert lookups  # the first upload had nothing to repeat
    lookups.clear()
    version = await put(sessions, blobs, settings, owner, ledger, second_year, second)
    assert await read_all(sessions, blobs, version.version_id) == second
    return list(lookups)


async def test_a_re_upload_of_an_unchanged_year_looks_nothing_up(sessions, blobs, settings, owner, lookups,
                                                                  monkeypatch):
    monkeypatch.setattr(reference, "SLICE_ENTRIES", 16)  # many slices, and matches across their borders
    content = os.urandom(3 * 1024 * 1024)
    assert await upload_twice(sessions, blobs, settings, owner, lookups, content, content) == []


async def test_a_new_year_of_a_ledger_repeats_its_latest_year(sessions, blobs, settings, owner, lookups):
    content = os.urandom(2 * 1024 * 1024)
    made = await upload_twice(sessions, blobs, settings, owner, lookups, content, content + b"carried forward",
                              second_year=2019)
    assert sum(made) <= 2  # only the changed last chunk (and the archive's end) were looked up


async def test_a_day_of_bookkeeping_looks_up_only_the_changed_pages(sessions, blobs, settings, owner, lookups,
                                                                    tmp_path):
    db = make_ledger_db(tmp_path / "ledger.db", rows=30_000)
    day1 = tar_year({"data.db": db})
    edit_rows(db, list(range(100, 30_000, 997)))  # 30 scattered entries
    made = await upload_twice(sessions, blobs, settings, owner, lookups, day1, tar_year({"data.db": db}))
    assert 0 < sum(made) <= 80, made


async def test_bytes_inserted_at_the_start_shift_nothing_that_follows(sessions, blobs, settings, owner, lookups):
    """Content-defined cuts resynchronise after an insertion; the reference's cursor follows them."""
    content = os.urandom(2 * 1024 * 1024)
    made = await upload_twice(sessions, blobs, settings, owner, lookups, content, os.urandom(5000) + content)
    assert sum(made) <= 4, made


def test_a_digest_straddling_two_entries_is_not_a_match():
    digest = os.urandom(32)
    # The first entry's last 28 digest bytes and its size field spell `digest`, 4 bytes into the manifest.
    straddling = ENTRY.pack(os.urandom(4) + digest[:28], int.from_bytes(digest[28:], "big"))
    entries = straddling + ENTRY.pack(os.urandom(32), 1) + ENTRY.pack(digest, 7)
    manifest = reference.ReferenceManifest(None, 1, len(entries) // ENTRY.size)
    manifest.slice = entries  # the 32 bytes also appear across the first two entries, at no entry's start
    assert entries.find(digest) % ENTRY.size != 0
    assert manifest._find(digest) == 2


async def test_the_reference_version_deleted_and_collected_mid_upload_refuses_the_commit_cleanly(
        sessions, blobs, settings, owner, lookups):
    """Chunks known from the reference are counted on like any other: if gc took them, the upload must retry."""
    content = os.urandom(6 * 1024 * 1024)
    ledger = str(uuid.uuid4())
    await put(sessions, blobs, settings, owner, ledger, 2018, content)
    upload = store.Upload(sessions, blobs, settings, store.IncomingVersion(
        owner_id=owner, ledger_id=ledger, year=2018, uploader_id=owner, via="backup", size=len(content),
        sha256=hashlib.sha256(content).hexdigest()), free_bytes=10**9)
    split = 3 * store.WAITING_BYTES
    await upload.feed(content[:split])
    await upload.flush()
    lookups.clear()
    async with unit_of_work(sessions) as session:  # the year is deleted, its chunks released
        year_versions = list(await session.scalars(select(Version.id).where(Version.ledger_id == ledger)))
        await store.release_versions(session, owner, year_versions)
    await store.collect_garbage(sessions, blobs, settings)
    await upload.feed(content[split:])
    await upload.finish()

    async def ledger_exists(session, version):
        return None

    with pytest.raises(errors.Conflict):
        await store.commit(sessions, upload, versions.UploadRules(settings, upload.incoming, ledger_exists))
    await upload.abandon()
    async with unit_of_work(sessions) as session:
        await session.execute(delete(Ledger).where(Ledger.id == ledger))
    retried = await put(sessions, blobs, settings, owner, str(uuid.uuid4()), 2018, content)
    assert await read_all(sessions, blobs, retried.version_id) == content
