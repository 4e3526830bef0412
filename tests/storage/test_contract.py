"""One behavioural contract for every blob-store backend.

Backup and share code only ever sees `BlobStore`, so every backend must behave the same through it. The
same tests run against the local directory backend and the OSS backend talking to the fake OSS server
(`tests/oss_server.py`) with v1 signing, and with v4 signing plus a key prefix. Multipart thresholds are
set low so that "large" objects exercise multipart uploads in milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_asyncio

from eacct.storage import BlobInfo, BlobNotFound, BlobStore, BlobStoreError, LocalBlobStore
from eacct.storage.oss import OssBlobStore, RetryPolicy
from eacct.storage.check import run_storage_check
from tests.oss_server import start_oss_server

pytestmark = pytest.mark.asyncio

ACCESS_KEY_ID = "LTAI5tContractKey"
ACCESS_KEY_SECRET = "contract-secret-9c1f"
BUCKET = "eacct-contract"
THRESHOLD = 256 * 1024
PART_SIZE = 100 * 1024
LARGE = 7 * PART_SIZE + 1234  # eight parts, the last one short


@pytest_asyncio.fixture(params=["local", "oss-v1", "oss-v4"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        local = LocalBlobStore(tmp_path / "blobs")
        yield local
        await local.close()
        return
    _, server = await start_oss_server(ACCESS_KEY_ID, ACCESS_KEY_SECRET, BUCKET)
    v4 = request.param == "oss-v4"
    oss = OssBlobStore.from_url(
        server.storage_url(region="cn-hangzhou" if v4 else None, prefix="tenant-1/" if v4 else ""),
        ACCESS_KEY_ID,
        ACCESS_KEY_SECRET,
        multipart_threshold=THRESHOLD,
        part_size=PART_SIZE,
        list_page_size=3,  # several pages even for the small listings below
        retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01),
        timeout=10.0,
    )
    try:
        yield oss
    finally:
        await oss.close()
        await server.close()


def source(tmp_path: Path, data: bytes, name: str | None = None) -> Path:
    path = tmp_path / (name or f"src-{os.urandom(4).hex()}")
    path.write_bytes(data)
    return path


async def put_bytes(store: BlobStore, tmp_path: Path, key: str, data: bytes) -> None:
    await store.put(key, source(tmp_path, data))


async def listing(store: BlobStore, prefix: str = "") -> list[BlobInfo]:
    return [info async for info in store.list(prefix)]


async def test_put_then_get_returns_the_same_bytes(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    await put_bytes(store, tmp_path, "packs/ab/pack-1", data)
    assert await store.get("packs/ab/pack-1") == data


async def test_ranged_gets(store: BlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    await put_bytes(store, tmp_path, "packs/r", data)
    assert await store.get("packs/r", 0, 10) == data[:10]
    assert await store.get("packs/r", 1000, 300) == data[1000:1300]
    assert await store.get("packs/r", 5000) == data[5000:]
    assert await store.get("packs/r", len(data) - 5, 100) == data[-5:], "a range past the end is shortened"
    assert await store.get("packs/r", len(data), 10) == b""
    assert await store.get("packs/r", len(data) + 100, 10) == b""
    assert await store.get("packs/r", 7, 0) == b""


async def test_get_many_returns_each_range_in_order(store: BlobStore, tmp_path: Path) -> None:
    first, second = os.urandom(5000), os.urandom(7000)
    await put_bytes(store, tmp_path, "packs/m1", first)
    await put_bytes(store, tmp_path, "packs/m2", second)
    ranges = [("packs/m2", 10, 100), ("packs/m1", 0, 5000), ("packs/m2", 6990, 10), ("packs/m1", 42, 1)]
    assert await store.get_many(ranges) == [second[10:110], first, second[6990:], first[42:43]]
    assert await store.get_many([]) == []
    with pytest.raises(BlobNotFound):
        await store.get_many([("packs/m1", 0, 10), ("packs/absent", 0, 10)])


async def test_read_ranges_hands_each_range_in_order_to_a_worker_thread(store: BlobStore, tmp_path: Path) -> None:
    first, second = os.urandom(5000), os.urandom(7000)
    await put_bytes(store, tmp_path, "packs/v1", first)
    await put_bytes(store, tmp_path, "packs/v2", second)
    ranges = [("packs/v2", 10, 100), ("packs/v1", 0, 5000), ("packs/v2", 6990, 10), ("packs/v1", 42, 1)]
    loop_thread = threading.get_ident()
    seen = []

    def consume(views: list[memoryview]) -> list[bytes]:
        seen.append(threading.get_ident())
        return [bytes(view) for view in views]

    assert await store.read_ranges(ranges, consume) == [second[10:110], first, second[6990:], first[42:43]]
    assert seen and seen[0] != loop_thread
    # Past the end a range is shorter, as with `get`: never bytes left over from an earlier, longer read.
    assert await store.read_ranges([("packs/v2", 6900, 5000)], consume) == [second[6900:]]
    assert await store.read_ranges([("packs/v1", 0, 5000), ("packs/v1", 4990, 5000)], consume) == [first, first[4990:]]
    with pytest.raises(BlobNotFound):
        await store.read_ranges([("packs/v1", 0, 10), ("packs/absent", 0, 10)], consume)

    def failing(views: list[memoryview]) -> None:
        raise ValueError("consumer failed")

    with pytest.raises(ValueError, match="consumer failed"):
        await store.read_ranges([("packs/v1", 0, 10)], failing)
    assert await store.read_ranges([("packs/v1", 0, 10)], consume) == [first[:10]]


async def test_stream_yields_the_whole_object_in_bounded_blocks(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    await put_bytes(store, tmp_path, "packs/s", data)
    blocks = [block async for block in store.stream("packs/s", block_size=16 * 1024)]
    assert b"".join(blocks) == data
    assert len(blocks) >= 200_000 // (16 * 1024)
    assert all(0 < len(block) <= 16 * 1024 for block in blocks)


async def test_empty_object(store: BlobStore, tmp_path: Path) -> None:
    await put_bytes(store, tmp_path, "packs/empty", b"")
    assert await store.get("packs/empty") == b""
    assert [block async for block in store.stream("packs/empty")] == []
    assert [(info.key, info.size) for info in await listing(store)] == [("packs/empty", 0)]


async def test_missing_objects_raise_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.get("packs/missing")
    with pytest.raises(BlobNotFound):
        await store.get("packs/missing", 10, 20)
    with pytest.raises(FileNotFoundError):  # BlobNotFound is also a FileNotFoundError
        async for _ in store.stream("packs/missing"):
            pass


async def test_list_filters_by_prefix_sorts_and_reports_sizes(store: BlobStore, tmp_path: Path) -> None:
    assert await listing(store) == []
    sizes = {"packs/a/1": 10, "packs/a/2": 20, "packs/ab/3": 30, "packs/b/4": 40, "other/5": 50, "top": 60}
    for key, size in sizes.items():
        await put_bytes(store, tmp_path, key, os.urandom(size))
    everything = await listing(store)
    assert [info.key for info in everything] == sorted(sizes)
    assert {info.key: info.size for info in everything} == sizes
    assert [info.key for info in await listing(store, "packs/a")] == ["packs/a/1", "packs/a/2", "packs/ab/3"]
    assert [info.key for info in await listing(store, "packs/a/")] == ["packs/a/1", "packs/a/2"]
    assert await listing(store, "nothing/") == []
    now = datetime.now(timezone.utc)
    for info in everything:
        assert info.modified.tzinfo is not None
        assert abs(now - info.modified) < timedelta(minutes=5)


async def test_delete_removes_and_is_idempotent(store: BlobStore, tmp_path: Path) -> None:
    await put_bytes(store, tmp_path, "packs/d", b"doomed")
    await put_bytes(store, tmp_path, "packs/keep", b"kept")
    await store.delete("packs/d")
    await store.delete("packs/d")
    await store.delete("packs/never-existed")
    with pytest.raises(BlobNotFound):
        await store.get("packs/d")
    assert [info.key for info in await listing(store)] == ["packs/keep"]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/", ".."])
async def test_bad_keys_are_refused_before_any_io(store: BlobStore, tmp_path: Path, key: str) -> None:
    path = source(tmp_path, b"x")
    with pytest.raises(ValueError):
        await store.put(key, path)
    with pytest.raises(ValueError):
        await store.get(key)
    with pytest.raises(ValueError):
        await store.delete(key)
    with pytest.raises(ValueError):
        async for _ in store.stream(key):
            pass
    assert await listing(store) == []


async def test_unusual_key_names_round_trip(store: BlobStore, tmp_path: Path) -> None:
    keys = ["账本/2024 年度/凭证.pack", "a+b=c&d", "percent%20sign", "tilde~and,comma;semi", "q?mark#hash", "x" * 200]
    for number, key in enumerate(keys):
        await put_bytes(store, tmp_path, key, str(number).encode() * 100)
    for number, key in enumerate(keys):
        assert await store.get(key) == str(number).encode() * 100
        assert await store.get(key, 1, 3) == (str(number).encode() * 100)[1:4]
    assert sorted(info.key for info in await listing(store)) == sorted(keys)
    assert [info.key for info in await listing(store, "账本/")] == ["账本/2024 年度/凭证.pack"]


async def test_large_object_round_trips_across_part_boundaries(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(LARGE)
    await put_bytes(store, tmp_path, "packs/large", data)
    assert await store.get("packs/large") == data
    assert b"".join([block async for block in store.stream("packs/large", block_size=64 * 1024)]) == data
    for offset, length in [(PART_SIZE - 10, 20), (3 * PART_SIZE - 1, PART_SIZE + 2), (LARGE - 100, 1000)]:
        assert await store.get("packs/large", offset, length) == data[offset:offset + length]
    assert [(info.key, info.size) for info in await listing(store)] == [("packs/large", LARGE)]


async def test_concurrent_puts_all_land(store: BlobStore, tmp_path: Path) -> None:
    payloads = {f"packs/c/{n:02d}": os.urandom(THRESHOLD + 5000 if n % 4 == 0 else 3000 + n) for n in range(16)}
    await asyncio.gather(*(put_bytes(store, tmp_path, key, data) for key, data in payloads.items()))
    stored = await asyncio.gather(*(store.get(key) for key in payloads))
    assert dict(zip(payloads, stored)) == payloads
    assert [info.key for info in await listing(store, "packs/c/")] == sorted(payloads)


async def test_put_of_a_missing_file_fails_without_storing(store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(BlobStoreError) as raised:
        await store.put("packs/ghost", tmp_path / "does-not-exist")
    assert not isinstance(raised.value, BlobNotFound)
    assert await listing(store) == []


async def test_storage_check_passes_on_a_working_store(store: BlobStore) -> None:
    results = await run_storage_check(store)
    assert [name for name, _, _ in results] == ["write", "read", "stream", "range read", "list", "delete"]
    assert all(ok for _, ok, _ in results), results
    assert await listing(store) == [], "the probe object is cleaned up"


async def test_spool_files_are_reported_as_leftovers_and_removable(store: BlobStore) -> None:
    """Issue 7 item 5: gc finds a crashed upload's spool files through the store, whatever the backend."""
    assert await store.leftovers() == []
    spooled = store.spool_dir() / "lease.pack.pack"
    spooled.write_bytes(b"spooled by an upload")
    found = await store.leftovers()
    assert [(leftover.path, leftover.kind) for leftover in found] == [(spooled, "spool")]
    await store.remove_leftover(found[0])
    assert not spooled.exists() and await store.leftovers() == []
    await store.remove_leftover(found[0])  # gone already: not an error


async def test_a_local_read_buffer_a_consumer_kept_is_never_reused(tmp_path: Path) -> None:
    """`read_ranges` views are only lent; if a consumer keeps one anyway (against the contract), its buffer is not
    read into again under it."""
    store = LocalBlobStore(tmp_path / "blobs")
    first, second = os.urandom(4000), os.urandom(4000)
    await put_bytes(store, tmp_path, "packs/k1", first)
    await put_bytes(store, tmp_path, "packs/k2", second)
    kept: list[memoryview] = []

    def keeping(views: list[memoryview]) -> None:
        kept.append(memoryview(views[0]))

    await store.read_ranges([("packs/k1", 0, 4000)], keeping)
    assert await store.read_ranges([("packs/k2", 0, 4000)], lambda views: bytes(views[0])) == second
    assert bytes(kept[0]) == first
    await store.close()
