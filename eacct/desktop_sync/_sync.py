"""DesktopSync: the cloud-share dialog's actions, joining the local ledger folder and the client.

`upload_year` / `download_year` pick the path themselves (共享人操作云备份，受共享人操作云共享): a ledger the
member owns goes through cloud backup, one shared with them through cloud share; when the local copy cannot
tell (a ledger never synced), the server is asked, and when it names the other path the call follows it and
says so in the result's reminder. The explicit `backup_*` and `share_*` calls never switch: they refuse the
wrong role before any transfer request, with the reminder. `sync` is 云同步 for the member's own ledgers.

Every public method raises only desktop_sync's errors: disk and local-file failures are converted here.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from eacct.chunks import delta as delta_format
from eacct.chunks.chunker import iter_file_chunks
from eacct.desktop_sync._chunked import download_by_chunks
from eacct.desktop_sync._client import BACKUP, SHARE, EacctClient, Progress, check_ledger_id, check_year
from eacct.desktop_sync._exceptions import (
    ConflictError, LedgerNotFound, MissingChunks, NotFoundError, OwnerUsesBackup, RecipientUsesShare, TransportError,
    WrongPath,
)
from eacct.desktop_sync._resumable import SESSION_MIN_BYTES, ResumableUpload
from eacct.desktop_sync._ledgers import LedgerFolder, LocalLedger, _disk_errors, sha256_of

__all__ = ["BACKUP", "REMINDER", "SHARE", "DesktopSync", "SyncAction", "SyncReport", "Transfer", "manifest_of", "transfer_json"]

REMINDER = "温馨提示：共享人操作云备份，受共享人操作云共享。"


def _no_progress(done: int, total: int, phase: str) -> None:
    pass


def manifest_of(archive: Path) -> list[tuple[bytes, int]]:
    """The chunk list of an archive, cut exactly as the server cuts it."""
    return [(hashlib.sha256(chunk).digest(), len(chunk)) for chunk in iter_file_chunks(archive)]


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None


def _timestamp(iso: str | None) -> float | None:
    when = _when(iso)
    return when.timestamp() if when else None


def _guarded(method):
    """Public methods: a disk or local-file failure anywhere inside becomes a desktop_sync error."""

    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        with _disk_errors("读写本地账套文件夹"):
            return await method(self, *args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class Transfer:
    """What an upload or download did: the path used, the version, the reminder when the path differed from
    the first guess, whether the year was unchanged (nothing sent), and the bytes on the wire."""

    side: str
    version: dict
    reminder: str = ""
    unchanged: bool = False
    size: int = 0
    sent_bytes: int = 0
    received_bytes: int = 0


@dataclass
class SyncAction:
    """One step of 云同步: `action` is upload, download, conflict, none or skip; `reason` says why."""

    ledger_id: str
    name: str
    year: int | None
    action: str
    reason: str
    version_id: str = ""
    conflict_copy: str = ""
    error: str = ""


@dataclass
class SyncReport:
    """The plan (dry run) or what was done; `problems` names folders sync could not use (no ledger.json)."""

    actions: list[SyncAction] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def conflicts(self) -> list[SyncAction]:
        return [a for a in self.actions if a.action == "conflict"]


class DesktopSync:
    """Upload and download ledger years between a ledger folder and the member's cloud."""

    def __init__(self, client: EacctClient, folder: LedgerFolder) -> None:
        self.client = client
        self.folder = folder

    async def me(self) -> dict:
        """The member logged in (known after log-in without another request)."""
        if not self.client.member:
            await self.client.me()
        return self.client.member or {}

    def _scratch(self) -> tempfile.TemporaryDirectory:
        # Inside the ledger root (same disk, so the final move is a rename) and dot-named, so a listing of the
        # root never mistakes it for a ledger; removed on every way out, Ctrl-C included.
        return tempfile.TemporaryDirectory(prefix=".eacct-tmp-", dir=self.folder.root)

    # ----------------------------------------------------------------------------------- roles

    def _local(self, ledger_id: str) -> LocalLedger | None:
        try:
            return self.folder.get(ledger_id)
        except LedgerNotFound:
            return None

    async def _known_side(self, ledger: LocalLedger | None) -> str | None:
        if ledger is None or ledger.owner_id is None:
            return None
        return BACKUP if ledger.owner_id == (await self.me()).get("id") else SHARE

    async def _side_for(self, ledger: LocalLedger | None, ledger_id: str) -> tuple[str, dict | None]:
        """The path for this ledger, and (when the server was asked) the ledger as the server lists it."""
        known = await self._known_side(ledger)
        if known is not None:
            return known, None
        try:
            return BACKUP, await self.client.backup(ledger_id)
        except WrongPath:
            return SHARE, await self._shared_ledger(ledger_id)
        except NotFoundError:
            return BACKUP, None  # a ledger the cloud has not seen yet: the owner's first backup

    async def _shared_ledger(self, ledger_id: str, sharer: str | None = None) -> dict | None:
        for entry in await self.client.cloud_shares():
            if sharer is not None and entry["member"]["account"] != sharer:
                continue
            for shared in entry["ledgers"]:
                if shared["ledger_id"] == ledger_id:
                    return {**shared, "owner": entry["member"]}
        return None

    async def _refuse_wrong_role(self, side: str, ledger: LocalLedger | None) -> None:
        known = await self._known_side(ledger)
        if known is not None and known != side:
            if side == BACKUP:
                raise RecipientUsesShare(403, "recipient_uses_share", f"{REMINDER}这是好友共享给您的账套，请用云共享（share）")
            raise OwnerUsesBackup(403, "owner_uses_backup", f"{REMINDER}这是您自己的账套，请用云备份（backup）")

    # ----------------------------------------------------------------------------------- upload

    @_guarded
    async def upload_year(self, ledger_id: str, year: int, remark: str = "", *,
                          progress: Progress = _no_progress) -> Transfer:
        """上传云备份 / 上传云共享 on the right path. An unchanged year (same sha256 as the version this copy
        came from) is not sent; a newer cloud version is never silently superseded (If-Match)."""
        return await self._upload_year(ledger_id, year, remark, None, progress)

    @_guarded
    async def backup_upload(self, ledger_id: str, year: int, remark: str = "", *,
                            progress: Progress = _no_progress) -> Transfer:
        """上传云备份 (the owner only): refuses a ledger shared with me before any request."""
        return await self._upload_year(ledger_id, year, remark, BACKUP, progress)

    @_guarded
    async def share_upload(self, ledger_id: str, year: int, remark: str = "", *, sharer: str | None = None,
                           progress: Progress = _no_progress) -> Transfer:
        """上传云共享 (the recipient only): refuses my own ledger before any request; `sharer` (account) names
        whose share it must be."""
        return await self._upload_year(ledger_id, year, remark, SHARE, progress, sharer=sharer)

    async def _upload_year(self, ledger_id: str, year: int, remark: str, forced: str | None,
                           progress: Progress, *, if_match: str | None | bool = True,
                           skip_unchanged: bool = True, sharer: str | None = None) -> Transfer:
        ledger_id, year = check_ledger_id(ledger_id), check_year(year)
        ledger = self.folder.get(ledger_id)
        if not self.folder.year_dir(ledger_id, year).is_dir():
            raise LedgerNotFound(f"本地账套 {ledger.name}（{ledger_id}）没有 {year} 年度的数据")
        if forced is not None:
            await self._refuse_wrong_role(forced, ledger)
        if sharer is not None and await self._shared_ledger(ledger_id, sharer) is None:
            raise NotFoundError(404, "not_found", f"{sharer} 没有与您共享账套 {ledger.name}（{ledger_id}），或共享已取消")
        state = ledger.years.get(str(year), {})
        based_on = state.get("version_id") if if_match is True else (if_match or None)
        sent_before = self.client.bytes_sent
        with self._scratch() as scratch:
            archive = Path(scratch) / f"{year}.tar"
            await asyncio.to_thread(self.folder.pack, ledger_id, year, archive, progress)
            sha256 = await asyncio.to_thread(sha256_of, archive, progress)
            size = archive.stat().st_size
            if skip_unchanged and state.get("sha256") == sha256 and state.get("version_id"):
                side = forced or await self._known_side(ledger) or BACKUP
                return Transfer(side, {"version_id": state["version_id"], "sha256": sha256, "size": size},
                                unchanged=True, size=size)
            manifest = await asyncio.to_thread(manifest_of, archive)
            if forced is not None:
                side, listed, reminder = forced, None, ""
                version = await self._upload(side, ledger, year, archive, sha256, remark, based_on, manifest, progress)
            else:
                side, listed = await self._side_for(ledger, ledger_id)
                reminder = ""
                try:
                    version = await self._upload(side, ledger, year, archive, sha256, remark, based_on, manifest, progress)
                except WrongPath:
                    side = SHARE if side == BACKUP else BACKUP
                    reminder = REMINDER
                    version = await self._upload(side, ledger, year, archive, sha256, remark, based_on, manifest, progress)
        self.folder.save_manifest(ledger_id, year, version["version_id"], manifest)
        me = await self.me()
        ledger.years[str(year)] = {"version_id": version["version_id"], "sha256": sha256,
                                   "uploaded_at": version.get("uploaded_at")}
        if ledger.owner_id is None:
            owner = (listed or {}).get("owner", {}).get("id") if side == SHARE else me.get("id")
            ledger.owner_id = owner if owner is not None else version.get("owner", {}).get("id")
        self.folder.save(ledger)
        return Transfer(side, version, reminder, size=size, sent_bytes=self.client.bytes_sent - sent_before)

    async def _upload(self, side, ledger: LocalLedger, year, archive, sha256, remark, based_on,
                      manifest: list[tuple[bytes, int]], progress: Progress) -> dict:
        """Send the year as edits to the version this copy came from, with only the chunks the cloud lacks,
        when that is smaller (after a day's work: the changed pages); the whole archive otherwise, or when the
        cloud lost a chunk meanwhile."""
        name = ledger.name if side == BACKUP else None
        base = self.folder.load_manifest(ledger.ledger_id, year, based_on) if based_on else None
        known = set(base or [])
        candidates = list(dict.fromkeys(d.hex() for d, size in manifest if (d, size) not in known))
        missing = await self.client.missing_chunks(side, ledger.ledger_id, year, candidates) if candidates else set()
        session = ResumableUpload(self.client, side, ledger.ledger_id, year, self.folder.root / ".eacct-partial")
        if session.pending(archive, sha256, remark, name, based_on) or sum(s for d, s in dict(manifest).items() if d.hex() in missing) >= SESSION_MIN_BYTES:
            return await session.run(archive, sha256, manifest, missing, remark=remark, ledger_name=name,
                                     if_match=based_on, progress=progress)
        ops = delta_format.plan(manifest, base, {bytes.fromhex(d) for d in missing})
        delta = archive.with_name(archive.name + ".delta")
        if await asyncio.to_thread(delta_format.write_delta, archive, manifest, ops, delta) < archive.stat().st_size:
            try:
                return await self.client.upload(side, ledger.ledger_id, year, archive, sha256, remark=remark,
                                                ledger_name=name, if_match=based_on, delta=delta, progress=progress)
            except MissingChunks:
                pass  # the server lost a chunk the delta counted on: the whole year goes up instead
        return await self.client.upload(side, ledger.ledger_id, year, archive, sha256, remark=remark,
                                        ledger_name=name, if_match=based_on, progress=progress)

    # ----------------------------------------------------------------------------------- download

    @_guarded
    async def download_year(self, ledger_id: str, year: int, version: str = "latest", *, overwrite: bool = False,
                            progress: Progress = _no_progress) -> Transfer:
        """下载: one year at a time, on the right path. Without `overwrite` (覆盖本地账套) an existing local year
        is never replaced and nothing is downloaded; with it, the year is replaced only after verification."""
        return await self._download_year(ledger_id, year, version, overwrite, None, None, progress)

    @_guarded
    async def backup_download(self, ledger_id: str, year: int, version: str = "latest", *, overwrite: bool = False,
                              progress: Progress = _no_progress) -> Transfer:
        """下载云备份 (the owner only): refuses a ledger shared with me before any request."""
        return await self._download_year(ledger_id, year, version, overwrite, BACKUP, None, progress)

    @_guarded
    async def share_download(self, ledger_id: str, year: int, version: str = "latest", *, overwrite: bool = False,
                             sharer: str | None = None, progress: Progress = _no_progress) -> Transfer:
        """我的云共享 → 下载 (the recipient only): refuses my own ledger before any request; `sharer` (account)
        names whose share it must be."""
        return await self._download_year(ledger_id, year, version, overwrite, SHARE, sharer, progress)

    async def _download_year(self, ledger_id: str, year: int, version: str, overwrite: bool, forced: str | None,
                             sharer: str | None, progress: Progress, *, target: Path | None = None,
                             listed: dict | None = None) -> Transfer:
        ledger_id, year = check_ledger_id(ledger_id), check_year(year)
        if target is None:
            self.folder.check_can_receive(ledger_id, year, overwrite)
        ledger = self._local(ledger_id)
        if forced is not None:
            await self._refuse_wrong_role(forced, ledger)
        reminder = ""
        if forced == SHARE:
            side = SHARE
            if ledger is None or sharer is not None:
                listed = await self._shared_ledger(ledger_id, sharer)
                # Without a sharer named, let the server say why (owner_uses_backup for my own ledger).
                if listed is None and sharer is not None:
                    who = f"{sharer} " if sharer else ""
                    raise NotFoundError(404, "not_found", f"{who}没有与您共享账套 {ledger_id}（或共享已取消）")
        elif forced == BACKUP:
            side = BACKUP
            if ledger is None and listed is None:
                listed = await self.client.backup(ledger_id)
        elif listed is not None:
            side = BACKUP
        else:
            side, listed = await self._side_for(ledger, ledger_id)
            if side == SHARE and listed is None and ledger is None:
                listed = await self._shared_ledger(ledger_id)
        received_before = self.client.bytes_received
        # A download the connection broke is kept here and resumed by the next call; anything else that
        # fails removes it (and the folder, when empty).
        partials = self.folder.root / ".eacct-partial"
        archive = partials / f"{ledger_id}-{year}{'' if target is None else '-' + target.name}.tar"
        partials.mkdir(exist_ok=True)
        # With a local copy of the year, only the chunks it lacks are fetched; a broken whole-file download
        # is resumed instead.
        by_chunks = self.folder.year_dir(ledger_id, year).is_dir() and not archive.is_file()
        try:
            with self._scratch() as scratch:
                local = Path(scratch) / "local.tar"
                if by_chunks:
                    await asyncio.to_thread(self.folder.pack, ledger_id, year, local, progress)

                async def fetch(side: str) -> dict:
                    if by_chunks:
                        return await download_by_chunks(self.client, side, ledger_id, year, version, local, archive,
                                                        progress=progress)
                    return await self.client.download(side, ledger_id, year, version, archive, progress=progress, resume=True)

                try:
                    got = await fetch(side)
                except WrongPath:
                    if forced is not None:
                        raise
                    side, reminder = (SHARE if side == BACKUP else BACKUP), REMINDER
                    if side == SHARE:
                        listed = await self._shared_ledger(ledger_id)
                    got = await fetch(side)
            installed = await asyncio.to_thread(self.folder.install, ledger_id, year, archive, overwrite,
                                                uploaded_at=got["uploaded_at"], target=target)
            if target is None:
                manifest = got.pop("manifest", None) or await asyncio.to_thread(manifest_of, archive)
                self.folder.save_manifest(ledger_id, year, got["version_id"], manifest)
            got.pop("manifest", None)
        except TransportError:
            raise
        except BaseException:
            archive.with_name(archive.name + ".version").unlink(missing_ok=True)
            archive.unlink(missing_ok=True)
            raise
        else:
            archive.unlink(missing_ok=True)
        finally:
            if partials.is_dir() and not any(partials.iterdir()):
                partials.rmdir()
        got = {**got, "uploaded_at": _iso(got["uploaded_at"])}
        if target is not None:
            return Transfer(side, {**got, "path": str(installed)}, reminder, size=got["size"],
                            received_bytes=self.client.bytes_received - received_before)
        if ledger is None:
            # ledger.json is created on the first download of a year: id and name as the cloud lists them.
            name = (listed or {}).get("name", "")
            owner = (listed or {}).get("owner", {}).get("id") if side == SHARE else (await self.me()).get("id")
            ledger = LocalLedger(ledger_id=ledger_id, name=name, owner_id=owner)
        ledger.years[str(year)] = {"version_id": got["version_id"], "sha256": got["sha256"],
                                   "uploaded_at": got["uploaded_at"]}
        self.folder.save(ledger)
        return Transfer(side, got, reminder, size=got["size"], received_bytes=self.client.bytes_received - received_before)

    # ----------------------------------------------------------------------------------- 云同步

    @_guarded
    async def sync(self, *, dry_run: bool = False, progress: Progress = _no_progress) -> SyncReport:
        """云同步 of the member's own ledgers between the ledger folder and cloud backup.

        Local changed, cloud not → upload; cloud newer, local unchanged since the last sync → download; both
        changed → the cloud version is placed beside the local year as a conflict copy and reported; years
        only in the cloud are downloaded, years only local are uploaded. A local year is never deleted or
        replaced because the cloud lacks it or looks older. `dry_run` returns the plan and changes nothing.
        """
        me = await self.me()
        report = SyncReport(dry_run=dry_run)
        report.problems = [f"{path} 没有 ledger.json，已跳过（见 README：ledger.json）" for path in self.folder.unlabelled()]
        cloud = {entry["ledger_id"]: entry for entry in await self.client.backups()}
        local = {ledger.ledger_id: ledger for ledger in self.folder.ledgers()}
        for ledger_id in sorted(set(cloud) | set(local)):
            ledger = local.get(ledger_id)
            if ledger is not None and ledger.owner_id is not None and ledger.owner_id != me.get("id"):
                report.actions.append(SyncAction(ledger_id, ledger.name, None, "skip",
                                                 "好友共享给您的账套不参与云同步，请用云共享（share）上传下载"))
                continue
            entry = cloud.get(ledger_id)
            name = ledger.name if ledger is not None else entry["name"]
            cloud_years = {int(y["year"]): y["latest"] for y in (entry or {}).get("years", [])}
            local_years = set(self.folder.years(ledger_id)) if ledger is not None else set()
            for year in sorted(cloud_years.keys() | local_years):
                action = await self._plan_year(ledger, ledger_id, name, year, cloud_years.get(year), year in local_years)
                report.actions.append(action)
                if dry_run or action.action in ("none", "skip"):
                    continue
                try:
                    await self._apply(action, ledger_id, year, cloud_years.get(year), entry, progress)
                except (ConflictError, NotFoundError, WrongPath) as exc:
                    # One year refused (e.g. someone uploaded meanwhile) must not stop the others.
                    action.error = str(exc)
                ledger = self._local(ledger_id)
        return report

    async def _plan_year(self, ledger: LocalLedger | None, ledger_id: str, name: str, year: int,
                         latest: dict | None, has_local: bool) -> SyncAction:
        state = (ledger.years.get(str(year), {}) if ledger is not None else {})
        if not has_local:
            return SyncAction(ledger_id, name, year, "download", "只在云端有这个年度",
                              version_id=latest["version_id"])
        local_sha = await self._local_sha(ledger_id, year)
        if latest is None:
            return SyncAction(ledger_id, name, year, "upload", "只在本地有这个年度")
        if local_sha == latest["sha256"]:
            return SyncAction(ledger_id, name, year, "none", "本地与云端一致", version_id=latest["version_id"])
        local_changed = local_sha != state.get("sha256")
        cloud_changed = latest["version_id"] != state.get("version_id")
        if not cloud_changed:
            return SyncAction(ledger_id, name, year, "upload", "本地有修改，云端没有新版本")
        if state.get("version_id") and await self._cloud_lost(ledger_id, year, state, latest):
            # The cloud no longer has the version this copy was synced with and shows one no newer (a server
            # restored from an old backup): the local year is the newer work; keep it and give the cloud a copy.
            return SyncAction(ledger_id, name, year, "upload",
                              "云端版本比上次同步的还旧（服务器可能从旧备份恢复），保留本地并上传")
        if not local_changed:
            return SyncAction(ledger_id, name, year, "download", "云端有新版本，本地自上次同步后未修改",
                              version_id=latest["version_id"])
        return SyncAction(ledger_id, name, year, "conflict", "本地和云端都有修改：云端版本另存为冲突副本，本地不动",
                          version_id=latest["version_id"])

    async def _cloud_lost(self, ledger_id: str, year: int, state: dict, latest: dict) -> bool:
        """True when the version of the last sync is gone from the cloud and nothing newer replaced it."""
        versions = await self.client.versions(ledger_id, year)
        if any(v["version_id"] == state["version_id"] for v in versions):
            return False
        synced_at, cloud_at = _when(state.get("uploaded_at")), _when(latest.get("uploaded_at"))
        # Times are whole seconds: the same second counts as older, so doubt keeps the local year.
        return synced_at is None or cloud_at is None or cloud_at <= synced_at

    async def _local_sha(self, ledger_id: str, year: int) -> str:
        with self._scratch() as scratch:
            archive = Path(scratch) / f"{year}.tar"
            await asyncio.to_thread(self.folder.pack, ledger_id, year, archive)
            return await asyncio.to_thread(sha256_of, archive)

    async def _apply(self, action: SyncAction, ledger_id: str, year: int, latest: dict | None, entry: dict | None,
                     progress: Progress) -> None:
        if action.action == "upload":
            restored = "服务器" in action.reason
            local = self.folder.get(ledger_id)
            if local.owner_id is None:
                local.owner_id = (await self.me()).get("id")
                self.folder.save(local)
            # A year the cloud lacks has no version to start from; after a restore, start from what it shows.
            if_match: str | None | bool = None if latest is None else (latest["version_id"] if restored else True)
            done = await self._upload_year(ledger_id, year, "", BACKUP, progress, if_match=if_match,
                                           skip_unchanged=False)
            action.version_id = done.version.get("version_id", "")
        elif action.action == "download":
            listed = {"name": action.name}
            overwrite = self.folder.year_dir(ledger_id, year).exists()
            await self._download_year(ledger_id, year, latest["version_id"], overwrite, BACKUP, None, progress,
                                      listed=listed)
        elif action.action == "conflict":
            safe = re.sub(r"[^A-Za-z0-9_-]", "_", latest["version_id"])
            target = self.folder.ledger_dir(ledger_id) / f"{year}.conflict-{safe}"
            if not target.exists():
                await self._download_year(ledger_id, year, latest["version_id"], False, BACKUP, None, progress,
                                          target=target, listed={"name": action.name})
            action.conflict_copy = str(target)


def transfer_json(done: Transfer) -> dict[str, Any]:
    """The fields a script reads from a transfer."""
    version = done.version
    return {"side": done.side, "version_id": version.get("version_id", ""), "size": done.size,
            "sent_bytes": done.sent_bytes, "received_bytes": done.received_bytes, "unchanged": done.unchanged,
            "reminder": done.reminder, "remark": version.get("remark", ""), "sha256": version.get("sha256", "")}

