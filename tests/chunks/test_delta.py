"""Delta uploads: the manifest plus only the chunks the server lacks (eacct.chunks.delta)."""

from __future__ import annotations

import hashlib
import os

import pytest

from eacct.chunks.chunker import chunk_bytes
from eacct.chunks.delta import COPY, COUNT, MAGIC, MEDIA_TYPE, NEW, Copy, New, plan, write_delta
from tests.conftest import new_ledger_id, sha
from tests.netdisk.ledgers import edit_rows, make_ledger_db, tar_year


def manifest_of(content: bytes) -> list[tuple[bytes, int]]:
    return [(hashlib.sha256(piece).digest(), len(piece)) for piece in chunk_bytes(content)]


async def send_delta(member, ledger, year, content: bytes, body: bytes, *, sha256: str | None = None,
                     archive_size: int | None = None, side: str = "backups", base: str | None = None):
    headers = {"Content-Type": MEDIA_TYPE, "X-Content-SHA256": sha256 or sha(content),
               "X-Archive-Size": str(len(content) if archive_size is None else archive_size)}
    if base:
        headers["If-Match"] = f'"{base}"'
    return await member.call("POST", f"/{side}/{ledger}/years/{year}/versions", netdisk=True, data=body,
                             headers=headers)


def body_for(archive, manifest, ops) -> bytes:
    target = archive.with_name("body.delta")
    write_delta(archive, manifest, ops, target)
    return target.read_bytes()


@pytest.fixture
async def two_days(desktop, tmp_path):
    """A member whose 2018 backup holds day one; day two is the same ledger after a day of bookkeeping."""
    member = await desktop("delta01", "小王")
    db = make_ledger_db(tmp_path / "data.db", rows=30_000)
    day1 = tar_year({"data.db": db})
    base_manifest = manifest_of(day1)
    ledger = new_ledger_id()
    status, first, _ = await member.upload("backups", ledger, 2018, day1, name="L")
    assert status == 201
    edit_rows(db, list(range(50, 30_000, 997)))
    day2 = tar_year({"data.db": db})
    archive = tmp_path / "day2.tar"
    archive.write_bytes(day2)
    return member, ledger, first, day2, archive, base_manifest


async def ask_missing(member, ledger, manifest, side="backups") -> set[bytes]:
    status, body, _ = await member.call("POST", f"/{side}/{ledger}/years/2018/chunks/missing", netdisk=True,
                                        json={"chunks": [digest.hex() for digest, _ in manifest]})
    assert status == 200, body
    return {bytes.fromhex(digest) for digest in body["missing"]}


async def test_a_day_of_bookkeeping_travels_as_its_changed_pages(two_days):
    member, ledger, first, day2, archive, base = two_days
    manifest = manifest_of(day2)
    new = [entry for entry in manifest if entry not in set(base)]
    missing = await ask_missing(member, ledger, new)
    ops = plan(manifest, base, missing)
    body = body_for(archive, manifest, ops)
    # ~30 scattered entries of a 2 MB ledger: a few copy runs and their page groups compressed, not the year.
    assert len(body) < len(day2) // 10
    assert sum(isinstance(op, Copy) for op in ops) <= len(missing) + 1
    _, before, _ = await member.call("GET", "/netdisk")
    status, version, _ = await send_delta(member, ledger, 2018, day2, body, base=first["version_id"])
    assert status == 201, version
    assert version["size"] == len(day2) and version["sha256"] == sha(day2)
    assert (await member.download("backups", ledger, 2018))[1] == day2
    _, after, _ = await member.call("GET", "/netdisk")
    assert after["used_bytes"] - before["used_bytes"] == sum(size for d, size in set(manifest) if d in missing)


async def test_a_delta_naming_a_chunk_the_server_lacks_is_409_missing_chunks(two_days):
    member, ledger, first, day2, archive, base = two_days
    manifest = manifest_of(day2)
    body = body_for(archive, manifest, plan(manifest, base, set()))  # claims the server has everything
    status, error, _ = await send_delta(member, ledger, 2018, day2, body, base=first["version_id"])
    assert status == 409 and error["error"]["code"] == "missing_chunks" and error["error"]["missing"]
    _, year, _ = await member.call("GET", f"/backups/{ledger}/years/2018", netdisk=True)
    assert [v["version_id"] for v in year["versions"]] == [first["version_id"]]


async def test_a_delta_whose_year_checksum_is_wrong_keeps_nothing(two_days):
    member, ledger, first, day2, archive, base = two_days
    manifest = manifest_of(day2)
    body = body_for(archive, manifest, plan(manifest, base, await ask_missing(member, ledger, manifest)))
    _, before, _ = await member.call("GET", "/netdisk")
    status, error, _ = await send_delta(member, ledger, 2018, day2, body, sha256="0" * 64, base=first["version_id"])
    assert status == 400 and error["error"]["code"] == "checksum_mismatch"
    _, after, _ = await member.call("GET", "/netdisk")
    assert after["used_bytes"] == before["used_bytes"]


async def test_a_delta_chunk_that_does_not_match_its_digest_is_refused(two_days):
    member, ledger, first, day2, archive, base = two_days
    import zstandard

    piece = b"real ledger page " * 100
    forged = zstandard.ZstdCompressor().compress(b"X" * len(piece))
    body = MAGIC + COUNT.pack(1) + NEW.pack(1, hashlib.sha256(piece).digest(), len(piece), len(forged)) + forged
    status, error, _ = await send_delta(member, ledger, 2019, piece, body)
    assert status == 400 and error["error"]["code"] == "checksum_mismatch"
    assert (await member.call("GET", f"/backups/{ledger}/years/2019", netdisk=True))[0] == 404


