"""Tests for eacct.chunks.chunker: determinism, lossless round trip, format-aware cut placement."""

from __future__ import annotations

import hashlib
import io
import random
import sqlite3
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastcdc import fastcdc

from eacct.chunks.chunker import (
    DEFAULT_PARAMS,
    ArchiveChunker,
    ChunkerParams,
    chunk_bytes,
    iter_file_chunks,
)

P = DEFAULT_PARAMS
PAGE = 4096
GROUP = P.page_group(PAGE)
LEDGER_ROWS = 175_000  # ~20 MB

# -- builders ----------------------------------------------------------------------------------------


def make_tar(
    files: dict[str, bytes],
    fmt: int = tarfile.PAX_FORMAT,
    extra: Callable[[tarfile.TarFile], None] | None = None,
) -> bytes:
    """A deterministic tar, normalised the way the client builds year archives."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        if extra is not None:
            extra(tar)
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return buf.getvalue()


def words_text(rnd: random.Random, size: int) -> bytes:
    vocab = ["debit", "credit", "invoice", "VAT", "ledger", "cash", "bank", "supplier", "client",
             "rent", "salary", "2023", "EUR", "refund", "note", "payment", "receipt", "account"]
    lines: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rnd.choice(vocab) for _ in range(rnd.randint(3, 14)))
        line += f" {rnd.randint(0, 99999)}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def make_sqlite(path: Path, rows: int, page_size: int = PAGE, seed: int = 0) -> None:
    rnd = random.Random(seed)
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA page_size = {page_size}")
    con.execute(
        "CREATE TABLE journal"
        " (id INTEGER PRIMARY KEY, day TEXT, account TEXT, memo TEXT, amount_cents INTEGER)"
    )
    con.executemany(
        "INSERT INTO journal VALUES (?, ?, ?, ?, ?)",
        (
            (
                i,
                f"2023-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
                f"{rnd.randint(400000, 799999)}",
                words_text(rnd, 60).decode()[:90],
                rnd.randint(-10**7, 10**7),
            )
            for i in range(1, rows + 1)
        ),
    )
    con.commit()
    con.close()


def edit_rows(path: Path, ids: list[int]) -> None:
    """Rewrite the memo of the given rows, keeping its length (as a typo fix would)."""
    con = sqlite3.connect(path)
    for row_id in ids:
        (memo,) = con.execute("SELECT memo FROM journal WHERE id = ?", (row_id,)).fetchone()
        con.execute("UPDATE journal SET memo = ? WHERE id = ?", (memo[::-1], row_id))
    con.commit()
    con.close()


def changed_pages(a: bytes, b: bytes, page: int = PAGE) -> int:
    assert len(a) == len(b)
    return sum(a[i : i + page] != b[i : i + page] for i in range(0, len(a), page))


def feed_sliced(data: bytes, sizes: Iterator[int], params: ChunkerParams = P, *, views: bool = False) -> list[bytes]:
    chunker = ArchiveChunker(params, views=views)
    out: list[bytes] = []
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        n = next(sizes)
        out += chunker.feed(view[pos : pos + n])
        pos += n
    return out + chunker.finish()


def const(n: int) -> Iterator[int]:
    while True:
        yield n


def random_sizes(seed: int, hi: int) -> Iterator[int]:
    rnd = random.Random(seed)
    while True:
        yield rnd.choice((0, 1, 2, 511, 512, 513)) if rnd.random() < 0.2 else rnd.randint(1, hi)


def digests(chunks: list[bytes]) -> set[str]:
    return {hashlib.sha256(c).hexdigest() for c in chunks}


def new_chunks(old: list[bytes], new: list[bytes]) -> list[bytes]:
    known = digests(old)
    return [c for c in new if hashlib.sha256(c).hexdigest() not in known]


def cdc_sizes(data: bytes) -> list[int]:
    """Chunk sizes FastCDC gives for the whole buffer at once."""
    return [c.length for c in fastcdc(data, P.cdc_min, P.cdc_avg, P.cdc_max)]


def cut_offsets(chunks: list[bytes]) -> list[int]:
    offs = [0]
    for c in chunks:
        offs.append(offs[-1] + len(c))
    return offs


def member_spans(archive: bytes) -> list[tuple[int, int, int, tarfile.TarInfo]]:
    """(header start, data start, data end, info) of every member."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return [(m.offset, m.offset_data, m.offset_data + m.size, m) for m in tar.getmembers()]


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("db") / "small.sqlite"
    make_sqlite(path, rows=1500, seed=1)
    return path.read_bytes()


