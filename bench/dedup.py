"""Thirty daily versions of a 100 MB SQLite year through the delta upload protocol: bytes sent, quota, baselines.

    .venv/bin/python -m bench.dedup [--size 100] [--days 30] [--rows-per-day 130] [--keep]

Starts `eacct serve` as a subprocess (SQLite + local blobs in a temp dir) with
EACCT_VERSIONS_KEPT_PER_YEAR=30 (the default keeps 10 per year, which would prune the early days) and puts
the ledger in a desktop_sync ledger folder (`<root>/<ledger_id>/2018/data.db` + `settings.ini`). Every
day's upload is the desktop client's: `DesktopSync.upload_year` (pack the year, hash it, chunk it, ask
`…/chunks/missing`, then send a delta body with only the missing chunks when that is smaller than the
archive, else the whole archive), on an `EacctClient` whose transport is wrapped to count the request body
bytes it sends (JSON bodies as aiohttp serialises them, streamed bodies as they are read) and to time each
request. Day 0 uploads the year; each further day edits ~130 scattered vouchers (UPDATEs, like
tests/netdisk/ledgers.py's edit_rows) and uploads again.

Per day it prints the SQLite pages that changed (4 KiB, compared page by page), the bytes actually sent
(the chunk query + the upload), the quota the upload added (`used_bytes` of GET /api/v1/netdisk), the upload
time (upload_year end to end, and the part on the wire), and, computed locally on the same archive (packed
once more by `LedgerFolder.pack`, checked byte-identical through its sha256), the bytes of chunks never
seen before for: eacct's format-aware chunker, FastCDC with 1 MiB average chunks (Seafile/restic style:
min 256 KiB, max 4 MiB) and fixed 1 MiB blocks.

Targets (DESIGN.md): a day's re-upload sends <= 2x the changed pages (<= 1 MiB), judged on the bytes sent;
30 daily versions fit in <= 130 MB of quota.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make `bench` importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

import argparse
import asyncio
import dataclasses
import hashlib
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from fastcdc import fastcdc

from bench._data import PAGE_SIZE, edit_rows, ledger_db, settings_file, voucher_count
from bench._harness import Desktop, MiB, Server, client_session, exit_on_sigterm, sha256_file
from eacct.desktop_sync import AiohttpTransport, DesktopSync, EacctClient, LedgerFolder, LocalLedger
from eacct.chunks import delta as delta_format
from eacct.chunks.chunker import iter_file_chunks

YEAR = 2018
KEPT = 30
LEDGER_NAME = "压测账套"


def page_digests(path: Path) -> list[bytes]:
    digests = []
    with open(path, "rb") as handle:
        while page := handle.read(PAGE_SIZE):
            digests.append(hashlib.blake2b(page, digest_size=16).digest())
    return digests


def changed_pages(before: list[bytes], after: list[bytes]) -> int:
    common = sum(1 for a, b in zip(before, after) if a != b)
    return common + abs(len(after) - len(before))


# --------------------------------------------------------------------------------------- the wire


@dataclasses.dataclass
class Sent:
    kind: str  # "query" (chunks/missing), "delta" or "whole" (an upload), "other"
    body_bytes: int
    seconds: float
    status: int = 0


class CountingTransport:
    """A Transport around another: records every request's body bytes (JSON as aiohttp serialises it,
    `json.dumps(...).encode()`; streamed bodies counted as the transport reads them) and its seconds."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.sent: list[Sent] = []

    @staticmethod
    def kind(request) -> str:
        if request.url.endswith("/chunks/missing"):
            return "query"
        if request.method == "POST" and request.url.endswith("/versions"):
            return "delta" if request.headers.get("Content-Type") == delta_format.MEDIA_TYPE else "whole"
        return "other"

    async def send(self, request, receive):
        record = Sent(self.kind(request), 0, 0.0)
        if request.stream is not None:
            make_blocks = request.stream

            def counted():
                for block in make_blocks():
                    record.body_bytes += len(block)
                    yield block

            request = dataclasses.replace(request, stream=counted)
        elif request.content is not None:
            record.body_bytes = len(request.content)

        async def receive_counted(response):
            record.status = response.status
            return await receive(response)

        started = time.perf_counter()
        try:
            return await self.inner.send(request, receive_counted)
        finally:
            record.seconds = time.perf_counter() - started
            if request.stream is not None and record.status < 400 and record.body_bytes != request.size:
                raise RuntimeError(f"streamed {record.body_bytes} bytes, announced {request.size}")
            self.sent.append(record)

    def take(self) -> list[Sent]:
        sent, self.sent = self.sent, []
        return sent

    async def close(self) -> None:
        await self.inner.close()


# -------------------------------------------------------------------------------------- baselines


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


def kib(n: float) -> str:
    return f"{n / 1024:,.0f}"


