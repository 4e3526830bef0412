"""Resumable uploads (issue 9): upload sessions on both paths — the checks of a streamed upload at open and at
commit, batches of verified chunks kept as pending data (charged to no one), and gc after a day."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import timedelta

import pytest
from sqlalchemy import delete, event, func, select, update

from eacct.chunks.manifest import ENTRY
from eacct.db import unit_of_work, utcnow
from eacct.netdisk import upload_sessions
from eacct.netdisk.models import Chunk, Pack, UploadLease, UploadSession, UploadSessionPack
from eacct.netdisk.store import collect_garbage
from eacct.netdisk.store import sessions as store_sessions
from eacct.storage import BlobStoreError
from tests.conftest import new_ledger_id
from tests.share.conftest import cancel, error_code, used_bytes, versions_of
from tests.share.test_races import blob_keys, committed_pack_keys, nothing_left_behind, pending_packs

PIECE = 64 * 1024


def cut(content: bytes) -> list[bytes]:
    return [content[i : i + PIECE] for i in range(0, len(content), PIECE)]


def batch(pieces: list[bytes]) -> bytes:
    return b"".join(ENTRY.pack(hashlib.sha256(p).digest(), len(p)) + p for p in pieces)


def manifest(pieces: list[bytes]) -> bytes:
    return b"".join(ENTRY.pack(hashlib.sha256(p).digest(), len(p)) for p in pieces)


async def open_upload(member, side, ledger, year, content, **claims):
    body = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest(), **claims}
    return await member.call("POST", f"/{side}/{ledger}/years/{year}/uploads", netdisk=True, json=body)


async def put(member, side, ledger, year, upload_id, data: bytes):
    return await member.call("PUT", f"/{side}/{ledger}/years/{year}/uploads/{upload_id}/chunks", netdisk=True, data=data,
                             headers={"Content-Type": "application/octet-stream"})


async def commit(member, side, ledger, year, upload_id, data: bytes):
    return await member.call("POST", f"/{side}/{ledger}/years/{year}/uploads/{upload_id}/commit", netdisk=True, data=data,
                             headers={"Content-Type": "application/octet-stream"})


async def one_batch_sent(owner, ledger, content: bytes, year: int = 2019) -> tuple[list[bytes], str]:
    """Open a session on the owner's backup and send the whole year as one batch: its pieces and the session's id."""
    pieces = cut(content)
    upload_id = (await open_upload(owner, "backups", ledger, year, content))[1]["upload_id"]
    assert (await put(owner, "backups", ledger, year, upload_id, batch(pieces)))[0] == 200
    return pieces, upload_id


async def upload_in_one_batch(owner, ledger, content: bytes, year: int = 2019) -> None:
    """Open a session on the owner's backup, send the whole year as one batch, commit, and read the year back."""
    pieces, upload_id = await one_batch_sent(owner, ledger, content, year)
    status, version, _ = await commit(owner, "backups", ledger, year, upload_id, manifest(pieces))
    assert status == 201, version
    assert (await owner.download("backups", ledger, year))[1] == content


async def test_a_session_upload_in_batches_becomes_a_version_and_resumes_from_what_is_held(world, sessions, blobs):
    owner, ledger = world.owner, world.ledger
    content = os.urandom(20 * PIECE + 1000)
    pieces = cut(content)
    status, opened, _ = await open_upload(owner, "backups", ledger, 2019, content, remark="续传")
    assert status == 201 and opened["held"] == [] and opened["size"] == len(content)
    upload_id = opened["upload_id"]
    used_before = await used_bytes(owner)
    status, stored, _ = await put(owner, "backups", ledger, 2019, upload_id, batch(pieces[:8]))
    assert (status, stored) == (200, {"stored": 8})
    assert await used_bytes(owner) == used_before  # pending data is charged to no one until the commit
    # The connection broke here; the client asks what the session holds and sends only the rest.
    status, state, _ = await owner.call("GET", f"/backups/{ledger}/years/2019/uploads/{upload_id}", netdisk=True)
    assert status == 200 and set(state["held"]) == {hashlib.sha256(p).hexdigest() for p in pieces[:8]}
    status, stored, _ = await put(owner, "backups", ledger, 2019, upload_id, batch(pieces[6:]))
    assert (status, stored) == (200, {"stored": len(pieces) - 8})  # the two sent again are not stored twice
    status, version, _ = await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces))
    assert status == 201, version
    assert version["size"] == len(content) and version["remark"] == "续传" and version["via"] == "backup"
    status, data, _ = await owner.download("backups", ledger, 2019)
    assert status == 200 and data == content
    assert await used_bytes(owner) == used_before + len(content)
    # The session ended with its commit.
    status, body, _ = await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces))
    assert (status, error_code(body)) == (404, "not_found")
    await nothing_left_behind(sessions, blobs)


