"""Many members at once: an open-loop load on a real `eacct serve`, then `wrk` maximum throughput.

`.venv/bin/python -m bench.load [--db sqlite,postgres] [--workers 1,2] [--wechat plain,safe] [--rate 200]
[--duration 15] [--members 30] [--wrk-seconds 10] [--no-wrk] [--cost N] [--server-src DIR]`

Per scenario (database × server processes × WeChat mode) it starts `python -m eacct.cli serve` on a free
127.0.0.1 port (SQLite in a temp dir, or a fresh schema on EACCT_BENCH_POSTGRES_URL, default
postgresql+asyncpg://postgres@127.0.0.1/test, dropped afterwards), sets up `--members` members (3 ledgers
each, a friend with a share, WeChat bound), then sends requests at a fixed arrival rate — request i leaves at
start + i/rate whatever happened to the earlier ones, and its latency counts from that scheduled moment, so a
slow server shows as latency rather than as fewer requests. The mix is what many members do: list backups,
cloud shares and messages, WeChat callbacks, small delta uploads, downloads, a year's versions and logins.
It prints per endpoint p50 / p99 / max and errors. Then `wrk -t2 -c10` (Debian's `wrk`) measures maximum
throughput on /healthz, /api/v1/backups and /api/v1/messages, and on bench/bare.py's bare aiohttp handler
answering /api/v1/backups with the same JSON from the same database (the baseline). `--cost N` first sends N
requests per endpoint one at a time and prints the server's CPU milliseconds per request (all its threads and
processes): what one process can serve, less noisy than latencies on a shared machine. Everything is bounded
in count and time; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp

from bench._harness import LOOPBACK, Server, _Child, exit_on_sigterm, free_port

POSTGRES_URL = os.environ.get("EACCT_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1/test")
WECHAT_TOKEN = "bench-wechat-token"
WECHAT_APPID = "wx1234567890abcdef"
WECHAT_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PASSWORD = "bench-secret-1"
NETDISK_PASSWORD = "bench-disk-1"
YEAR = 2025
ARCHIVE_BYTES = 256 * 1024
REQUEST_TIMEOUT = 30.0
# Share of requests per endpoint (per cent).
MIX = {
    "GET /backups": 22,
    "GET /cloud-shares": 14,
    "GET /messages": 18,
    "POST /wechat": 18,
    "GET /backups/{l}/years/{y}": 9,
    "GET …/content (download)": 12,
    "POST …/versions (delta)": 6,
    "POST /sessions (login)": 1,
}
# wrk -t2 -c10 on /api/v1/backups when issue 11 was filed (one process); the target is 5× these.
ISSUE_BACKUPS_RATE = {"sqlite": 57, "postgres": 95}
LIST_ENDPOINTS = ("GET /backups", "GET /cloud-shares", "GET /messages", "POST /wechat")


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


@dataclass
class Member:
    index: int
    account: str
    nickname: str
    openid: str
    token: str = ""
    netdisk_token: str = ""
    ledgers: list[str] = field(default_factory=list)
    deltas: list[tuple[bytes, str, int]] = field(default_factory=list)  # body, sha256, archive size


class Bare(_Child):
    """bench/bare.py on a free port, on the same database as the server."""

    name = "bare"

    async def start(self, env: dict[str, str], loop: str = "asyncio") -> "Bare":
        self.port = free_port()
        self.base = f"http://{LOOPBACK}:{self.port}"
        self._spawn([sys.executable, "-m", "bench.bare", "--database-url", env["EACCT_DATABASE_URL"],
                     "--schema", env.get("EACCT_DATABASE_SCHEMA", ""), "--port", str(self.port), "--loop", loop],
                    dict(os.environ), Path(__file__).resolve().parent.parent)
        await self.wait_log("Running on")
        return self


# ------------------------------------------------------------------------------------------- set-up


def _delta_bodies(scratch: Path, seed: int, variants: int = 3) -> tuple[bytes, list[tuple[bytes, str, int]]]:
    """A base year archive and `variants` edited copies as delta upload bodies (only changed chunks sent)."""
    from eacct.desktop_sync._sync import manifest_of
    from eacct.chunks import delta

    rng = random.Random(seed)
    base = bytes(rng.getrandbits(8) for _ in range(ARCHIVE_BYTES))
    base_path = scratch / f"base-{seed}.tar"
    base_path.write_bytes(base)
    known = {digest for digest, _ in manifest_of(base_path)}
    bodies = []
    for variant in range(variants):
        edited = bytearray(base)
        offset = (variant + 1) * ARCHIVE_BYTES // (variants + 2)
        edited[offset:offset + 4096] = bytes(rng.getrandbits(8) for _ in range(4096))
        path = scratch / f"v{seed}-{variant}.tar"
        path.write_bytes(edited)
        manifest = manifest_of(path)
        ops = delta.plan(manifest, None, {d for d, _ in manifest if d not in known})
        target = scratch / f"v{seed}-{variant}.delta"
        delta.write_delta(path, manifest, ops, target)
        bodies.append((target.read_bytes(), hashlib.sha256(edited).hexdigest(), len(edited)))
    return base, bodies


async def _call(http, method, url, *, token="", expect=(200, 201), **kwargs):
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with http.request(method, url, headers=headers, **kwargs) as response:
        body = await response.read()
        if response.status not in expect:
            raise RuntimeError(f"{method} {url} answered {response.status}: {body[:300]!r}")
        if response.content_type == "application/json":
            return await response.json()
        return body.decode(errors="replace")


class WechatServer:
    """WeChat's servers: signed (and in safe mode encrypted) callbacks."""

    def __init__(self, safe: bool) -> None:
        from wechatpy.crypto import WeChatCrypto

        self.safe = safe
        self.crypto = WeChatCrypto(WECHAT_TOKEN, WECHAT_AES_KEY, WECHAT_APPID)
        self.msg_id = random.randrange(1 << 40)

    def callback(self, openid: str, content: str) -> tuple[dict[str, str], bytes]:
        import xmltodict

        self.msg_id += 1
        timestamp, nonce = str(int(time.time())), uuid.uuid4().hex[:10]
        xml = (f"<xml><ToUserName><![CDATA[gh_eacct]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
               f"<CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
               f"<Content><![CDATA[{content}]]></Content><MsgId>{self.msg_id}</MsgId></xml>")
        params = {"signature": sign(WECHAT_TOKEN, timestamp, nonce), "timestamp": timestamp, "nonce": nonce,
                  "openid": openid}
        if self.safe:
            encrypted = xmltodict.parse(self.crypto.encrypt_message(xml, nonce, timestamp))["xml"]
            xml = (f"<xml><ToUserName><![CDATA[gh_eacct]]></ToUserName>"
                   f"<Encrypt><![CDATA[{encrypted['Encrypt']}]]></Encrypt></xml>")
            params.update(encrypt_type="aes", msg_signature=encrypted["MsgSignature"])
        return params, xml.encode()

    def reply_text(self, text: str) -> str:
        import xmltodict

        if self.safe and text != "success":
            reply = xmltodict.parse(text)["xml"]
            text = self.crypto.decrypt_message(text, reply["MsgSignature"], reply["TimeStamp"], reply["Nonce"])
        return xmltodict.parse(text)["xml"]["Content"] if text != "success" else text


