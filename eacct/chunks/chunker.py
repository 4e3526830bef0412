"""Deterministic, streaming, format-aware chunking of ledger-year archives.

A year is uploaded as a deterministic tar of its files, mostly SQLite ledgers. Chunks are stored once
per sha256, so what matters is that an edit produces few *new* chunks. Generic content-defined
chunking (CDC) with large chunks is the wrong tool for databases: a day of bookkeeping rewrites a
hundred-odd scattered 4 KiB pages, and every touched page would drag a whole 32-128 KiB chunk with it.
Databases, however, are arrays of fixed-size pages, so cutting every few pages from the start of the
file gives chunks that change exactly when one of their pages changes, and never shift.

So the chunker understands just enough of the stream:

* tar (ustar/gnu/pax): the padding after a member plus the header block(s) of the next member (pax and
  GNU long-name extensions included) form one small metadata chunk; each member's data is chunked on
  its own, so a chunk never spans two members and a member that grows does not shift the cuts of the
  members after it. A member small enough that it would make tiny chunks anyway is sent as one chunk
  together with its header. The end-of-archive zero blocks end up in one final chunk.
* SQLite (``SQLite format 3\\0``) and Access/Jet/ACE data: cut every page group (~8 KiB) from the
  start of the member (or of the stream, if it is not a tar).
* anything else, and anything malformed from the point where it stops parsing: FastCDC.

Cuts depend only on the bytes, never on how they were sliced when fed, because the server chunks an
HTTP body as it arrives while the desktop client chunks a file: both must agree. Every decision is
therefore taken only once the bytes it depends on are available (or the stream has ended), and only
CDC cuts that can no longer move are emitted. No input makes the chunker raise; concatenating the
chunks always gives back the input.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from eacct.chunks.cdc import cdc_lengths

__all__ = [
    "DEFAULT_PARAMS",
    "ArchiveChunker",
    "ChunkerParams",
    "chunk_bytes",
    "iter_file_chunks",
]

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_SQLITE_MAGIC = b"SQLite format 3\x00"
_JET_MAGICS = (b"\x00\x01\x00\x00Standard Jet DB\x00", b"\x00\x01\x00\x00Standard ACE DB\x00")
_JET_VERSION_OFFSET = 0x14
# Bytes of a new slice added at least to the carried bytes of earlier ones before cutting resumes: enough to
# get past them in one go for page groups, few enough that most of a large slice is never copied.
_TOP_UP = 64 * 1024
# Enough leading bytes of a member to recognise every supported database format.
_SNIFF_BYTES = 24

# Extension headers whose data is metadata about the next member, not member data.
_EXT_TYPES = frozenset(b"xgLK")
_PAX_TYPE = ord("x")
_GNU_SPARSE_TYPE = ord("S")
# Like tarfile: links, directories, devices and fifos carry no data whatever their size field says.
_NO_DATA_TYPES = frozenset(b"123456")
_HIGH_BYTES = bytes(range(128, 256))

_DETECT, _META, _MEMBER, _SNIFF, _PAGES, _CDC = range(6)


@dataclass(frozen=True, slots=True)
class ChunkerParams:
    """Chunk size knobs. Changing any of them changes the cuts, hence the chunk ids: keep them fixed."""

    # Database pages are grouped into chunks of about this many bytes (at least one page).
    page_group_bytes: int = 8 * 1024
    cdc_min: int = 16 * 1024
    cdc_avg: int = 32 * 1024
    cdc_max: int = 128 * 1024
    # No chunk is larger; tar metadata runs (e.g. huge pax headers) beyond it fall back to CDC.
    max_chunk: int = 128 * 1024
    # A tar member whose header(s) and data fit in this many bytes is a single chunk.
    small_member_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        # FastCDC's own limits (it asserts on them), then our own size invariants.
        if not 64 <= self.cdc_min <= self.cdc_avg <= self.cdc_max:
            raise ValueError("need 64 <= cdc_min <= cdc_avg <= cdc_max")
        if self.cdc_avg < 256 or self.cdc_max < 1024:
            raise ValueError("need cdc_avg >= 256 and cdc_max >= 1024")
        if self.page_group_bytes < 1 or self.small_member_bytes < 0:
            raise ValueError("page_group_bytes must be positive, small_member_bytes non-negative")
        if self.max_chunk < max(self.cdc_max, 65536, self.page_group_bytes, self.small_member_bytes):
            raise ValueError("max_chunk must hold cdc_max, a 64 KiB page, a page group and a small member")

    def page_group(self, page_size: int) -> int:
        """Bytes per chunk for a database with this page size: whole pages, about page_group_bytes."""
        return max(1, self.page_group_bytes // page_size) * page_size


DEFAULT_PARAMS = ChunkerParams()


class ArchiveChunker:
    """Cuts a year archive into chunks as bytes arrive; same bytes → same cuts whatever the slicing."""

    def __init__(self, params: ChunkerParams = DEFAULT_PARAMS, *, views: bool = False) -> None:
        """`views`: chunks cut straight from a fed buffer may be memoryviews into it instead of copies; only for
        a caller that feeds buffers it never changes afterwards (e.g. bytes) and wants no copy of each chunk."""
        self._p = params
        self._views = views
        # Whether the buffer _run is cutting may be handed out as views (the caller's, not _pending).
        self._cut_views = False
        # Unconsumed input; always starts at the next byte that is not yet part of an emitted chunk.
        self._pending = bytearray()
        # _pending must hold this many bytes before _run can make progress (saves work on tiny feeds).
        self._need = _BLOCK
        self._finished = False
        self._state = _DETECT
        # Data bytes left in the current member region; None = up to the end of the stream.
        self._left: int | None = None
        self._group = 0  # page group size in the _PAGES state
        self._pad = 0  # padding after the current member's data, opens the next metadata run
        # Bytes of the current metadata run already parsed, counted from the start of _pending.
        self._meta_len = 0
        self._pax_size: int | None = None
        self._member_size = 0
        self._sparse_ext = False  # old GNU sparse extension blocks still to read
        # CDC buffers at least this much before cutting, so a carried tail is re-scanned at most once
        # per cdc_max new bytes instead of on every small feed.
        self._cdc_batch = 2 * params.cdc_max

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take the next slice of the stream; return the chunks it completed, in order."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        mv = memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        out: list[bytes] = []
        if not mv:
            return out
        taken = 0  # bytes of mv appended to _pending so far
        while self._pending and taken < len(mv):
            # Carried bytes first: top them up with only as much of mv as the next cut needs (not all of mv),
            # until the cuts get past them; the rest is then cut straight from the caller's buffer.
            carried = len(self._pending) - taken  # bytes from earlier feeds still in _pending
            more = mv[taken : taken + max(self._need - len(self._pending), _TOP_UP)]
            self._pending += more
            taken += len(more)
            if len(self._pending) < self._need:
                continue
            with memoryview(self._pending) as buf:
                used = self._run(buf, False, out)
            if used >= carried:
                # Past the carried bytes: what is left of _pending is mv[used - carried : taken].
                self._pending.clear()
                taken = used - carried
                break
            del self._pending[:used]
        if self._pending:
            return out  # all of mv is in _pending, waiting for more bytes
        rest = mv[taken:]
        if len(rest) < self._need:
            self._pending += rest
            return out
        # Common case for large slices: cut straight from the caller's buffer, keep only the tail.
        self._cut_views = self._views
        try:
            used = self._run(rest, False, out)
        finally:
            self._cut_views = False
        self._pending += rest[used:]
        return out

    def finish(self) -> list[bytes]:
        """End of stream: return the remaining chunks. The chunker cannot be fed afterwards."""
        if self._finished:
            return []
        self._finished = True
        out: list[bytes] = []
        with memoryview(self._pending) as buf:
            self._run(buf, True, out)
        self._pending = bytearray()
        return out

    # -- state machine -------------------------------------------------------------------------

    def _run(self, mv: memoryview, final: bool, out: list[bytes]) -> int:
        """Cut as much of mv as the bytes allow; return how many bytes were emitted as chunks."""
        end = len(mv)
        pos = 0
        while not (final and pos == end):
            state = self._state
            if state == _PAGES:
                step = self._step_pages(mv, pos, end, final, out)
            elif state == _CDC:
                step = self._step_cdc(mv, pos, end, final, out)
            elif state == _META:
                step = self._step_meta(mv, pos, end, final, out)
            elif state == _MEMBER:
                step = self._step_member(mv, pos, end, final, out)
            elif state == _SNIFF:
                step = self._step_sniff(mv, pos, end, final)
            else:
                step = self._step_detect(mv, pos, end, final)
            if step is None:  # waiting for self._need bytes from pos
                break
            pos = step
        return pos

    def _piece(self, mv: memoryview, start: int, end: int) -> bytes:
        """A chunk: a view into the caller's buffer where allowed, else a copy (_pending changes under views)."""
        return mv[start:end] if self._cut_views else bytes(mv[start:end])

    def _to_cdc(self) -> None:
        """Give up on structure: FastCDC from the current position to the end of the stream."""
        self._state = _CDC
        self._left = None
        self._meta_len = 0
        self._pax_size = None
        self._sparse_ext = False

    def _region_done(self) -> None:
        self._state = _META
        self._left = None
        self._meta_len = self._pad

    def _step_detect(self, mv: memoryview, pos: int, end: int, final: bool) -> int | None:
        if end - pos < _BLOCK and not final:
            self._need = _BLOCK
            return None
        if end - pos >= _BLOCK and _is_tar_header(bytes(mv[pos : pos + _BLOCK])):
            self._state = _META
            self._meta_len = 0
        else:
            self._state = _SNIFF
            self._left = None
        return pos

    def _step_meta(self, mv: memoryview, pos: int, end: int, final: bool, out: list[bytes]) -> int | None:
        h = pos + self._meta_len
        if h + _BLOCK > end:
            if final:
                self._to_cdc()
                return pos
            self._need = self._meta_len + _BLOCK
            return None
        block = bytes(mv[h : h + _BLOCK])

        if self._sparse_ext:
            self._meta_len += _BLOCK
            self._sparse_ext = block[504] != 0
            if self._meta_len > self._p.max_chunk:
                self._to_cdc()
                return pos
            if not self._sparse_ext:
                self._state = _MEMBER
            return pos

        if block == _ZERO_BLOCK:
            # End of archive: padding, zero blocks and record padding go out by CDC, normally as one
            # chunk (zeros never match the CDC mask, and a tar trailer is shorter than cdc_min).
            self._to_cdc()
            return pos
        parsed = _parse_header(block)
        if parsed is None:
            self._to_cdc()
            return pos
        typeflag, size = parsed

        if typeflag in _EXT_TYPES:
            total = _BLOCK + _round_up(size)
            if self._meta_len + total > self._p.max_chunk:
                self._to_cdc()
                return pos
            if h + total > end:
                if final:
                    self._to_cdc()
                    return pos
                self._need = self._meta_len + total
                return None
            if typeflag == _PAX_TYPE:
                pax_size = _pax_size(bytes(mv[h + _BLOCK : h + _BLOCK + size]))
                if pax_size == -1:
                    self._to_cdc()
                    return pos
                if pax_size is not None:
                    self._pax_size = pax_size
            self._meta_len += total
            return pos

        if typeflag in _NO_DATA_TYPES:
            self._member_size = 0
        elif self._pax_size is not None:
            self._member_size = self._pax_size
        else:
            self._member_size = size
        self._pax_size = None
        self._pad = -self._member_size % _BLOCK
        self._meta_len += _BLOCK
        # Old GNU sparse headers may be followed by extension blocks, still part of the metadata.
        self._sparse_ext = typeflag == _GNU_SPARSE_TYPE and block[482] != 0
        if not self._sparse_ext:
            self._state = _MEMBER
        return pos

    def _step_member(self, mv: memoryview, pos: int, end: int, final: bool, out: list[bytes]) -> int | None:
        """A member's metadata run is parsed: emit it and set up the chunking of the member's data."""
        meta = self._meta_len
        size = self._member_size
        if meta > self._p.max_chunk:
            self._to_cdc()
            return pos
        if meta + size <= self._p.small_member_bytes:
            if pos + meta + size > end:
                if final:
                    self._to_cdc()
                    return pos
                self._need = meta + size
                return None
            out.append(self._piece(mv, pos, pos + meta + size))
            self._region_done()
            return pos + meta + size
        out.append(self._piece(mv, pos, pos + meta))
        self._meta_len = 0
        self._state = _SNIFF
        self._left = size
        return pos + meta

    def _step_sniff(self, mv: memoryview, pos: int, end: int, final: bool) -> int | None:
        want = _SNIFF_BYTES if self._left is None else min(_SNIFF_BYTES, self._left)
        if end - pos < want and not final:
            self._need = want
            return None
        page_size = _database_page_size(bytes(mv[pos : pos + want]))
        if page_size:
            self._state = _PAGES
            self._group = self._p.page_group(page_size)
        else:
            self._state = _CDC
        return pos

    def _step_pages(self, mv: memoryview, pos: int, end: int, final: bool, out: list[bytes]) -> int | None:
        group = self._group
        left = self._left
        region_ends = left is not None and pos + left <= end
        lim = pos + left if left is not None and region_ends else end
        stop = pos + (lim - pos) // group * group
        if stop == pos and not (region_ends or final):
            self._need = group if left is None else min(group, left)
            return None
        if self._cut_views:
            out.extend([mv[i : i + group] for i in range(pos, stop, group)])
        else:
            out.extend([bytes(mv[i : i + group]) for i in range(pos, stop, group)])
        if region_ends or final:
            # The member (or stream) ends here: a short last group is complete too.
            if lim > stop:
                out.append(self._piece(mv, stop, lim))
            stop = lim
        if left is not None:
            self._left = left - (stop - pos)
        if region_ends:
            self._region_done()
        return stop

    def _step_cdc(self, mv: memoryview, pos: int, end: int, final: bool, out: list[bytes]) -> int | None:
        left = self._left
        region_ends = left is not None and pos + left <= end
        lim = pos + left if left is not None and region_ends else end
        if not (region_ends or final) and lim - pos < self._cdc_batch:
            self._need = self._cdc_batch if left is None else min(self._cdc_batch, left)
            return None
        p = self._p
        with mv[pos:lim] as view:
            cuts = cdc_lengths(view, p.cdc_min, p.cdc_avg, p.cdc_max)
        if not (region_ends or final):
            # The last chunk may have been cut short by the end of the buffer; it is carried and
            # re-scanned with the next bytes. Every earlier cut is final: it was found with data
            # beyond it, or at cdc_max.
            cuts.pop()
        start = pos
        for length in cuts:
            out.append(self._piece(mv, start, start + length))
            start += length
        if left is not None:
            self._left = left - (start - pos)
        if region_ends:
            self._region_done()
        return start


