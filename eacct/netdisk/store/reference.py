"""The version an upload most likely repeats: its chunks are known without asking the chunk index.

A bookkeeper backs the same year up day after day, and most of it is unchanged: the new year's chunks are the
previous version's, in the same order. The latest version of the upload's ledger and year (else of its ledger)
is read back in slices as the upload advances, and a chunk found there at about the same place needs no lookup.
A chunk it names may still disappear before the commit (its version deleted, then gc): the commit counts every
reference on committed rows and refuses the upload if one is gone (RetryUpload), as for any chunk looked up.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Integer, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct.chunks.manifest import ENTRY
from eacct.db import read_rows, read_scalars
from eacct.netdisk.models import Version, VersionManifest

__all__ = ["ReferenceManifest"]

# Entries read per slice (288 KiB): a 1 GB year is a handful of reads, and one slice is all that is held.
SLICE_ENTRIES = 8192
# How far ahead of the last match a chunk is looked for: what an edit inserted or removed since that version.
RESYNC_ENTRIES = 256


class ReferenceManifest:
    """A cursor over a reference version's manifest, read a slice at a time."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], version_id: int | None, entries: int) -> None:
        self.sessions = sessions
        self.version_id = version_id
        self.entries = entries  # in the whole manifest
        self.slice = b""
        self.slice_start = 0  # entry number of the slice's first entry
        self.cursor = 0  # entry number just after the last match

    @classmethod
    async def of(cls, sessions: async_sessionmaker[AsyncSession], owner_id: int, ledger_id: str,
                 year: int) -> ReferenceManifest:
        """The latest version of this ledger and year, else of this ledger; an empty reference if it has none.

        Its first slice comes with it, in the same statement: the upload asks for it at once, and every trip to
        the database is a trip through a busy event loop."""
        rows = await read_rows(sessions, _FIRST_SLICE, {"owner_id": owner_id, "ledger_id": ledger_id, "year": year,
                                                        "start": 1})
        if not rows:
            return cls(sessions, None, 0)
        version_id, length, first_slice = rows[0]
        reference = cls(sessions, version_id, (length or 0) // ENTRY.size)
        reference.slice = bytes(first_slice or b"")
        return reference

    async def known(self, digests: Iterable[bytes]) -> set[bytes]:
        """Of these digests, in file order, those the reference holds at or shortly after its last match."""
        found: set[bytes] = set()
        for digest in digests:
            if self.cursor >= self.entries:
                break
            if self.cursor >= self.slice_start + len(self.slice) // ENTRY.size and not await self._read_slice():
                break
            place = self._find(digest)
            if place is not None:
                found.add(digest)
                self.cursor = place + 1
        return found

    def _find(self, digest: bytes) -> int | None:
        """The entry number of `digest` between the cursor and RESYNC_ENTRIES after it (in this slice), or None."""
        size = ENTRY.size
        start = (self.cursor - self.slice_start) * size
        end = min(start + RESYNC_ENTRIES * size, len(self.slice))
        while (at := self.slice.find(digest, start, end)) >= 0:
            if at % size == 0:  # a digest's own place, not 32 bytes straddling two entries
                return self.slice_start + at // size
            start = at + 1
        return None

    async def _read_slice(self) -> bool:
        """Read the slice that starts at the cursor; False if there is none (the version was deleted meanwhile)."""
        slices = await read_scalars(self.sessions, _SLICE, {"version_id": self.version_id,
                                                            "start": self.cursor * ENTRY.size + 1})
        self.slice = bytes(slices[0]) if slices and slices[0] else b""
        self.slice_start = self.cursor
        if not self.slice:
            self.entries = self.cursor  # nothing more to match
        return bool(self.slice)


# `SLICE_ENTRIES` entries of a manifest from byte `start` on (1-based, as SQL counts), built once with parameters.
_SLICE_OF_MANIFEST = func.substr(VersionManifest.entries, bindparam("start", type_=Integer), SLICE_ENTRIES * ENTRY.size)
_SLICE = select(_SLICE_OF_MANIFEST).where(VersionManifest.version_id == bindparam("version_id"))
_LATEST_OF_LEDGER = (
    select(Version.id)
    .where(Version.owner_id == bindparam("owner_id"), Version.ledger_id == bindparam("ledger_id"))
    .order_by((Version.year == bindparam("year")).desc(), Version.id.desc())
    .limit(1)
    .scalar_subquery()
)
# The slice is cut from the one manifest chosen (a subquery), never from every version being sorted.
_FIRST_SLICE = (select(VersionManifest.version_id, func.length(VersionManifest.entries), _SLICE_OF_MANIFEST)
                .where(VersionManifest.version_id == _LATEST_OF_LEDGER))
