"""Write-behind for files written in long runs: the kernel starts writing each new stretch to disk as it is appended.

Without it a big upload leaves tens of MiB dirty in the page cache until its fsync, and every other fsync on the
filesystem meanwhile (other members' small uploads, SQLite's WAL commits) waits for the journal to push that data
out first: 20-50 ms each instead of about one. Writing behind keeps at most `WRITE_BEHIND_WINDOW` bytes of the file
waiting, so the final fsync is short too (what PostgreSQL's `*_flush_after` and RocksDB's `bytes_per_sync` do).

Once a stretch is on the disk its pages are dropped from the page cache (`drop_cached`; the local store does the same
with what a download read): a backup written is rarely read soon, and kept it would push out what is (the
database's pages). Freed at once, the same pages take the next stretch: filling fresh page-cache pages cost up to
~2.5 s of kernel CPU per GB written on our VMs (the hypervisor backs each page on first touch), recycled ones
~0.25 s (bench/results/issue11-session9.txt).
Linux only (`sync_file_range`); elsewhere, or on a filesystem that does not support it, files are written as before
and made durable by their fsync alone.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

__all__ = ["WRITE_BEHIND_STEP", "WRITE_BEHIND_WINDOW", "WriteBehind", "drop_cached", "sync_file_range"]

# Writeback of appended bytes is started once this many are waiting (one request per MiB, not per write).
WRITE_BEHIND_STEP = 1 << 20
# Bytes of the file allowed to be dirty or in flight; appending beyond it waits for the oldest to reach the disk.
WRITE_BEHIND_WINDOW = 4 << 20

_WAIT_BEFORE = 1  # <linux/fs.h> SYNC_FILE_RANGE_* flags
_WRITE = 2
_WAIT_AFTER = 4
# errno values that mean "not here" (no such call, or a file or filesystem it does not apply to), not an I/O error.
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP}

SyncRange = Callable[[int, int, int, int], None]
DropCached = Callable[[int, int, int], None]


def _load_sync_file_range() -> SyncRange | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int

    def sync_range(fd: int, offset: int, length: int, flags: int) -> None:
        if function(fd, offset, length, flags) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return sync_range


sync_file_range: SyncRange | None = _load_sync_file_range()


def drop_cached(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to drop these bytes of the file from the page cache (advice: where it cannot, nothing)."""
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except (OSError, AttributeError):
        pass


class _System:
    """Marks "the system's `sync_file_range`" as a default argument."""


_SYSTEM = _System()


class WriteBehind:
    """Tracks one file being appended to; `appended(end)` after each write starts and bounds its writeback."""

    def __init__(self, fd: int, *, sync_range: SyncRange | None | _System = _SYSTEM,
                 step: int = WRITE_BEHIND_STEP, window: int = WRITE_BEHIND_WINDOW,
                 drop: DropCached = drop_cached) -> None:
        self._fd = fd
        # The system's call unless another is given (looked up now, so a test can put a failing one in its place).
        self._sync_range = sync_file_range if isinstance(sync_range, _System) else sync_range
        self._step = step
        self._window = window
        self._drop = drop
        self._started = 0  # writeback was started for bytes before this offset
        self._written = 0  # bytes before this offset are on the disk

    def appended(self, end: int) -> None:
        """The file now holds `end` bytes. An I/O error the kernel reports here is raised as OSError."""
        if self._sync_range is None or end - self._started < self._step:
            return
        try:
            self._sync_range(self._fd, self._started, end - self._started, _WRITE)
            self._started = end
            settled = end - self._window
            if settled - self._written >= self._step:
                self._sync_range(self._fd, self._written, settled - self._written, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
                self._drop(self._fd, self._written, settled - self._written)
                self._written = settled
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            self._sync_range = None  # this file (or filesystem) cannot: its fsync alone will do