# -- format helpers (pure functions of the bytes) ------------------------------------------------


def _round_up(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def _tar_number(field: bytes) -> int | None:
    """A tar numeric field (octal, or GNU base-256); None if it is not a non-negative number."""
    if field and field[0] == 0o200:
        return int.from_bytes(field[1:], "big")
    if field and field[0] == 0o377:
        return None  # negative base-256
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    if digits.translate(None, b"01234567"):
        return None
    return int(digits, 8)


def _checksum_ok(header: bytes) -> bool:
    stored = _tar_number(header[148:156])
    if stored is None:
        return False
    rest = header[:148] + header[156:]
    unsigned = sum(rest) + 8 * 32  # the checksum field itself counts as spaces
    if stored == unsigned:
        return True
    # Some old tars summed signed chars; tarfile accepts both.
    high = len(rest) - len(rest.translate(None, _HIGH_BYTES))
    return stored == unsigned - 256 * high


def _is_tar_header(header: bytes) -> bool:
    return header[257:262] == b"ustar" and _checksum_ok(header)


def _parse_header(header: bytes) -> tuple[int, int] | None:
    """(typeflag byte, size field) of a valid ustar/gnu header block, else None."""
    if not _is_tar_header(header):
        return None
    size = _tar_number(header[124:136])
    if size is None:
        return None
    return header[156], size


def _pax_size(data: bytes) -> int | None:
    """The ``size`` record of pax extended header data; None if absent, -1 if the data is malformed."""
    size: int | None = None
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == 0:  # some writers pad with NULs
            break
        sp = data.find(b" ", pos, pos + 20)
        if sp <= pos or not data[pos:sp].isdigit():
            return -1
        length = int(data[pos:sp])
        if length <= sp - pos or pos + length > n:
            return -1
        key, eq, value = data[sp + 1 : pos + length].rstrip(b"\n").partition(b"=")
        if not eq:
            return -1
        if key == b"size":
            # The digit cap also keeps int() clear of its limit on huge decimal strings.
            if not value.isdigit() or len(value) > 30:
                return -1
            size = int(value)
        pos += length
    return size


def _database_page_size(head: bytes) -> int:
    """Page size of the SQLite or Jet/ACE database starting with these bytes, else 0."""
    if head.startswith(_SQLITE_MAGIC) and len(head) >= 18:
        page_size = int.from_bytes(head[16:18], "big")
        if page_size == 1:
            page_size = 65536
        if 512 <= page_size <= 65536 and page_size & (page_size - 1) == 0:
            return page_size
        return 0
    if len(head) > _JET_VERSION_OFFSET and head.startswith(_JET_MAGICS):
        # Jet 3 (Access 97) uses 2 KiB pages; Jet 4 and every ACE version 4 KiB.
        return 2048 if head[_JET_VERSION_OFFSET] == 0 else 4096
    return 0


# -- conveniences ----------------------------------------------------------------------------------


def chunk_bytes(data: bytes, params: ChunkerParams = DEFAULT_PARAMS) -> list[bytes]:
    """Chunk a whole in-memory stream."""
    chunker = ArchiveChunker(params)
    return chunker.feed(data) + chunker.finish()


def iter_file_chunks(
    path: str | os.PathLike[str], params: ChunkerParams = DEFAULT_PARAMS, read_size: int = 1 << 20
) -> Iterator[bytes]:
    """Chunk a file, reading it read_size bytes at a time."""
    chunker = ArchiveChunker(params)
    buf = bytearray(read_size)
    with open(path, "rb") as f, memoryview(buf) as view:
        while n := f.readinto(buf):
            yield from chunker.feed(view[:n])
    yield from chunker.finish()
