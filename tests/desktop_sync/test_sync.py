"""desktop_sync against the real server: the cloud-share dialog's download and upload, the local folder
rules (rules 12, 14, 16) and the deterministic, consistent year archive."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tarfile
import uuid
from pathlib import Path

import pytest

from eacct.desktop_sync import (
    BACKUP, REMINDER, SHARE, ChecksumError, ConflictError, DesktopSync, EacctClient, LedgerFolder, LocalCopyExists,
    LocalLedger, MockTransport, NotFoundError, UnsafeArchive, pack_year,
)
from tests.netdisk.ledgers import edit_rows, make_ledger_db


def make_local_ledger(root: Path, name: str, years: list[int], rows: int = 3000) -> str:
    folder = LedgerFolder(root)
    ledger_id = str(uuid.uuid4())
    folder.save(LocalLedger(ledger_id=ledger_id, name=name))
    for year in years:
        year_dir = folder.year_dir(ledger_id, year)
        year_dir.mkdir(parents=True)
        make_ledger_db(year_dir / "data.db", rows, seed=year)
        (year_dir / "settings.ini").write_text(f"[year]\nyear={year}\n", encoding="utf-8")
    return ledger_id


def count_rows(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT count(*) FROM voucher").fetchone()[0]


@pytest.fixture
async def clients(base_url):
    made = []

    async def make(member) -> EacctClient:
        client = EacctClient(base_url, client_version="e会计 6.1")
        await client.log_in(member.account, member.password)
        await client.unlock(member.netdisk_password)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture
async def walkthrough(desktop, clients, tmp_path):
    """A (小王) owns ledger 123 with 2017 and 2018 and shares it with B (小李); each has a ledger folder."""
    owner = await desktop("13564271675", "小王")
    friend = await desktop("13800000000", "小李")
    owner_sync = DesktopSync(await clients(owner), LedgerFolder(tmp_path / "a"))
    friend_sync = DesktopSync(await clients(friend), LedgerFolder(tmp_path / "b"))
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2017, 2018])
    for year in (2017, 2018):
        done = await owner_sync.upload_year(ledger_id, year, remark=f"{year}年1期")
        assert done.side == BACKUP and done.reminder == ""
    await owner.call("POST", "/friends", json={"account": friend.account, "nickname": friend.nickname})
    await owner.call("POST", "/shares", json={"ledger_id": ledger_id, "friend_ids": [friend.id]})
    return owner, friend, owner_sync, friend_sync, ledger_id


async def test_the_guide_walkthrough_through_desktop_sync(walkthrough, tmp_path):
    owner, friend, owner_sync, friend_sync, ledger_id = walkthrough
    done = await friend_sync.download_year(ledger_id, 2018)
    assert done.side == SHARE and done.version["remark"] == "2018年1期"
    local = friend_sync.folder.get(ledger_id)
    assert local.name == "123" and local.owner_id == owner.id and list(local.years) == ["2018"]
    assert friend_sync.folder.years(ledger_id) == [2018]  # one year at a time

    db = friend_sync.folder.year_dir(ledger_id, 2018) / "data.db"
    edit_rows(db, [1, 2, 3])
    done = await friend_sync.upload_year(ledger_id, 2018, remark="2018年4期")
    assert done.side == SHARE and done.version["via"] == "share" and done.version["uploaded_by"]["id"] == friend.id

    done = await owner_sync.download_year(ledger_id, 2018, overwrite=True)
    assert done.side == BACKUP and done.version["remark"] == "2018年4期"
    mine = owner_sync.folder.year_dir(ledger_id, 2018) / "data.db"
    with sqlite3.connect(mine) as connection:
        assert connection.execute("SELECT summary FROM voucher WHERE id = 2").fetchone()[0].endswith("改")


async def test_rule_12_download_never_overwrites_a_local_year_without_overwrite(walkthrough):
    _, _, _, friend_sync, ledger_id = walkthrough
    await friend_sync.download_year(ledger_id, 2018)
    marker = friend_sync.folder.year_dir(ledger_id, 2018) / "my-notes.txt"
    marker.write_text("local work", encoding="utf-8")
    with pytest.raises(LocalCopyExists):
        await friend_sync.download_year(ledger_id, 2018)
    assert marker.read_text(encoding="utf-8") == "local work"
    await friend_sync.download_year(ledger_id, 2018, overwrite=True)
    assert not marker.exists()
    assert count_rows(friend_sync.folder.year_dir(ledger_id, 2018) / "data.db") == 3000


async def test_rule_14_desktop_sync_takes_the_right_path_and_shows_the_reminder(walkthrough):
    owner, friend, owner_sync, friend_sync, ledger_id = walkthrough
    await friend_sync.download_year(ledger_id, 2017)
    # A copy whose ledger.json wrongly claims the recipient owns it: the server names the right path.
    local = friend_sync.folder.get(ledger_id)
    local.owner_id = friend.id
    friend_sync.folder.save(local)
    edit_rows(friend_sync.folder.year_dir(ledger_id, 2017) / "data.db", [5])  # an unchanged year is not sent
    done = await friend_sync.upload_year(ledger_id, 2017, remark="改")
    assert done.side == SHARE and done.reminder == REMINDER


async def test_rule_16_an_upload_based_on_an_old_version_is_a_conflict(walkthrough):
    owner, friend, owner_sync, friend_sync, ledger_id = walkthrough
    await friend_sync.download_year(ledger_id, 2018)
    edit_rows(owner_sync.folder.year_dir(ledger_id, 2018) / "data.db", [10])
    await owner_sync.upload_year(ledger_id, 2018, remark="2018年2期")
    edit_rows(friend_sync.folder.year_dir(ledger_id, 2018) / "data.db", [20])
    with pytest.raises(ConflictError) as conflict:
        await friend_sync.upload_year(ledger_id, 2018, remark="2018年3期")
    assert conflict.value.code == "version_conflict"


async def test_a_cancelled_share_is_not_found_for_desktop_sync(walkthrough):
    owner, friend, owner_sync, friend_sync, ledger_id = walkthrough
    _, shares, _ = await owner.call("GET", "/shares")
    share_id = shares["ledgers"][0]["recipients"][0]["share_id"]
    await owner.call("DELETE", f"/shares/{share_id}")
    with pytest.raises(NotFoundError):
        await friend_sync.download_year(ledger_id, 2018)
    assert friend_sync.folder.years(ledger_id) == []


def test_the_year_archive_is_deterministic(tmp_path):
    ledger_id = make_local_ledger(tmp_path / "root", "L", [2018], rows=500)
    folder = LedgerFolder(tmp_path / "root")
    folder.pack(ledger_id, 2018, tmp_path / "one.tar")
    for path in folder.year_dir(ledger_id, 2018).iterdir():
        os.utime(path, (1, 1))
    folder.pack(ledger_id, 2018, tmp_path / "two.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    with tarfile.open(tmp_path / "one.tar") as tar:
        assert [m.name for m in tar.getmembers()] == ["data.db", "settings.ini"]
        assert {(m.mtime, m.uid, m.uname, m.mode) for m in tar.getmembers()} == {(0, 0, "", 0o644)}


def test_an_open_database_is_archived_as_a_consistent_snapshot(tmp_path):
    year_dir = tmp_path / "2018"
    year_dir.mkdir()
    db = make_ledger_db(year_dir / "data.db", 1000)
    busy = sqlite3.connect(db, isolation_level=None)
    busy.execute("BEGIN IMMEDIATE")
    busy.execute("INSERT INTO voucher (id, period, account, summary, debit, credit) VALUES (99999, 1, 'x', 'x', 1, 1)")
    try:
        pack_year(year_dir, tmp_path / "year.tar")  # the program is mid-transaction
    finally:
        busy.execute("ROLLBACK")
        busy.close()
    with tarfile.open(tmp_path / "year.tar") as tar:
        tar.extractall(tmp_path / "out", filter="data")
    assert count_rows(tmp_path / "out" / "data.db") == 1000


def test_an_archive_reaching_outside_its_year_is_refused(tmp_path):
    folder = LedgerFolder(tmp_path / "root")
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(UnsafeArchive):
        folder.install(str(uuid.uuid4()), 2018, evil, overwrite=False)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "root" / "escaped.txt").exists()


async def test_a_download_that_does_not_match_its_checksum_is_not_installed(tmp_path):
    ledger_id = str(uuid.uuid4())

    def handler(request):
        if request.url.endswith("/me"):
            return 200, {"Content-Type": "application/json"}, json.dumps({"id": 1}).encode()
        if "/backups/" in request.url and "/content" not in request.url:
            return 200, {"Content-Type": "application/json"}, json.dumps({"ledger_id": ledger_id, "name": "L"}).encode()
        return 200, {"X-Content-SHA256": "0" * 64, "X-Version-Id": "v1"}, b"truncated"

    client = EacctClient("http://eacct.invalid", transport=MockTransport(handler))
    sync = DesktopSync(client, LedgerFolder(tmp_path / "root"))
    with pytest.raises(ChecksumError):
        await sync.download_year(ledger_id, 2018)
    assert sync.folder.years(ledger_id) == []
    assert [p.name for p in (tmp_path / "root").iterdir()] == []


class CountingTransport:
    """The real transport, counting what each request body carries."""

    def __init__(self) -> None:
        from eacct.desktop_sync import AiohttpTransport

        self.inner = AiohttpTransport()
        self.sent: list[tuple[str, int]] = []

    async def send(self, request, receive):
        size = request.size if request.stream is not None else len(request.content or b"")
        self.sent.append((request.url, size))
        return await self.inner.send(request, receive)

    async def close(self) -> None:
        await self.inner.close()


async def test_a_re_upload_after_a_day_of_bookkeeping_sends_the_changed_pages_not_the_year(desktop, base_url, tmp_path):
    owner = await desktop("delta_sync", "小王")
    transport = CountingTransport()
    async with EacctClient(base_url, transport=transport) as client:
        await client.log_in(owner.account, owner.password)
        await client.unlock(owner.netdisk_password)
        sync = DesktopSync(client, LedgerFolder(tmp_path / "ledgers"))
        ledger_id = make_local_ledger(tmp_path / "ledgers", "123", [2018], rows=200_000)
        await sync.upload_year(ledger_id, 2018)
        # The first upload of a multi-MB year goes through an upload session (batches, then the manifest).
        year_bytes = sum(size for url, size in transport.sent if url.endswith(("/versions", "/chunks", "/commit")))
        db = sync.folder.year_dir(ledger_id, 2018) / "data.db"
        before = db.read_bytes()
        edit_rows(db, list(range(100, 200_000, 1530)))  # 130 scattered entries
        after = db.read_bytes()
        changed_pages = sum(before[i : i + 4096] != after[i : i + 4096] for i in range(0, max(len(before), len(after)), 4096))
        transport.sent.clear()
        done = await sync.upload_year(ledger_id, 2018, remark="第二天")
        sent = sum(size for _, size in transport.sent)
        assert done.side == BACKUP
        # DESIGN.md: bytes sent at most twice the changed pages, everything included (copy runs of the
        # version the copy came from, the missing-chunk query, the compressed new page groups).
        assert sent <= 2 * changed_pages * 4096, (sent, changed_pages)
        print(f"re-upload sent {sent} bytes for {changed_pages} changed pages of a {year_bytes}-byte year")
        assert sent < year_bytes // 5
        target = tmp_path / "check.tar"
        got = await client.download(BACKUP, ledger_id, 2018, "latest", target)
        assert got["version_id"] == done.version["version_id"]
        sync.folder.pack(ledger_id, 2018, tmp_path / "local.tar")
        assert target.read_bytes() == (tmp_path / "local.tar").read_bytes()
