"""Chunk-level download (issue 9): with a local copy of the year, only the chunks it lacks cross the wire."""

from __future__ import annotations

import os
import stat

import pytest

from eacct.desktop_sync import BACKUP, ChecksumError, DesktopSync, EacctClient, LedgerFolder
from tests.desktop_sync.test_sync import make_local_ledger
from tests.netdisk.ledgers import edit_rows


@pytest.fixture
async def two_copies(desktop, base_url, tmp_path):
    """One member's ledger year in two folders (two computers), both at the first version."""
    owner = await desktop("chunked", "小王")
    client = EacctClient(base_url)
    await client.log_in(owner.account, owner.password)
    await client.unlock(owner.netdisk_password)
    here, there = DesktopSync(client, LedgerFolder(tmp_path / "a")), DesktopSync(client, LedgerFolder(tmp_path / "b"))
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2018], rows=200_000)
    await here.upload_year(ledger_id, 2018)
    await there.download_year(ledger_id, 2018)
    yield client, here, there, ledger_id
    await client.close()


async def test_a_download_over_a_local_year_fetches_only_the_changed_chunks(two_copies, tmp_path):
    client, here, there, ledger_id = two_copies
    edit_rows(here.folder.year_dir(ledger_id, 2018) / "data.db", list(range(100, 200_000, 20_000)))  # 10 rows
    uploaded = await here.upload_year(ledger_id, 2018, remark="第二天")
    assert uploaded.size > 4_000_000
    done = await there.download_year(ledger_id, 2018, overwrite=True)
    print(f"download of a {done.size}-byte year after a 10-row edit received {done.received_bytes} bytes")
    assert done.side == BACKUP and done.version["version_id"] == uploaded.version["version_id"]
    assert 0 < done.received_bytes < done.size // 10
    here.folder.pack(ledger_id, 2018, tmp_path / "a.tar")
    there.folder.pack(ledger_id, 2018, tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    installed = there.folder.year_dir(ledger_id, 2018) / "data.db"
    assert stat.S_IMODE(installed.stat().st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [ledger_id]  # nothing temporary left
    # The manifest kept for the next delta upload is the new version's.
    assert there.folder.load_manifest(ledger_id, 2018, uploaded.version["version_id"])


async def test_a_chunk_that_does_not_match_its_digest_is_never_installed(two_copies, tmp_path, monkeypatch):
    client, here, there, ledger_id = two_copies
    edit_rows(here.folder.year_dir(ledger_id, 2018) / "data.db", [5])
    await here.upload_year(ledger_id, 2018)
    before = (there.folder.year_dir(ledger_id, 2018) / "data.db").read_bytes()
    send = client.transport.send

    async def corrupting(request, receive):
        if not request.url.endswith("/chunks"):
            return await send(request, receive)

        async def flipped(response):
            original = response.stream

            async def stream():
                async for block in original:
                    yield bytes([block[0] ^ 1]) + block[1:]
            response.stream = stream()
            return await receive(response)

        return await send(request, flipped)

    monkeypatch.setattr(client.transport, "send", corrupting)
    with pytest.raises(ChecksumError):
        await there.download_year(ledger_id, 2018, overwrite=True)
    assert (there.folder.year_dir(ledger_id, 2018) / "data.db").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [ledger_id]
