"""`eacct storage check`: prove a configured blob store works before trusting it with ledger packs.

Operators setting up a bucket get one line per capability the backup service relies on (write, read
back, stream, range read, list, delete) instead of a stack trace from the first real backup. The probe
uses only the `BlobStore` interface, so it checks whichever backend EACCT_STORAGE_URL selects, and it
cleans up after itself even when a step fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from eacct.netdisk.blobstore import BlobNotFound, BlobStore

__all__ = ["PROBE_PREFIX", "run_storage_check"]

PROBE_PREFIX = "eacct-storage-check/"
_PROBE_SIZE = 256 * 1024


class _CheckFailed(Exception):
    """A step ran without errors but saw the wrong result."""


async def run_storage_check(store: BlobStore) -> list[tuple[str, bool, str]]:
    """Write, read back, stream, range-read, list and delete a probe object in `store`.

    Returns one `(step, ok, detail)` per step, in order; never raises for a failing store.
    """
    data = os.urandom(_PROBE_SIZE)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    key = f"{PROBE_PREFIX}{stamp}-{secrets.token_hex(6)}.probe"
    results: list[tuple[str, bool, str]] = []

    async def write() -> str:
        spool = store.spool_dir() / f"{secrets.token_hex(8)}.probe"
        await asyncio.to_thread(spool.write_bytes, data)
        try:
            await store.put(key, spool)
        finally:
            # The local backend may have linked the file into place; removing our name is still right.
            await asyncio.to_thread(spool.unlink, True)
        return f"stored {len(data)} bytes as {key}"

    async def read() -> str:
        _expect_equal(await store.get(key), data, "whole-object read")
        return f"read back {len(data)} bytes, content matches"

    async def stream() -> str:
        blocks = [block async for block in store.stream(key, block_size=64 * 1024)]
        _expect_equal(b"".join(blocks), data, "streamed read")
        return f"streamed {len(data)} bytes in {len(blocks)} blocks, content matches"

    async def range_read() -> str:
        middle = len(data) // 3
        _expect_equal(await store.get(key, middle, 4096), data[middle:middle + 4096], "range in the middle")
        # A range running past the end must come back shortened: a store that answers it with the
        # whole object would feed chunk readers wrong bytes.
        tail = len(data) - 100
        _expect_equal(await store.get(key, tail, 4096), data[tail:], "range past the end")
        return "middle range and range past the end both match"

    async def listing() -> str:
        async for info in store.list(PROBE_PREFIX):
            if info.key == key:
                if info.size != len(data):
                    raise _CheckFailed(f"listed with size {info.size}, expected {len(data)}")
                return f"listed under {PROBE_PREFIX} with the right size"
        raise _CheckFailed(f"{key} is missing from the listing of {PROBE_PREFIX}")

    async def delete() -> str:
        await store.delete(key)
        try:
            await store.get(key, 0, 1)
        except BlobNotFound:
            return "deleted; reading it now reports not found"
        raise _CheckFailed("the probe is still readable after delete")

    write_result = await _step("write", write)
    results.append(write_result)
    if not write_result[1]:
        skipped = "skipped: the probe object could not be written"
        results.extend((name, False, skipped) for name in ("read", "stream", "range read", "list", "delete"))
        # A put that failed half-way may still have left something behind.
        try:
            await store.delete(key)
        except Exception:  # the store is already known to be broken; the write failure is the news
            pass
        return results
    for name, step in (("read", read), ("stream", stream), ("range read", range_read), ("list", listing)):
        results.append(await _step(name, step))
    results.append(await _step("delete", delete))
    return results


async def _step(name: str, action: Callable[[], Awaitable[str]]) -> tuple[str, bool, str]:
    started = time.perf_counter()
    try:
        detail = await action()
    except _CheckFailed as exc:
        return name, False, str(exc)
    except Exception as exc:
        return name, False, f"{type(exc).__name__}: {exc}"
    return name, True, f"{detail} ({(time.perf_counter() - started) * 1000:.0f} ms)"


def _expect_equal(got: bytes, expected: bytes, what: str) -> None:
    if got != expected:
        raise _CheckFailed(f"{what} returned {len(got)} bytes that differ from the {len(expected)} written")
