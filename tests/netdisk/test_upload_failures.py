"""Failure paths of the upload pipeline and gc (issue 7): a failure after the commit never deletes committed
packs (item 1); a stalled body is refused with 408 and leaves nothing (item 3); a crash's leftovers are
reclaimed, a dead process's uploads within their lease and never a live one's (item 5).

Runs on SQLite or PostgreSQL (EACCT_TEST_DATABASE_URL) and on local or OSS storage (EACCT_TEST_STORAGE=oss).
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import zstandard
import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from eacct import errors
from eacct.chunks.frames import FrameCompressor
from eacct.chunks.manifest import ENTRY
from eacct.db import unit_of_work, utcnow
from eacct.netdisk import store, versions
from eacct.netdisk.store import spool
from eacct.storage import LocalBlobStore, writeback
from eacct.netdisk.models import Ledger, Pack, UploadLease, Version
from tests.conftest import Desktop, new_ledger_id
from tests.netdisk.ledgers import body_of

ROOT = Path(__file__).resolve().parents[2]


def incoming_for(owner: int, content: bytes, ledger_id: str | None = None) -> store.IncomingVersion:
    return store.IncomingVersion(owner_id=owner, ledger_id=ledger_id or str(uuid.uuid4()), year=2018,
                                 uploader_id=owner, via="backup", size=len(content),
                                 sha256=hashlib.sha256(content).hexdigest())


async def count(sessions, model) -> int:
    async with sessions() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def pack_keys(blobs) -> list[str]:
    return [info.key async for info in blobs.list("packs/")]


def spool_files(blobs) -> list[str]:
    directory = blobs.spool_dir()
    return sorted(os.listdir(directory)) if directory.exists() else []


async def read_all(sessions, blobs, version: Version) -> bytes:
    return b"".join([block async for block in store.read_version(sessions, blobs, version)])


# ------------------------------------------------------------------------ item 1: after the commit

AFTER_COMMIT_FAULTS = ["connection_lost_during_commit", "cancelled_during_commit", "cancelled_after_commit"]


@pytest.fixture
def commit_fault():
    """Arms a fault that strikes right after the database has committed a transaction whose session was
    marked with `session.info["fault"]` (from inside that transaction)."""

    def strike(session: Session) -> None:
        fault = session.info.pop("fault", None)
        if fault == "connection_lost_during_commit":
            # What PostgreSQL dropping the connection while acknowledging COMMIT looks like to the caller.
            raise ConnectionResetError("connection lost during COMMIT")
        if fault == "cancelled_during_commit":
            asyncio.current_task().cancel()  # lands on the first await once the commit has happened
        elif fault == "cancelled_after_commit":
            task = asyncio.current_task()
            asyncio.get_running_loop().call_soon(task.cancel)  # lands a step later (closing, lease release)

    event.listen(Session, "after_commit", strike)
    yield
    event.remove(Session, "after_commit", strike)


@pytest.mark.parametrize("fault", AFTER_COMMIT_FAULTS)
async def test_failure_after_commit_keeps_committed_packs(sessions, blobs, settings, owner, commit_fault, fault):
    content = os.urandom(3 * 1024 * 1024)  # several packs (pack_target_bytes is 1 MiB in tests)
    incoming = incoming_for(owner, content)

    async def on_commit(session, version):
        session.add(Ledger(id=incoming.ledger_id, owner_id=owner, name="账套"))
        await session.flush()
        session.info["fault"] = fault

    upload = asyncio.create_task(store.receive_version(sessions, blobs, settings, incoming, body_of(content),
                                                       versions.UploadRules(settings, incoming, on_commit), free_bytes=10**9))
    with pytest.raises((ConnectionResetError, asyncio.CancelledError)):
        await upload

    async with sessions() as session:
        version = await session.scalar(select(Version).where(Version.ledger_id == incoming.ledger_id))
    assert version is not None  # the commit happened: the version is listed ...
    assert await read_all(sessions, blobs, version) == content  # ... and every pack it uses is still there
    # gc, with every grace period over, keeps it too and reclaims whatever the failed upload left.
    lapsed = settings.with_overrides(gc_grace_seconds=0, upload_lease_seconds=0)
    await store.collect_garbage(sessions, blobs, lapsed)
    assert await read_all(sessions, blobs, version) == content
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Pack).where(Pack.committed.is_(False))) == 0
    assert await count(sessions, UploadLease) == 0
    assert spool_files(blobs) == []


async def test_failure_after_commit_over_http_keeps_the_version_downloadable(make_server, settings, blobs, http,
                                                                           commit_fault):
    """The same through the API: the member's listed version downloads whole after the commit's reply was lost."""
    member = await (await Desktop(http, await make_server(settings, blobs), "owner02", "小李").register()).open_netdisk()
    ledger = new_ledger_id()
    content = os.urandom(3 * 1024 * 1024)

    def mark(session, *_):
        if any(isinstance(item, Version) for item in session.identity_map.values()):  # the version's commit
            session.info["fault"] = "connection_lost_during_commit"

    event.listen(Session, "before_commit", mark)
    try:
        status, _, _ = await member.upload("backups", ledger, 2018, content, name="账套")
    except aiohttp.ClientError:
        status = None  # the server may drop the connection instead of answering
    finally:
        event.remove(Session, "before_commit", mark)
    assert status != 201  # the server could not tell the client the commit happened
    status, listed, _ = await member.call("GET", f"/backups/{ledger}/years/2018", netdisk=True)
    assert status == 200, listed
    status, downloaded, _ = await member.download("backups", ledger, 2018)
    assert status == 200 and downloaded == content


async def test_a_commit_of_unknown_outcome_deletes_nothing_and_gc_reclaims_it(sessions, blobs, settings, owner):
    """COMMIT fails without taking effect, but the upload cannot know that: it deletes nothing; gc, reading
    the database once the lease lapses, finds the packs pending and reclaims them."""
    content = os.urandom(3 * 1024 * 1024)
    incoming = incoming_for(owner, content)

    async def on_commit(session, version):
        session.add(Ledger(id=incoming.ledger_id, owner_id=owner, name="账套"))
        await session.flush()
        session.info["lose_commit"] = True

    def lose(session) -> None:
        if session.info.pop("lose_commit", False):
            raise ConnectionResetError("connection lost before COMMIT reached the server")

    event.listen(Session, "before_commit", lose)
    try:
        with pytest.raises(ConnectionResetError):
            await store.receive_version(sessions, blobs, settings, incoming, body_of(content),
                                        versions.UploadRules(settings, incoming, on_commit),
                                        free_bytes=10**9)
    finally:
        event.remove(Session, "before_commit", lose)
    stored = await pack_keys(blobs)
    async with sessions() as session:
        assert stored and set(await session.scalars(select(Pack.blob_key))) == set(stored)
    assert await count(sessions, Version) == 0
    report = await store.collect_garbage(sessions, blobs, settings.with_overrides(upload_lease_seconds=0))
    assert report["pending_packs"] == len(stored) and await pack_keys(blobs) == []
    assert await count(sessions, Pack) == 0 and await count(sessions, UploadLease) == 0


async def test_abandon_deletes_a_blob_only_after_its_row_is_deleted(sessions, blobs, settings, owner):
    """When the pending rows cannot be deleted, their blobs stay (gc removes both later)."""
    content = os.urandom(3 * 1024 * 1024)
    upload = store.Upload(sessions, blobs, settings, incoming_for(owner, content), free_bytes=10**9)
    await upload.feed(content)
    await upload.flush()
    assert await pack_keys(blobs)

    def refuse_pack_deletes(state) -> None:
        if state.is_delete and "packs" in str(state.statement):
            raise ConnectionResetError("database went away")

    event.listen(Session, "do_orm_execute", refuse_pack_deletes)
    try:
        await upload.abandon()
    finally:
        event.remove(Session, "do_orm_execute", refuse_pack_deletes)
    async with sessions() as session:
        rows = set(await session.scalars(select(Pack.blob_key)))
    assert rows and set(await pack_keys(blobs)) == rows  # every row still has its blob, no blob was deleted
    await store.collect_garbage(sessions, blobs, settings.with_overrides(upload_lease_seconds=0))
    assert await pack_keys(blobs) == [] and await count(sessions, Pack) == 0


# -------------------------------------------------------------------------------- item 3: stalls


async def assert_stalls_with_408(base_url: str, request_line: str, member, length: int, sent: bytes,
                                 headers: dict[str, str]) -> None:
    """Send a request announcing `length` body bytes, only `sent` of them, then nothing: the server answers 408
    upload_stalled within a few seconds (its idle timeout is 1 s)."""
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    head = (f"{request_line} HTTP/1.1\r\nHost: {address.netloc}\r\nAuthorization: Bearer {member.netdisk_token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n")
    writer.write(head.encode() + sent)
    await writer.drain()
    started = time.monotonic()
    status_line = await asyncio.wait_for(reader.readline(), 15)
    answer_headers = {}
    while (line := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    body = json.loads(await asyncio.wait_for(reader.readexactly(int(answer_headers["content-length"])), 5))
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    assert time.monotonic() - started < 10
    assert body["error"]["code"] == "upload_stalled" and "上传" in body["error"]["message"]


async def test_stalled_upload_body_is_refused_with_408_and_nothing_kept(make_server, settings, blobs, http,
                                                                        sessions):
    base_url = await make_server(settings.with_overrides(upload_idle_timeout=1), blobs)
    member = await (await Desktop(http, base_url, "owner03", "小张").register()).open_netdisk()
    ledger = new_ledger_id()
    content = os.urandom(8 * 1024 * 1024)
    sent = content[:6 * 1024 * 1024]  # enough for packs to be sealed and stored before the body stalls
    await assert_stalls_with_408(base_url, f"POST /api/v1/backups/{ledger}/years/2018/versions", member, len(content),
                                 sent, {"X-Content-SHA256": hashlib.sha256(content).hexdigest(), "X-Ledger-Name": "L"})
    # Nothing kept: no version, no quota, no pending data.
    assert (await member.call("GET", f"/backups/{ledger}", netdisk=True))[0] == 404
    assert (await member.call("GET", "/netdisk"))[1]["used_bytes"] == 0
    assert await count(sessions, Pack) == 0 and await count(sessions, UploadLease) == 0
    assert await pack_keys(blobs) == [] and spool_files(blobs) == []


# ------------------------------------------------------------------------------ item 5: leftovers


async def test_gc_reclaims_a_dead_uploads_spool_file_and_keeps_a_live_ones(sessions, blobs, settings, owner):
    settings = settings.with_overrides(pack_target_bytes=64 * 1024 * 1024)  # spooled, never sealed
    # A few lookup batches, so that the first ones are placed (spooled) while the stream goes on.
    contents = [os.urandom(4 * store.WAITING_BYTES) for _ in range(2)]
    dead, live = (store.Upload(sessions, blobs, settings, incoming_for(owner, content), free_bytes=10**9)
                  for content in contents)
    for upload, content in ((dead, contents[0]), (live, contents[1])):
        async for block in body_of(content, 1024 * 1024):
            await upload.feed(block)
        await upload.feed(b"")
    assert len(spool_files(blobs)) == 2
    await dead.release_lease()  # its process dies: no more heartbeats, and its last one was long ago
    async with unit_of_work(sessions) as session:
        await session.execute(update(UploadLease).where(UploadLease.id == dead.lease_id)
                              .values(heartbeat_at=utcnow() - timedelta(seconds=settings.upload_lease_seconds + 1)))
    await store.collect_garbage(sessions, blobs, settings)
    assert spool_files(blobs) == [live.pack.path.name]
    async with sessions() as session:
        assert list(await session.scalars(select(UploadLease.id))) == [live.lease_id]
    await live.abandon()
    assert spool_files(blobs) == []


async def test_gc_reclaims_half_made_puts_in_the_local_store(sessions, settings, owner, tmp_path):
    blobs = LocalBlobStore(tmp_path / "local-blobs")
    staged = blobs.root / "packs" / str(owner) / "ab" / f".ab{'0' * 30}.4242.tmp"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"a put interrupted by a crash")
    orphan = blobs.spool_dir() / f"{uuid.uuid4().hex}.{uuid.uuid4().hex}.pack"
    orphan.write_bytes(b"a spool file whose upload is gone")
    report = await store.collect_garbage(sessions, blobs, settings)
    assert not staged.exists() and not orphan.exists()
    assert report["leftovers"] == 2


async def test_a_pack_whose_pending_row_cannot_be_written_leaves_no_spool_file(sessions, blobs, settings, owner):
    content = os.urandom(3 * 1024 * 1024)
    upload = store.Upload(sessions, blobs, settings, incoming_for(owner, content), free_bytes=10**9)

    def refuse_pack_rows(session, *_):
        if any(isinstance(item, Pack) for item in session.new):
            raise ConnectionResetError("database went away")

    event.listen(Session, "before_flush", refuse_pack_rows)
    try:
        with pytest.raises(ConnectionResetError):
            await upload.feed(content)
            await upload.flush()
    finally:
        event.remove(Session, "before_flush", refuse_pack_rows)
    await upload.abandon()
    assert spool_files(blobs) == []
    assert await count(sessions, Pack) == 0 and await pack_keys(blobs) == []


async def test_a_compression_thread_finishing_after_abandon_does_not_recreate_its_file(sessions, blobs, settings,
                                                                                      owner):
    content = os.urandom(store.WAITING_BYTES + 512 * 1024)
    upload = store.Upload(sessions, blobs, settings.with_overrides(pack_target_bytes=64 * 1024 * 1024),
                           incoming_for(owner, content), free_bytes=10**9)
    real = upload.new_compressor()
    first_frame_written = asyncio.Event()
    loop = asyncio.get_running_loop()

    class SlowCompressor:
        def compress_into(self, pieces, out) -> list[int]:
            time.sleep(0.01)  # a busy machine: the thread is still compressing when the upload is abandoned
            loop.call_soon_threadsafe(first_frame_written.set)
            return real.compress_into(pieces, out)

    upload.new_compressor = SlowCompressor
    await upload.feed(content)
    task = asyncio.create_task(upload.flush())
    await first_frame_written.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await upload.abandon()
    await asyncio.sleep(1.0)  # long enough for a thread left running to write its remaining frames
    assert spool_files(blobs) == []


LIVE_UPLOAD_SCRIPT = textwrap.dedent("""
    import asyncio, hashlib, os, sys, uuid
    from pathlib import Path
    from eacct.config import Settings
    from eacct.db import create_engine, make_session_factory
    import eacct.models
    from eacct.netdisk import store
    from eacct.storage import LocalBlobStore

    async def main():
        settings = Settings(database_url=os.environ["DB_URL"], pack_target_bytes=1024 * 1024,
                            upload_lease_seconds=float(os.environ["LEASE"]))
        engine = create_engine(os.environ["DB_URL"], schema=os.environ.get("DB_SCHEMA") or None)
        sessions = make_session_factory(engine)
        blobs = LocalBlobStore(Path(os.environ["BLOBS"]))
        content = os.urandom(6 * 1024 * 1024)
        upload = store.Upload(sessions, blobs, settings, store.IncomingVersion(
            owner_id=int(os.environ["OWNER"]), ledger_id=str(uuid.uuid4()), year=2018, uploader_id=1,
            via="backup", size=len(content), sha256=hashlib.sha256(content).hexdigest()), free_bytes=10**9)
        await upload.feed(content)
        await upload.flush()
        print("ready", flush=True)
        await asyncio.sleep(3600)  # alive, heartbeating, until killed

    asyncio.run(main())
