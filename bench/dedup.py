"""Thirty daily versions of a 100 MB SQLite year: what the server stores, against 1 MiB chunking baselines.

    .venv/bin/python -m bench.dedup [--size 100] [--days 30] [--rows-per-day 130] [--keep]

Starts `eacct serve` as a subprocess (SQLite + local blobs in a temp dir) with
EACCT_VERSIONS_KEPT_PER_YEAR=30 (the default keeps 10 per year, which would prune the early days), uploads
day 0, then for each further day edits ~130 scattered vouchers (UPDATEs, like tests/netdisk/ledgers.py's
edit_rows), re-tars the year and uploads it. Per day it prints the SQLite pages that changed (4 KiB,
compared page by page), the quota the upload added (`used_bytes` of GET /api/v1/netdisk), and, computed
locally on the same archives, the bytes of chunks never seen before for: eacct's format-aware chunker (what
a client that sends only missing chunks would send), FastCDC with 1 MiB average chunks (Seafile/restic
style: min 256 KiB, max 4 MiB) and fixed 1 MiB blocks. There is no client-side protocol yet: every upload
still sends the whole file over the wire.

Targets (DESIGN.md): a day's re-upload sends <= 2x the changed pages (<= 1 MiB); 30 daily versions fit in
<= 130 MB of quota.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make `bench` importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

import argparse
import asyncio
import hashlib
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from fastcdc import fastcdc

from bench._data import PAGE_SIZE, edit_rows, ledger_db, settings_file, tar_year_to, voucher_count
from bench._harness import Desktop, MiB, Server, client_session, exit_on_sigterm, sha256_file
from eacct.netdisk.chunker import iter_file_chunks

YEAR = 2018
KEPT = 30


def page_digests(path: Path) -> list[bytes]:
    digests = []
    with open(path, "rb") as handle:
        while page := handle.read(PAGE_SIZE):
            digests.append(hashlib.blake2b(page, digest_size=16).digest())
    return digests


def changed_pages(before: list[bytes], after: list[bytes]) -> int:
    common = sum(1 for a, b in zip(before, after) if a != b)
    return common + abs(len(after) - len(before))


class Baseline:
    """Chunks of every archive seen so far under one chunking; `new_bytes` = bytes of chunks not yet seen."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: set[bytes] = set()

    def chunks(self, path: Path):
        raise NotImplementedError

    def new_bytes(self, path: Path) -> tuple[int, int]:
        new = 0
        count = 0
        for piece in self.chunks(path):
            digest = hashlib.sha256(piece).digest()
            count += 1
            if digest not in self.seen:
                self.seen.add(digest)
                new += len(piece)
        return new, count


class FormatAware(Baseline):
    def chunks(self, path: Path):
        return iter_file_chunks(path)


class Cdc1MiB(Baseline):
    def chunks(self, path: Path):
        data = path.read_bytes()
        with memoryview(data) as view:
            for chunk in fastcdc(view, 256 * 1024, MiB, 4 * MiB, fat=False):
                yield bytes(view[chunk.offset : chunk.offset + chunk.length])


class Fixed1MiB(Baseline):
    def chunks(self, path: Path):
        with open(path, "rb") as handle:
            while block := handle.read(MiB):
                yield block


