"""Chunk-level downloads (issue 9): a version's manifest and a batch of its chunks, on both paths, with the same
access rules as the whole-file download (共享人操作云备份，受共享人操作云共享; a cancelled share ends it)."""

from __future__ import annotations

import hashlib
import os

import pytest
import zstandard

from tests.share.conftest import ROLES, cancel

SIDES = {"owner": "backups", "recipient": "cloud-shares"}


async def fetch_chunks(member, side: str, ledger: str, year: int, digests: list[str], version: str = "latest", **extra):
    async with member.http.post(f"{member.base}/{side}/{ledger}/years/{year}/versions/{version}/chunks",
                                json={"chunks": digests, **extra}, headers=member.headers(True)) as response:
        return response.status, await response.read()


@pytest.mark.parametrize("role", ["owner", "recipient"])
async def test_chunk_download_rebuilds_the_version_from_its_manifest(world, role):
    member, side = world.role(role), SIDES[role]
    content = os.urandom(3 * 1024 * 1024)
    assert (await world.owner.upload("backups", world.ledger, 2019, content))[0] == 201
    status, manifest, _ = await member.call("GET", f"/{side}/{world.ledger}/years/2019/versions/latest/manifest", netdisk=True)
    assert status == 200, manifest
    assert manifest["size"] == len(content) and manifest["sha256"] == hashlib.sha256(content).hexdigest()
    assert sum(entry["size"] for entry in manifest["chunks"]) == len(content) and len(manifest["chunks"]) > 1
    digests = [entry["sha256"] for entry in manifest["chunks"]]
    # Asked in reverse order: the answer follows the order asked, each chunk as raw bytes.
    status, body = await fetch_chunks(member, side, world.ledger, 2019, digests[::-1], manifest["version_id"])
    assert status == 200
    rebuilt, position = {}, 0
    for entry in manifest["chunks"][::-1]:
        rebuilt[entry["sha256"]] = body[position : position + entry["size"]]
        position += entry["size"]
    assert position == len(body)
    assert b"".join(rebuilt[digest] for digest in digests) == content


@pytest.mark.parametrize("role", [r for r in ROLES if r not in ("owner", "recipient")])
async def test_chunk_download_refuses_whom_the_whole_download_refuses(world, role):
    member = world.role(role)
    for side in ("backups", "cloud-shares"):
        status, body, _ = await member.call("GET", f"/{side}/{world.ledger}/years/2017/versions/latest/manifest", netdisk=True)
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, _ = await fetch_chunks(member, side, world.ledger, 2017, ["0" * 64])
        assert status == 404


async def test_chunk_download_on_the_wrong_path_names_the_right_one(world):
    status, body, _ = await world.owner.call("GET", f"/cloud-shares/{world.ledger}/years/2017/versions/latest/manifest", netdisk=True)
    assert (status, body["error"]["code"]) == (403, "owner_uses_backup")
    status, body, _ = await world.recipient.call("GET", f"/backups/{world.ledger}/years/2017/versions/latest/manifest", netdisk=True)
    assert (status, body["error"]["code"]) == (403, "recipient_uses_share")


async def test_rule_11_a_cancelled_share_ends_chunk_downloads(world):
    status, manifest, _ = await world.recipient.call("GET", f"/cloud-shares/{world.ledger}/years/2017/versions/latest/manifest", netdisk=True)
    assert status == 200
    await cancel(world.owner, world.share_id)
    status, _ = await fetch_chunks(world.recipient, "cloud-shares", world.ledger, 2017, [manifest["chunks"][0]["sha256"]])
    assert status == 404


async def test_chunks_are_bounded_and_must_belong_to_the_version(world):
    status, body = await fetch_chunks(world.owner, "backups", world.ledger, 2017, ["ab" * 32])
    assert status == 422 and b"invalid" in body
    status, body = await fetch_chunks(world.owner, "backups", world.ledger, 2017, ["ab" * 32] * 4097)
    assert status == 422
    status, body = await fetch_chunks(world.owner, "backups", world.ledger, 2017, [])
    assert status == 422


async def test_chunks_asked_as_zstd_come_as_one_zstd_stream_of_the_same_bytes(world):
    status, manifest, _ = await world.owner.call("GET", f"/backups/{world.ledger}/years/2017/versions/latest/manifest", netdisk=True)
    digests = [entry["sha256"] for entry in manifest["chunks"]]
    status, packed = await fetch_chunks(world.owner, "backups", world.ledger, 2017, digests, encoding="zstd")
    assert status == 200
    assert zstandard.ZstdDecompressor().decompressobj().decompress(packed) == world.contents[2017]
    status, _ = await fetch_chunks(world.owner, "backups", world.ledger, 2017, digests, encoding="br")
    assert status == 422
