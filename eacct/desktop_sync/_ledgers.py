"""The local ledger folder, apart from any HTTP.

Layout: `<root>/<ledger_id>/ledger.json` (id, name, and what sync remembers) and `<root>/<ledger_id>/<year>/…`
(that year's files). A year travels as one deterministic tar: entries sorted, metadata normalised, so the
same content always gives the same bytes (and the server's chunker finds the same chunks). A SQLite file the
desktop program may have open is read through SQLite's online backup API, a consistent snapshot, never
copied mid-write. A download is unpacked into a temporary folder beside the ledger and moved into place only
after its checksum was verified; an existing year is replaced only when asked to (覆盖本地账套).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from eacct.chunks.manifest import ENTRY as MANIFEST_ENTRY, decode_manifest, encode_manifest
from eacct.desktop_sync._client import Progress, check_ledger_id, check_year
from eacct.desktop_sync._exceptions import DiskError, LedgerNotFound, LocalCopyExists, LocalError, UnsafeArchive

__all__ = ["LedgerFolder", "LocalLedger", "pack_year", "sha256_of"]

SQLITE_MAGIC = b"SQLite format 3\x00"
READ_BLOCK = 1 << 20


@dataclass
class LocalLedger:
    """What `ledger.json` says about one local ledger."""

    ledger_id: str
    name: str
    # Filled in by sync: the owner's member id, and per year the cloud version this copy is based on.
    owner_id: int | None = None
    years: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.ledger_id, "name": self.name, "owner_id": self.owner_id, "years": self.years}

    @classmethod
    def from_json(cls, data: dict) -> "LocalLedger":
        return cls(ledger_id=str(data["id"]), name=str(data.get("name", "")), owner_id=data.get("owner_id"),
                   years=dict(data.get("years") or {}))


def _no_progress(done: int, total: int, phase: str) -> None:
    pass


class _disk_errors:
    """Turns OSError (full disk, read-only folder, no permission) and a broken local SQLite or tar file into
    desktop_sync's LocalError classes, so no lower-library error leaves the library."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or isinstance(exc, (LocalError, ConnectionError)) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, OSError):
            raise DiskError(f"{self.what}失败：{exc.strerror or exc}（磁盘已满或没有权限？）") from exc
        if isinstance(exc, (sqlite3.Error, tarfile.TarError)):
            raise LocalError(f"{self.what}失败：{exc}") from exc
        return False


def sha256_of(path: Path, progress: Progress = _no_progress) -> str:
    """The sha256 of a file, read in blocks, reporting the `hashing` phase."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
            done += len(block)
            progress(done, total, "hashing")
    return digest.hexdigest()


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def _snapshot_sqlite(source: Path, target: Path) -> None:
    # The online backup API copies a consistent state even while the program has the database open.
    reader = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)
    writer = sqlite3.connect(target)
    try:
        reader.backup(writer)
    finally:
        writer.close()
        reader.close()


def _normalised(info: tarfile.TarInfo, is_dir: bool) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if is_dir else 0o644
    return info


def pack_year(year_dir: Path, archive: Path, progress: Progress = _no_progress) -> None:
    """Write one year folder as a deterministic tar at `archive` (SQLite files as consistent snapshots),
    reporting the `packing` phase in bytes of the year's files."""
    entries = sorted(p for p in year_dir.rglob("*") if p.is_dir() or p.is_file())
    total = sum(p.stat().st_size for p in entries if p.is_file())
    done = 0
    with tempfile.TemporaryDirectory(prefix="eacct-snap-") as scratch, \
            tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in entries:
            name = path.relative_to(year_dir).as_posix()
            if path.is_dir():
                info = _normalised(tarfile.TarInfo(name), True)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            source = path
            if _is_sqlite(path):
                source = Path(scratch) / uuid.uuid4().hex
                _snapshot_sqlite(path, source)
            info = _normalised(tarfile.TarInfo(name), False)
            info.size = source.stat().st_size
            with open(source, "rb") as handle:
                tar.addfile(info, handle)
            if source != path:
                source.unlink()
            done += path.stat().st_size
            progress(done, total, "packing")


