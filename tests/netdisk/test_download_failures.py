"""Issue 7 item 2: a download that fails after its first byte cuts the connection at once.

The headers (200 and Content-Length) are gone by then, so no second answer may follow in the body: the client
must see a short body that is a true prefix of the version, then EOF, and never wait for its own timeout.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from sqlalchemy import select

from eacct.storage import BlobStoreError
from eacct.netdisk.models import Chunk, Pack, Version, VersionManifest
from eacct.chunks.manifest import iter_manifest
from tests.conftest import new_ledger_id
from tests.share.conftest import befriend, share

# Incompressible and several packs long (the test pack target is 1 MiB), so the download is served in several
# reads and the last pack is only needed well after the first bytes went out.
CONTENT_BYTES = 12 * 1024 * 1024


async def last_pack_key(sessions, version_public_id: str) -> str:
    """The blob key of the pack holding the version's last chunk."""
    async with sessions() as session:
        version = await session.scalar(select(Version).where(Version.public_id == version_public_id))
        entries = await session.scalar(select(VersionManifest.entries).where(VersionManifest.version_id == version.id))
        last_digest = list(iter_manifest(entries))[-1][0]
        return await session.scalar(
            select(Pack.blob_key).join(Chunk, Chunk.pack_id == Pack.id)
            .where(Chunk.owner_id == version.owner_id, Chunk.digest == last_digest)
        )


async def raw_download(base_url: str, path: str, token: str) -> tuple[bytes, int, bytes]:
    """GET over a bare keep-alive connection: (status line, Content-Length, body bytes).

    A read that waits more than 1 s fails the test: that is a client left hanging on an open body.
    """
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines if line)}
        body = bytearray()
        while True:
            try:
                data = await asyncio.wait_for(reader.read(1 << 16), 1.0)
            except TimeoutError:
                pytest.fail(f"no EOF within 1 s after {len(body)} of {headers.get('content-length')} bytes")
            if not data:
                break
            body += data
        return status_line.encode(), int(headers["content-length"]), bytes(body)
    finally:
        writer.close()


async def break_pack(blobs, key: str, how: str, tmp_path, monkeypatch) -> None:
    """Make one pack unusable the way storage fails: gone, its bytes garbled, or the storage down when asked."""
    if how == "deleted":
        await blobs.delete(key)
        return
    if how == "storage-down":
        read_ranges = blobs.read_ranges

        async def unavailable_for_that_pack(ranges, consume, **options):
            if any(range_key == key for range_key, _, _ in ranges):
                raise BlobStoreError("connection refused (injected)")
            return await read_ranges(ranges, consume, **options)

        monkeypatch.setattr(blobs, "read_ranges", unavailable_for_that_pack)
        return
    garbage = tmp_path / "garbage.pack"
    garbage.write_bytes(os.urandom(64 * 1024))
    await blobs.put(key, garbage)


@pytest.mark.parametrize("how", ["deleted", "corrupt", "storage-down"])
@pytest.mark.parametrize("side", ["backups", "cloud-shares"])
async def test_download_failing_after_first_byte_cuts_the_connection(desktop, base_url, blobs, sessions, tmp_path,
                                                                    monkeypatch, side, how):
    owner = await desktop("cutown1", "小王")
    ledger = new_ledger_id()
    content = os.urandom(CONTENT_BYTES)
    status, version, _ = await owner.upload("backups", ledger, 2018, content, name="大账套")
    assert status == 201, version
    downloader = owner
    if side == "cloud-shares":
        downloader = await desktop("cutrec1", "小李")
        await befriend(owner, downloader)
        await share(owner, ledger, downloader)
    await break_pack(blobs, await last_pack_key(sessions, version["version_id"]), how, tmp_path, monkeypatch)

    status_line, content_length, body = await raw_download(
        base_url, f"/api/v1/{side}/{ledger}/years/2018/versions/latest/content", downloader.netdisk_token)

    assert b" 200 " in status_line and content_length == CONTENT_BYTES
    assert 0 < len(body) < content_length
    assert content.startswith(body), "the body holds bytes that are not the version's (a second answer?)"
