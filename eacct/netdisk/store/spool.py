"""Spool files: an upload's compressed chunks on their way to becoming a pack blob."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from eacct.storage.writeback import WriteBehind
from eacct.netdisk.store.common import pack_blob_key

__all__ = ["PackWriter"]

# At most this many buffers per writev (Linux's IOV_MAX).
_IOV_MAX = 1024


@dataclass
class PackWriter:
    """Spools compressed chunks into one local file until it is big enough to become a pack blob."""

    directory: Path
    owner_id: int
    lease_id: str
    pack_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    size: int = 0
    handle: object | None = None
    discarded: bool = False
    # Start writing the file to disk as it grows (BlobStore.spool_write_behind).
    write_behind: bool = False
    _behind: WriteBehind | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        # Named by its upload's lease, so gc can tell a live upload's spool file from a dead process's.
        return self.directory / f"{self.lease_id}.{self.pack_id}.pack"

    @property
    def blob_key(self) -> str:
        return pack_blob_key(self.owner_id, self.pack_id)

    def append(self, frames: list[bytes]) -> int:
        """Write compressed frames at the end of the spool file, gathered (no copy); returns where the first starts."""
        if self.discarded:
            # A compression thread still running after its upload was abandoned must not recreate the file.
            raise RuntimeError("pack writer already discarded")
        self.open()
        offset = self.size
        fd = self.handle.fileno()
        for start in range(0, len(frames), _IOV_MAX):
            part = frames[start : start + _IOV_MAX]
            total = sum(len(frame) for frame in part)
            written = os.writev(fd, part)
            if written < total:  # a short write (signal, full pipe of a slow disk): the rest in plain writes
                rest = memoryview(b"".join(part))[written:]
                while rest:
                    rest = rest[os.write(fd, rest):]
            self.size += total
        if self._behind is not None:
            self._behind.appended(self.size)
        return offset

    def open(self) -> None:
        """Create the spool file (if not yet), so gc sees it from the moment chunks are on their way to it."""
        if self.discarded:
            raise RuntimeError("pack writer already discarded")
        if self.handle is None:
            self.handle = open(self.path, "wb", buffering=0)
            if self.write_behind:
                self._behind = WriteBehind(self.handle.fileno())

    def close(self) -> None:
        # No fsync here: the blob store's `put` is what makes a pack durable (the local one fsyncs it).
        if self.handle is not None:
            self.handle.close()
            self.handle = None
            self._behind = None

    def discard(self) -> None:
        self.discarded = True
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        self.path.unlink(missing_ok=True)