async def test_a_recipients_session_upload_goes_into_the_owners_backup(world):
    content = os.urandom(5 * PIECE)
    pieces = cut(content)
    status, opened, _ = await open_upload(world.recipient, "cloud-shares", world.ledger, 2018, content,
                                          if_match=world.versions[2018]["version_id"])
    assert status == 201, opened
    upload_id = opened["upload_id"]
    assert (await put(world.recipient, "cloud-shares", world.ledger, 2018, upload_id, batch(pieces)))[0] == 200
    status, version, _ = await commit(world.recipient, "cloud-shares", world.ledger, 2018, upload_id, manifest(pieces))
    assert status == 201 and version["via"] == "share" and version["uploaded_by"]["id"] == world.recipient.id
    assert (await versions_of(world.owner, world.ledger, 2018))[0]["version_id"] == version["version_id"]


async def test_a_session_is_refused_at_open_as_a_streamed_upload_is(world):
    content = os.urandom(1000)
    status, body, _ = await open_upload(world.owner, "backups", world.ledger, 2018, content, if_match="0" * 32)
    assert (status, error_code(body)) == (412, "version_conflict")
    status, body, _ = await open_upload(world.owner, "cloud-shares", world.ledger, 2018, content)
    assert (status, error_code(body)) == (403, "owner_uses_backup")
    status, body, _ = await open_upload(world.recipient, "backups", world.ledger, 2018, content)
    assert (status, error_code(body)) == (403, "recipient_uses_share")
    status, body, _ = await open_upload(world.owner, "backups", new_ledger_id(), 2018, content)
    assert (status, error_code(body)) == (422, "invalid")  # a new ledger needs its name
    status, body, _ = await open_upload(world.owner, "backups", world.ledger, 2018, b"x" * 10, size=10**13)
    assert (status, error_code(body)) == (413, "quota_exceeded")


async def test_a_chunk_that_does_not_match_its_digest_is_refused_and_nothing_is_held(world):
    content = os.urandom(3 * PIECE)
    pieces = cut(content)
    upload_id = (await open_upload(world.owner, "backups", world.ledger, 2019, content))[1]["upload_id"]
    bad = bytearray(batch(pieces))
    bad[-1] ^= 1
    status, body, _ = await put(world.owner, "backups", world.ledger, 2019, upload_id, bytes(bad))
    assert (status, error_code(body)) == (400, "checksum_mismatch")
    status, state, _ = await world.owner.call("GET", f"/backups/{world.ledger}/years/2019/uploads/{upload_id}", netdisk=True)
    assert state["held"] == []
    status, body, _ = await put(world.owner, "backups", world.ledger, 2019, upload_id, batch(pieces) * 2)
    assert status == 200  # the same chunks twice in one batch: stored once
    status, body, _ = await put(world.owner, "backups", world.ledger, 2019, upload_id, batch([os.urandom(100)]))
    assert (status, error_code(body)) == (422, "invalid")  # more than the size it claimed


