"""Resumable upload (issue 9): an upload cut mid-transfer resumes without re-sending what the server holds."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from eacct.desktop_sync import BACKUP, DesktopSync, EacctClient, LedgerFolder, StorageUnavailable, TransportError, _resumable
from eacct.storage import BlobStoreError
from tests.desktop_sync.test_client import owner_client  # noqa: F401 (fixture)
from tests.desktop_sync.test_sync import make_local_ledger

MIB = 1024 * 1024


@pytest.fixture
async def upload_cutting_proxy(aiohttp_server, base_url):
    """A proxy on 127.0.0.1 that drops the connection once `cut_after` bytes of chunk batches went through it;
    `held` counts the batch bytes the server received and answered."""
    state = {"cut_after": None, "held": 0, "batches": 0}
    hop = {"host", "content-length", "transfer-encoding", "connection", "date", "server"}

    async def forward(request: web.Request) -> web.StreamResponse:
        batch = request.method == "PUT" and request.path.endswith("/chunks")
        body = bytearray()
        async for block in request.content.iter_chunked(64 * 1024):
            cut = state["cut_after"]
            if batch and cut is not None and state["held"] + len(body) + len(block) > cut:
                # Every batch from here on is cut (a client may retry an idempotent PUT once by itself).
                request.transport.close()  # the connection breaks mid-batch: the server never sees it
                return web.Response(status=502)
            body += block
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, base_url + request.path_qs, data=bytes(body) or None,
                                       headers={k: v for k, v in request.headers.items() if k.lower() not in hop}) as upstream:
                answer = await upstream.read()
                if batch and upstream.status == 200:
                    state["held"] += len(body)
                    state["batches"] += 1
                return web.Response(status=upstream.status, body=answer,
                                    headers={k: v for k, v in upstream.headers.items() if k.lower() not in hop})

    app = web.Application(client_max_size=64 * MIB)
    app.router.add_route("*", "/{tail:.*}", forward)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/"), state


async def test_an_interrupted_upload_resumes_without_resending_what_the_server_holds(
        owner_client, upload_cutting_proxy, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(_resumable, "BATCH_BYTES", MIB)
    owner, direct = owner_client
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2018], rows=200_000)
    proxy_url, state = upload_cutting_proxy
    client = EacctClient(proxy_url, token=direct.token, netdisk_token=direct.netdisk_token, member=direct.member)
    sync = DesktopSync(client, LedgerFolder(tmp_path / "a"))
    state["cut_after"] = 5 * MIB
    with pytest.raises(TransportError):
        await sync.upload_year(ledger_id, 2018, remark="续传")
    held = state["held"]
    assert 4 * MIB <= held <= 5 * MIB and state["batches"] >= 4
    assert await direct.backups() == []  # nothing committed
    assert [p.name for p in (tmp_path / "a" / ".eacct-partial").iterdir()] == [f"{ledger_id}-2018.upload.json"]

    state["held"], state["cut_after"] = 0, None  # the connection is back
    done = await sync.upload_year(ledger_id, 2018, remark="续传")
    resent = state["held"]
    print(f"year {done.size} bytes: {held} held before the cut, {resent} sent after it")
    assert done.side == BACKUP and not done.unchanged
    # Only what the server did not hold went again (plus each chunk's 36-byte entry).
    assert resent < done.size - held + done.size // 50
    assert held + resent < done.size + done.size // 20
    versions = await direct.versions(ledger_id, 2018)
    assert [v["version_id"] for v in versions] == [done.version["version_id"]] and versions[0]["remark"] == "续传"
    assert not (tmp_path / "a" / ".eacct-partial").exists()
    target = tmp_path / "check.tar"
    await direct.download(BACKUP, ledger_id, 2018, "latest", target)
    sync.folder.pack(ledger_id, 2018, tmp_path / "local.tar")
    assert target.read_bytes() == (tmp_path / "local.tar").read_bytes()
    await client.close()


async def test_batches_the_storage_refused_are_sent_again_by_the_next_upload_and_the_year_reads_back(
        owner_client, blobs, tmp_path, monkeypatch):  # noqa: F811
    """The cloud's storage fails mid-upload: the batches it refused are not held, the next upload of the year resumes
    the session, sends them again, and the version reads back byte for byte (their first packs never count)."""
    monkeypatch.setattr(_resumable, "BATCH_BYTES", MIB)
    owner, client = owner_client
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2018], rows=200_000)
    sync = DesktopSync(client, LedgerFolder(tmp_path / "a"))
    real_put = blobs.put
    puts = 0

    async def failing_after_two(key, path):
        nonlocal puts
        puts += 1
        if puts > 2:
            raise BlobStoreError("connection reset (injected)")
        return await real_put(key, path)

    monkeypatch.setattr(blobs, "put", failing_after_two)
    with pytest.raises(StorageUnavailable):
        await sync.upload_year(ledger_id, 2018)
    assert await client.backups() == []
    monkeypatch.setattr(blobs, "put", real_put)  # the storage is back
    done = await sync.upload_year(ledger_id, 2018)
    assert done.side == BACKUP and not done.unchanged
    target = tmp_path / "check.tar"
    await client.download(BACKUP, ledger_id, 2018, "latest", target)
    sync.folder.pack(ledger_id, 2018, tmp_path / "local.tar")
    assert target.read_bytes() == (tmp_path / "local.tar").read_bytes()
