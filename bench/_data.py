"""Year archives for the benchmarks, built streaming to disk and cached in bench/out/ by size.

A year is what desktop_sync uploads: a deterministic tar (sorted names, PAX, normalised metadata, like
tests/netdisk/ledgers.py's `tar_year`, but copied from disk instead of held in memory) of the year's files.
The ledger database is a SQLite file of journal entries (凭证) with page size 4096 and an index, big enough
rows that 100 MiB take a few seconds to write. Bigger archives are mixed: a SQLite ledger plus a
pseudo-random (incompressible) attachments file, the shape of a year that keeps scanned receipts.
"""

from __future__ import annotations

import os
import random
import sqlite3
import tarfile
import time
from pathlib import Path

from bench._harness import MiB, OUT

GENERATOR = "v1"  # bump when the content below changes, so cached archives are rebuilt
PAGE_SIZE = 4096
SUMMARIES = ["收到货款", "支付房租", "计提工资", "购买办公用品", "银行手续费", "结转成本", "报销差旅费", "预付货款",
             "收到投资款", "缴纳增值税", "计提折旧", "支付水电费", "销售商品", "采购原材料", "结转损益"]
PARTIES = ["杭州某某贸易有限公司", "上海某某科技有限公司", "张三", "李四", "王五", "中国工商银行", "国家税务总局杭州市税务局",
           "宁波某某物流有限公司", "北京某某咨询有限公司", "苏州某某制造有限公司"]
ROWS_PER_BATCH = 20_000


def _voucher_rows(rng: random.Random, first_id: int, count: int):
    for i in range(first_id, first_id + count):
        period = rng.randint(1, 12)
        summary = f"{rng.choice(SUMMARIES)}-{rng.choice(PARTIES)}-{rng.randint(1, 99999):05d}"
        # A memo of varying length: free text bookkeepers type, compressible like real ledgers.
        memo = "；".join(f"{rng.choice(SUMMARIES)}{rng.randint(1, 999)}号{rng.choice(PARTIES)}"
                        for _ in range(rng.randint(2, 8)))
        amount = round(rng.random() * 100000, 2)
        debit, credit = (amount, 0.0) if rng.random() < 0.5 else (0.0, amount)
        yield (i, period, f"记-{period:02d}-{i % 997:04d}", f"{rng.randint(1001, 6999)}", summary, debit, credit,
               memo, rng.choice(PARTIES), f"2018-{period:02d}-{rng.randint(1, 28):02d}")


def make_ledger_db(path: Path, target_bytes: int, seed: int = 1) -> Path:
    """A SQLite ledger of about target_bytes (page size 4096), written in a few big transactions."""
    rng = random.Random(seed)
    path.unlink(missing_ok=True)
    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA page_size={PAGE_SIZE}")
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute(
            "CREATE TABLE voucher (id INTEGER PRIMARY KEY, period INTEGER, number TEXT, account TEXT, summary TEXT, "
            "debit REAL, credit REAL, memo TEXT, party TEXT, entry_date TEXT)"
        )
        connection.execute("CREATE TABLE account (code TEXT PRIMARY KEY, name TEXT, balance REAL)")
        connection.executemany("INSERT INTO account VALUES (?, ?, ?)",
                               ((str(code), f"科目{code}", 0.0) for code in range(1001, 7000)))
        # Leave room for the index, created at the end (about a tenth of the table).
        table_target = int(target_bytes * 0.9)
        rows = 0
        while True:
            with connection:
                connection.executemany("INSERT INTO voucher VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                       _voucher_rows(rng, rows, ROWS_PER_BATCH))
            rows += ROWS_PER_BATCH
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            if pages * PAGE_SIZE >= table_target:
                break
        connection.execute("CREATE INDEX voucher_period_account ON voucher (period, account)")
        connection.commit()
    finally:
        connection.close()
    return path


def voucher_count(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT max(id) + 1 FROM voucher").fetchone()[0]
    finally:
        connection.close()


def edit_rows(path: Path, row_ids: list[int], day: int) -> None:
    """A day of bookkeeping: change some entries in place (tests/netdisk/ledgers.py's edit_rows, dated)."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.executemany("UPDATE voucher SET debit = debit + 1, summary = summary || ? WHERE id = ?",
                                   [(f"改{day}", i) for i in row_ids])
    finally:
        connection.close()


def write_random_file(path: Path, size: int, seed: int = 7) -> Path:
    """Pseudo-random bytes (incompressible, like scanned receipts), deterministic by seed, written in 4 MiB blocks."""
    rng = random.Random(seed)
    with open(path, "wb") as handle:
        left = size
        while left:
            n = min(left, 4 * MiB)
            handle.write(rng.randbytes(n))
            left -= n
    return path


def tar_year_to(dest: Path, files: dict[str, Path]) -> Path:
    """One year as a deterministic tar, written straight to `dest` (never held in memory)."""
    partial = dest.with_name(dest.name + ".partial")
    with open(partial, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT,
                                                  copybufsize=4 * MiB) as archive:
        for name in sorted(files):
            source = files[name]
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = (
                source.stat().st_size, 0, 0o644, 0, 0, "", "")
            with open(source, "rb") as handle:
                archive.addfile(info, handle)
    os.replace(partial, dest)
    return dest


def settings_file(directory: Path) -> Path:
    path = directory / "settings.ini"
    path.write_text("[ledger]\nname=压测账套\nyear=2018\n", encoding="utf-8")
    return path


def ledger_db(size_mib: int, seed: int = 1) -> Path:
    """The cached SQLite ledger of about size_mib MiB (built on first use)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"ledger-{size_mib}MiB-s{seed}-{GENERATOR}.db"
    if not path.exists():
        started = time.perf_counter()
        partial = path.with_name(path.name + ".partial")
        make_ledger_db(partial, size_mib * MiB, seed)
        os.replace(partial, path)
        print(f"  built {path.name}: {path.stat().st_size / MiB:.1f} MiB in {time.perf_counter() - started:.1f}s")
    return path


# Up to this size a year is just a ledger database; above it, a ledger of this size plus attachments.
PURE_LEDGER_MIB = 256


def year_archive(size_mib: int) -> Path:
    """The cached year tar of about size_mib MiB: a SQLite ledger, plus random attachments when big."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"year-{size_mib}MiB-{GENERATOR}.tar"
    if path.exists():
        return path
    started = time.perf_counter()
    work = OUT / f"build-{size_mib}"
    work.mkdir(exist_ok=True)
    try:
        files = {"settings.ini": settings_file(work)}
        if size_mib <= PURE_LEDGER_MIB:
            files["data.db"] = ledger_db(size_mib)
        else:
            files["data.db"] = ledger_db(PURE_LEDGER_MIB)
            rest = size_mib * MiB - files["data.db"].stat().st_size - 8192
            files["attachments.bin"] = write_random_file(work / "attachments.bin", max(rest, 0))
        tar_year_to(path, files)
    finally:
        for child in work.iterdir():
            child.unlink()
        work.rmdir()
    print(f"  built {path.name}: {path.stat().st_size / MiB:.1f} MiB in {time.perf_counter() - started:.1f}s")
    return path