async def test_a_commit_checks_the_manifest_the_whole_file_sha256_and_the_rules(world):
    content = os.urandom(4 * PIECE)
    pieces = cut(content)
    upload_id = (await open_upload(world.owner, "backups", world.ledger, 2019, content))[1]["upload_id"]
    await put(world.owner, "backups", world.ledger, 2019, upload_id, batch(pieces[:3]))
    status, body, _ = await commit(world.owner, "backups", world.ledger, 2019, upload_id, manifest(pieces))
    assert (status, error_code(body)) == (409, "missing_chunks")
    assert body["error"]["missing"] == [hashlib.sha256(pieces[3]).hexdigest()]
    await put(world.owner, "backups", world.ledger, 2019, upload_id, batch(pieces[3:]))
    swapped = [pieces[1], pieces[0], *pieces[2:]]
    status, body, _ = await commit(world.owner, "backups", world.ledger, 2019, upload_id, manifest(swapped))
    assert (status, error_code(body)) == (400, "checksum_mismatch")
    # Someone else's version landed meanwhile: the If-Match claimed at open is checked again at commit.
    based_on = world.versions[2018]["version_id"]
    upload_id = (await open_upload(world.owner, "backups", world.ledger, 2018, content, if_match=based_on))[1]["upload_id"]
    await put(world.owner, "backups", world.ledger, 2018, upload_id, batch(pieces))
    assert (await world.recipient.upload("cloud-shares", world.ledger, 2018, b"li's edit"))[0] == 201
    status, body, _ = await commit(world.owner, "backups", world.ledger, 2018, upload_id, manifest(pieces))
    assert (status, error_code(body)) == (412, "version_conflict")


async def test_rule_11_a_cancelled_share_ends_the_recipients_upload_session(world):
    content = os.urandom(2 * PIECE)
    pieces = cut(content)
    upload_id = (await open_upload(world.recipient, "cloud-shares", world.ledger, 2018, content))[1]["upload_id"]
    assert (await put(world.recipient, "cloud-shares", world.ledger, 2018, upload_id, batch(pieces)))[0] == 200
    await cancel(world.owner, world.share_id)
    status, body, _ = await commit(world.recipient, "cloud-shares", world.ledger, 2018, upload_id, manifest(pieces))
    assert (status, error_code(body)) == (404, "not_found")
    assert len(await versions_of(world.owner, world.ledger, 2018)) == 1


async def test_a_session_belongs_to_the_member_who_opened_it(world):
    content = os.urandom(PIECE)
    upload_id = (await open_upload(world.owner, "backups", world.ledger, 2019, content))[1]["upload_id"]
    status, body, _ = await world.stranger.call("GET", f"/backups/{world.ledger}/years/2019/uploads/{upload_id}", netdisk=True)
    assert status == 404
    status, body, _ = await world.owner.call("GET", f"/backups/{world.ledger}/years/2020/uploads/{upload_id}", netdisk=True)
    assert status == 404


async def test_gc_reclaims_an_expired_sessions_data_and_never_a_live_ones(world, sessions, blobs, settings):
    content = os.urandom(3 * PIECE)
    pieces = cut(content)
    old = (await open_upload(world.owner, "backups", world.ledger, 2019, content))[1]["upload_id"]
    live = (await open_upload(world.owner, "backups", world.ledger, 2017, content))[1]["upload_id"]
    for year, upload_id in ((2019, old), (2017, live)):
        assert (await put(world.owner, "backups", world.ledger, year, upload_id, batch(pieces)))[0] == 200
    assert await pending_packs(sessions) == 2
    await collect_garbage(sessions, blobs, settings)
    assert await pending_packs(sessions) == 2  # a day has not passed: nothing reclaimed
    async with unit_of_work(sessions) as session:
        lease_id = await session.scalar(select(UploadSession.lease_id).where(UploadSession.id == old))
        past = utcnow() - timedelta(seconds=1)
        await session.execute(update(UploadSession).where(UploadSession.id == old).values(expires_at=past))
        await session.execute(update(UploadLease).where(UploadLease.id == lease_id).values(
            heartbeat_at=past - timedelta(seconds=settings.upload_lease_seconds)))
    report = await collect_garbage(sessions, blobs, settings)
    assert report["upload_sessions"] == 1 and report["pending_packs"] == 1
    assert await pending_packs(sessions) == 1
    status, body, _ = await commit(world.owner, "backups", world.ledger, 2019, old, manifest(pieces))
    assert (status, error_code(body)) == (404, "not_found")
    status, version, _ = await commit(world.owner, "backups", world.ledger, 2017, live, manifest(pieces))
    assert status == 201, version
    assert await blob_keys(blobs) == await committed_pack_keys(sessions)