@pytest.mark.parametrize("damage", ["magic", "truncated", "trailing", "archive_size", "huge_count"])
async def test_malformed_deltas_are_4xx_and_keep_nothing(two_days, damage):
    member, ledger, first, day2, archive, base = two_days
    manifest = manifest_of(day2)
    body = body_for(archive, manifest, plan(manifest, base, await ask_missing(member, ledger, manifest)))
    archive_size = None
    if damage == "magic":
        body = b"NOT-A-DELTA!!!" + body[len(MAGIC):]
    elif damage == "truncated":
        body = body[:-10]
    elif damage == "trailing":
        body = body + b"extra"
    elif damage == "archive_size":
        archive_size = len(day2) + 1
    elif damage == "huge_count":
        body = MAGIC + COUNT.pack(2**32 - 1) + body[len(MAGIC) + COUNT.size:]
    status, error, _ = await send_delta(member, ledger, 2018, day2, body, archive_size=archive_size,
                                        base=first["version_id"])
    assert 400 <= status < 500 and error["error"]["code"] in ("bad_request", "checksum_mismatch"), (damage, error)
    _, year, _ = await member.call("GET", f"/backups/{ledger}/years/2018", netdisk=True)
    assert len(year["versions"]) == 1


async def test_delta_upload_needs_the_archive_size(two_days):
    member, ledger, first, day2, archive, base = two_days
    status, error, _ = await member.call("POST", f"/backups/{ledger}/years/2018/versions", netdisk=True, data=b"x",
                                         headers={"Content-Type": MEDIA_TYPE, "X-Content-SHA256": sha(day2)})
    assert status == 422


async def test_missing_chunk_query_follows_the_access_rule(two_days, desktop):
    member, ledger, first, day2, archive, base = two_days
    stranger = await desktop("delta02", "陌生人")
    status, error, _ = await stranger.call("POST", f"/backups/{ledger}/years/2018/chunks/missing", netdisk=True,
                                           json={"chunks": ["0" * 64]})
    assert status == 404
    status, error, _ = await member.call("POST", f"/cloud-shares/{ledger}/years/2018/chunks/missing", netdisk=True,
                                         json={"chunks": ["0" * 64]})
    assert status == 403 and error["error"]["code"] == "owner_uses_backup"
    status, error, _ = await member.call("POST", f"/backups/{ledger}/years/2018/chunks/missing", netdisk=True,
                                         json={"chunks": ["not-hex"]})
    assert status == 422


def test_op_layout_is_fixed():
    assert COPY.size == 9 and NEW.size == 41 and COUNT.size == 4 and MAGIC == b"EACCT-DELTA/2\n"


def test_plan_copies_runs_of_the_base_and_sends_each_missing_chunk_once():
    a, b, c, d = (bytes([n]) * 32 for n in range(4))
    base = [(a, 1), (b, 2), (c, 3)]
    ops = plan([(a, 1), (b, 2), (d, 4), (d, 4), (c, 3), (a, 1)], base, {d})
    assert ops == [Copy(0, 2), New(d, 4, True), New(d, 4, False), Copy(2, 1), Copy(0, 1)]


async def test_copy_ops_need_if_match(two_days):
    member, ledger, first, day2, archive, base = two_days
    manifest = manifest_of(day2)
    body = body_for(archive, manifest, plan(manifest, base, await ask_missing(member, ledger, manifest)))
    status, error, _ = await send_delta(member, ledger, 2018, day2, body)
    assert status == 400


async def test_a_delta_on_an_outdated_base_is_a_conflict(two_days):
    member, ledger, first, day2, archive, base = two_days
    await member.upload("backups", ledger, 2018, b"someone else's newer copy")
    manifest = manifest_of(day2)
    body = body_for(archive, manifest, plan(manifest, base, await ask_missing(member, ledger, manifest)))
    status, error, _ = await send_delta(member, ledger, 2018, day2, body, base=first["version_id"])
    assert status == 412 and error["error"]["code"] == "version_conflict"


async def test_a_delta_whose_new_chunks_fill_several_packs_is_read_back_from_the_index(two_days, tmp_path):
    """The server checks a delta by reading the year back; chunks of packs it already indexed are found there
    (it keeps no place for them), those of its last pack from what it holds."""
    member, ledger, first, _, _, base = two_days
    scan = tmp_path / "scan.bin"
    scan.write_bytes(os.urandom(5 * 1024 * 1024))  # several 1 MiB packs of new chunks
    day2 = tar_year({"data.db": tmp_path / "data.db", "scan.bin": scan})
    archive = tmp_path / "day2-scan.tar"
    archive.write_bytes(day2)
    manifest = manifest_of(day2)
    missing = await ask_missing(member, ledger, manifest)
    body = body_for(archive, manifest, plan(manifest, base, missing))
    status, version, _ = await send_delta(member, ledger, 2018, day2, body, base=first["version_id"])
    assert status == 201, version
    assert (await member.download("backups", ledger, 2018))[1] == day2


async def test_a_deltas_year_is_read_back_hashing_each_byte_once(two_days, chunk_checks):
    """The server checks a delta's year by reading it back from the store and hashing it whole; its new chunks were
    hashed as they arrived and the others when they were stored, so no chunk is hashed again on the way (a wrong year
    still fails the whole-file check, test_a_delta_whose_year_checksum_is_wrong_keeps_nothing)."""
    member, ledger, first, day2, archive, base = two_days
    manifest = manifest_of(day2)
    body = body_for(archive, manifest, plan(manifest, base, await ask_missing(member, ledger, manifest)))
    status, version, _ = await send_delta(member, ledger, 2018, day2, body, base=first["version_id"])
    assert status == 201, version
    assert chunk_checks == []
    assert (await member.download("backups", ledger, 2018))[1] == day2
    assert sum(chunk_checks) == len(manifest)