async def set_up_member(http, api: str, base: str, member: Member, wechat: WechatServer, scratch: Path) -> None:
    await _call(http, "POST", f"{api}/members", json={"account": member.account, "password": PASSWORD,
                                                     "nickname": member.nickname})
    member.token = (await _call(http, "POST", f"{api}/sessions",
                                json={"account": member.account, "password": PASSWORD}))["token"]
    await _call(http, "POST", f"{api}/netdisk", token=member.token, json={
        "password": NETDISK_PASSWORD, "questions": [{"question": "我的出生地?", "answer": "杭州"}]})
    member.netdisk_token = (await _call(http, "POST", f"{api}/netdisk/unlock", token=member.token,
                                        json={"password": NETDISK_PASSWORD}))["netdisk_token"]
    archive, member.deltas = await asyncio.to_thread(_delta_bodies, scratch, member.index)
    for number in range(3):
        ledger_id = str(uuid.uuid4())
        member.ledgers.append(ledger_id)
        await _call(http, "POST", f"{api}/backups/{ledger_id}/years/{YEAR}/versions", token=member.netdisk_token,
                    data=archive, headers={"Content-Type": "application/octet-stream",
                                           "X-Content-SHA256": hashlib.sha256(archive).hexdigest(),
                                           "X-Ledger-Name": quote(f"账套{number}"), "X-Remark": quote("初始")})
    # Bind WeChat through the link the bot answers with (as a follower would).
    params, body = wechat.callback(member.openid, "会员中心")
    reply = wechat.reply_text(await _call(http, "POST", f"{base}/wechat", params=params, data=body))
    link = re.search(r"(/wechat/h5/bind\?t=\S+)", reply).group(1)
    bind_token = urlsplit(link).query.split("=", 1)[1]
    await _call(http, "POST", f"{base}/wechat/h5/bind", data={
        "t": bind_token, "account": member.account, "password": PASSWORD, "nickname": member.nickname})