async def chunk_rows_of(sessions, pieces: list[bytes]) -> dict[bytes, tuple[int, bool]]:
    """digest → (refs, whether its pack is committed), for the rows of these chunks."""
    async with unit_of_work(sessions, read_only=True) as session:
        rows = await session.execute(
            select(Chunk.digest, Chunk.refs, Pack.committed).join(Pack, Pack.id == Chunk.pack_id)
            .where(Chunk.digest.in_([hashlib.sha256(p).digest() for p in pieces])))
        return {digest: (refs, committed) for digest, refs, committed in rows}


@pytest.fixture
def chunk_inserts(engine):
    """The INSERT INTO chunks statements the database runs while the test's block is being recorded."""
    recorded: list[str] = []

    def record(connection, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO CHUNKS"):
            recorded.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield recorded
    event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_sessions_batches_index_their_chunks_pending_and_its_commit_inserts_no_row(
        world, sessions, blobs, chunk_inserts):
    """The commit holds the write lock (SQLite) only to count references, as a streamed upload's does: a 1 GB
    session's ~130k rows go into the index batch by batch, as pending rows nobody counts on until the commit."""
    owner, ledger = world.owner, world.ledger
    content = os.urandom(12 * PIECE + 77)
    pieces = cut(content)
    upload_id = (await open_upload(owner, "backups", ledger, 2019, content))[1]["upload_id"]
    for part in (pieces[:5], pieces[5:]):
        assert (await put(owner, "backups", ledger, 2019, upload_id, batch(part)))[0] == 200
    assert chunk_inserts  # with their packs
    rows = await chunk_rows_of(sessions, pieces)
    assert len(rows) == len(pieces) and set(rows.values()) == {(1, False)}  # the reference to come, not counted yet
    chunk_inserts.clear()
    status, version, _ = await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces))
    assert status == 201, version
    assert chunk_inserts == []
    assert set((await chunk_rows_of(sessions, pieces)).values()) == {(1, True)}
    assert (await owner.download("backups", ledger, 2019))[1] == content
    await nothing_left_behind(sessions, blobs)


async def test_a_session_whose_chunks_rows_are_gone_is_asked_for_them_and_commits_once_they_are_sent_again(
        world, sessions, blobs):
    """A session holds the index rows in its packs: should rows go (nothing deletes a pending pack's rows but its
    pack's removal), the commit asks for those chunks (409 missing_chunks) instead of committing a version that names
    data the index does not have; sent again, they complete it."""
    owner, ledger = world.owner, world.ledger
    content = os.urandom(6 * PIECE)
    pieces, upload_id = await one_batch_sent(owner, ledger, content)
    async with unit_of_work(sessions) as session:
        dropped = (await session.execute(delete(Chunk).where(
            Chunk.digest.in_([hashlib.sha256(p).digest() for p in pieces[2:]])))).rowcount
    assert dropped == len(pieces) - 2
    status, body, _ = await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces))
    assert (status, error_code(body)) == (409, "missing_chunks")
    assert sorted(body["error"]["missing"]) == sorted(hashlib.sha256(p).hexdigest() for p in pieces[2:])
    assert (await put(owner, "backups", ledger, 2019, upload_id, batch(pieces)))[:2] == (200, {"stored": 4})
    status, version, _ = await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces))
    assert status == 201, version
    assert set((await chunk_rows_of(sessions, pieces)).values()) == {(1, True)}
    assert (await owner.download("backups", ledger, 2019))[1] == content
    await nothing_left_behind(sessions, blobs)


