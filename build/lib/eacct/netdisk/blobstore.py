"""Blob storage behind one small interface.

Packs of compressed chunks live in a blob store; the database only indexes them. A backend stores an
already-written local file under a new key (never overwriting), reads byte ranges back, streams whole
objects, deletes and lists. Backends convert their own errors at this boundary: a missing object is
always `BlobNotFound`, anything else a `BlobStoreError`.
"""

from __future__ import annotations

import abc
import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "LocalBlobStore",
    "open_blob_store",
]


class BlobStoreError(Exception):
    """A backend failed in a way the caller cannot fix (I/O error, remote refused, retries exhausted)."""


class BlobNotFound(BlobStoreError, FileNotFoundError):
    """The key names no stored object."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """One stored object as a listing reports it."""

    key: str
    size: int
    modified: datetime


class BlobStore(abc.ABC):
    """Where pack blobs are kept. Keys are `/`-separated relative names without `..` parts."""

    @abc.abstractmethod
    async def put(self, key: str, path: Path) -> None:
        """Store the local file at `path` under `key`, durably, before returning.

        The file's bytes are streamed, never read whole. The caller removes `path` afterwards (the
        local backend may have moved it away already).
        """

    @abc.abstractmethod
    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return `length` bytes of `key` from `offset` (to the end when `length` is None).

        Meant for bounded ranges (a few MiB at most); use `stream` for whole objects.
        """

    async def get_many(self, ranges: list[tuple[str, int, int]]) -> list[bytes]:
        """Several bounded ranges `(key, offset, length)`, in order; a backend may fetch them together."""
        return [await self.get(key, offset, length) for key, offset, length in ranges]

    @abc.abstractmethod
    def stream(self, key: str, block_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Yield the whole object in blocks, verifying its integrity where the backend can."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove `key`; removing a missing key is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Yield every object whose key starts with `prefix`."""

    def spool_dir(self) -> Path:
        """A local directory to write files that will be `put` (the local backend keeps it beside its blobs)."""
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="eacct-spool-"))
        return self._spool

    _spool: Path | None = None

    async def close(self) -> None:
        """Release connections and threads."""


def check_key(key: str) -> str:
    """Refuse keys that could escape the store's root or confuse a backend."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"bad blob key: {key!r}")
    return key


class LocalBlobStore(BlobStore):
    """Blobs as files under one directory; a put is fsynced and renamed into place atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._incoming = self.root / ".incoming"
        self._incoming.mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def spool_dir(self) -> Path:
        # Same filesystem as the blobs, so `put` of a file written here is a link, not a copy.
        return self._incoming

    async def put(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._put_sync, self._path(key), path)

    def _put_sync(self, target: Path, source: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            try:
                os.link(source, staged)
            except OSError:
                shutil.copyfile(source, staged)
            with open(staged, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(staged, target)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise BlobStoreError(f"could not store {target.name}: {exc}") from exc
        _fsync_dir(target.parent)

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return await asyncio.to_thread(self._get_sync, self._path(key), offset, length)

    async def get_many(self, ranges: list[tuple[str, int, int]]) -> list[bytes]:
        # One worker-thread hop for the lot: a version's chunks spread over many packs are many small reads.
        paths = [(self._path(key), offset, length) for key, offset, length in ranges]
        return await asyncio.to_thread(self._get_many_sync, paths)

    @staticmethod
    def _get_many_sync(paths: list[tuple[Path, int, int]]) -> list[bytes]:
        handles: dict[Path, int] = {}
        try:
            out = []
            for path, offset, length in paths:
                if path not in handles:
                    try:
                        handles[path] = os.open(path, os.O_RDONLY)
                    except FileNotFoundError as exc:
                        raise BlobNotFound(path.name) from exc
                out.append(os.pread(handles[path], length, offset))
            return out
        except OSError as exc:
            if isinstance(exc, BlobNotFound):
                raise
            raise BlobStoreError(str(exc)) from exc
        finally:
            for fd in handles.values():
                os.close(fd)

    @staticmethod
    def _get_sync(path: Path, offset: int, length: int | None) -> bytes:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read() if length is None else handle.read(length)
        except FileNotFoundError as exc:
            raise BlobNotFound(path.name) from exc
        except OSError as exc:
            raise BlobStoreError(str(exc)) from exc

    async def stream(self, key: str, block_size: int = 1 << 20) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc
        try:
            while block := await asyncio.to_thread(handle.read, block_size):
                yield block
        finally:
            handle.close()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        infos = await asyncio.to_thread(self._list_sync, prefix)
        for info in infos:
            yield info

    def _list_sync(self, prefix: str) -> list[BlobInfo]:
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    stat = full.stat()
                    modified = datetime.fromtimestamp(stat.st_mtime, timezone.utc)
                    found.append(BlobInfo(key, stat.st_size, modified))
        found.sort(key=lambda info: info.key)
        return found


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_blob_store(url: str, *, oss_access_key_id: str = "", oss_access_key_secret: str = "") -> BlobStore:
    """Build the backend named by EACCT_STORAGE_URL (`file://<dir>` or `oss://<bucket>?endpoint=<url>`)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        # file://./eacct-data/blobs is relative: netloc "." plus path.
        return LocalBlobStore(Path(parts.netloc + parts.path))
    if parts.scheme == "oss":
        from eacct.netdisk.blobstore_oss import OssBlobStore

        return OssBlobStore.from_url(url, oss_access_key_id, oss_access_key_secret)
    raise ValueError(f"unsupported storage URL: {url}")