async def share_with_next(http, api: str, member: Member, friend: Member) -> None:
    added = await _call(http, "POST", f"{api}/friends", token=member.token,
                        json={"account": friend.account, "nickname": friend.nickname})
    await _call(http, "POST", f"{api}/shares", token=member.token,
                json={"ledger_id": member.ledgers[0], "friend_ids": [added["id"]]})


# --------------------------------------------------------------------------------------------- load


class CpuMeter:
    """CPU time used from now on by a process tree (the server, its workers and threads) and by this process,
    in cores: whether a latency comes from a saturated machine or from waiting."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.started = time.monotonic()
        self.server_start = self._tree_seconds()
        self.own_start = self._own_seconds()

    def _tree_seconds(self) -> float:
        import psutil

        total = 0.0
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    @staticmethod
    def _own_seconds() -> float:
        times = os.times()
        return times.user + times.system

    def cores(self) -> float:
        return (self._tree_seconds() - self.server_start) / (time.monotonic() - self.started)

    def own_cores(self) -> float:
        return (self._own_seconds() - self.own_start) / (time.monotonic() - self.started)


def request_for(kind: str, member: Member, api: str, base: str, wechat: WechatServer, rng: random.Random):
    """(method, url, kwargs, expected statuses) of one request of `kind` by `member`."""
    netdisk = {"Authorization": f"Bearer {member.netdisk_token}"}
    if kind == "GET /backups":
        return "GET", f"{api}/backups", {"headers": netdisk}, (200,)
    if kind == "GET /cloud-shares":
        return "GET", f"{api}/cloud-shares", {"headers": netdisk}, (200,)
    if kind == "GET /messages":
        return "GET", f"{api}/messages", {"headers": {"Authorization": f"Bearer {member.token}"}}, (200,)
    if kind == "POST /wechat":
        params, body = wechat.callback(member.openid, "会员信息")
        return "POST", f"{base}/wechat", {"params": params, "data": body}, (200,)
    if kind == "GET /backups/{l}/years/{y}":
        return "GET", f"{api}/backups/{member.ledgers[1]}/years/{YEAR}", {"headers": netdisk}, (200,)
    if kind == "GET …/content (download)":
        url = f"{api}/backups/{member.ledgers[2]}/years/{YEAR}/versions/latest/content"
        return "GET", url, {"headers": netdisk}, (200,)
    if kind == "POST …/versions (delta)":
        body, sha256, size = rng.choice(member.deltas)
        headers = {**netdisk, "Content-Type": "application/x-eacct-delta", "X-Content-SHA256": sha256,
                   "X-Archive-Size": str(size), "X-Remark": quote("日常")}
        return "POST", f"{api}/backups/{member.ledgers[0]}/years/{YEAR}/versions", {"headers": headers,
                                                                                     "data": body}, (201,)
    if kind == "POST /sessions (login)":
        return "POST", f"{api}/sessions", {"json": {"account": member.account, "password": PASSWORD}}, (201,)
    raise ValueError(kind)


async def open_loop(http, members: list[Member], api: str, base: str, wechat: WechatServer, rate: float,
                    duration: float, seed: int = 11) -> dict[str, list]:
    """Send rate × duration requests at fixed times; latency counts from each request's scheduled time."""
    rng = random.Random(seed)
    kinds, weights = zip(*MIX.items())
    results: dict[str, list] = {kind: [] for kind in kinds}  # (latency or None, error)
    errors: dict[str, list[str]] = {kind: [] for kind in kinds}
    total = int(rate * duration)

    async def one(kind: str, scheduled: float, method: str, url: str, kwargs: dict, expect) -> None:
        try:
            async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT), **kwargs) as r:
                await r.read()
                ok = r.status in expect
                if not ok:
                    errors[kind].append(str(r.status))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            ok = False
            errors[kind].append(type(exc).__name__)
        results[kind].append((time.perf_counter() - scheduled, ok))

    # Every request is made (signed, encrypted) before the clock starts: the generator's own work stays off the
    # measured window, where it would compete with the server for the same cores.
    planned = []
    for _ in range(total):
        kind = rng.choices(kinds, weights)[0]
        planned.append((kind, *request_for(kind, rng.choice(members), api, base, wechat, rng)))
    # perf_counter, not the loop's clock: uvloop's has millisecond resolution.
    start = time.perf_counter() + 0.2
    tasks = []
    for i, (kind, method, url, kwargs, expect) in enumerate(planned):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(kind, scheduled, method, url, kwargs, expect)))
    await asyncio.gather(*tasks)
    for kind, seen in errors.items():
        if seen:
            print(f"    {kind}: errors {sorted(set(seen))[:5]}")
    return results