async def test_chunks_another_sessions_pending_rows_index_first_are_held_and_both_years_read_back(
        world, sessions, blobs):
    """Two sessions of one owner storing the same chunks: the second's index rows for them cannot go in (the first's
    pending rows are there), so its pack records them; it holds them, does not take them again, and whichever
    commits first, both versions read back whole."""
    owner, ledger = world.owner, world.ledger
    shared = cut(os.urandom(4 * PIECE))
    first_pieces, second_pieces = shared + cut(os.urandom(2 * PIECE)), cut(os.urandom(3 * PIECE)) + shared
    first_content, second_content = b"".join(first_pieces), b"".join(second_pieces)
    first = (await open_upload(owner, "backups", ledger, 2018, first_content))[1]["upload_id"]
    second = (await open_upload(owner, "backups", ledger, 2019, second_content))[1]["upload_id"]
    assert (await put(owner, "backups", ledger, 2018, first, batch(first_pieces)))[:2] == (200, {"stored": 6})
    assert (await put(owner, "backups", ledger, 2019, second, batch(second_pieces)))[:2] == (200, {"stored": 7})
    async with unit_of_work(sessions, read_only=True) as session:
        recorded = await session.scalar(select(UploadSessionPack.unindexed).where(UploadSessionPack.session_id == second))
    assert len(recorded) == 4 * store_sessions.UNINDEXED.size
    assert (await put(owner, "backups", ledger, 2019, second, batch(second_pieces)))[:2] == (200, {"stored": 0})
    status, state, _ = await owner.call("GET", f"/backups/{ledger}/years/2019/uploads/{second}", netdisk=True)
    assert status == 200 and sorted(state["held"]) == sorted({hashlib.sha256(p).hexdigest() for p in second_pieces})
    status, version, _ = await commit(owner, "backups", ledger, 2019, second, manifest(second_pieces))
    assert status == 201, version
    status, version, _ = await commit(owner, "backups", ledger, 2018, first, manifest(first_pieces))
    assert status == 201, version
    rows = await chunk_rows_of(sessions, first_pieces + second_pieces)
    assert [rows[hashlib.sha256(p).digest()][0] for p in shared] == [2] * len(shared)
    assert (await owner.download("backups", ledger, 2018))[1] == first_content
    assert (await owner.download("backups", ledger, 2019))[1] == second_content
    await nothing_left_behind(sessions, blobs)


async def test_rows_a_batch_on_an_older_server_left_without_their_reference_get_it_from_the_commit(
        world, sessions, blobs, settings):
    """Servers before this one indexed pending rows with no reference (the commit counted it): a session whose
    batches went to one of them and whose commit comes here must not leave rows gc takes for unused."""
    owner, ledger = world.owner, world.ledger
    content = os.urandom(5 * PIECE)
    pieces, upload_id = await one_batch_sent(owner, ledger, content)
    async with unit_of_work(sessions) as session:
        await session.execute(update(Chunk).where(Chunk.digest.in_([hashlib.sha256(p).digest() for p in pieces]))
                              .values(refs=0))
    assert (await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces)))[0] == 201
    await collect_garbage(sessions, blobs, settings)
    assert set((await chunk_rows_of(sessions, pieces)).values()) == {(1, True)}
    assert (await owner.download("backups", ledger, 2019))[1] == content


