"""Write-behind of spool files (eacct.storage.writeback): writeback starts per step and at most a window of the
file waits for the disk, and what reached it leaves the page cache; filesystems without sync_file_range fall back
to the fsync alone; I/O errors surface."""

from __future__ import annotations

import errno
import mmap
import os
import sys
import uuid

import pytest

from eacct.netdisk.store.spool import PackWriter
from eacct.storage import writeback
from eacct.storage.writeback import WriteBehind
from tests.storage.page_cache import pages_can_be_dropped, resident_pages

MiB = 1 << 20
WRITE = 2
WAIT_WRITE_WAIT = 1 | 2 | 4


class Recorder:
    def __init__(self, fail_with: int | None = None) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.fail_with = fail_with

    def __call__(self, fd: int, offset: int, length: int, flags: int) -> None:
        self.calls.append((offset, length, flags))
        if self.fail_with is not None:
            raise OSError(self.fail_with, os.strerror(self.fail_with))


def test_writeback_starts_once_a_step_is_appended_and_waits_only_beyond_the_window():
    calls = Recorder()
    dropped = []
    behind = WriteBehind(7, sync_range=calls, step=MiB, window=2 * MiB,
                         drop=lambda fd, offset, length: dropped.append((offset, length)))
    behind.appended(MiB // 2)
    assert calls.calls == []  # less than a step: nothing yet
    behind.appended(MiB)
    assert calls.calls == [(0, MiB, WRITE)]
    behind.appended(2 * MiB + 100)
    assert calls.calls[1:] == [(MiB, MiB + 100, WRITE)]  # within the window: started, not waited for
    behind.appended(4 * MiB)
    assert calls.calls[2:] == [(2 * MiB + 100, 2 * MiB - 100, WRITE), (0, 2 * MiB, WAIT_WRITE_WAIT)]
    behind.appended(6 * MiB)
    assert calls.calls[4:] == [(4 * MiB, 2 * MiB, WRITE), (2 * MiB, 2 * MiB, WAIT_WRITE_WAIT)]
    # Exactly what was waited for leaves the page cache, and nothing still on its way to the disk.
    assert dropped == [(0, 2 * MiB), (2 * MiB, 2 * MiB)]


def test_dropping_pages_is_advice_that_never_fails_the_write():
    """Where the kernel cannot drop (a pipe: ESPIPE; a closed descriptor: EBADF), nothing is raised."""
    reading, writing = os.pipe()
    try:
        writeback.drop_cached(writing, 0, MiB)
    finally:
        os.close(reading), os.close(writing)
    writeback.drop_cached(writing, 0, MiB)


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP])
def test_a_file_where_sync_file_range_does_not_apply_is_written_without_it(code):
    calls = Recorder(fail_with=code)
    behind = WriteBehind(7, sync_range=calls, step=MiB, window=MiB)
    behind.appended(MiB)
    behind.appended(5 * MiB)
    assert len(calls.calls) == 1  # tried once, then left to the fsync


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_an_io_error_of_writeback_is_raised(code):
    behind = WriteBehind(7, sync_range=Recorder(fail_with=code), step=MiB, window=MiB)
    with pytest.raises(OSError) as raised:
        behind.appended(MiB)
    assert raised.value.errno == code


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_the_system_call_is_there_and_a_file_written_behind_reads_back_whole(tmp_path):
    assert writeback.sync_file_range is not None
    content = os.urandom(5 * MiB + 123)
    with open(tmp_path / "f", "wb", buffering=0) as handle:
        behind = WriteBehind(handle.fileno(), step=MiB, window=2 * MiB)
        for start in range(0, len(content), 300_000):
            handle.write(content[start : start + 300_000])
            behind.appended(min(start + 300_000, len(content)))
    assert (tmp_path / "f").read_bytes() == content


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range and mincore are Linux's")
def test_written_stretches_leave_the_page_cache_and_the_window_stays(tmp_path):
    if not pages_can_be_dropped(tmp_path):
        pytest.skip("the temporary directory is in memory: its pages are the files themselves")
    content = os.urandom(8 * MiB)
    path = tmp_path / "f"
    with open(path, "wb", buffering=0) as handle:
        behind = WriteBehind(handle.fileno(), step=MiB, window=2 * MiB)
        for start in range(0, len(content), MiB):
            handle.write(content[start : start + MiB])
            behind.appended(start + MiB)
        resident = resident_pages(path, len(content))
    per_mib = MiB // mmap.PAGESIZE
    # Waited for and dropped: everything up to the window behind the end (6 MiB of the 8).
    assert not any(resident[: 6 * per_mib])
    # Not yet known to be on the disk: kept, so nothing is read back from it.
    assert all(resident[6 * per_mib :])
    assert path.read_bytes() == content


def test_spool_files_of_the_local_store_are_written_behind_and_others_not(tmp_path, monkeypatch):
    calls = Recorder()
    monkeypatch.setattr(writeback, "sync_file_range", calls)
    frame = os.urandom(MiB)
    behind = PackWriter(tmp_path, 1, uuid.uuid4().hex, write_behind=True)
    behind.append([frame, frame])
    assert calls.calls == [(0, 2 * MiB, WRITE)]
    plain = PackWriter(tmp_path, 1, uuid.uuid4().hex)
    plain.append([frame, frame])
    assert len(calls.calls) == 1
    behind.close(), plain.close()
    assert behind.path.read_bytes() == frame + frame
