"""Blobs as files under one local directory (the embedded default)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from eacct.storage.base import BlobInfo, BlobNotFound, BlobStore, BlobStoreError, Leftover, modified_time, spool_files, check_key
from eacct.storage.buffers import BufferPool
from eacct.storage.writeback import drop_cached

__all__ = ["LocalBlobStore"]

T = TypeVar("T")
# Read buffers kept for reuse (a download reads ~1 MiB blocks, up to three at once), and the largest one kept.
_BUFFERS_KEPT = 4
_LARGEST_KEPT = 8 << 20
_BUFFER_GRANULE = 256 << 10


class _OpenFiles:
    """Blob files opened once each for several ranged reads, closed together; OS errors as the store's."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def fd(self, path: Path) -> int:
        if path not in self._fds:
            try:
                self._fds[path] = os.open(path, os.O_RDONLY)
            except FileNotFoundError as exc:
                raise BlobNotFound(path.name) from exc
        return self._fds[path]

    def __enter__(self) -> _OpenFiles:
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        for fd in self._fds.values():
            os.close(fd)
        if isinstance(exc, OSError) and not isinstance(exc, BlobStoreError):
            raise BlobStoreError(str(exc)) from exc


class LocalBlobStore(BlobStore):
    """Blobs as files under one directory; a put is fsynced and renamed into place atomically."""

    spool_write_behind = True  # a put links the spool file into place

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._incoming = self.root / ".incoming"
        self._incoming.mkdir(exist_ok=True)
        self._read_buffers = BufferPool(keep=_BUFFERS_KEPT, largest=_LARGEST_KEPT, granule=_BUFFER_GRANULE)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def spool_dir(self) -> Path:
        # Same filesystem as the blobs, so `put` of a file written here is a link, not a copy.
        return self._incoming

    async def put(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._put_sync, self._path(key), path)

    async def leftovers(self) -> list[Leftover]:
        # Spool files live in .incoming/ and half-made puts are `.<name>.<pid>.tmp` beside their target:
        # neither is listed under packs/, so a crash leaves them unless gc looks here.
        return await asyncio.to_thread(self._leftovers_sync)

    def _leftovers_sync(self) -> list[Leftover]:
        found = spool_files(self._incoming)
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not (name.startswith(".") and name.endswith(".tmp")):
                    continue
                full = Path(dirpath) / name
                target = name[1:].split(".", 1)[0]
                key = (full.parent.relative_to(self.root) / target).as_posix()
                modified = modified_time(full)
                if modified is not None:
                    found.append(Leftover(full, "staged", modified, key))
        return found

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

    async def read_ranges(self, ranges: list[tuple[str, int, int]], consume: Callable[[list[memoryview]], T], *,
                          bulk: bool = False) -> T:
        # One worker-thread hop reads and consumes, into a buffer that is reused: no fresh memory per block.
        paths = [(self._path(key), offset, length) for key, offset, length in ranges]
        return await self.off_loop(bulk, self._read_ranges_sync, paths, consume)

    def _read_ranges_sync(self, paths: list[tuple[Path, int, int]], consume: Callable[[list[memoryview]], T]) -> T:
        buffer = self._read_buffers.take(sum(length for _, _, length in paths))
        views: list[memoryview] = []
        try:
            position = 0
            with memoryview(buffer) as whole, _OpenFiles() as files:
                for path, offset, length in paths:
                    with whole[position : position + length] as target:
                        # Shorter at the end of the file: the view holds what was read, never older bytes.
                        fd = files.fd(path)
                        views.append(target[: os.preadv(fd, [target], offset)])
                        # Read once per download: dropped, its pages take the next range (as spool files' do).
                        drop_cached(fd, offset, length)
                    position += length
            return consume(views)
        finally:
            for view in views:
                view.release()

    @staticmethod
    def _get_many_sync(paths: list[tuple[Path, int, int]]) -> list[bytes]:
        with _OpenFiles() as files:
            return [os.pread(files.fd(path), length, offset) for path, offset, length in paths]

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