async def test_a_batch_is_parsed_and_verified_off_the_event_loop(world, monkeypatch):
    """Hashing a batch of up to 32 MiB on the event loop would stall every other member's request meanwhile."""
    loop_thread = threading.current_thread()
    parsed_on = []
    real_parse = upload_sessions.parse_batch

    def recording_parse(body):
        parsed_on.append(threading.current_thread())
        return real_parse(body)

    monkeypatch.setattr(upload_sessions, "parse_batch", recording_parse)
    content = os.urandom(3 * PIECE)
    pieces = cut(content)
    upload_id = (await open_upload(world.owner, "backups", world.ledger, 2019, content))[1]["upload_id"]
    assert (await put(world.owner, "backups", world.ledger, 2019, upload_id, batch(pieces)))[0] == 200
    bad = bytearray(batch(pieces))
    bad[ENTRY.size] ^= 1  # the first chunk's first byte
    status, body, _ = await put(world.owner, "backups", world.ledger, 2019, upload_id, bytes(bad))
    assert (status, error_code(body)) == (400, "checksum_mismatch")
    assert len(parsed_on) == 2 and loop_thread not in parsed_on


async def test_a_batch_stores_only_what_neither_the_session_nor_the_store_has_across_lookup_statements(
        world, monkeypatch):
    monkeypatch.setattr(upload_sessions, "_LOOKUP_BATCH", 2)  # every lookup takes several statements
    owner, ledger = world.owner, world.ledger
    content = os.urandom(9 * PIECE)
    pieces = cut(content)
    upload_id = (await open_upload(owner, "backups", ledger, 2019, content))[1]["upload_id"]
    assert (await put(owner, "backups", ledger, 2019, upload_id, batch(pieces[:5])))[:2] == (200, {"stored": 5})
    assert (await put(owner, "backups", ledger, 2019, upload_id, batch(pieces)))[:2] == (200, {"stored": 4})
    assert (await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces)))[0] == 201
    # The same year again, in another session: every chunk is in the store already.
    again = (await open_upload(owner, "backups", ledger, 2017, content))[1]["upload_id"]
    assert (await put(owner, "backups", ledger, 2017, again, batch(pieces)))[:2] == (200, {"stored": 0})
    assert (await commit(owner, "backups", ledger, 2017, again, manifest(pieces)))[0] == 201
    assert (await owner.download("backups", ledger, 2017))[1] == content


async def session_rows(sessions) -> tuple[int, int]:
    """(upload sessions, batches they hold) in the database."""
    async with unit_of_work(sessions, read_only=True) as session:
        return (await session.scalar(select(func.count()).select_from(UploadSession)),
                await session.scalar(select(func.count()).select_from(UploadSessionPack)))


async def test_an_ended_sessions_rows_are_deleted_after_its_commit(world, sessions):
    owner, ledger = world.owner, world.ledger
    content = os.urandom(10 * PIECE)
    pieces = cut(content)
    upload_id = (await open_upload(owner, "backups", ledger, 2019, content))[1]["upload_id"]
    assert (await put(owner, "backups", ledger, 2019, upload_id, batch(pieces[:6])))[0] == 200
    assert (await put(owner, "backups", ledger, 2019, upload_id, batch(pieces[6:])))[0] == 200
    assert await session_rows(sessions) == (1, 2)
    assert (await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces)))[0] == 201
    assert await session_rows(sessions) == (0, 0)


async def test_a_session_ends_in_its_commits_transaction_and_one_whose_commit_failed_commits_later(
        world, sessions, blobs, settings, monkeypatch):
    """The session ends with the transaction that commits its version (a second commit or a resumption finds
    nothing, nothing is left for gc); a commit that fails at its last step leaves the session whole, to commit again."""
    owner, ledger = world.owner, world.ledger
    content = os.urandom(4 * PIECE)
    pieces = cut(content)
    upload_id = (await open_upload(owner, "backups", ledger, 2019, content))[1]["upload_id"]
    assert (await put(owner, "backups", ledger, 2019, upload_id, batch(pieces)))[0] == 200
    real_after_insert = upload_sessions.UploadRules.after_insert

    async def fails(self, session, version, new_bytes):
        await real_after_insert(self, session, version, new_bytes)
        raise ConnectionResetError("database went away before the commit")

    monkeypatch.setattr(upload_sessions.UploadRules, "after_insert", fails)
    assert (await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces)))[0] >= 500
    assert (await owner.call("GET", f"/backups/{ledger}/years/2019", netdisk=True))[0] == 404
    monkeypatch.setattr(upload_sessions.UploadRules, "after_insert", real_after_insert)
    assert await session_rows(sessions) == (1, 1)
    status, version, _ = await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces))
    assert status == 201, version
    assert await session_rows(sessions) == (0, 0)
    status, body, _ = await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces))
    assert (status, error_code(body)) == (404, "not_found")
    status, body, _ = await owner.call("GET", f"/backups/{ledger}/years/2019/uploads/{upload_id}", netdisk=True)
    assert status == 404
    assert (await collect_garbage(sessions, blobs, settings))["upload_sessions"] == 0
    assert (await owner.download("backups", ledger, 2019))[1] == content
    await nothing_left_behind(sessions, blobs)