@pytest.fixture(scope="module")
def ledger_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~20 MB ledger with 4 KiB pages."""
    path = tmp_path_factory.mktemp("ledger") / "2023.sqlite"
    make_sqlite(path, rows=LEDGER_ROWS, seed=2)
    assert 15e6 < path.stat().st_size < 30e6
    return path


@pytest.fixture(scope="module")
def inputs(small_db: bytes) -> dict[str, bytes]:
    """Streams covering every path of the chunker, each small enough to feed byte by byte."""
    rnd = random.Random(3)
    mixed = make_tar(
        {
            "2023/ledger.sqlite": small_db,
            "2023/notes.txt": words_text(rnd, 150_000),
            "2023/settings.ini": b"[company]\nname=Acme\n",
            "2023/empty": b"",
            "2023/" + "long-attachment-name-" * 8 + ".pdf": rnd.randbytes(40_000),
        }
    )
    gnu = make_tar(
        {"x" * 120 + ".bin": rnd.randbytes(30_000), "db": small_db[:65536]}, fmt=tarfile.GNU_FORMAT
    )
    header = make_tar({"a.bin": rnd.randbytes(100_000)})[:512]
    return {
        "tar": mixed,
        "gnu_tar": gnu,
        "sqlite": small_db,
        "random": rnd.randbytes(300_000),
        "empty": b"",
        "one_byte": b"\x00",
        "511_bytes": rnd.randbytes(511),
        "truncated_tar_mid_member": mixed[: len(mixed) // 2 + 123],
        "truncated_tar_mid_header": mixed[: member_spans(mixed)[2][0] + 300],
        "garbage_after_header": header + rnd.randbytes(250_000),
        "bad_checksum_mid_stream": corrupt(mixed, member_spans(mixed)[2][0] + 148, b"9"),
    }


def corrupt(data: bytes, offset: int, replacement: bytes) -> bytes:
    return data[:offset] + replacement + data[offset + len(replacement) :]


# -- determinism and round trip ------------------------------------------------------------------


def test_identical_input_gives_identical_cuts(inputs: dict[str, bytes]) -> None:
    for data in inputs.values():
        assert chunk_bytes(data) == chunk_bytes(bytes(data))


@pytest.mark.parametrize(
    "name",
    [
        "tar", "gnu_tar", "sqlite", "random",
        "truncated_tar_mid_member", "garbage_after_header", "bad_checksum_mid_stream",
    ],
)
def test_cuts_do_not_depend_on_how_input_is_sliced(inputs: dict[str, bytes], name: str) -> None:
    data = inputs[name]
    whole = chunk_bytes(data)
    for sizes in (const(1), const(7), const(512), random_sizes(11, 5000), random_sizes(12, 400_000)):
        assert feed_sliced(data, sizes) == whole


@pytest.mark.parametrize("name", ["tar", "sqlite", "random", "garbage_after_header", "bad_checksum_mid_stream"])
def test_chunks_as_views_are_the_same_cuts(inputs: dict[str, bytes], name: str) -> None:
    """The server cuts request bodies (immutable bytes) into views instead of copies: the cuts are the same."""
    data = inputs[name]
    whole = chunk_bytes(data)
    for sizes in (const(7), const(512), random_sizes(11, 5000), random_sizes(12, 400_000), const(1 << 20)):
        assert [bytes(c) for c in feed_sliced(data, sizes, views=True)] == whole


def test_chunks_as_views_share_the_fed_buffers(inputs: dict[str, bytes]) -> None:
    data = inputs["tar"] + inputs["sqlite"] + random.Random(9).randbytes(3_000_000)
    chunker = ArchiveChunker(views=True)
    blocks = [data[pos : pos + (1 << 20)] for pos in range(0, len(data), 1 << 20)]
    chunks = [c for block in blocks for c in chunker.feed(block)] + chunker.finish()
    assert b"".join(chunks) == data
    shared = sum(len(c) for c in chunks if isinstance(c, memoryview) and any(c.obj is b for b in blocks))
    # Only chunks cut from bytes carried across a block boundary (at most 2 * cdc_max per block) are copies.
    assert shared >= 0.6 * len(data)


@pytest.mark.parametrize(
    "name",
    [
        "tar", "gnu_tar", "sqlite", "random", "empty", "one_byte", "511_bytes",
        "truncated_tar_mid_member", "truncated_tar_mid_header",
        "garbage_after_header", "bad_checksum_mid_stream",
    ],
)
def test_chunks_concatenate_to_input(inputs: dict[str, bytes], name: str) -> None:
    data = inputs[name]
    chunks = chunk_bytes(data)
    assert b"".join(chunks) == data
    assert all(chunks) and all(len(c) <= P.max_chunk for c in chunks)
    assert b"".join(feed_sliced(data, random_sizes(5, 3000))) == data


def test_cdc_cuts_do_not_depend_on_buffer_size() -> None:
    data = random.Random(4).randbytes(3_000_000)
    one_shot = cdc_sizes(data)
    for size in (1000, 65536, P.cdc_max, 2 * P.cdc_max + 1, 1 << 20, len(data)):
        assert [len(c) for c in feed_sliced(data, const(size))] == one_shot


def test_iter_file_chunks_matches_chunk_bytes(inputs: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "year.tar"
    path.write_bytes(inputs["tar"])
    assert list(iter_file_chunks(path, read_size=777)) == chunk_bytes(inputs["tar"])


def test_malformed_streams_never_raise_and_stay_deterministic(inputs: dict[str, bytes]) -> None:
    base = inputs["tar"]
    headers = [start for start, *_ in member_spans(base)]
    rnd = random.Random(6)
    for _ in range(150):
        data = bytearray(base)
        kind = rnd.randrange(4)
        if kind == 0:  # flip bytes inside a header
            h = rnd.choice(headers)
            for _ in range(rnd.randint(1, 4)):
                data[h + rnd.randrange(512)] = rnd.randrange(256)
        elif kind == 1:  # garbage or huge size field, with its checksum fixed so it parses
            h = rnd.choice(headers)
            field = rnd.choice([b"\x80" + rnd.randbytes(11), b"77777777777\0", b"zz" * 6])
            data[h + 124 : h + 136] = field
            fix_checksum(data, h)
        elif kind == 2:  # truncated anywhere
            del data[rnd.randrange(len(data)) :]
        else:  # random bytes spliced in
            at = rnd.randrange(len(data))
            data[at:at] = rnd.randbytes(rnd.randint(1, 5000))
        blob = bytes(data)
        chunks = chunk_bytes(blob)
        assert b"".join(chunks) == blob
        assert all(len(c) <= P.max_chunk for c in chunks)
        assert feed_sliced(blob, random_sizes(rnd.randrange(1000), 20_000)) == chunks


def test_absurd_pax_size_record_does_not_raise() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 3
        info.pax_headers = {"size": "9" * 5000}  # beyond int()'s default digit limit
        tar.addfile(info, io.BytesIO(b"abc"))
    archive = buf.getvalue()
    assert b"".join(chunk_bytes(archive)) == archive
    assert feed_sliced(archive, const(100)) == chunk_bytes(archive)


def fix_checksum(data: bytearray, h: int) -> None:
    data[h + 148 : h + 156] = b" " * 8
    data[h + 148 : h + 156] = b"%06o\0 " % sum(data[h : h + 512])


def test_buffer_stays_bounded_whatever_is_fed(inputs: dict[str, bytes]) -> None:
    bound = max(2 * P.cdc_max, P.max_chunk + 512)
    rnd = random.Random(7)
    data = inputs["tar"] + rnd.randbytes(3_000_000)
    chunker = ArchiveChunker()
    for pos in range(0, len(data), 1 << 20):
        chunker.feed(data[pos : pos + (1 << 20)])
        assert len(chunker._pending) <= bound


# -- SQLite -------------------------------------------------------------------------------------------


def test_sqlite_one_row_edit_changes_at_most_3_chunks(ledger_db: Path, tmp_path: Path) -> None:
    before = make_tar({"2023/ledger.sqlite": ledger_db.read_bytes(), "2023/settings.ini": b"x=1\n"})
    edited = tmp_path / "ledger.sqlite"
    edited.write_bytes(ledger_db.read_bytes())
    edit_rows(edited, [61_234])
    after = make_tar({"2023/ledger.sqlite": edited.read_bytes(), "2023/settings.ini": b"x=1\n"})
    old, new = chunk_bytes(before), chunk_bytes(after)
    assert len(new_chunks(old, new)) <= 3
    assert b"".join(new) == after


def test_sqlite_scattered_edit_sends_at_most_twice_the_changed_pages(
    ledger_db: Path, tmp_path: Path
) -> None:
    original = ledger_db.read_bytes()
    edited = tmp_path / "ledger.sqlite"
    edited.write_bytes(original)
    edit_rows(edited, sorted(random.Random(8).sample(range(1, LEDGER_ROWS + 1), 130)))
    after_db = edited.read_bytes()
    pages = changed_pages(original, after_db)
    assert pages >= 100  # really scattered
    fresh = new_chunks(
        chunk_bytes(make_tar({"l.sqlite": original})), chunk_bytes(make_tar({"l.sqlite": after_db}))
    )
    sent = sum(map(len, fresh))
    print(f"\n130 scattered rows: {pages} changed pages, {len(fresh)} new chunks, {sent} bytes sent "
          f"= {sent / (pages * PAGE):.2f}x the changed pages")
    assert sent <= 2 * pages * PAGE


def test_sqlite_cuts_are_page_aligned(ledger_db: Path) -> None:
    archive = make_tar({"a.txt": b"hello\n" * 5000, "ledger.sqlite": ledger_db.read_bytes()})
    cuts = set(cut_offsets(chunk_bytes(archive)))
    (_, start, end, _), = [s for s in member_spans(archive) if s[3].name == "ledger.sqlite"]
    inside = sorted(c for c in cuts if start <= c <= end)
    assert inside[0] == start and inside[-1] == end
    assert all((c - start) % GROUP == 0 for c in inside)
    assert len(inside) == (end - start) // GROUP + 1  # every group boundary, nothing else


def test_non_tar_sqlite_stream_is_page_aligned(small_db: bytes) -> None:
    chunks = chunk_bytes(small_db)
    assert all(len(c) == GROUP for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= GROUP
    assert b"".join(chunks) == small_db


@pytest.mark.parametrize("page_size", [512, 65536])
def test_odd_sqlite_page_sizes(tmp_path: Path, page_size: int) -> None:
    path = tmp_path / "odd.sqlite"
    make_sqlite(path, rows=6000, page_size=page_size, seed=9)
    db = path.read_bytes()
    field = int.from_bytes(db[16:18], "big")
    assert field == (1 if page_size == 65536 else page_size)  # 65536 is stored as 1
    group = 8192 if page_size == 512 else 65536
    assert P.page_group(page_size) == group

    chunks = chunk_bytes(db)
    assert all(len(c) == group for c in chunks[:-1]) and len(chunks[-1]) <= group

    archive = make_tar({"odd.sqlite": db})
    (_, start, end, _), = member_spans(archive)
    inside = [c for c in cut_offsets(chunk_bytes(archive)) if start <= c <= end]
    assert inside == list(range(start, end, group)) + [end]


def test_sqlite_header_with_invalid_page_size_is_cut_by_cdc() -> None:
    data = b"SQLite format 3\x00" + (1000).to_bytes(2, "big") + random.Random(10).randbytes(400_000)
    assert [len(c) for c in chunk_bytes(data)] == cdc_sizes(data)


@pytest.mark.parametrize(
    ("magic", "version", "page"),
    [(b"Standard Jet DB", 0, 2048), (b"Standard Jet DB", 1, 4096), (b"Standard ACE DB", 3, 4096)],
)
def test_access_database_is_cut_at_page_groups(magic: bytes, version: int, page: int) -> None:
    head = b"\x00\x01\x00\x00" + magic + b"\x00"
    head += bytes([version]) + bytes(page - len(head) - 1)
    data = head + random.Random(version).randbytes(page * 50)
    archive = make_tar({"books.mdb": data})
    (_, start, end, _), = member_spans(archive)
    inside = [c for c in cut_offsets(chunk_bytes(archive)) if start <= c <= end]
    assert inside == list(range(start, end, 8192)) + [end]


# -- tar structure and CDC -----------------------------------------------------------------------------


def test_text_insertion_changes_at_most_3_chunks() -> None:
    rnd = random.Random(12)
    text = words_text(rnd, 2_000_000)
    middle = text.index(b"\n", len(text) // 2) + 1
    line = b"2023-06-30 correction: supplier invoice 4711 booked twice\n"
    edited = text[:middle] + line + text[middle:]
    other = {"receipts.csv": words_text(rnd, 300_000)}
    old = chunk_bytes(make_tar({"journal.txt": text, **other}))
    new = chunk_bytes(make_tar({"journal.txt": edited, **other}))
    assert len(new_chunks(old, new)) <= 3


def test_chunk_never_spans_two_tar_members(inputs: dict[str, bytes]) -> None:
    rnd = random.Random(13)
    files = {f"f{i:03d}": rnd.randbytes(rnd.choice([0, 1, 100, 511, 512, 513, 9000, 20_000, 70_000]))
             for i in range(60)}

    def extras(tar: tarfile.TarFile) -> None:
        for name in ("dir", "link"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE if name == "dir" else tarfile.SYMTYPE
            info.linkname = "f000"
            info.mtime = 0
            tar.addfile(info)

    archives = [make_tar(files, extra=extras), make_tar(files, fmt=tarfile.GNU_FORMAT)]
    for archive in archives + [inputs["tar"], inputs["gnu_tar"]]:
        spans = member_spans(archive)
        offs = cut_offsets(chunk_bytes(archive))
        for a, b in zip(offs, offs[1:]):
            touched = [i for i, (h, _, e, _) in enumerate(spans) if a < e and h < b]
            assert len(touched) <= 1, (a, b, touched)
        assert all(end in offs for _, _, end, info in spans if info.size)


def test_non_tar_random_falls_back_to_cdc(inputs: dict[str, bytes]) -> None:
    data = inputs["random"] + random.Random(14).randbytes(1_000_000)
    sizes = [len(c) for c in chunk_bytes(data)]
    assert all(P.cdc_min <= s <= P.cdc_max for s in sizes[:-1])
    assert sizes == cdc_sizes(data)  # streaming cuts are the one-shot FastCDC cuts


def test_tar_trailer_is_one_chunk(inputs: dict[str, bytes]) -> None:
    archive = inputs["tar"]
    last_end = member_spans(archive)[-1][2]
    chunks = chunk_bytes(archive)
    assert cut_offsets(chunks)[-2] == last_end  # padding + zero blocks + record padding
    assert chunks[-1].strip(b"\0") == b""


def test_small_member_is_one_chunk_with_its_header() -> None:
    archive = make_tar({"a.db": b"SQLite format 3\x00" + bytes(4096 - 16), "b.ini": b"k=v\n"})
    chunks = chunk_bytes(archive)
    spans = member_spans(archive)
    assert [len(c) for c in chunks[:2]] == [512 + 4096, 512 + 4]
    assert cut_offsets(chunks)[2] == spans[1][2]