async def cost_per_request(http, members: list[Member], api: str, base: str, wechat: WechatServer, pid: int,
                           count: int, seed: int = 13) -> None:
    """Per endpoint, `count` requests one at a time (closed loop, nothing else running): the server's CPU time per
    request (all its threads and processes) and the wall time. A process runs Python on one core at a time, so
    its CPU per request bounds what one process can serve, whatever the machine's noise does to latencies."""
    rng = random.Random(seed)
    print(f"  server CPU per request ({count} requests per endpoint, one at a time):")
    print(f"    {'endpoint':30} {'CPU ms':>7} {'wall ms':>8}   (one process: at most ~1000/CPU ms requests/s of it)")
    weighted = 0.0
    for kind, weight in MIX.items():
        planned = [request_for(kind, members[i % len(members)], api, base, wechat, rng) for i in range(count)]
        meter = CpuMeter(pid)
        started = time.perf_counter()
        refused = []
        for method, url, kwargs, expect in planned:
            async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT), **kwargs) as r:
                await r.read()
                if r.status not in expect:
                    refused.append(str(r.status))
        wall = time.perf_counter() - started
        cpu_ms = meter.cores() * wall * 1000 / count
        weighted += cpu_ms * weight / 100
        # Logins one after another from one address meet its rate limit: refusals are cheaper than logins.
        note = f"   refused: {len(refused)} ({', '.join(sorted(set(refused)))})" if refused else ""
        print(f"    {kind:30} {cpu_ms:7.2f} {wall * 1000 / count:8.2f}{note}")
    print(f"    {'the mix (weighted)':30} {weighted:7.2f}            "
          f"-> at 200 req/s: {weighted * 200 / 1000:.2f} cores")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def print_results(results: dict[str, list], rate: float) -> None:
    print(f"  {'endpoint':32} {'count':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>6}")
    for kind, rows in results.items():
        latencies = [latency * 1000 for latency, _ in rows]
        bad = sum(1 for _, ok in rows if not ok)
        mark = ""
        if kind in LIST_ENDPOINTS:
            mark = "  (target p99 < 50 ms at 200 req/s)" if percentile(latencies, 99) >= 50 else "  ok"
        print(f"  {kind:32} {len(rows):6d} {percentile(latencies, 50):8.1f} {percentile(latencies, 99):8.1f} "
              f"{max(latencies, default=float('nan')):8.1f} {bad:6d}{mark}")


# ---------------------------------------------------------------------------------------------- wrk


