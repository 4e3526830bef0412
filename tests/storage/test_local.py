"""The local blob store's reads for downloads: what a download read leaves the page cache (its pages take the next
range), and what it did not read stays."""

from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path

import pytest

from eacct.storage import LocalBlobStore
from tests.storage.page_cache import pages_can_be_dropped, resident_pages

MiB = 1 << 20
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore is Linux's")


async def test_ranges_read_for_a_download_leave_the_page_cache(tmp_path: Path) -> None:
    if not pages_can_be_dropped(tmp_path):
        pytest.skip("the temporary directory is in memory: its pages are the files themselves")
    store = LocalBlobStore(tmp_path / "blobs")
    content = os.urandom(4 * MiB)
    source = tmp_path / "pack"
    with open(source, "wb", buffering=0) as handle:
        # In 64 KiB writes: the page cache then holds it in folios no larger, and only a folio wholly inside a
        # dropped range leaves (one written at once may sit in folios of several MiB).
        for start in range(0, len(content), 64 << 10):
            handle.write(content[start : start + (64 << 10)])
    await store.put("packs/p1", source)
    path = tmp_path / "blobs" / "packs" / "p1"
    with open(path, "rb") as handle:  # everything cached first: what was read must be dropped, not merely absent
        handle.read()
    assert all(resident_pages(path, len(content)))

    ranges = [("packs/p1", 0, MiB), ("packs/p1", 2 * MiB, MiB)]
    assert await store.read_ranges(ranges, lambda views: [bytes(view) for view in views]) == [
        content[:MiB], content[2 * MiB : 3 * MiB]]

    resident = resident_pages(path, len(content))
    per_mib = MiB // mmap.PAGESIZE
    assert not any(resident[:per_mib]) and not any(resident[2 * per_mib : 3 * per_mib])
    assert all(resident[per_mib : 2 * per_mib]) and all(resident[3 * per_mib :])
