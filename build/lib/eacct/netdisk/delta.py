"""The delta upload format: a year as edits to the version it started from, carrying only new chunks.

Client and server cut a year with the same chunker (eacct.netdisk.chunker). The client remembers the chunk
list of the version its copy came from (the If-Match version), so after a day of bookkeeping it describes
the new year as runs copied from that list plus the few new chunks, asks the server which of those it lacks
(`…/chunks/missing`), and sends those compressed. Layout (big-endian):

    b"EACCT-DELTA/2\\n"  u32 op count
    ops, in file order:
      0, u32 start, u32 count                       copy `count` entries of the base version's list
      1, 32-byte sha256, u32 raw size, u32 frame    a chunk; `frame` bytes of zstd follow at the end
                                                    (0: not sent, the server must already have it)
    the zstd frames of the sent chunks, in op order

The server checks each frame against its digest, that every unsent chunk is already stored, and the whole
year's sha256 by reading it back from the store before the version is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from eacct import errors

__all__ = ["MAGIC", "MEDIA_TYPE", "Copy", "New", "plan", "read_delta", "write_delta"]

MEDIA_TYPE = "application/x-eacct-delta"
MAGIC = b"EACCT-DELTA/2\n"
COUNT = struct.Struct(">I")
COPY = struct.Struct(">BII")
NEW = struct.Struct(">B32sII")
MANIFEST_ENTRY = struct.Struct(">32sI")  # as the store keeps manifests
MAX_OPS = 2_000_000
MAX_CHUNK = 4 * 1024 * 1024
BATCH = 512
ZSTD_LEVEL = 3

Entry = tuple[bytes, "bytes | None", int]  # digest, raw bytes when sent, raw size


@dataclass(frozen=True, slots=True)
class Copy:
    """Entries `start`..`start + count` of the base version's chunk list."""

    start: int
    count: int


@dataclass(frozen=True, slots=True)
class New:
    """A chunk named by digest and size; `send` when the server lacks it."""

    digest: bytes
    size: int
    send: bool = False


# ------------------------------------------------------------------------------------------- client


def plan(manifest: list[tuple[bytes, int]], base: list[tuple[bytes, int]] | None, missing: set[bytes]) -> list[Copy | New]:
    """Describe `manifest` as runs of `base` plus new chunks; each missing chunk is sent once."""
    where: dict[tuple[bytes, int], int] = {}
    for index, entry in enumerate(base or []):
        where.setdefault(entry, index)
    ops: list[Copy | New] = []
    sent: set[bytes] = set()
    for entry in manifest:
        index = where.get(entry)
        previous = ops[-1] if ops else None
        if index is not None and base is not None:
            if isinstance(previous, Copy) and previous.start + previous.count < len(base) \
                    and base[previous.start + previous.count] == entry:
                ops[-1] = Copy(previous.start, previous.count + 1)
            else:
                ops.append(Copy(index, 1))
            continue
        digest, size = entry
        send = digest in missing and digest not in sent
        if send:
            sent.add(digest)
        ops.append(New(digest, size, send))
    return ops


def write_delta(archive: Path, manifest: list[tuple[bytes, int]], ops: list[Copy | New], target: Path) -> int:
    """Write the request body for `ops` to `target` (the sent chunks read from `archive`); return its size."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    offsets, position = {}, 0
    for digest, size in manifest:
        offsets.setdefault(digest, position)
        position += size
    frames_path = target.with_name(target.name + ".frames")
    lengths = []
    try:
        with open(archive, "rb") as source, open(frames_path, "wb") as frames:
            for op in ops:
                if isinstance(op, New) and op.send:
                    source.seek(offsets[op.digest])
                    frame = compressor.compress(source.read(op.size))
                    lengths.append(len(frame))
                    frames.write(frame)
        header = bytearray(MAGIC + COUNT.pack(len(ops)))
        sizes = iter(lengths)
        for op in ops:
            if isinstance(op, Copy):
                header += COPY.pack(0, op.start, op.count)
            else:
                header += NEW.pack(1, op.digest, op.size, next(sizes) if op.send else 0)
        with open(target, "wb") as out, open(frames_path, "rb") as frames:
            out.write(header)
            while block := frames.read(1 << 20):
                out.write(block)
    finally:
        frames_path.unlink(missing_ok=True)
    return target.stat().st_size


# ------------------------------------------------------------------------------------------- server


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


def _decode(batch: list[tuple[bytes, bytes | None, int]]) -> list[Entry]:
    decompressor = zstandard.ZstdDecompressor()
    out: list[Entry] = []
    for digest, frame, size in batch:
        piece = None
        if frame is not None:
            try:
                piece = decompressor.decompress(frame, max_output_size=size)
            except zstandard.ZstdError as exc:
                raise errors.BadRequest("增量上传中的数据块无法解压") from exc
            if len(piece) != size or hashlib.sha256(piece).digest() != digest:
                raise errors.ChecksumMismatch("增量上传中的数据块校验失败，未保存，请重新上传")
        out.append((digest, piece, size))
    return out


async def read_delta(
    blocks: AsyncIterator[bytes], load_base: Callable[[], Awaitable[bytes]]
) -> AsyncIterator[tuple[list[Entry], int]]:
    """Yield (entries, body bytes they took) in file order; entries are (digest, bytes or None, size).

    `load_base` gives the base version's manifest (36-byte entries); it is called at the first copy op.
    """
    reader = _Blocks(blocks)
    if await reader.read(len(MAGIC)) != MAGIC:
        raise errors.BadRequest("不是 e会计 增量上传格式（EACCT-DELTA/2）")
    (count,) = COUNT.unpack(await reader.read(COUNT.size))
    if count > MAX_OPS:
        raise errors.BadRequest("增量上传的操作过多")
    ops = []
    consumed = len(MAGIC) + COUNT.size
    for _ in range(count):
        kind = (await reader.read(1))[0]
        if kind == 0:
            ops.append(COPY.unpack(bytes([kind]) + await reader.read(COPY.size - 1)))
            consumed += COPY.size
        elif kind == 1:
            ops.append(NEW.unpack(bytes([kind]) + await reader.read(NEW.size - 1)))
            consumed += NEW.size
        else:
            raise errors.BadRequest("增量上传的操作不正确")
    base: bytes | None = None
    batch: list[tuple[bytes, bytes | None, int]] = []
    for op in ops:
        if op[0] == 0:
            _, start, run = op
            if base is None:
                base = await load_base()
            if run == 0 or (start + run) * MANIFEST_ENTRY.size > len(base):
                raise errors.BadRequest("增量上传引用了基准版本中不存在的数据块")
            for index in range(start, start + run):
                digest, size = MANIFEST_ENTRY.unpack_from(base, index * MANIFEST_ENTRY.size)
                batch.append((digest, None, size))
        else:
            _, digest, size, frame = op
            if size > MAX_CHUNK or frame > MAX_CHUNK + 1024:
                raise errors.BadRequest("增量上传的数据块过大")
            batch.append((digest, await reader.read(frame) if frame else None, size))
            consumed += frame
        if len(batch) >= BATCH:
            yield await asyncio.to_thread(_decode, batch), consumed
            batch, consumed = [], 0
    if not await reader.at_end():
        raise errors.BadRequest("增量上传在数据块之后还有多余的数据")
    yield await asyncio.to_thread(_decode, batch), consumed
