"""云同步 (DesktopSync.sync) against the real server: the four cases, years only on one side, the conflict copy,
dry runs, and never losing local work because the cloud lacks it or looks older (a restored old server)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from eacct.desktop_sync import DesktopSync, EacctClient, LedgerFolder
from tests.desktop_sync.test_sync import make_local_ledger
from tests.netdisk.ledgers import edit_rows


def summary(db: Path, row: int) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT summary FROM voucher WHERE id = ?", (row,)).fetchone()[0]


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def actions(report) -> dict[tuple[str, int | None], str]:
    return {(a.ledger_id, a.year): a.action for a in report.actions}


@pytest.fixture
async def two_pcs(desktop, base_url, tmp_path):
    """One owner with two PCs (ledger folders a and b), each with its own logged-in client."""
    owner = await desktop("sync_owner", "小王")
    clients = []
    for _ in range(2):
        client = EacctClient(base_url)
        await client.log_in(owner.account, owner.password)
        await client.unlock(owner.netdisk_password)
        clients.append(client)
    yield owner, DesktopSync(clients[0], LedgerFolder(tmp_path / "a")), DesktopSync(clients[1], LedgerFolder(tmp_path / "b"))
    for client in clients:
        await client.close()


async def test_cloud_sync_four_cases_and_years_on_one_side(two_pcs, tmp_path):
    owner, pc_a, pc_b = two_pcs
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2017, 2018], rows=2000)
    first = await pc_a.sync()
    assert actions(first) == {(ledger_id, 2017): "upload", (ledger_id, 2018): "upload"}
    # A ledger only in the cloud: downloaded, with its ledger.json.
    second = await pc_b.sync()
    assert actions(second) == {(ledger_id, 2017): "download", (ledger_id, 2018): "download"}
    assert pc_b.folder.get(ledger_id).name == "123"
    assert actions(await pc_a.sync()) == {(ledger_id, 2017): "none", (ledger_id, 2018): "none"}

    # Local changed, cloud not → upload; then on the other PC: cloud newer, local unchanged → download.
    edit_rows(pc_a.folder.year_dir(ledger_id, 2018) / "data.db", [1])
    assert actions(await pc_a.sync())[(ledger_id, 2018)] == "upload"
    assert actions(await pc_b.sync())[(ledger_id, 2018)] == "download"
    assert summary(pc_b.folder.year_dir(ledger_id, 2018) / "data.db", 1).endswith("改")

    # Both changed → conflict: the local year stays as it is, the cloud version lands beside it.
    edit_rows(pc_a.folder.year_dir(ledger_id, 2017) / "data.db", [2])
    await pc_a.sync()
    edit_rows(pc_b.folder.year_dir(ledger_id, 2017) / "data.db", [3, 3])
    mine = tree_digest(pc_b.folder.year_dir(ledger_id, 2017))
    report = await pc_b.sync()
    (conflict,) = report.conflicts
    assert conflict.year == 2017 and Path(conflict.conflict_copy).is_dir()
    assert tree_digest(pc_b.folder.year_dir(ledger_id, 2017)) == mine
    assert summary(Path(conflict.conflict_copy) / "data.db", 2).endswith("改")
    assert not summary(Path(conflict.conflict_copy) / "data.db", 3).endswith("改改")
    assert pc_b.folder.years(ledger_id) == [2017, 2018]  # the copy is not taken for a year

    # A year only local → uploaded; a year only in the cloud → downloaded.
    year_2019 = pc_b.folder.year_dir(ledger_id, 2019)
    year_2019.mkdir()
    (year_2019 / "settings.ini").write_text("[year]\n2019\n", encoding="utf-8")
    report = await pc_b.sync()
    assert actions(report)[(ledger_id, 2019)] == "upload" and not any(a.error for a in report.actions)
    assert actions(await pc_a.sync())[(ledger_id, 2019)] == "download"
    assert (pc_a.folder.year_dir(ledger_id, 2019) / "settings.ini").read_text(encoding="utf-8") == "[year]\n2019\n"


async def test_cloud_sync_dry_run_returns_the_plan_and_changes_nothing(two_pcs, tmp_path):
    owner, pc_a, _ = two_pcs
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2018], rows=500)
    before = tree_digest(tmp_path / "a")
    report = await pc_a.sync(dry_run=True)
    assert report.dry_run and actions(report) == {(ledger_id, 2018): "upload"}
    assert tree_digest(tmp_path / "a") == before
    assert await pc_a.client.backups() == []


async def test_cloud_sync_never_deletes_a_local_year_the_cloud_lacks(two_pcs, tmp_path):
    owner, pc_a, _ = two_pcs
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2018], rows=500)
    await pc_a.sync()
    await pc_a.client.delete_backup(ledger_id, owner.netdisk_password, 2018)
    before = tree_digest(pc_a.folder.year_dir(ledger_id, 2018))
    report = await pc_a.sync()
    assert actions(report)[(ledger_id, 2018)] == "upload" and not report.actions[0].error
    assert tree_digest(pc_a.folder.year_dir(ledger_id, 2018)) == before
    assert len(await pc_a.client.versions(ledger_id, 2018)) == 1


async def test_cloud_sync_keeps_newer_local_work_when_the_server_was_restored_from_an_old_backup(two_pcs, tmp_path, engine):
    owner, pc_a, _ = two_pcs
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2018], rows=2000)
    await pc_a.sync()
    db = pc_a.folder.year_dir(ledger_id, 2018) / "data.db"
    edit_rows(db, [7])
    await pc_a.sync()
    newer = pc_a.folder.get(ledger_id).years["2018"]["version_id"]
    # The operator restores the database from before that upload: the newest version is gone.
    async with engine.begin() as connection:
        row = (await connection.execute(text("SELECT id FROM versions WHERE public_id = :v"), {"v": newer})).one()
        await connection.execute(text("DELETE FROM version_manifests WHERE version_id = :i"), {"i": row.id})
        await connection.execute(text("DELETE FROM versions WHERE id = :i"), {"i": row.id})
    (old,) = await pc_a.client.versions(ledger_id, 2018)
    assert old["version_id"] != newer
    plan = await pc_a.sync(dry_run=True)
    assert actions(plan)[(ledger_id, 2018)] == "upload"
    report = await pc_a.sync()
    assert actions(report)[(ledger_id, 2018)] == "upload" and not report.actions[0].error
    assert summary(db, 7).endswith("改")  # local work kept
    latest = (await pc_a.client.versions(ledger_id, 2018))[0]
    assert latest["sha256"] == pc_a.folder.get(ledger_id).years["2018"]["sha256"]
