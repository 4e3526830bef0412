"""Which pages of a file the kernel holds in its page cache (Linux's mincore), for tests of dropping them."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

# Filesystems whose files live in memory: there is no disk copy to drop their pages for.
_IN_MEMORY = {"tmpfs", "ramfs"}


def filesystem_type(path) -> str:
    """The type of the filesystem `path` lies on (the longest mount point above it in /proc/mounts)."""
    target = os.path.realpath(path)
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount_point, fs_type, *_ = line.split()
        mount_point = mount_point.replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fs_type
    return kind


def pages_can_be_dropped(path) -> bool:
    """Whether the file system under `path` keeps files on a disk, so their cached pages can be dropped."""
    return filesystem_type(path) not in _IN_MEMORY


def resident_pages(path, length: int) -> list[bool]:
    """Which of the file's pages are in the page cache (mincore over a read-only mapping of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    pages = (length + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vector = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as handle:
        address = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, handle.fileno(), 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        try:
            if libc.mincore(address, length, vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            libc.munmap(address, length)
    return [bool(entry & 1) for entry in vector]
