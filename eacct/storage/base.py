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
import tempfile
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

__all__ = ["BlobInfo", "BlobNotFound", "BlobStore", "BlobStoreError", "Leftover", "check_key"]

T = TypeVar("T")


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


@dataclass(frozen=True, slots=True)
class Leftover:
    """A local working file a process may have left behind: a spool file (`kind="spool"`, named by the
    writer) or a half-made put (`kind="staged"`, with the `key` it was to become)."""

    path: Path
    kind: str
    modified: datetime
    key: str | None = None


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

    async def read_ranges(self, ranges: list[tuple[str, int, int]], consume: Callable[[list[memoryview]], T], *,
                          bulk: bool = False) -> T:
        """Hand several bounded ranges `(key, offset, length)`, in order, to `consume` on a worker thread (of
        `bulk_executor` when `bulk`); what it returns. The views are valid only during the call (a backend may read
        into buffers it reuses), so `consume` copies whatever it keeps. A range past the end of its object is
        shorter, as with `get`."""
        datas = await self.get_many(ranges)
        return await self.off_loop(bulk, consume, [memoryview(data) for data in datas])

    # Where large transfers' byte work runs: a download's reading and decoding, an upload's hashing, cutting,
    # compressing and spooling (eacct.netdisk.store). The server sets a pool below the request path in CPU
    # priority (eacct.cli), so a 1 GB transfer gets what other members' requests leave, while their own short
    # thread hops run on the loop's default executor at normal priority. None: the default executor.
    bulk_executor: Executor | None = None

    def off_loop(self, bulk: bool, function: Callable[..., T], *args) -> asyncio.Future[T]:
        """Run `function(*args)` on a worker thread: `bulk_executor`'s for a large transfer's block, else the
        loop's default executor's."""
        return asyncio.get_running_loop().run_in_executor(self.bulk_executor if bulk else None, function, *args)

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
    # Whether spool files are written to disk as they grow (eacct.storage.writeback): yes where the spool file
    # itself becomes the blob, so its bytes go to this disk anyway; no where it is sent elsewhere and deleted.
    spool_write_behind = False

    async def leftovers(self) -> list[Leftover]:
        """Working files that gc may reclaim once no live upload owns them (spool files, half-made puts)."""
        if self._spool is None:
            return []
        return await asyncio.to_thread(spool_files, self._spool)

    async def remove_leftover(self, leftover: Leftover) -> None:
        """Delete a leftover working file; a missing one is not an error."""
        await asyncio.to_thread(leftover.path.unlink, True)

    async def close(self) -> None:
        """Release connections and threads."""


def check_key(key: str) -> str:
    """Refuse keys that could escape the store's root or confuse a backend."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"bad blob key: {key!r}")
    return key


def modified_time(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except FileNotFoundError:  # removed meanwhile by its owner
        return None


def spool_files(directory: Path) -> list[Leftover]:
    found = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        path = directory / name
        modified = modified_time(path)
        if modified is not None and path.is_file():
            found.append(Leftover(path, "spool", modified))
    return found
