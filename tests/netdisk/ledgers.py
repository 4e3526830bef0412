"""Realistic ledger years for tests and benchmarks: a SQLite database of journal entries in a deterministic tar."""

from __future__ import annotations

import io
import random
import sqlite3
import tarfile
from pathlib import Path


def make_ledger_db(path: Path, rows: int, *, seed: int = 1) -> Path:
    """A SQLite ledger with `rows` journal entries (凭证), page size 4096."""
    rng = random.Random(seed)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA page_size=4096")
    connection.execute(
        "CREATE TABLE voucher (id INTEGER PRIMARY KEY, period INTEGER, account TEXT, summary TEXT, debit REAL, credit REAL)"
    )
    summaries = ["收到货款", "支付房租", "计提工资", "购买办公用品", "银行手续费", "结转成本"]
    connection.executemany(
        "INSERT INTO voucher VALUES (?, ?, ?, ?, ?, ?)",
        ((i, rng.randint(1, 12), f"{rng.randint(1001, 6999)}", rng.choice(summaries) + "-" + str(rng.random()),
          round(rng.random() * 10000, 2), round(rng.random() * 10000, 2)) for i in range(rows)),
    )
    connection.commit()
    connection.close()
    return path


def edit_rows(path: Path, row_ids: list[int]) -> None:
    """A day of bookkeeping: change some entries in place."""
    connection = sqlite3.connect(path)
    connection.executemany("UPDATE voucher SET debit = debit + 1, summary = summary || '改' WHERE id = ?",
                           [(i,) for i in row_ids])
    connection.commit()
    connection.close()


def tar_year(files: dict[str, Path]) -> bytes:
    """One year as a deterministic tar: sorted names, normalised metadata."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            data = files[name].read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_year_archive(directory: Path, rows: int = 2000, seed: int = 1) -> bytes:
    """A year archive holding one SQLite ledger database and a small settings file."""
    db = make_ledger_db(directory / f"ledger-{seed}.db", rows, seed=seed)
    settings = directory / "settings.ini"
    settings.write_text("[ledger]\nname=123\n", encoding="utf-8")
    return tar_year({"data.db": db, "settings.ini": settings})


async def body_of(content: bytes, block: int = 256 * 1024):
    """An upload body: `content` in blocks, as a request body arrives."""
    for start in range(0, len(content), block):
        yield content[start : start + block]
