"""Other members while one member's large upload commits (issue 11: p99 < 200 ms on both databases).

`.venv/bin/python -m bench.commit_block [--db sqlite,postgres] [--size 256] [--rate 40] [--others 10]
[--again] [--resumable] [--server-src DIR]` starts `eacct serve`, sets up `--others` members with a small year each, then runs an
open-loop load (requests at a fixed rate; latency counts from the scheduled moment) of those members listing
their backups and uploading a small year, while one more member uploads a `--size` MiB year of incompressible
data (every chunk new: the most chunk rows one commit can index). It prints p50 / p99 / max / errors per
request kind over the whole big upload and over its commit window (from the last body byte sent to the
answer). `--resumable` sends the big year through an upload session instead, the way a client that can resume
does: 8 KiB chunks in batches of 16 MiB, then the manifest to commit (the commit window is then the commit
request). `--again` uploads the big year once first and measures its repeat (a daily backup of an unchanged
year: nothing new is stored, and the commit counts a reference on every chunk). `--server-src DIR` runs the server from another source tree (e.g. a `git archive` of an older commit)
for before/after figures in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import aiohttp

from bench._data import write_random_file
from bench._harness import MiB, OUT, Desktop, Server, exit_on_sigterm, sha256_file
from bench.load import POSTGRES_URL, _postgres_schema, percentile

SMALL_BYTES = 16 * 1024
# A resumable upload's chunks (about the server's own average for a ledger, so a 1 GB year has ~130k of them) and
# the raw bytes per batch (a batch body may carry up to 32 MiB of chunks).
SESSION_CHUNK = 8 * 1024
SESSION_BATCH = 16 * MiB


async def small_upload(http, member: Desktop, ledger: str, rng: random.Random) -> int:
    content = rng.randbytes(SMALL_BYTES)
    headers = {"Authorization": f"Bearer {member.netdisk_token}", "X-Content-SHA256": hashlib.sha256(content).hexdigest(),
               "X-Ledger-Name": quote("小账套"), "Content-Type": "application/octet-stream"}
    async with http.post(member.version_url(ledger, 2018), data=content, headers=headers) as response:
        await response.read()
        return response.status


async def list_backups(http, member: Desktop) -> int:
    async with http.get(member.api + "/backups", headers={"Authorization": f"Bearer {member.netdisk_token}"}) as response:
        await response.read()
        return response.status


async def big_upload(http, member: Desktop, path: Path, sha: str, marks: dict[str, float], ledger_id: str) -> int:
    async def body():
        with open(path, "rb") as handle:
            while block := await asyncio.to_thread(handle.read, MiB):
                yield block
        marks["sent"] = time.monotonic()

    headers = {"Authorization": f"Bearer {member.netdisk_token}", "X-Content-SHA256": sha,
               "X-Ledger-Name": quote("大账套"), "Content-Type": "application/octet-stream",
               "Content-Length": str(path.stat().st_size)}
    marks["start"] = time.monotonic()
    async with http.post(member.version_url(ledger_id, 2018), data=body(), headers=headers) as response:
        await response.read()
        marks["done"] = time.monotonic()
        return response.status


def _session_batch(data: bytes) -> tuple[bytes, bytes]:
    """A batch body (each chunk's manifest entry, then its bytes) and the chunks' manifest entries."""
    body, entries = bytearray(), bytearray()
    for start in range(0, len(data), SESSION_CHUNK):
        piece = data[start : start + SESSION_CHUNK]
        entry = hashlib.sha256(piece).digest() + len(piece).to_bytes(4, "big")
        body += entry
        body += piece
        entries += entry
    return bytes(body), bytes(entries)


async def resumable_upload(http, member: Desktop, path: Path, sha: str, marks: dict[str, float], ledger_id: str) -> int:
    """The big year through an upload session: open, batches of chunks, then the manifest to commit."""
    auth = {"Authorization": f"Bearer {member.netdisk_token}"}
    uploads = f"{member.api}/backups/{ledger_id}/years/2018/uploads"
    marks["start"] = time.monotonic()
    async with http.post(uploads, json={"size": path.stat().st_size, "sha256": sha, "ledger_name": "大账套"},
                         headers=auth) as response:
        opened = await response.json()
        if response.status != 201:
            raise RuntimeError(f"opening the upload session answered {response.status}: {opened}")
    upload = f"{uploads}/{opened['upload_id']}"
    binary = {**auth, "Content-Type": "application/octet-stream"}
    manifest = bytearray()
    with open(path, "rb") as handle:
        while data := await asyncio.to_thread(handle.read, SESSION_BATCH):
            body, entries = await asyncio.to_thread(_session_batch, data)
            manifest += entries
            async with http.put(upload + "/chunks", data=body, headers=binary) as response:
                answered = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"a batch answered {response.status}: {answered[:300]!r}")
    marks["sent"] = time.monotonic()
    async with http.post(upload + "/commit", data=bytes(manifest), headers=binary) as response:
        await response.read()
        marks["done"] = time.monotonic()
        return response.status


async def scenario(db: str, args: argparse.Namespace, path: Path, sha: str) -> None:
    env = {"EACCT_ARGON2_TIME_COST": "1", "EACCT_ARGON2_MEMORY_KIB": "8192"}
    if args.server_src:
        env["PYTHONPATH"] = str(Path(args.server_src).resolve())
    schema = ""
    if db == "postgres":
        schema = f"eacct_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        await _postgres_schema(True, schema)
        env.update(EACCT_DATABASE_URL=POSTGRES_URL, EACCT_DATABASE_SCHEMA=schema)
    label = f"server from {args.server_src}" if args.server_src else "this tree"
    what = "uploads the same" if args.again else "uploads"
    if args.resumable:
        what += " (upload session)"
    send = resumable_upload if args.resumable else big_upload
    print(f"\n== {db} ({label}): {args.others} members at {args.rate:g} req/s while one {what} {args.size} MiB")
    try:
        with Server(extra_env=env) as server:
            await server.start()
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=None, sock_read=600)) as http:
                rng = random.Random(1)
                others = [await Desktop(http, server.base, f"o{i:03d}").setup() for i in range(args.others)]
                ledgers = {member.account: str(uuid.uuid4()) for member in others}
                for member in others:
                    assert await small_upload(http, member, ledgers[member.account], rng) == 201
                big = await Desktop(http, server.base, "big").setup()
                big_ledger = str(uuid.uuid4())
                if args.again:  # the measured upload repeats this one: nothing new to store, every chunk counted on
                    assert await send(http, big, path, sha, {}, big_ledger) == 201
                marks: dict[str, float] = {}
                results: list[tuple[str, float, float, int]] = []  # (kind, scheduled, latency, status)

                async def one(kind: str, member: Desktop, scheduled: float) -> None:
                    try:
                        if kind == "GET /backups":
                            status = await list_backups(http, member)
                        else:
                            status = await small_upload(http, member, ledgers[member.account], rng)
                    except aiohttp.ClientError:
                        status = 0
                    results.append((kind, scheduled, time.monotonic() - scheduled, status))

                uploading = asyncio.create_task(send(http, big, path, sha, marks, big_ledger))
                start = time.monotonic()
                tasks = []
                i = 0
                while not uploading.done() or time.monotonic() < marks.get("done", 0) + 1.0:
                    scheduled = start + i / args.rate
                    await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
                    kind = "GET /backups" if i % 2 == 0 else "POST small upload"
                    tasks.append(asyncio.create_task(one(kind, others[i % len(others)], scheduled)))
                    i += 1
                await asyncio.gather(*tasks)
                status = await uploading
                sent = "batches sent" if args.resumable else "body sent"
                print(f"  big upload: {status}, {sent} in {marks['sent'] - marks['start']:.1f} s, "
                      f"then {marks['done'] - marks['sent']:.2f} s to the answer (commit window)")
                windows = {"during the whole upload": (marks["start"], marks["done"]),
                           "during its commit window": (marks["sent"], marks["done"])}
                for name, (low, high) in windows.items():
                    print(f"  {name}:")
                    for kind in ("GET /backups", "POST small upload"):
                        picked = [r for r in results if r[0] == kind and low <= r[1] <= high]
                        latencies = [r[2] * 1000 for r in picked]
                        errors = sum(1 for r in picked if r[3] not in (200, 201))
                        if not latencies:
                            print(f"    {kind:20} no requests")
                            continue
                        print(f"    {kind:20} n={len(latencies):5}  p50 {percentile(latencies, 50):7.1f} ms  "
                              f"p99 {percentile(latencies, 99):7.1f} ms  max {max(latencies):7.1f} ms  errors {errors}")
    finally:
        if schema:
            await _postgres_schema(False, schema)


async def main_async(args: argparse.Namespace) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"random-{args.size}.bin"
    if not path.exists():
        await asyncio.to_thread(write_random_file, path, args.size * MiB)
    sha = await asyncio.to_thread(sha256_file, path)
    for db in args.db.split(","):
        await scenario(db, args, path, sha)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--size", type=int, default=256, help="MiB of the big upload")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second of the other members")
    parser.add_argument("--others", type=int, default=10)
    parser.add_argument("--server-src", default="", help="run the server from this source tree (PYTHONPATH)")
    parser.add_argument("--resumable", action="store_true",
                        help="send the big year through an upload session (batches of chunks, then a commit)")
    parser.add_argument("--again", action="store_true",
                        help="measure a repeat of the big upload (every chunk known: the commit counts on all of them)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
