"""Upload and download year archives over loopback against the real server; print MB/s and server RSS.

    .venv/bin/python -m bench.transfer [--sizes 100,1024] [--storage local|oss] [--no-rclone] [--profile] [--keep]

For each size (MiB) a fresh `eacct serve` subprocess (SQLite + blob store in a temp dir) gets: a first
upload (every chunk new), a second upload of the same file (every chunk known: the dedup path) and a
download of the latest version (streamed to disk, sha256 checked). In the same run the same file is
copied with shutil.copyfile + fsync (the local-disk ceiling) and, when `rclone` is on PATH, PUT to and
GET from `rclone serve webdav` with the same client code (DESIGN.md's baseline). The server's RSS is
sampled every 50 ms. All figures are MiB and MiB/s (printed as MB). Archives are cached in bench/out/.

Targets (DESIGN.md): upload and download >= rclone webdav and >= 50% of a raw copy; server RSS < 100 MB
for a 1 GB year.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make `bench` importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from dataclasses import dataclass, field

from bench._data import year_archive
from bench._harness import (
    OUT, Desktop, FakeOss, MiB, PySpy, Rclone, Server, client_session, exit_on_sigterm, get_file, put_file, raw_copy,
    sha256_file,
)

YEAR = 2018


@dataclass
class Row:
    size_mib: int
    file_bytes: int = 0
    upload: float = 0.0
    reupload: float = 0.0
    download: float = 0.0
    raw_copy: float = 0.0
    rclone_up: float | None = None
    rclone_down: float | None = None
    rss_idle: int = 0
    rss_peak_upload: int = 0
    rss_peak_reupload: int = 0
    rss_peak_download: int = 0
    rss_after: int = 0
    stored_bytes: int | None = None
    rclone_rss_peak: int | None = None
    # Server CPU seconds (all threads) per step: what a busy shared machine does not change much.
    cpu_upload: float = 0.0
    cpu_reupload: float = 0.0
    cpu_download: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rss_peak(self) -> int:
        return max(self.rss_peak_upload, self.rss_peak_reupload, self.rss_peak_download)


def storage_services(storage: str, keep: bool):
    """The blob store the server should use. Plug further backends in here (each returns env for the server)."""
    if storage == "local":
        return None
    if storage == "oss":
        return FakeOss(keep=keep)
    raise SystemExit(f"unknown --storage {storage!r}")


def spy(server: Server, label: str, args: argparse.Namespace) -> PySpy | None:
    """A py-spy recorder on the server (raw stacks kept in bench/out/profile-<label>.txt), or None."""
    return PySpy(server.proc.pid, OUT / f"profile-{label}.txt") if args.profile else None


async def measure(size_mib: int, args: argparse.Namespace) -> Row:
    row = Row(size_mib)
    archive = year_archive(size_mib)
    row.file_bytes = archive.stat().st_size
    started = time.perf_counter()
    sha = sha256_file(archive)
    print(f"  {archive.name}: {row.file_bytes / MiB:.1f} MiB, sha256 {sha[:16]}… "
          f"(hashed by the client in {time.perf_counter() - started:.2f}s)")

    backing = storage_services(args.storage, args.keep)
    try:
        storage_env = {}
        if backing is not None:
            await backing.start()
            storage_env = backing.server_env()
            print(f"  {args.storage} storage: {storage_env['EACCT_STORAGE_URL']}")
        with Server(storage=args.storage, storage_env=storage_env, keep=args.keep) as server:
            await server.start()
            rates = sorted(row.file_bytes / MiB / raw_copy(archive, server.tmp / "raw-copy.tar") for _ in range(3))
            row.raw_copy = rates[1]
            print(f"  raw copy (copyfile + fsync), 3 runs: {', '.join(f'{r:.0f}' for r in rates)} MB/s; median "
                  f"{row.raw_copy:.0f}")
            async with client_session() as http:
                desktop = await Desktop(http, server.base).setup()
                ledger_id = str(uuid.uuid4())
                row.rss_idle = server.rss.reset()
                print(f"  server RSS idle (after start and login): {row.rss_idle / MiB:.0f} MB")

                profile = spy(server, f"upload-{size_mib}MiB-{args.storage}", args)
                cpu, kernel, faults = server.rss.cpu_seconds(), server.rss.system_seconds(), server.rss.minor_faults()
                with profile or contextlib.nullcontext():
                    result = await desktop.upload(ledger_id, YEAR, archive, sha, remark="首次上传")
                row.cpu_upload = server.rss.cpu_seconds() - cpu
                kernel = server.rss.system_seconds() - kernel
                faults = server.rss.minor_faults() - faults
                row.upload = result.rate(row.file_bytes)
                row.rss_peak_upload = server.rss.peak
                print(f"  upload:    {row.upload:6.0f} MB/s  ({result.seconds:.1f}s, server CPU {row.cpu_upload:.2f}s of which kernel {kernel:.2f}s, {faults / 1000:.0f}k page faults, "
                      f"server peak RSS {row.rss_peak_upload / MiB:.0f} MB)")
                if profile:
                    print("  py-spy on the server during the first upload:")
                    print("\n".join("    " + line for line in profile.summary()))

                server.rss.reset()
                cpu, kernel, faults = server.rss.cpu_seconds(), server.rss.system_seconds(), server.rss.minor_faults()
                result = await desktop.upload(ledger_id, YEAR, archive, sha, remark="重复上传")
                row.cpu_reupload = server.rss.cpu_seconds() - cpu
                kernel = server.rss.system_seconds() - kernel
                faults = server.rss.minor_faults() - faults
                row.reupload = result.rate(row.file_bytes)
                row.rss_peak_reupload = server.rss.peak
                print(f"  re-upload: {row.reupload:6.0f} MB/s  ({result.seconds:.1f}s, every chunk known; "
                      f"server CPU {row.cpu_reupload:.2f}s of which kernel {kernel:.2f}s, {faults / 1000:.0f}k page faults, server peak RSS {row.rss_peak_reupload / MiB:.0f} MB)")

                server.rss.reset()
                dest = server.tmp / "downloaded.tar"
                profile = spy(server, f"download-{size_mib}MiB-{args.storage}", args)
                cpu, kernel, faults = server.rss.cpu_seconds(), server.rss.system_seconds(), server.rss.minor_faults()
                with profile or contextlib.nullcontext():
                    result = await desktop.download(ledger_id, YEAR, dest)
                row.cpu_download = server.rss.cpu_seconds() - cpu
                kernel = server.rss.system_seconds() - kernel
                faults = server.rss.minor_faults() - faults
                if result.sha256 != sha:
                    raise RuntimeError(f"downloaded sha256 {result.sha256} != uploaded {sha}")
                dest.unlink()
                row.download = result.rate(row.file_bytes)
                row.rss_peak_download = server.rss.peak
                print(f"  download:  {row.download:6.0f} MB/s  ({result.seconds:.1f}s, sha256 verified; "
                      f"server CPU {row.cpu_download:.2f}s of which kernel {kernel:.2f}s, {faults / 1000:.0f}k page faults, server peak RSS {row.rss_peak_download / MiB:.0f} MB)")
                if profile:
                    print("  py-spy on the server during the download:")
                    print("\n".join("    " + line for line in profile.summary()))
                row.rss_after = server.rss.now()
                if args.storage == "local":
                    row.stored_bytes = server.disk_bytes("blobs")
    finally:
        if backing is not None:
            backing.stop()

    if args.rclone and Rclone.available():
        with Rclone(keep=False) as rclone:
            await rclone.start()
            async with client_session() as http:
                url = f"{rclone.base}/{archive.name}"
                result = await put_file(http, "PUT", url, archive, {})
                if result.status not in (200, 201, 204):
                    raise RuntimeError(f"rclone PUT answered {result.status}: {result.body!r:.200}")
                row.rclone_up = result.rate(row.file_bytes)
                dest = rclone.tmp / "downloaded.tar"
                result = await get_file(http, url, dest)
                if result.status != 200 or result.sha256 != sha:
                    raise RuntimeError(f"rclone GET answered {result.status}, sha256 {result.sha256}")
                dest.unlink()
                row.rclone_down = result.rate(row.file_bytes)
                row.rclone_rss_peak = rclone.rss.overall_peak
            print(f"  rclone serve webdav: up {row.rclone_up:.0f} MB/s, down {row.rclone_down:.0f} MB/s "
                  f"(rclone peak RSS {row.rclone_rss_peak / MiB:.0f} MB)")
    elif args.rclone:
        row.notes.append("rclone not on PATH: webdav baseline skipped")
    return row


def median_row(rows: list[Row]) -> Row:
    """Per-column median of repeated measurements of one size (RSS: the highest peak)."""
    if len(rows) == 1:
        return rows[0]
    out = Row(rows[0].size_mib, rows[0].file_bytes)
    for name in ("upload", "reupload", "download", "raw_copy", "rclone_up", "rclone_down", "rss_idle", "rss_after",
                 "stored_bytes", "cpu_upload", "cpu_reupload", "cpu_download"):
        values = sorted(getattr(row, name) for row in rows if getattr(row, name) is not None)
        setattr(out, name, values[len(values) // 2] if values else None)
    for name in ("rss_peak_upload", "rss_peak_reupload", "rss_peak_download", "rclone_rss_peak"):
        values = [getattr(row, name) for row in rows if getattr(row, name) is not None]
        setattr(out, name, max(values) if values else None)
    out.notes = rows[0].notes + [f"median of {len(rows)} runs"]
    return out


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(rows: list[Row], args: argparse.Namespace) -> None:
    print()
    durable = "server fsyncs packs" if args.storage == "local" else "fake OSS keeps packs in its memory"
    print(f"eacct transfer over loopback, storage={args.storage} (MB = MiB; a fresh server per size and run; "
          f"{durable}, client fsyncs downloads, raw copy fsyncs)")
    head = ("size MB", "upload MB/s", "re-upload MB/s", "download MB/s", "raw copy MB/s", "rclone up", "rclone down",
            "RSS idle", "RSS peak", "peak-idle", "RSS after", "stored MB", "CPU s up/re/down")
    table = [head]
    for row in rows:
        table.append((
            f"{row.file_bytes / MiB:.0f}", fmt(row.upload), fmt(row.reupload), fmt(row.download), fmt(row.raw_copy),
            fmt(row.rclone_up), fmt(row.rclone_down), f"{row.rss_idle / MiB:.0f}", f"{row.rss_peak / MiB:.0f}",
            f"{(row.rss_peak - row.rss_idle) / MiB:.0f}", f"{row.rss_after / MiB:.0f}", "-" if row.stored_bytes is None else f"{row.stored_bytes / MiB:.0f}",
            f"{row.cpu_upload:.2f}/{row.cpu_reupload:.2f}/{row.cpu_download:.2f}",
        ))
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for i, line in enumerate(table):
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths)))
        if i == 0:
            print("  ".join("-" * width for width in widths))
    print()
    print("targets (DESIGN.md): transfer >= rclone webdav and >= 50% of raw copy; server RSS < 100 MB for 1 GB "
          "(RSS idle is the imports alone, so 'flat' is judged on peak-idle)")
    for row in rows:
        checks = []
        half = row.raw_copy / 2
        for label, value, other in (("upload", row.upload, row.rclone_up), ("download", row.download, row.rclone_down)):
            verdict = "ok" if value >= half else "MISSED"
            text = f"{label} {value / row.raw_copy:.0%} of raw copy {verdict}"
            if other is not None:
                text += f", {value / other:.0%} of rclone {'ok' if value >= other else 'MISSED'}"
            checks.append(text)
        checks.append(f"peak RSS {row.rss_peak / MiB:.0f} MB {'ok' if row.rss_peak < 100 * MiB else 'MISSED'} "
                      f"(+{(row.rss_peak - row.rss_idle) / MiB:.0f} MB over idle)")
        print(f"  {row.file_bytes / MiB:.0f} MB: " + "; ".join(checks) + "".join(f"; {note}" for note in row.notes))


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1024", help="archive sizes in MiB, comma separated (default 100,1024)")
    parser.add_argument("--storage", default="local", choices=["local", "oss"],
                        help="blob store of the server: local directory, or tests/oss_server.py's fake OSS")
    parser.add_argument("--no-rclone", dest="rclone", action="store_false",
                        help="skip the rclone serve webdav baseline")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the server during the first upload and the download (needs py-spy)")
    parser.add_argument("--repeat", type=int, default=1, help="measure each size N times, report medians")
    parser.add_argument("--keep", action="store_true", help="keep the servers' temp dirs (printed at the end)")
    args = parser.parse_args(argv)
    sizes = [int(part) for part in args.sizes.split(",") if part.strip()]
    rows = []
    for size in sizes:
        runs = []
        for run in range(args.repeat):
            print(f"{size} MiB year" + (f", run {run + 1}/{args.repeat}" if args.repeat > 1 else "") + ":")
            runs.append(await measure(size, args))
        rows.append(median_row(runs))
    report(rows, args)
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