async def test_a_batch_writes_one_row_for_its_session_whatever_its_chunks(world, sessions, engine):
    """A 1 GB session's ~130k chunks: a row each for the session, on top of their index rows, held SQLite's write lock
    for every batch and again, for seconds, to delete them when the session ended. The session records its packs."""
    owner, ledger = world.owner, world.ledger
    content = os.urandom(12 * PIECE)
    pieces = cut(content)
    upload_id = (await open_upload(owner, "backups", ledger, 2019, content))[1]["upload_id"]
    session_writes: list[str] = []

    def record(connection, cursor, statement, parameters, context, executemany):
        if "upload_session" in statement and not statement.lstrip().upper().startswith("SELECT"):
            session_writes.append(" ".join(statement.split()[:3]))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        assert (await put(owner, "backups", ledger, 2019, upload_id, batch(pieces[:8])))[:2] == (200, {"stored": 8})
        assert (await put(owner, "backups", ledger, 2019, upload_id, batch(pieces)))[:2] == (200, {"stored": 4})
        assert (await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces)))[0] == 201
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert sorted(session_writes) == sorted(["UPDATE upload_sessions SET", "INSERT INTO upload_session_packs"] * 2
                                            + ["DELETE FROM upload_sessions"])
    assert (await owner.download("backups", ledger, 2019))[1] == content


async def test_a_commits_work_per_manifest_entry_runs_off_the_event_loop(world, monkeypatch):
    """A 1 GB year's manifest has ~130k entries: decoded, checked and placed on the event loop, it would hold every
    other member's request for a tenth of a second at a time."""
    loop_thread = threading.current_thread()
    ran_on: dict[str, object] = {}

    def recording(module, name):
        real = getattr(module, name)

        def run(*args):
            ran_on[name] = threading.current_thread()
            return real(*args)

        monkeypatch.setattr(module, name, run)

    for name in ("decode_manifest", "_held_sizes", "_check_manifest"):
        recording(upload_sessions, name)
    recording(store_sessions, "_places")
    await upload_in_one_batch(world.owner, world.ledger, os.urandom(5 * PIECE))
    assert set(ran_on) == {"decode_manifest", "_held_sizes", "_check_manifest", "_places"}
    assert loop_thread not in ran_on.values()


async def test_a_commit_reads_what_its_session_holds_pack_by_pack(world):
    owner, ledger = world.owner, world.ledger
    content = os.urandom(9 * PIECE)
    pieces = cut(content)
    upload_id = (await open_upload(owner, "backups", ledger, 2019, content))[1]["upload_id"]
    for start in (0, 4, 8):  # batches of 4, 4 and 1
        assert (await put(owner, "backups", ledger, 2019, upload_id, batch(pieces[start : start + 4])))[0] == 200
    status, body, _ = await owner.call("GET", f"/backups/{ledger}/years/2019/uploads/{upload_id}", netdisk=True)
    assert status == 200 and sorted(body["held"]) == sorted({hashlib.sha256(piece).hexdigest() for piece in pieces})
    assert (await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces)))[0] == 201
    assert (await owner.download("backups", ledger, 2019))[1] == content


