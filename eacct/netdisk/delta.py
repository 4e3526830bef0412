"""The delta upload format: a year as its chunk manifest plus only the chunks the server lacks.

Client and server cut a year with the same chunker (eacct.netdisk.chunker), so after the client asks which
chunks are missing (`…/chunks/missing`), a re-upload after a day of bookkeeping carries the changed database
pages and the manifest, not the whole year. Layout (big-endian):

    b"EACCT-DELTA/1\\n"  u32 count
    count × (32-byte sha256, u32 raw size, u8 included)        the manifest, in file order
    the bytes of every included chunk, in manifest order

The server verifies each included chunk against its digest, checks that every other one is already stored,
and verifies the whole year's sha256 by reading it back from the store before the version is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

from eacct import errors

__all__ = ["MAGIC", "MEDIA_TYPE", "delta_blocks", "delta_size", "read_delta"]

MEDIA_TYPE = "application/x-eacct-delta"
MAGIC = b"EACCT-DELTA/1\n"
COUNT = struct.Struct(">I")
ENTRY = struct.Struct(">32sIB")
MAX_ENTRIES = 1_000_000
MAX_CHUNK = 4 * 1024 * 1024
BATCH = 512


class _Blocks:
    """Exact-size reads over an async iterator of blocks."""

    def __init__(self, blocks: AsyncIterator[bytes]) -> None:
        self._blocks = blocks.__aiter__()
        self._buffer = bytearray()

    async def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            try:
                self._buffer += await self._blocks.__anext__()
            except StopAsyncIteration:
                raise errors.BadRequest("增量上传的数据不完整") from None
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def at_end(self) -> bool:
        if self._buffer:
            return False
        async for block in self._blocks:
            if block:
                self._buffer += block
                return False
        return True


def _verify(batch: list[tuple[bytes, bytes | None, int]]) -> None:
    for digest, piece, _ in batch:
        if piece is not None and hashlib.sha256(piece).digest() != digest:
            raise errors.ChecksumMismatch("增量上传中的数据块校验失败，未保存，请重新上传")


async def read_delta(blocks: AsyncIterator[bytes]) -> AsyncIterator[tuple[list[tuple[bytes, bytes | None, int]], int]]:
    """Yield (entries, body bytes they took) in manifest order; entries are (digest, bytes or None, size)."""
    reader = _Blocks(blocks)
    if await reader.read(len(MAGIC)) != MAGIC:
        raise errors.BadRequest("不是 e会计 增量上传格式")
    (count,) = COUNT.unpack(await reader.read(COUNT.size))
    if count > MAX_ENTRIES:
        raise errors.BadRequest("增量上传的数据块过多")
    table = await reader.read(count * ENTRY.size)
    consumed = len(MAGIC) + COUNT.size + len(table)
    batch: list[tuple[bytes, bytes | None, int]] = []
    for digest, size, included in ENTRY.iter_unpack(table):
        if size > MAX_CHUNK or included not in (0, 1):
            raise errors.BadRequest("增量上传的清单不正确")
        piece = await reader.read(size) if included else None
        consumed += size if included else 0
        batch.append((digest, piece, size))
        if len(batch) == BATCH:
            await asyncio.to_thread(_verify, batch)
            yield batch, consumed
            batch, consumed = [], 0
    if not await reader.at_end():
        raise errors.BadRequest("增量上传在数据块之后还有多余的数据")
    await asyncio.to_thread(_verify, batch)
    yield batch, consumed


def delta_size(manifest: Iterable[tuple[bytes, int]], send: set[bytes]) -> int:
    """The body size of a delta upload sending the chunks in `send` (each once)."""
    entries = list(manifest)
    sent: set[bytes] = set()
    total = len(MAGIC) + COUNT.size + len(entries) * ENTRY.size
    for digest, size in entries:
        if digest in send and digest not in sent:
            sent.add(digest)
            total += size
    return total


def delta_blocks(archive: Path, manifest: list[tuple[bytes, int]], send: set[bytes]) -> Iterator[bytes]:
    """The body of a delta upload, in blocks: manifest first, then the chunks in `send`, read from `archive`."""
    sent: set[bytes] = set()
    table = bytearray(MAGIC + COUNT.pack(len(manifest)))
    flags = []
    for digest, size in manifest:
        included = digest in send and digest not in sent
        if included:
            sent.add(digest)
        flags.append(included)
        table += ENTRY.pack(digest, size, 1 if included else 0)
    yield bytes(table)
    with open(archive, "rb") as handle:
        offset = 0
        for (_, size), included in zip(manifest, flags):
            if included:
                handle.seek(offset)
                yield handle.read(size)
            offset += size