def kib(n: int) -> str:
    return f"{n / 1024:,.0f}"


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="eacct-bench-dedup-"))
    try:
        db = work / "data.db"
        shutil.copyfile(ledger_db(args.size), db)
        files = {"data.db": db, "settings.ini": settings_file(work)}
        rows = voucher_count(db)
        print(f"ledger: {db.stat().st_size / MiB:.1f} MiB SQLite, {rows:,} vouchers, page size {PAGE_SIZE}; "
              f"{args.days} daily versions, {args.rows_per_day} vouchers edited per day")
        print(f"server: EACCT_VERSIONS_KEPT_PER_YEAR={KEPT} for this run (default 10 would prune days 0..19)")
        baselines = [FormatAware("format-aware"), Cdc1MiB("FastCDC 1 MiB"), Fixed1MiB("fixed 1 MiB")]
        ledger_id = str(uuid.uuid4())
        totals = {"pages": 0, "server": 0, **{b.name: 0 for b in baselines}, "seconds": 0.0}
        with Server(extra_env={"EACCT_VERSIONS_KEPT_PER_YEAR": str(KEPT)}, keep=args.keep) as server:
            await server.start()
            async with client_session() as http:
                desktop = await Desktop(http, server.base).setup()
                header = (f"{'day':>3}  {'pages':>5}  {'pages KiB':>9}  {'quota +KiB':>10}  {'format-aware KiB':>16}  "
                          f"{'x pages':>7}  {'CDC 1MiB KiB':>12}  {'fixed 1MiB KiB':>14}  {'upload s':>8}  "
                          f"{'quota used MB':>13}")
                print()
                print(header)
                print("-" * len(header))
                before = page_digests(db)
                used = await desktop.used_bytes()
                rng = random.Random(2018)
                archive = work / "year.tar"
                for day in range(args.days):
                    pages = 0
                    if day:
                        edit_rows(db, rng.sample(range(rows), args.rows_per_day), day)
                        after = page_digests(db)
                        pages = changed_pages(before, after)
                        before = after
                    tar_year_to(archive, files)
                    new = [baseline.new_bytes(archive) for baseline in baselines]
                    sha = sha256_file(archive)
                    started = time.perf_counter()
                    await desktop.upload(ledger_id, YEAR, archive, sha, remark=f"第{day}天")
                    seconds = time.perf_counter() - started
                    now = await desktop.used_bytes()
                    delta, used = now - used, now
                    ratio = f"{new[0][0] / (pages * PAGE_SIZE):.2f}" if pages else "-"
                    print(f"{day:>3}  {pages:>5}  {kib(pages * PAGE_SIZE):>9}  {kib(delta):>10}  {kib(new[0][0]):>16}  "
                          f"{ratio:>7}  {kib(new[1][0]):>12}  {kib(new[2][0]):>14}  {seconds:>8.2f}  "
                          f"{used / MiB:>13.2f}")
                    if day:
                        totals["pages"] += pages
                        totals["server"] += delta
                        totals["seconds"] += seconds
                        for baseline, (n, _) in zip(baselines, new):
                            totals[baseline.name] += n
                    else:
                        first = (delta, [n for n, _ in new], seconds, archive.stat().st_size)
                        counts = [count for _, count in new]
                # Sanity: every version is kept and the latest comes back intact.
                status, body = await desktop._json("GET", f"/backups/{ledger_id}/years/{YEAR}", desktop.netdisk_token)
                kept = len(body["versions"]) if status == 200 else f"? ({status})"
                restored = await desktop.download(ledger_id, YEAR, work / "restored.tar")
                intact = restored.sha256 == sha
                stored = server.disk_bytes("blobs")
        days = args.days - 1
        page_bytes = totals["pages"] * PAGE_SIZE
        print()
        print(f"day 0 (first upload): quota +{first[0] / MiB:.1f} MiB in {first[2]:.1f}s; chunks per archive: "
              + ", ".join(f"{b.name} {c:,}" for b, c in zip(baselines, counts)))
        print(f"days 1..{days}, average per day: {totals['pages'] / days:.0f} changed pages "
              f"({page_bytes / days / 1024:,.0f} KiB); new bytes per day:")
        print(f"  server quota delta      {totals['server'] / days / 1024:>9,.0f} KiB")
        for baseline in baselines:
            n = totals[baseline.name] / days
            print(f"  {baseline.name:<22}  {n / 1024:>9,.0f} KiB  ({n / (page_bytes / days):.2f}x the changed pages)")
        print(f"  whole file (what the wire carries today, no client protocol yet): {first[3] / 1024:,.0f} KiB")
        print(f"  re-upload of a mostly known 100 MB year took {totals['seconds'] / days:.2f}s on average")
        print(f"after {args.days} versions: quota used {used / MiB:.2f} MiB; blobs on disk {stored / MiB:.1f} MiB "
              f"(zstd); versions kept: {kept}; latest restored intact: {intact}")
        fa = totals["format-aware"] / days
        allowed = 2 * page_bytes / days
        print()
        print("targets (DESIGN.md; MB = MiB as in the quota settings):")
        print(f"  day's re-upload <= 2x the changed pages: format-aware {fa / 1024:,.0f} KiB vs {allowed / 1024:,.0f} KiB "
              f"allowed -> {'ok' if fa <= allowed else 'MISSED'}; <= 1 MiB: {'ok' if fa <= MiB else 'MISSED'} "
              f"(the wire still carries the whole {first[3] / MiB:.0f} MiB: no client-side protocol yet)")
        print(f"  {args.days} versions <= 130 MB of quota: {used / MiB:.2f} MiB -> "
              f"{'ok' if used <= 130 * MiB else 'MISSED'} ({used / 1e6:.1f} decimal MB)")
        return 0 if intact else 1
    finally:
        if args.keep:
            print(f"  kept work dir {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100, help="ledger database size in MiB (default 100)")
    parser.add_argument("--days", type=int, default=30, help="versions to upload, day 0 included (default 30)")
    parser.add_argument("--rows-per-day", type=int, default=130, help="vouchers edited per day (default 130)")
    parser.add_argument("--keep", action="store_true", help="keep the server's and the work temp dirs")
    args = parser.parse_args(argv)
    if args.days < 2 or args.days > KEPT:
        parser.error(f"--days must be 2..{KEPT}")
    return asyncio.run(run(args))


if __name__ == "__main__":
    exit_on_sigterm()
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