@pytest.mark.parametrize("cleanup", ["works", "fails"])
async def test_a_batch_whose_pack_could_not_be_stored_is_sent_again_and_its_version_reads_back(
        world, sessions, blobs, settings, monkeypatch, cleanup):
    """A batch's pack is registered, with its chunks' pending rows, before its blob is put: when the put fails (or the
    process dies before it), those rows name a pack with no blob. The batch sent again is what the version must use,
    whether or not the failed batch's rows could be removed, and gc then reclaims the dead pack."""
    owner, ledger = world.owner, world.ledger
    content = os.urandom(6 * PIECE)
    pieces = cut(content)
    upload_id = (await open_upload(owner, "backups", ledger, 2019, content))[1]["upload_id"]
    real_put = blobs.put

    async def unavailable(key, path):
        raise BlobStoreError("connection reset (injected)")

    def database_unavailable(*args):
        raise OSError("database unavailable (injected)")

    blobs.put = unavailable
    try:
        with monkeypatch.context() as scoped:
            if cleanup == "fails":  # the failed batch's rows stay behind, as when the process dies before its put
                scoped.setattr(store_sessions, "delete", database_unavailable)
            status, body, _ = await put(owner, "backups", ledger, 2019, upload_id, batch(pieces))
    finally:
        blobs.put = real_put
    assert (status, error_code(body)) == (503, "storage_unavailable")
    status, state, _ = await owner.call("GET", f"/backups/{ledger}/years/2019/uploads/{upload_id}", netdisk=True)
    assert status == 200 and state["held"] == []  # nothing of the failed batch counts as held
    assert (await put(owner, "backups", ledger, 2019, upload_id, batch(pieces)))[0] == 200
    status, version, _ = await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces))
    assert status == 201, version
    assert (await owner.download("backups", ledger, 2019))[1] == content
    await collect_garbage(sessions, blobs, settings)
    assert (await owner.download("backups", ledger, 2019))[1] == content
    await nothing_left_behind(sessions, blobs)


async def test_a_commit_reads_its_year_back_hashing_each_byte_once_and_a_damaged_chunk_fails_the_whole_file(
        world, sessions, chunk_checks):
    """Each chunk was hashed when its batch arrived; the commit reads the year back to check the whole file's
    sha256 and does not hash each chunk again (a 1 GB year: a second of CPU in the commit). A chunk whose stored
    bytes are not its own is caught by that whole-file check, and nothing is committed."""
    owner, ledger = world.owner, world.ledger
    content = os.urandom(4 * PIECE)
    pieces, upload_id = await one_batch_sent(owner, ledger, content)
    assert (await commit(owner, "backups", ledger, 2019, upload_id, manifest(pieces)))[0] == 201
    assert chunk_checks == []
    assert (await owner.download("backups", ledger, 2019))[1] == content
    assert sum(chunk_checks) == len(pieces)  # a download still verifies every chunk it reads

    # The stored places of two chunks of the same size swapped: each decompresses, to the other's bytes.
    content = os.urandom(4 * PIECE)
    pieces, upload_id = await one_batch_sent(owner, ledger, content, year=2020)
    first, second = (hashlib.sha256(piece).digest() for piece in pieces[:2])
    async with unit_of_work(sessions) as session:
        places = {digest: (offset, length) for digest, offset, length in await session.execute(
            select(Chunk.digest, Chunk.offset, Chunk.stored_length).where(Chunk.digest.in_([first, second])))}
        for digest, other in ((first, second), (second, first)):
            await session.execute(update(Chunk).where(Chunk.digest == digest)
                                  .values(offset=places[other][0], stored_length=places[other][1]))
    status, body, _ = await commit(owner, "backups", ledger, 2020, upload_id, manifest(pieces))
    assert (status, error_code(body)) == (400, "checksum_mismatch")
    years = (await owner.call("GET", f"/backups/{ledger}", netdisk=True))[1]["years"]
    assert 2020 not in [year["year"] for year in years]