class LedgerFolder:
    """A ledger root folder: list, read and write ledgers and years."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        with _disk_errors(f"创建账套文件夹 {self.root} "):
            self.root.mkdir(parents=True, exist_ok=True)

    def ledger_dir(self, ledger_id: str) -> Path:
        return self.root / check_ledger_id(ledger_id)

    def ledgers(self) -> list[LocalLedger]:
        """Every ledger in the folder, by name (folders without a readable ledger.json: see `unlabelled`)."""
        found = []
        for meta in sorted(self.root.glob("*/ledger.json")):
            try:
                found.append(LocalLedger.from_json(json.loads(meta.read_text(encoding="utf-8"))))
            except (ValueError, KeyError, TypeError, OSError):
                continue  # a damaged ledger.json is not ours to guess at; `unlabelled` reports it
        return sorted(found, key=lambda ledger: (ledger.name, ledger.ledger_id))

    def unlabelled(self) -> list[Path]:
        """Folders under the root that are not ledgers desktop_sync can use (no or damaged ledger.json)."""
        good = {ledger.ledger_id for ledger in self.ledgers()}
        return sorted(p for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and p.name not in good)

    def get(self, ledger_id: str) -> LocalLedger:
        """The ledger's `ledger.json`, or LedgerNotFound (also when the folder exists without one)."""
        directory = self.ledger_dir(ledger_id)
        meta = directory / "ledger.json"
        if not meta.is_file():
            if directory.is_dir():
                raise LedgerNotFound(f"文件夹 {directory} 里没有 ledger.json（{{\"id\", \"name\"}}），无法确定账套名称；请先创建它")
            raise LedgerNotFound(f"本地没有账套 {ledger_id}（{directory} 不存在）")
        try:
            with _disk_errors(f"读取 {meta} "):
                return LocalLedger.from_json(json.loads(meta.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerNotFound(f"{meta} 已损坏，无法读取：{exc}") from exc

    def save(self, ledger: LocalLedger) -> None:
        """Write `ledger.json` atomically."""
        directory = self.ledger_dir(ledger.ledger_id)
        staged = directory / f".ledger.json.{uuid.uuid4().hex}"
        with _disk_errors(f"写入 {directory / 'ledger.json'} "):
            directory.mkdir(parents=True, exist_ok=True)
            self._write_meta(ledger, staged, directory)

    def _write_meta(self, ledger: LocalLedger, staged: Path, directory: Path) -> None:
        try:
            staged.write_text(json.dumps(ledger.to_json(), ensure_ascii=False, indent=2), encoding="utf-8")
            os.replace(staged, directory / "ledger.json")
        finally:
            staged.unlink(missing_ok=True)

    def _manifest_path(self, ledger_id: str, year: int) -> Path:
        return self.ledger_dir(ledger_id) / ".eacct" / f"{int(year)}.manifest"

    def save_manifest(self, ledger_id: str, year: int, version_id: str, manifest: list[tuple[bytes, int]]) -> None:
        """Remember the chunk list of the cloud version a local year now matches (the next delta's base)."""
        path = self._manifest_path(ledger_id, year)
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            with open(staged, "wb") as handle:
                handle.write(version_id.encode() + b"\n")
                handle.write(encode_manifest(manifest))
            os.replace(staged, path)
        finally:
            staged.unlink(missing_ok=True)

    def load_manifest(self, ledger_id: str, year: int, version_id: str) -> list[tuple[bytes, int]] | None:
        """The remembered chunk list of `version_id`, or None when another version's (or none) is kept."""
        path = self._manifest_path(ledger_id, year)
        if not path.is_file():
            return None
        data = path.read_bytes()
        head, _, entries = data.partition(b"\n")
        if head.decode(errors="replace") != version_id or len(entries) % MANIFEST_ENTRY.size:
            return None
        return decode_manifest(entries)

    def year_dir(self, ledger_id: str, year: int) -> Path:
        return self.ledger_dir(ledger_id) / str(check_year(year))

    def years(self, ledger_id: str) -> list[int]:
        """The years present locally."""
        directory = self.ledger_dir(ledger_id)
        return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()) if directory.is_dir() else []

    def pack(self, ledger_id: str, year: int, archive: Path, progress: Progress = _no_progress) -> None:
        """Pack a local year into `archive`."""
        year_dir = self.year_dir(ledger_id, year)
        if not year_dir.is_dir():
            raise LedgerNotFound(f"本地账套 {ledger_id} 没有 {year} 年度的数据（{year_dir} 不存在）")
        with _disk_errors(f"打包 {year_dir} "):
            pack_year(year_dir, archive, progress)

    def check_can_receive(self, ledger_id: str, year: int, overwrite: bool) -> None:
        """Refuse before downloading when the year exists locally and 覆盖本地账套 was not chosen."""
        if self.year_dir(ledger_id, year).exists() and not overwrite:
            raise LocalCopyExists(f"本地已有该账套 {year} 年度的数据；如需用云端数据替换，请勾选【覆盖本地账套】")

    def install(self, ledger_id: str, year: int, archive: Path, overwrite: bool, *,
                uploaded_at: float | None = None, target: Path | None = None) -> Path:
        """Unpack a verified archive beside the ledger, then move it into place as the year folder (or as
        `target`, e.g. a conflict copy): files 0644, folders 0755, modification times the version's upload
        time. Nothing temporary is left behind, whatever fails."""
        final = target or self.year_dir(ledger_id, year)
        if target is None:
            self.check_can_receive(ledger_id, year, overwrite)
        ledger_dir = self.ledger_dir(ledger_id)
        created = not ledger_dir.exists()
        staging = retired = None
        try:
            with _disk_errors(f"安装 {final} "):
                ledger_dir.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(prefix=f".{year}.incoming-", dir=ledger_dir))
                with tarfile.open(archive, "r") as tar:
                    try:
                        tar.extractall(staging, filter="data")
                    except (tarfile.FilterError, tarfile.AbsolutePathError) as exc:
                        raise UnsafeArchive(f"下载的数据包含不安全的路径：{exc}") from exc
                _normalise_tree(staging, uploaded_at)
                if final.exists():
                    retired = ledger_dir / f".{year}.replaced-{uuid.uuid4().hex}"
                    os.replace(final, retired)
                os.replace(staging, final)
                staging = None
        finally:
            for leftover in (staging, retired):
                if leftover is not None and leftover.exists():
                    shutil.rmtree(leftover, ignore_errors=True)
            if created and ledger_dir.is_dir() and not any(ledger_dir.iterdir()):
                ledger_dir.rmdir()
        return final


def _normalise_tree(top: Path, uploaded_at: float | None) -> None:
    # mkdtemp makes 0700 folders; the year folder should look like any other. os.chmod and os.utime exist on
    # Windows (chmod there only sets or clears the read-only flag, which 0644/0755 leave clear).
    paths = sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True) + [top]
    for path in paths:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
        if uploaded_at is not None:
            os.utime(path, (uploaded_at, uploaded_at))