""")


async def test_gc_never_touches_a_live_upload_of_another_process_and_reclaims_it_once_dead(
        sessions, settings, owner, database_url, db_schema, tmp_path):
    lease = 1
    blobs = LocalBlobStore(tmp_path / "shared-blobs")  # one store, as two processes on one machine share it
    env = {**os.environ, "DB_URL": database_url, "DB_SCHEMA": db_schema or "", "BLOBS": str(blobs.root),
           "OWNER": str(owner), "LEASE": str(lease), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", LIVE_UPLOAD_SCRIPT], env=env, stdout=subprocess.PIPE)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
        assert line.strip() == b"ready"
        stored = await pack_keys(blobs)
        assert stored
        gc_settings = settings.with_overrides(upload_lease_seconds=lease, gc_grace_seconds=0)
        await asyncio.sleep(lease * 2)  # longer than the lease: only the heartbeat keeps it alive
        report = await store.collect_garbage(sessions, blobs, gc_settings)
        assert report["pending_packs"] == 0
        assert await pack_keys(blobs) == stored and await count(sessions, UploadLease) == 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    await asyncio.sleep(lease * 1.5)
    report = await store.collect_garbage(sessions, blobs, gc_settings)
    assert report["pending_packs"] == len(stored)
    assert await pack_keys(blobs) == [] and await count(sessions, Pack) == 0
    assert await count(sessions, UploadLease) == 0 and os.listdir(blobs.spool_dir()) == []


async def test_a_commit_after_gc_reclaimed_the_lease_is_refused(sessions, blobs, settings, owner):
    """An upload whose lease lapsed (heartbeats failed) must not commit packs gc may have deleted."""
    content = os.urandom(3 * 1024 * 1024)
    incoming = incoming_for(owner, content)
    upload = store.Upload(sessions, blobs, settings, incoming, free_bytes=10**9)
    await upload.feed(content)
    await upload.finish()
    await upload.release_lease()
    await store.collect_garbage(sessions, blobs, settings.with_overrides(upload_lease_seconds=0))

    async def on_commit(session, version):
        session.add(Ledger(id=incoming.ledger_id, owner_id=owner, name="L"))
        await session.flush()

    with pytest.raises(errors.Conflict):
        await store.commit(sessions, upload, versions.UploadRules(settings, upload.incoming, on_commit))
    assert await count(sessions, Version) == 0


async def test_a_process_that_died_just_before_a_restart_has_its_uploads_reclaimed_within_the_lease(
        aiohttp_server, engine, sessions, blobs, settings, owner):
    """Start-up gc finds the dead predecessor's lease still fresh; the server reclaims it once it lapses."""
    content = os.urandom(3 * 1024 * 1024)
    upload = store.Upload(sessions, blobs, settings, incoming_for(owner, content), free_bytes=10**9)
    await upload.feed(content)
    await upload.flush()
    await upload.release_lease()  # the old process dies right here; its last heartbeat is fresh
    assert await pack_keys(blobs)
    from eacct.app import create_app

    await aiohttp_server(create_app(settings.with_overrides(upload_lease_seconds=1), engine=engine, blobs=blobs))
    deadline = time.monotonic() + 10
    while await count(sessions, Pack) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert await count(sessions, Pack) == 0 and await pack_keys(blobs) == []
    assert await count(sessions, UploadLease) == 0


