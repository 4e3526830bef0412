"""DesktopSync: the cloud-share dialog's actions, joining the local ledger folder and the client.

It picks the path itself (共享人操作云备份，受共享人操作云共享): a ledger the member owns goes through cloud
backup, one shared with them through cloud share; when it cannot know (a ledger never synced), it asks the
server, and when the server names the other path it follows it and says so in the result's reminder.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from eacct.desktop_sync._client import EacctClient
from eacct.desktop_sync._exceptions import ConflictError, LedgerNotFound, NotFoundError, WrongPath
from eacct.desktop_sync._ledgers import LedgerFolder, LocalLedger, sha256_of
from eacct.netdisk import delta as delta_format
from eacct.netdisk.chunker import iter_file_chunks

__all__ = ["BACKUP", "REMINDER", "SHARE", "DesktopSync", "Transfer", "manifest_of"]

BACKUP = "backups"
SHARE = "cloud-shares"
REMINDER = "温馨提示：共享人操作云备份，受共享人操作云共享。"


def manifest_of(archive: Path) -> list[tuple[bytes, int]]:
    """The chunk list of an archive, cut exactly as the server cuts it."""
    return [(hashlib.sha256(chunk).digest(), len(chunk)) for chunk in iter_file_chunks(archive)]


@dataclass(frozen=True)
class Transfer:
    """What an upload or download did: the version, the path used and, when it differs from the first
    guess, the reminder shown to the user."""

    side: str
    version: dict
    reminder: str = ""


class DesktopSync:
    """Upload and download ledger years between a ledger folder and the member's cloud."""

    def __init__(self, client: EacctClient, folder: LedgerFolder) -> None:
        self.client = client
        self.folder = folder
        self._me: dict | None = None

    async def me(self) -> dict:
        if self._me is None:
            self._me = await self.client.me()
        return self._me

    async def _side_for(self, ledger: LocalLedger | None, ledger_id: str) -> tuple[str, dict | None]:
        """The path for this ledger, and (when the server was asked) the ledger as the server lists it."""
        me = await self.me()
        if ledger is not None and ledger.owner_id is not None:
            return (BACKUP if ledger.owner_id == me["id"] else SHARE), None
        try:
            return BACKUP, await self.client.backup(ledger_id)
        except WrongPath:
            return SHARE, await self._shared_ledger(ledger_id)
        except NotFoundError:
            return BACKUP, None  # a ledger the cloud has not seen yet: the owner's first backup

    async def _shared_ledger(self, ledger_id: str) -> dict | None:
        for sharer in await self.client.cloud_shares():
            for shared in sharer["ledgers"]:
                if shared["ledger_id"] == ledger_id:
                    return {**shared, "owner": sharer["member"]}
        return None

    async def upload_year(self, ledger_id: str, year: int, remark: str = "") -> Transfer:
        """上传云备份 / 上传云共享: pack the local year and upload it on the right path. The version this copy
        was downloaded from is sent as If-Match, so a newer cloud version is never silently superseded."""
        ledger = self.folder.get(ledger_id)
        side, listed = await self._side_for(ledger, ledger_id)
        based_on = ledger.years.get(str(year), {}).get("version_id")
        with tempfile.TemporaryDirectory(prefix="eacct-up-", dir=self.folder.root) as scratch:
            archive = Path(scratch) / f"{year}.tar"
            await asyncio.to_thread(self.folder.pack, ledger_id, year, archive)
            sha256 = await asyncio.to_thread(sha256_of, archive)
            manifest = await asyncio.to_thread(manifest_of, archive)
            reminder = ""
            try:
                version = await self._upload(side, ledger, year, archive, sha256, remark, based_on, manifest)
            except WrongPath:
                side = SHARE if side == BACKUP else BACKUP
                reminder = REMINDER
                version = await self._upload(side, ledger, year, archive, sha256, remark, based_on, manifest)
        self.folder.save_manifest(ledger_id, year, version["version_id"], manifest)
        me = await self.me()
        ledger.years[str(year)] = {"version_id": version["version_id"], "sha256": sha256}
        if ledger.owner_id is None:
            ledger.owner_id = me["id"] if side == BACKUP else (listed or {}).get("owner", {}).get("id")
        self.folder.save(ledger)
        return Transfer(side, version, reminder)

    async def _upload(self, side, ledger: LocalLedger, year, archive, sha256, remark, based_on,
                      manifest: list[tuple[bytes, int]]) -> dict:
        """Send the year as edits to the version this copy came from, with only the chunks the cloud lacks,
        when that is smaller (after a day's work: the changed pages); the whole archive otherwise, or when the
        cloud lost a chunk meanwhile."""
        name = ledger.name if side == BACKUP else None
        base = self.folder.load_manifest(ledger.ledger_id, year, based_on) if based_on else None
        known = set(base or [])
        candidates = list(dict.fromkeys(d.hex() for d, size in manifest if (d, size) not in known))
        missing = await self.client.missing_chunks(side, ledger.ledger_id, year, candidates) if candidates else set()
        ops = delta_format.plan(manifest, base, {bytes.fromhex(d) for d in missing})
        delta = archive.with_name(archive.name + ".delta")
        if await asyncio.to_thread(delta_format.write_delta, archive, manifest, ops, delta) < archive.stat().st_size:
            try:
                return await self.client.upload(side, ledger.ledger_id, year, archive, sha256, remark=remark,
                                                ledger_name=name, if_match=based_on, delta=delta)
            except ConflictError as exc:
                if exc.code != "missing_chunks":
                    raise
        return await self.client.upload(side, ledger.ledger_id, year, archive, sha256, remark=remark,
                                        ledger_name=name, if_match=based_on)

    async def download_year(self, ledger_id: str, year: int, version: str = "latest", *, overwrite: bool = False) -> Transfer:
        """下载: one year at a time. Without `overwrite` (覆盖本地账套) an existing local year is never replaced,
        and nothing is downloaded; with it, the year is replaced only after the download verified."""
        self.folder.check_can_receive(ledger_id, year, overwrite)
        try:
            ledger = self.folder.get(ledger_id)
        except LedgerNotFound:
            ledger = None
        side, listed = await self._side_for(ledger, ledger_id)
        if side == SHARE and listed is None and ledger is None:
            listed = await self._shared_ledger(ledger_id)
        with tempfile.TemporaryDirectory(prefix="eacct-down-", dir=self.folder.root) as scratch:
            archive = Path(scratch) / f"{year}.tar"
            try:
                got = await self.client.download(side, ledger_id, year, version, archive)
                reminder = ""
            except WrongPath:
                side, reminder = (SHARE if side == BACKUP else BACKUP), REMINDER
                got = await self.client.download(side, ledger_id, year, version, archive)
            await asyncio.to_thread(self.folder.install, ledger_id, year, archive, overwrite)
            self.folder.save_manifest(ledger_id, year, got["version_id"], await asyncio.to_thread(manifest_of, archive))
        if ledger is None:
            name = (listed or {}).get("name", "")
            owner = (listed or {}).get("owner", {}).get("id") if side == SHARE else (await self.me())["id"]
            ledger = LocalLedger(ledger_id=ledger_id, name=name, owner_id=owner)
        ledger.years[str(year)] = {"version_id": got["version_id"], "sha256": got["sha256"]}
        self.folder.save(ledger)
        return Transfer(side, got, reminder)
