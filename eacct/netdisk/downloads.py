"""Downloads of a version, whole, by range or chunk by chunk, with the path's access rule checked inside.

The caller (cloud backup or cloud share) passes the rule that finds the version for this member; it runs
before anything is read and again every `RECHECK_EVERY_BYTES` sent, in a transaction of its own, so a share
cancelled during a download ends it (rule 11): the byte iterator raises the rule's domain error. The HTTP side
only has to turn that into a cut connection once headers are out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.chunks.manifest import ENTRY, iter_manifest
from eacct.db import unit_of_work
from eacct.netdisk import store
from eacct.netdisk.hooks import NetdiskHooks, ledger_for_backup
from eacct.netdisk.models import Version
from eacct.netdisk.versions import find_version
from eacct.storage import BlobStore

__all__ = ["MAX_CHUNKS_PER_REQUEST", "RECHECK_EVERY_BYTES", "Download", "backup_download", "open_download"]

RECHECK_EVERY_BYTES = 8 * 1024 * 1024
# A batch of chunks is answered in one stream; bounded so one request cannot ask for a year many times over.
MAX_CHUNKS_PER_REQUEST = 4096

# The path's rule: (session, version id or "latest") -> the version, or the path's domain error.
FindVersion = Callable[[AsyncSession, str], Awaitable[Version]]


@dataclass
class Download:
    """A version a member may download, and the ways to read it; every byte iterator re-checks access."""

    version: Version
    sessions: async_sessionmaker[AsyncSession]
    blobs: BlobStore
    find: FindVersion

    async def still_allowed(self) -> None:
        """Raise the path's domain error when the member may no longer read this version."""
        async with unit_of_work(self.sessions, read_only=True) as session:
            # The same version, not whatever is newest by now ("latest" moves while a download runs).
            await self.find(session, self.version.public_id)

    async def _checked(self, blocks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        since_check = 0
        try:
            async for block in blocks:
                yield block
                since_check += len(block)
                if since_check >= RECHECK_EVERY_BYTES:
                    since_check = 0
                    await self.still_allowed()
        finally:
            await blocks.aclose()  # now, not whenever the generator is collected

    def content(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes `start`..`end` of the version."""
        return self._checked(store.read_version(self.sessions, self.blobs, self.version, start, end))

    async def manifest(self) -> list[tuple[bytes, int]]:
        """The version's chunks in file order: (sha256 digest, raw size)."""
        async with unit_of_work(self.sessions, read_only=True) as session:
            entries = (await session.execute(store.MANIFEST_ENTRIES, {"version_id": self.version.id})).scalar()
        if entries is None:
            raise errors.NotFound("该版本已不存在")
        return list(iter_manifest(entries))

    async def manifest_info(self) -> dict:
        """The version and its chunk list, as the manifest endpoint answers it."""
        version = self.version
        return {"version_id": version.public_id, "size": version.size, "sha256": version.sha256,
                "remark": version.remark, "uploaded_at": version.uploaded_at,
                "chunks": [{"sha256": digest.hex(), "size": size} for digest, size in await self.manifest()]}

    async def chunks(self, digests: list[str]) -> tuple[int, AsyncIterator[bytes]]:
        """The raw chunks named (hex), concatenated in the order asked, each verified as it is read from its
        pack; returns (total bytes, iterator). Only chunks of this version may be asked for."""
        if not 1 <= len(digests) <= MAX_CHUNKS_PER_REQUEST:
            raise errors.Invalid(f"一次最多请求 {MAX_CHUNKS_PER_REQUEST} 个数据块，至少 1 个")
        sizes = dict(await self.manifest())
        wanted = []
        for digest in digests:
            raw = bytes.fromhex(digest)
            if raw not in sizes:
                raise errors.Invalid("请求的数据块不属于该版本", chunk=digest.lower())
            wanted.append((raw, sizes[raw]))
        # A manifest of just these chunks: the store reads and verifies them as it reads a version.
        entries = b"".join(ENTRY.pack(digest, size) for digest, size in wanted)
        total = sum(size for _, size in wanted)
        blocks = store.read_entries(self.sessions, self.blobs, self.version.owner_id, entries, 0, total)
        return total, self._checked(blocks)


async def open_download(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, find: FindVersion,
                        version_ref: str) -> Download:
    """Find the version with the path's rule (`find`) and keep the rule for the reads to come."""
    async with unit_of_work(sessions, read_only=True) as session:
        version = await find(session, version_ref)
    return Download(version, sessions, blobs, find)


async def backup_download(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, hooks: NetdiskHooks,
                          member_id: int, ledger_id: str, year: int, version_ref: str) -> Download:
    """The owner's download of a kept version (restore = download of any kept version)."""

    async def find(session: AsyncSession, ref: str) -> Version:
        await ledger_for_backup(session, hooks, member_id, ledger_id)
        return await find_version(session, ledger_id, year, ref)

    return await open_download(sessions, blobs, find, version_ref)