# ----------------------------------------------------------------- worker threads failing mid-upload


async def test_a_compression_thread_failing_mid_upload_refuses_it_and_keeps_nothing(sessions, blobs, settings,
                                                                                    owner):
    """Compression runs on worker threads while the body streams; one failing after packs were already sealed,
    indexed and put fails the upload, and everything it stored goes (rows first, then blobs)."""
    content = os.urandom(6 * store.WAITING_BYTES)
    incoming = incoming_for(owner, content)
    compressed = 0
    sealed_before_failure = []

    class FailingCompressor:
        def __init__(self) -> None:
            self.real = FrameCompressor(level=1)

        def compress_into(self, pieces, out) -> list[int]:
            nonlocal compressed
            compressed += sum(len(piece) for piece in pieces)
            if compressed > 4 * store.WAITING_BYTES:
                raise zstandard.ZstdError("compression context broke")
            return self.real.compress_into(pieces, out)

    real_put = blobs.put

    async def noting_put(key, path):
        sealed_before_failure.append(key)
        await real_put(key, path)

    blobs.put = noting_put
    original = store.Upload.new_compressor
    store.Upload.new_compressor = lambda upload: FailingCompressor()
    try:
        with pytest.raises(zstandard.ZstdError):
            await store.receive_version(sessions, blobs, settings, incoming, body_of(content),
                                        versions.UploadRules(settings, incoming, None), free_bytes=10**9)
    finally:
        store.Upload.new_compressor = original
        blobs.put = real_put
    assert sealed_before_failure  # packs were stored before the thread failed
    assert await count(sessions, Version) == 0 and await count(sessions, Pack) == 0
    assert await count(sessions, UploadLease) == 0
    assert await pack_keys(blobs) == [] and spool_files(blobs) == []