@dataclasses.dataclass
class Day:
    day: int
    pages: int
    query: int  # body bytes of the chunk query (chunks/missing)
    upload: int  # body bytes of the upload (delta or whole)
    other: int  # body bytes of anything else upload_year sent (GET /me, the path lookup: none)
    how: str  # "delta" or "whole"
    quota: int
    new: list[int]  # new bytes per baseline
    seconds: float  # upload_year end to end
    wire: float  # seconds inside the transport (the query + the upload + lookups)
    query_s: float  # of which the chunk query
    upload_s: float  # of which the upload

    @property
    def sent(self) -> int:
        return self.query + self.upload + self.other


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="eacct-bench-dedup-"))
    try:
        folder = LedgerFolder(work / "ledgers")
        ledger_id = str(uuid.uuid4())
        folder.save(LocalLedger(ledger_id=ledger_id, name=LEDGER_NAME))
        year_dir = folder.year_dir(ledger_id, YEAR)
        year_dir.mkdir(parents=True)
        db = year_dir / "data.db"
        shutil.copyfile(ledger_db(args.size), db)
        settings_file(year_dir)
        rows = voucher_count(db)
        print(f"ledger: {db.stat().st_size / MiB:.1f} MiB SQLite, {rows:,} vouchers, page size {PAGE_SIZE}; "
              f"{args.days} daily versions, {args.rows_per_day} vouchers edited per day")
        print(f"server: EACCT_VERSIONS_KEPT_PER_YEAR={KEPT} for this run (default 10 would prune days 0..19)")
        print("client: eacct.desktop_sync DesktopSync.upload_year (delta protocol when smaller), bytes counted "
              "at the transport")
        baselines = [FormatAware("format-aware"), Cdc1MiB("FastCDC 1 MiB"), Fixed1MiB("fixed 1 MiB")]
        days: list[Day] = []
        identical = True
        archive = work / "year.tar"
        with Server(extra_env={"EACCT_VERSIONS_KEPT_PER_YEAR": str(KEPT)}, keep=args.keep) as server:
            await server.start()
            async with client_session() as http:
                desktop = await Desktop(http, server.base).setup()
                transport = CountingTransport(AiohttpTransport())
                async with EacctClient(server.base, transport=transport, client_version="eacct-bench") as client:
                    await client.log_in(desktop.account, desktop.password)
                    await client.unlock(desktop.netdisk_password)
                    sync = DesktopSync(client, folder)
                    await sync.me()  # fetched once, before the first upload's count
                    transport.take()
                    header = (f"{'day':>3}  {'pages':>5}  {'pages KiB':>9}  {'sent KiB':>8}  {'query KiB':>9}  "
                              f"{'upload KiB':>10}  {'via':>5}  {'x pages':>7}  {'quota +KiB':>10}  "
                              f"{'format-aware KiB':>16}  {'CDC 1MiB KiB':>12}  {'fixed 1MiB KiB':>14}  "
                              f"{'upload s':>8}  {'wire s':>6}  {'quota used MB':>13}")
                    print()
                    print(header)
                    print("-" * len(header))
                    before = page_digests(db)
                    used = await desktop.used_bytes()
                    rng = random.Random(2018)
                    for day in range(args.days):
                        pages = 0
                        if day:
                            edit_rows(db, rng.sample(range(rows), args.rows_per_day), day)
                            after = page_digests(db)
                            pages = changed_pages(before, after)
                            before = after
                        # The archive upload_year will build (deterministic), for the local baselines.
                        folder.pack(ledger_id, YEAR, archive)
                        new = [baseline.new_bytes(archive)[0] for baseline in baselines]
                        if day == 0:
                            counts = [sum(1 for _ in baseline.chunks(archive)) for baseline in baselines]
                            archive_size = archive.stat().st_size
                        sha = sha256_file(archive)
                        started = time.perf_counter()
                        done = await sync.upload_year(ledger_id, YEAR, remark=f"第{day}天")
                        seconds = time.perf_counter() - started
                        identical = identical and done.version["sha256"] == sha
                        sent = transport.take()
                        uploads = [s for s in sent if s.kind in ("delta", "whole")]
                        now = await desktop.used_bytes()
                        quota, used = now - used, now
                        record = Day(
                            day, pages,
                            query=sum(s.body_bytes for s in sent if s.kind == "query"),
                            upload=sum(s.body_bytes for s in uploads),
                            other=sum(s.body_bytes for s in sent if s.kind == "other"),
                            how="+".join(s.kind for s in uploads),
                            quota=quota, new=new, seconds=seconds, wire=sum(s.seconds for s in sent),
                            query_s=sum(s.seconds for s in sent if s.kind == "query"),
                            upload_s=sum(s.seconds for s in uploads))
                        days.append(record)
                        ratio = f"{record.sent / (pages * PAGE_SIZE):.2f}" if pages else "-"
                        print(f"{day:>3}  {pages:>5}  {kib(pages * PAGE_SIZE):>9}  {kib(record.sent):>8}  "
                              f"{kib(record.query):>9}  {kib(record.upload):>10}  {record.how:>5}  {ratio:>7}  "
                              f"{kib(quota):>10}  {kib(new[0]):>16}  {kib(new[1]):>12}  {kib(new[2]):>14}  "
                              f"{seconds:>8.2f}  {record.wire:>6.2f}  {used / MiB:>13.2f}")
                    # Sanity: every version is kept and the latest comes back intact (client.download checks
                    # the sha256 the server announces; compare it with the last archive's too).
                    listed = await client._call("GET", f"/backups/{ledger_id}/years/{YEAR}", netdisk=True)
                    kept = len(listed["versions"])
                    got = await client.download("backups", ledger_id, YEAR, "latest", work / "restored.tar")
                    intact = got["sha256"] == sha == sha256_file(work / "restored.tar")
                    stored = server.disk_bytes("blobs")
        first, rest = days[0], days[1:]
        n = len(rest)
        page_bytes = sum(d.pages for d in rest) * PAGE_SIZE
        sent = sum(d.sent for d in rest)
        print()
        print(f"day 0 (first upload, {first.how}): sent {first.sent / MiB:.1f} MiB (query {kib(first.query)} KiB) "
              f"of a {archive_size / MiB:.1f} MiB archive; quota +{first.quota / MiB:.1f} MiB; "
              f"{first.seconds:.1f}s ({first.wire:.1f}s on the wire); chunks per archive: "
              + ", ".join(f"{b.name} {c:,}" for b, c in zip(baselines, counts)))
        print(f"days 1..{n}, average per day: {page_bytes / PAGE_SIZE / n:.0f} changed pages "
              f"({page_bytes / n / 1024:,.0f} KiB); uploads via {', '.join(sorted({d.how for d in rest}))}")
        print(f"  bytes sent (query + upload)  {sent / n / 1024:>9,.0f} KiB  ({sent / page_bytes:.2f}x the changed "
              f"pages; query {sum(d.query for d in rest) / n / 1024:,.0f} KiB + upload "
              f"{sum(d.upload for d in rest) / n / 1024:,.0f} KiB; max day {max(d.sent for d in rest) / 1024:,.0f} KiB)")
        print(f"  server quota delta           {sum(d.quota for d in rest) / n / 1024:>9,.0f} KiB")
        print("  new bytes per day (local, on the same archives):")
        for i, baseline in enumerate(baselines):
            new = sum(d.new[i] for d in rest) / n
            print(f"    {baseline.name:<26} {new / 1024:>9,.0f} KiB  ({new / (page_bytes / n):.2f}x the changed pages)")
        print(f"    whole file (no delta)      {archive_size / 1024:>9,.0f} KiB")
        total = sum(d.seconds for d in rest)
        wire = sum(d.wire for d in rest)
        print(f"  upload time (upload_year: pack + sha256 + chunk + query + upload): total {total:.1f}s for {n} "
              f"re-uploads, {total / n:.2f}s on average; on the wire {wire:.1f}s total, {wire / n:.2f}s on average "
              f"(query {sum(d.query_s for d in rest) / n:.2f}s + upload {sum(d.upload_s for d in rest) / n:.2f}s); "
              f"day 0: {first.seconds:.2f}s")
        print(f"after {args.days} versions: quota used {used / MiB:.2f} MiB; blobs on disk {stored / MiB:.1f} MiB "
              f"(zstd); versions kept: {kept}; latest restored intact: {intact}; "
              f"uploaded archives = locally packed ones: {identical}")
        average = sent / n
        allowed = 2 * page_bytes / n
        within = sum(1 for d in rest if d.sent <= 2 * d.pages * PAGE_SIZE)
        worst = max(d.sent for d in rest)
        print()
        print("targets (DESIGN.md; MB = MiB as in the quota settings), on the bytes actually sent:")
        print(f"  day's re-upload <= 2x the changed pages: {average / 1024:,.0f} KiB sent vs {allowed / 1024:,.0f} KiB "
              f"allowed on average -> {'ok' if average <= allowed else 'MISSED'}; {within}/{n} days within 2x")
        print(f"  day's re-upload <= 1 MiB: largest day {worst / 1024:,.0f} KiB -> {'ok' if worst <= MiB else 'MISSED'}")
        print(f"  {args.days} versions <= 130 MB of quota: {used / MiB:.2f} MiB -> "
              f"{'ok' if used <= 130 * MiB else 'MISSED'} ({used / 1e6:.1f} decimal MB)")
        return 0 if intact and identical else 1
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
