"""A day of bookkeeping on a ~100 MB SQLite year: bytes on the wire for eacct beside rsync and zstd --patch-from.

    .venv/bin/python -m bench.delta [--size 100] [--new-vouchers 40] [--edits 130] [--keep]

Starts `eacct serve` as a subprocess (SQLite + local blobs in a temp dir), puts the cached ledger (bench/_data)
in a desktop_sync ledger folder, and uploads it with `DesktopSync.upload_year` from PC A; PC B downloads it.
Then a day of bookkeeping on PC A: `--new-vouchers` new vouchers with their entries (INSERTs) and `--edits`
edited entries (UPDATEs). PC A uploads again (a delta: the changed chunks only); PC B downloads the new
version with --overwrite (the manifest, then only the chunks its copy lacks). Both year archives (before and after, packed exactly as desktop_sync packs them)
are then given to `rsync --stats --no-whole-file` (over a pipe-"remote" so the delta algorithm and -z really
run), with and without `-z`, and to `zstd --patch-from`. Printed per direction: eacct's bytes on the wire
(request bodies sent and answer bodies received, counted at the client), the changed 4 KiB pages, the full
size, rsync, rsync -z and the zstd patch. Needs Debian `rsync` and `zstd` on PATH.
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
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench._data import PAGE_SIZE, _voucher_rows, edit_rows, ledger_db, settings_file, voucher_count
from bench._harness import Desktop, MiB, Server, client_session, exit_on_sigterm
from eacct.desktop_sync import DesktopSync, EacctClient, LedgerFolder, LocalLedger

YEAR = 2018


def changed_pages(before: Path, after: Path) -> int:
    """4 KiB pages that differ (or exist on one side only)."""
    count = 0
    with open(before, "rb") as a, open(after, "rb") as b:
        while True:
            x, y = a.read(PAGE_SIZE), b.read(PAGE_SIZE)
            if not x and not y:
                return count
            count += x != y


def a_day_of_bookkeeping(db: Path, new_vouchers: int, edits: int, seed: int = 20181231) -> None:
    """Tens of new vouchers, each with 2–4 entries, plus edits to earlier entries scattered over the year."""
    rng = random.Random(seed)
    first = voucher_count(db)
    connection = sqlite3.connect(db)
    try:
        with connection:
            rows = list(_voucher_rows(rng, first, new_vouchers * 3))
            connection.executemany("INSERT INTO voucher VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            connection.executemany("UPDATE account SET balance = balance + ? WHERE code = ?",
                                   [(row[5] - row[6], row[3]) for row in rows])
    finally:
        connection.close()
    edit_rows(db, sorted(rng.sample(range(first), edits)), day=1)


def rsync_wire_bytes(before: Path, after: Path, work: Path, compress: bool) -> int:
    """Bytes rsync moves (sent + received) to turn `before` into `after`, through a pipe 'remote shell' so the
    rolling-checksum delta and -z run as they would over ssh."""
    rsh = work / "local-rsh"
    rsh.write_text('#!/bin/sh\nshift\nexec "$@"\n', encoding="utf-8")
    rsh.chmod(0o755)
    target = work / "rsync-dest" / "year.tar"
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(before, target)
    argv = ["rsync", "--stats", "--no-whole-file", "-I", "-e", str(rsh), *(["-z"] if compress else []),
            str(after), f"localhost:{target}"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    sent = int(re.search(r"Total bytes sent: ([\d,.]+)", out).group(1).replace(",", "").replace(".", ""))
    received = int(re.search(r"Total bytes received: ([\d,.]+)", out).group(1).replace(",", "").replace(".", ""))
    if hashlib.sha256(target.read_bytes()).digest() != hashlib.sha256(after.read_bytes()).digest():
        raise RuntimeError("rsync did not reproduce the file")
    return sent + received


def zstd_patch_bytes(before: Path, after: Path, work: Path) -> int:
    """Size of `zstd --patch-from=before after` (the best a diff of this pair can do)."""
    patch = work / "year.patch.zst"
    size = max(before.stat().st_size, after.stat().st_size)
    subprocess.run(["zstd", "-q", "-f", "-19", "--long=31", f"--patch-from={before}", str(after), "-o", str(patch),
                    f"--memory={max(size * 2, 128 * MiB)}"], check=True, capture_output=True)
    return patch.stat().st_size


def human(n: int) -> str:
    return f"{n / 1024:,.0f} KiB" if n < 10 * MiB else f"{n / MiB:,.1f} MiB"


async def run(args: argparse.Namespace) -> None:
    for tool in ("rsync", "zstd"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (apt-get install -y rsync zstd)")
    work = Path(tempfile.mkdtemp(prefix="eacct-bench-delta-"))
    try:
        source = ledger_db(args.size)
        ledger_id = str(uuid.uuid4())
        pcs = []
        for name in ("a", "b"):
            pcs.append(LedgerFolder(work / name))
        pcs[0].save(LocalLedger(ledger_id=ledger_id, name="压测账套"))
        year_dir = pcs[0].year_dir(ledger_id, YEAR)
        year_dir.mkdir(parents=True)
        shutil.copyfile(source, year_dir / "data.db")
        settings_file(year_dir)
        with Server(keep=args.keep) as server:
            await server.start()
            async with client_session() as http:
                member = await Desktop(http, server.base, "bench_delta").setup()
            clients = []
            for _ in pcs:
                client = EacctClient(server.base)
                await client.log_in(member.account, member.password)
                await client.unlock(member.netdisk_password)
                clients.append(client)
            a, b = (DesktopSync(client, folder) for client, folder in zip(clients, pcs))
            first = await a.upload_year(ledger_id, YEAR, remark="day 0")
            await b.download_year(ledger_id, YEAR)
            pcs[0].pack(ledger_id, YEAR, work / "before.tar")
            shutil.copyfile(year_dir / "data.db", work / "before.db")

            a_day_of_bookkeeping(year_dir / "data.db", args.new_vouchers, args.edits)
            pages = changed_pages(work / "before.db", year_dir / "data.db")
            up = await a.upload_year(ledger_id, YEAR, remark="day 1")
            down = await b.download_year(ledger_id, YEAR, overwrite=True)
            pcs[0].pack(ledger_id, YEAR, work / "after.tar")
            for client in clients:
                await client.close()
        full = (work / "after.tar").stat().st_size
        rsync_plain = rsync_wire_bytes(work / "before.tar", work / "after.tar", work, compress=False)
        rsync_z = rsync_wire_bytes(work / "before.tar", work / "after.tar", work, compress=True)
        patch = zstd_patch_bytes(work / "before.tar", work / "after.tar", work)
        print(f"year {human(first.size)}; a day: {args.new_vouchers} new vouchers ({args.new_vouchers * 3} entries), "
              f"{args.edits} edited entries; changed pages {pages} ({human(pages * PAGE_SIZE)})")
        header = f"{'':10}{'eacct':>12}{'changed':>12}{'full':>12}{'rsync':>12}{'rsync -z':>12}{'zstd patch':>12}"
        print(header)
        for direction, eacct_bytes in (("upload", up.sent_bytes), ("download", down.received_bytes)):
            print(f"{direction:10}{human(eacct_bytes):>12}{human(pages * PAGE_SIZE):>12}{human(full):>12}"
                  f"{human(rsync_plain):>12}{human(rsync_z):>12}{human(patch):>12}")
        print("eacct download: the manifest and the chunks PC B's copy lacks (chunk-level download)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100, help="MiB of SQLite ledger")
    parser.add_argument("--new-vouchers", type=int, default=40)
    parser.add_argument("--edits", type=int, default=130)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