async def test_a_compression_thread_failing_over_http_is_a_json_error_and_the_year_stays_as_it_was(
        desktop, monkeypatch):
    member = await desktop("zstdfail1", "小周")
    ledger = new_ledger_id()
    first = os.urandom(300_000)
    assert (await member.upload("backups", ledger, 2018, first, name="L"))[0] == 201
    used = (await member.call("GET", "/netdisk"))[1]["used_bytes"]

    class BrokenCompressor:
        def compress_into(self, pieces, out) -> list[int]:
            raise zstandard.ZstdError("compression context broke")

    monkeypatch.setattr(store.Upload, "new_compressor", lambda upload: BrokenCompressor())
    status, body, headers = await member.upload("backups", ledger, 2018, os.urandom(3 * 1024 * 1024), name="L")
    monkeypatch.undo()
    assert status == 500 and headers["Content-Type"].startswith("application/json"), body
    assert (await member.download("backups", ledger, 2018))[1] == first
    assert (await member.call("GET", "/netdisk"))[1]["used_bytes"] == used


async def test_a_spool_file_still_being_created_when_the_upload_is_abandoned_does_not_outlive_it(
        sessions, blobs, settings, owner, monkeypatch):
    content = os.urandom(4 * store.WAITING_BYTES)
    upload = store.Upload(sessions, blobs, settings, incoming_for(owner, content), free_bytes=10**9)
    opening = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_open(*args, **kwargs):
        loop.call_soon_threadsafe(opening.set)
        time.sleep(0.3)  # a slow disk: the file appears only after the upload was cancelled and abandoned
        return builtins.open(*args, **kwargs)

    monkeypatch.setattr(spool, "open", slow_open, raising=False)  # the spool's file creation, past its checks
    async def stream() -> None:  # the first batches' chunks are placed while it goes on: the spool file is created
        async for block in body_of(content, 1024 * 1024):
            await upload.feed(block)

    task = asyncio.create_task(stream())
    await asyncio.wait_for(opening.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await upload.abandon()
    await asyncio.sleep(0.5)
    assert spool_files(blobs) == []


@pytest.mark.parametrize("statement", ["SELECT chunks.digest FROM chunks", "INSERT INTO chunks"],
                         ids=["lookup", "indexing_in_the_background"])
async def test_a_database_failure_midway_through_an_upload_refuses_it_and_keeps_nothing(
        sessions, blobs, settings, owner, engine, statement):
    """A sealed pack's rows are indexed in the background while the body streams on; that, or a lookup,
    failing midway (after packs were sealed and indexed) fails the upload, and what it stored goes."""
    content = os.urandom(8 * store.WAITING_BYTES)
    incoming = incoming_for(owner, content)
    seen = 0

    def fail_the_third(conn, cursor, sql, parameters, context, executemany) -> None:
        nonlocal seen
        if sql.startswith(statement):
            seen += 1
            if seen == 3:
                raise ConnectionResetError("database went away")

    event.listen(engine.sync_engine, "before_cursor_execute", fail_the_third)
    try:
        with pytest.raises(Exception, match="database went away"):
            await store.receive_version(sessions, blobs, settings, incoming, body_of(content, 1024 * 1024),
                                        versions.UploadRules(settings, incoming, None), free_bytes=10**9)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", fail_the_third)
    assert seen >= 3
    assert await count(sessions, Version) == 0 and await count(sessions, Pack) == 0
    assert await count(sessions, UploadLease) == 0
    assert await pack_keys(blobs) == [] and spool_files(blobs) == []


async def test_an_io_error_while_a_spool_file_is_written_behind_refuses_the_upload_and_keeps_nothing(
        sessions, blobs, settings, owner, monkeypatch):
    """The kernel reporting an I/O error when writeback of a spool file is started (eacct.storage.writeback) fails
    the upload like a failed write: nothing of it is kept."""
    if not blobs.spool_write_behind:
        pytest.skip("this store's spool files are sent away, not written behind")

    def failing_sync_range(fd, offset, length, flags):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(writeback, "sync_file_range", failing_sync_range)
    content = os.urandom(3 * 1024 * 1024)
    incoming = incoming_for(owner, content)
    with pytest.raises(OSError):
        await store.receive_version(sessions, blobs, settings, incoming, body_of(content),
                                    versions.UploadRules(settings, incoming, None), free_bytes=10**9)
    assert await count(sessions, Version) == 0 and await count(sessions, Pack) == 0
    assert await count(sessions, UploadLease) == 0
    assert await pack_keys(blobs) == [] and spool_files(blobs) == []


async def test_a_stalled_session_batch_is_refused_with_408_and_the_session_holds_nothing(make_server, settings, blobs,
                                                                                         http, sessions):
    base_url = await make_server(settings.with_overrides(upload_idle_timeout=1), blobs)
    member = await (await Desktop(http, base_url, "owner04", "小赵").register()).open_netdisk()
    ledger = new_ledger_id()
    content = os.urandom(4 * 1024 * 1024)
    opened = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest(), "ledger_name": "L"}
    status, session, _ = await member.call("POST", f"/backups/{ledger}/years/2018/uploads", netdisk=True, json=opened)
    assert status == 201, session
    pieces = [content[start : start + 64 * 1024] for start in range(0, len(content), 64 * 1024)]
    batch = b"".join(ENTRY.pack(hashlib.sha256(piece).digest(), len(piece)) + piece for piece in pieces)
    path = f"/api/v1/backups/{ledger}/years/2018/uploads/{session['upload_id']}/chunks"
    await assert_stalls_with_408(base_url, f"PUT {path}", member, len(batch), batch[: len(batch) // 2], {})
    status, state, _ = await member.call("GET", f"/backups/{ledger}/years/2018/uploads/{session['upload_id']}",
                                         netdisk=True)
    assert status == 200 and state["held"] == []
    # The whole batch, sent in pieces of a few bytes to a few KiB, arrives as it was sent.
    status, stored, _ = await member.call("PUT", f"/backups/{ledger}/years/2018/uploads/{session['upload_id']}/chunks",
                                          netdisk=True, data=_in_pieces(batch),
                                          headers={"Content-Type": "application/octet-stream",
                                                   "Content-Length": str(len(batch))})
    assert status == 200, stored
    status, state, _ = await member.call("GET", f"/backups/{ledger}/years/2018/uploads/{session['upload_id']}",
                                         netdisk=True)
    assert sorted(state["held"]) == sorted({hashlib.sha256(piece).hexdigest() for piece in pieces})


async def _in_pieces(data: bytes):
    start, size = 0, 1
    while start < len(data):
        yield data[start : start + size]
        start, size = start + size, size * 3 % 7919 + 1
