"""Chunk-level download: fetch a version's manifest and only the chunks the local copy of the year lacks.

The local year is packed and cut with `eacct.chunks` exactly as the server cut the version, so every chunk it
shares with the version is taken from disk; the rest come in batches (`POST …/chunks`, raw chunks concatenated
in the order asked, as one zstd stream), each verified here too, spooled beside the target, then the year is rebuilt in file order
and its sha256 checked against the manifest's before anyone may install it.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import zstandard

from eacct.chunks.chunker import iter_file_chunks
from eacct.desktop_sync._client import Progress, Request, Response, _no_progress, _parse_json, _NOT_JSON
from eacct.desktop_sync._exceptions import ChecksumError, DiskError, ProtocolError, error_for

__all__ = ["MAX_CHUNKS_PER_BATCH", "download_by_chunks"]

MAX_CHUNKS_PER_BATCH = 4096  # the server's bound (ChunkBatch)
BATCH_BYTES = 16 * 1024 * 1024  # a broken connection costs at most one batch


def local_chunks(archive: Path) -> dict[bytes, tuple[int, int]]:
    """Where each chunk of a local archive lies: digest → (offset, size), cut as the server cuts."""
    where: dict[bytes, tuple[int, int]] = {}
    offset = 0
    for chunk in iter_file_chunks(archive):
        where.setdefault(hashlib.sha256(chunk).digest(), (offset, len(chunk)))
        offset += len(chunk)
    return where


def _posix(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp() if iso else None
    except ValueError:
        return None


async def download_by_chunks(client: Any, side: str, ledger_id: str, year: int, version: str, local: Path,
                             target: Path, *, progress: Progress = _no_progress) -> dict:
    """Write the version to `target` from the chunks of `local` plus those fetched; the same answer as
    `EacctClient.download` (and `manifest`, the version's chunk list)."""
    path = f"/{side}/{ledger_id}/years/{year}/versions/{quote(str(version), safe='')}"
    manifest = await client._call("GET", path + "/manifest", netdisk=True)
    entries = [(bytes.fromhex(entry["sha256"]), int(entry["size"])) for entry in manifest["chunks"]]
    size, expected = int(manifest["size"]), manifest["sha256"]
    have = await asyncio.to_thread(local_chunks, local)
    wanted = [(digest, chunk_size) for digest, chunk_size in dict(entries).items() if digest not in have]
    spool = target.with_name(target.name + ".chunks")
    fetched: dict[bytes, tuple[int, int]] = {}
    received = 0
    try:
        with open(spool, "wb") as out:
            batch: list[tuple[bytes, int]] = []
            for index, item in enumerate(wanted):
                batch.append(item)
                if (len(batch) < MAX_CHUNKS_PER_BATCH and sum(s for _, s in batch) < BATCH_BYTES
                        and index + 1 < len(wanted)):
                    continue
                received += await _fetch_batch(client, path + "/chunks", batch, out, fetched)
                progress(received, sum(s for _, s in wanted), "receiving")
                batch = []
        digest = await asyncio.to_thread(_rebuild, entries, local, have, spool, fetched, target, progress)
    except OSError as exc:
        if isinstance(exc, ConnectionError):
            raise
        raise DiskError(f"写入 {target.parent} 失败（{exc.strerror or exc}），磁盘可能已满；未保存任何数据") from exc
    finally:
        spool.unlink(missing_ok=True)
    if digest != expected or target.stat().st_size != size:
        target.unlink(missing_ok=True)
        raise ChecksumError("下载的数据不完整或校验失败，请重新下载")
    return {"version_id": manifest["version_id"], "sha256": expected, "remark": manifest.get("remark", ""),
            "size": size, "uploaded_at": _posix(manifest.get("uploaded_at")), "received_bytes": received,
            "manifest": entries}


async def _fetch_batch(client: Any, url_path: str, batch: list[tuple[bytes, int]], out,
                       fetched: dict[bytes, tuple[int, int]]) -> int:
    """POST one batch; split the answer by the manifest's sizes, verify each chunk and append it to `out`."""
    content = ('{"encoding": "zstd", "chunks": [' + ",".join(f'"{digest.hex()}"' for digest, _ in batch) + "]}").encode()
    headers = {**client._headers(True), "Content-Type": "application/json"}
    client.bytes_sent += len(content)

    async def receive(response: Response) -> int:
        if response.status >= 400:
            data = _parse_json(await response.read())
            raise error_for(response.status, None if data is _NOT_JSON else data)
        media = response.headers.get("Content-Type", "")
        if response.status != 200 or not media.startswith(("application/octet-stream", "application/zstd")):
            raise ProtocolError(f"服务器的回答不是 e会计云服务的数据（HTTP {response.status}）")
        # Asked as one zstd stream (the changed pages compress several times over); plain bytes are taken too.
        decoder = zstandard.ZstdDecompressor().decompressobj() if media.startswith("application/zstd") else None
        pending = bytearray()
        position = 0
        total = 0
        async for block in response.stream:
            client.bytes_received += len(block)
            total += len(block)
            try:
                pending += decoder.decompress(block) if decoder is not None else block
            except zstandard.ZstdError as exc:
                raise ChecksumError("下载的数据块无法解压，请重新下载") from exc
            while position < len(batch) and len(pending) >= batch[position][1]:
                digest, chunk_size = batch[position]
                chunk = bytes(pending[:chunk_size])
                del pending[:chunk_size]
                if hashlib.sha256(chunk).digest() != digest:
                    raise ChecksumError("下载的数据块校验失败，请重新下载")
                fetched[digest] = (out.tell(), chunk_size)
                out.write(chunk)
                position += 1
        if position < len(batch) or pending:
            # A share cancelled mid-download ends the stream short: never take part of a year.
            raise ChecksumError("下载的数据不完整，请重新下载")
        return total

    return await client.transport.send(Request("POST", client.base_url + url_path, headers, content=content), receive)


def _rebuild(entries, local: Path, have, spool: Path, fetched, target: Path, progress: Progress) -> str:
    """Write the year in file order from the local archive and the spool; its sha256."""
    digest = hashlib.sha256()
    total = sum(size for _, size in entries)
    done = 0
    with open(local, "rb") as mine, open(spool, "rb") as theirs, open(target, "wb") as out:
        for chunk_digest, size in entries:
            source, (offset, _) = (theirs, fetched[chunk_digest]) if chunk_digest in fetched else (mine, have[chunk_digest])
            source.seek(offset)
            chunk = source.read(size)
            digest.update(chunk)
            out.write(chunk)
            done += size
            progress(done, total, "verifying")
    return digest.hexdigest()