def run_wrk(url: str, token: str, seconds: int) -> tuple[float, str]:
    """wrk -t2 -c10 on `url`: requests/s and the p99 latency it prints."""
    argv = ["wrk", "-t2", "-c10", f"-d{seconds}s", "--latency", url]
    if token:
        argv[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    note = f" ({non2xx.group(1)} non-2xx)" if non2xx else ""
    return (float(rate.group(1)) if rate else 0.0), (p99.group(1) if p99 else "?") + note


# --------------------------------------------------------------------------------------------- main


async def _postgres_schema(create: bool, schema: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(POSTGRES_URL)
    try:
        async with engine.begin() as connection:
            if create:
                await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            else:
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


async def scenario(db: str, workers: int, mode: str, args: argparse.Namespace, wrk: bool) -> None:
    source = f" (server from {args.server_src})" if args.server_src else ""
    print(f"\n== {db}, {workers} server process(es), WeChat {mode} mode: {args.rate:g} req/s for {args.duration:g} s, "
          f"{args.members} members{source}")
    env = {"EACCT_WECHAT_TOKEN": WECHAT_TOKEN, "EACCT_WECHAT_APPID": WECHAT_APPID, "EACCT_WECHAT_SECRET": "secret",
           "EACCT_PUBLIC_URL": "http://eacct.example"}
    if mode == "safe":
        env["EACCT_WECHAT_AES_KEY"] = WECHAT_AES_KEY
    if workers > 1:
        env["EACCT_WORKERS"] = str(workers)
    if args.server_src:
        env["PYTHONPATH"] = str(Path(args.server_src).resolve())
    schema = ""
    if db == "postgres":
        schema = f"eacct_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        await _postgres_schema(True, schema)
        env.update(EACCT_DATABASE_URL=POSTGRES_URL, EACCT_DATABASE_SCHEMA=schema)
    scratch = Path(tempfile.mkdtemp(prefix="eacct-bench-load-"))
    try:
        with Server(extra_env=env) as server:
            await server.start()
            api = server.base + "/api/v1"
            wechat = WechatServer(mode == "safe")
            members = [Member(i, f"m{i:04d}", f"会员{i}", f"openid-{i}") for i in range(args.members)]
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                started = time.monotonic()
                gate = asyncio.Semaphore(4)

                async def setup(member: Member) -> None:
                    async with gate:
                        await set_up_member(http, api, server.base, member, wechat, scratch)

                await asyncio.gather(*(setup(m) for m in members))
                for i, member in enumerate(members):
                    await share_with_next(http, api, member, members[(i + 1) % len(members)])
                print(f"  set-up: {time.monotonic() - started:.1f} s")
                if args.cost:
                    await cost_per_request(http, members, api, server.base, wechat, server.proc.pid, args.cost)
                    if not args.duration:
                        return
                busy = CpuMeter(server.proc.pid)
                results = await open_loop(http, members, api, server.base, wechat, args.rate, args.duration)
                print(f"  CPU during the load: server {busy.cores():.2f} cores (all its processes), this load generator "
                      f"{busy.own_cores():.2f}, of {os.cpu_count()}")
            print_results(results, args.rate)
            if wrk:
                print(f"  wrk -t2 -c10 -d{args.wrk_seconds}s:")
                member = members[0]
                for label, url, token in [("GET /healthz", server.base + "/healthz", ""),
                                          ("GET /api/v1/backups", api + "/backups", member.netdisk_token),
                                          ("GET /api/v1/messages", api + "/messages", member.token)]:
                    rate, p99 = await asyncio.to_thread(run_wrk, url, token, args.wrk_seconds)
                    print(f"    {label:28} {rate:8.0f} req/s   p99 {p99}")
                    if label == "GET /api/v1/backups":
                        backups_rate = rate
                        times = rate / ISSUE_BACKUPS_RATE[db]
                        print(f"    {'':28} {times:8.1f} × the issue's {ISSUE_BACKUPS_RATE[db]} req/s "
                              f"({'target 5× met' if times >= 5 else f'target 5× missed by {5 / times:.1f}×'})")
                for loop in ("asyncio", "uvloop"):  # aiohttp as it comes; and on the loop eacct serve runs on
                    with Bare() as bare:
                        await bare.start(server.env, loop)
                        rate_bare, p99 = await asyncio.to_thread(run_wrk, bare.base + "/api/v1/backups",
                                                                 member.netdisk_token, args.wrk_seconds)
                        share = f"eacct /backups at {backups_rate / rate_bare:.0%} of it" if rate_bare else ""
                        print(f"    {'bare aiohttp /backups (' + loop + ')':28} {rate_bare:8.0f} req/s   p99 {p99}   {share}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if schema:
            await _postgres_schema(False, schema)


async def main_async(args: argparse.Namespace) -> None:
    for db in args.db.split(","):
        for workers in [int(w) for w in args.workers.split(",")]:
            for number, mode in enumerate(args.wechat.split(",")):
                await scenario(db, workers, mode, args, wrk=not args.no_wrk and number == 0)


def main() -> None:
    parser = argparse.ArgumentParser(description="open-loop load of many members, and wrk maximum throughput")
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--wechat", default="plain,safe")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--members", type=int, default=30)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--no-wrk", action="store_true")
    parser.add_argument("--cost", type=int, default=0, metavar="N",
                        help="first measure the server's CPU per request, N requests per endpoint one at a time "
                             "(--duration 0: only that)")
    parser.add_argument("--server-src", default="",
                        help="run the server from this source tree (PYTHONPATH), e.g. a `git archive` of an older commit")
    args = parser.parse_args()
    if args.rate * args.duration > 20000 or args.members > 200:
        parser.error("bounded: at most 20000 requests and 200 members")
    if not args.no_wrk and shutil.which("wrk") is None:
        parser.error("wrk is not on PATH (apt-get install -y wrk), or pass --no-wrk")
    exit_on_sigterm()
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the generator's own work, cheaper
        runner.run(main_async(args))


if __name__ == "__main__":
    main()
