"""What every benchmark needs: the real server in a subprocess, its RSS sampled, and a desktop-like client.

Everything listens on and talks to 127.0.0.1 only. `Server` and `Rclone` are context managers that stop
their process (SIGINT, then SIGKILL) and remove their temp dir however the benchmark ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
MiB = 1024 * 1024
BLOCK = MiB
LOOPBACK = "127.0.0.1"


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `with Server()` blocks stop their processes and remove temp dirs."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def mib(n: float) -> str:
    return f"{n / MiB:.1f}"


# --------------------------------------------------------------------------------------------- RSS


class RssSampler:
    """Samples one process's RSS every `interval` seconds in a thread; peaks are kept per window."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.current = 0
        self.peak = 0  # since the last reset()
        self.overall_peak = 0
        self.samples: list[tuple[float, int]] = []  # (monotonic time, rss), for timelines
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def start(self) -> "RssSampler":
        self._sample()
        self._thread.start()
        return self

    def _sample(self) -> None:
        try:
            rss = self.process.memory_info().rss
        except psutil.Error:
            return
        with self._lock:
            self.samples.append((time.monotonic(), rss))
            self.current = rss
            self.peak = max(self.peak, rss)
            self.overall_peak = max(self.overall_peak, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def reset(self) -> int:
        """Start a new peak window; returns the RSS now."""
        self._sample()
        with self._lock:
            self.peak = self.current
            return self.current

    def now(self) -> int:
        self._sample()
        return self.current

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the process has used so far."""
        times = self.process.cpu_times()
        return times.user + times.system

    def system_seconds(self) -> float:
        """The kernel's part of `cpu_seconds`: copies, page faults, syscalls."""
        return self.process.cpu_times().system

    def minor_faults(self) -> int:
        """Pages the process touched for the first time (fresh memory) so far; 0 where /proc has no stat."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return int(fields[7])  # minflt: the 10th field of stat, the 8th after the command name

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1)


# ------------------------------------------------------------------------------------------ process


class _Child:
    """A subprocess in its own temp dir, stopped and cleaned up on exit."""

    name = "child"

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix=f"eacct-bench-{self.name}-"))
        self.proc: subprocess.Popen | None = None
        self.log_path = self.tmp / f"{self.name}.log"
        self._log = None
        self.rss: RssSampler | None = None

    def _spawn(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self._log = open(self.log_path, "wb")
        # start_new_session: a Ctrl-C at the terminal reaches the bench, which then stops the child itself.
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                        if response.status < 500:
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def wait_log(self, marker: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.log_tail():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.rss is not None:
            self.rss.stop()
        if self.proc is not None and self.proc.poll() is None:
            # SIGTERM, not SIGINT: a bench started in the background passes SIGINT on ignored.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.keep:
            print(f"  kept {self.name} data in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def disk_bytes(self, sub: str = "") -> int:
        total = 0
        for dirpath, _, filenames in os.walk(self.tmp / sub):
            for name in filenames:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(dirpath, name)).st_size
        return total


class Server(_Child):
    """`python -m eacct.cli serve` with its database and blobs in a temp dir."""

    name = "server"

    def __init__(self, *, storage: str = "local", storage_env: dict[str, str] | None = None,
                 extra_env: dict[str, str] | None = None, keep: bool = False) -> None:
        super().__init__(keep)
        self.port = free_port()
        self.base = f"http://{LOOPBACK}:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EACCT_")}
        env.update({
            "EACCT_DATABASE_URL": f"sqlite+aiosqlite:///{self.tmp / 'eacct.db'}",
            "EACCT_STORAGE_URL": f"file://{self.tmp / 'blobs'}",
            "EACCT_HOST": LOOPBACK,
            "EACCT_PORT": str(self.port),
            "EACCT_NETDISK_QUOTA_BYTES": str(1 << 40),
            "PYTHONUNBUFFERED": "1",
            # The OSS store spools packs under tempfile's dir: keep that inside what stop() removes.
            "TMPDIR": str(self.tmp / "tmp"),
        })
        env.update(storage_env or {})
        env.update(extra_env or {})
        self.env = env
        self.storage = storage

    async def start(self) -> "Server":
        (self.tmp / "tmp").mkdir(exist_ok=True)
        self._spawn([sys.executable, "-m", "eacct.cli", "serve"], self.env, self.tmp)
        await self.wait_ready(self.base + "/healthz")
        self.rss = RssSampler(self.proc.pid).start()
        return self


class Rclone(_Child):
    """`rclone serve webdav` on a temp dir, no auth, loopback only."""

    name = "rclone"

    @staticmethod
    def available() -> bool:
        return shutil.which("rclone") is not None

    async def start(self) -> "Rclone":
        self.port = free_port()
        self.base = f"http://{LOOPBACK}:{self.port}"
        (self.tmp / "root").mkdir()
        env = dict(os.environ, RCLONE_CONFIG=str(self.tmp / "rclone.conf"))
        self._spawn(["rclone", "serve", "webdav", str(self.tmp / "root"), "--addr", f"{LOOPBACK}:{self.port}"],
                    env, self.tmp)
        await self.wait_ready(self.base + "/")
        self.rss = RssSampler(self.proc.pid).start()
        return self


# ------------------------------------------------------------------------------------------- client


async def file_blocks(path: Path, block: int = BLOCK):
    """The file in blocks, read off the event loop (a desktop client streams; it never loads the file)."""
    with open(path, "rb") as handle:
        while data := await asyncio.to_thread(handle.read, block):
            yield data


@dataclass
class Transfer:
    status: int
    seconds: float
    body: object = None
    sha256: str = ""

    def rate(self, size: int) -> float:
        return size / MiB / self.seconds


async def put_file(http: aiohttp.ClientSession, method: str, url: str, path: Path, headers: dict[str, str]) -> Transfer:
    """Stream a file as the request body with an explicit Content-Length; time until the answer is read."""
    size = path.stat().st_size
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size), **headers}
    started = time.perf_counter()
    async with http.request(method, url, data=file_blocks(path), headers=headers) as response:
        body = await response.read()
        seconds = time.perf_counter() - started
        parsed = body
        if response.content_type == "application/json":
            parsed = await response.json()
        return Transfer(response.status, seconds, parsed)


async def get_file(http: aiohttp.ClientSession, url: str, dest: Path, headers: dict[str, str] | None = None) -> Transfer:
    """Stream the answer to `dest`, hashing it on the way; fsync before the clock stops."""
    digest = hashlib.sha256()
    started = time.perf_counter()
    async with http.get(url, headers=headers or {}) as response:
        if response.status != 200:
            return Transfer(response.status, time.perf_counter() - started, await response.text())
        with open(dest, "wb") as handle:
            pending: list[bytes] = []
            pending_size = 0
            async for data in response.content.iter_any():
                pending.append(data)
                pending_size += len(data)
                if pending_size >= BLOCK:
                    block = b"".join(pending)
                    digest.update(block)
                    handle.write(block)
                    pending, pending_size = [], 0
            block = b"".join(pending)
            digest.update(block)
            handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
    return Transfer(200, time.perf_counter() - started, sha256=digest.hexdigest())


def raw_copy(src: Path, dest: Path) -> float:
    """Seconds for shutil.copyfile plus fsync of the copy (the local-disk ceiling of a transfer)."""
    started = time.perf_counter()
    shutil.copyfile(src, dest)
    with open(dest, "rb+") as handle:
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - started
    dest.unlink()
    return seconds


class Desktop:
    """One member at the desktop program (the HTTP calls of tests/conftest.py's Desktop)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, account: str = "bench_user") -> None:
        self.http = http
        self.api = base + "/api/v1"
        self.account = account
        self.password = "bench-secret-1"
        self.netdisk_password = "bench-disk-1"
        self.token = ""
        self.netdisk_token = ""

    async def _json(self, method: str, path: str, token: str = "", **kwargs) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.api + path, headers=headers, **kwargs) as response:
            body = await response.json() if response.content_type == "application/json" else await response.text()
            return response.status, body

    async def setup(self) -> "Desktop":
        status, body = await self._json("POST", "/members", json={
            "account": self.account, "password": self.password, "nickname": "压测"})
        assert status == 201, (status, body)
        status, body = await self._json("POST", "/sessions", json={"account": self.account, "password": self.password})
        assert status == 201, (status, body)
        self.token = body["token"]
        status, body = await self._json("POST", "/netdisk", self.token, json={
            "password": self.netdisk_password, "questions": [{"question": "我的出生地?", "answer": "杭州"}]})
        assert status == 201, (status, body)
        await self.unlock()
        return self

    async def unlock(self) -> None:
        status, body = await self._json("POST", "/netdisk/unlock", self.token, json={"password": self.netdisk_password})
        assert status == 201, (status, body)
        self.netdisk_token = body["netdisk_token"]

    async def used_bytes(self) -> int:
        status, body = await self._json("GET", "/netdisk", self.token)
        assert status == 200, (status, body)
        return body["used_bytes"]

    def version_url(self, ledger_id: str, year: int) -> str:
        return f"{self.api}/backups/{ledger_id}/years/{year}/versions"

    async def upload(self, ledger_id: str, year: int, path: Path, sha256: str, remark: str = "") -> Transfer:
        headers = {
            "Authorization": f"Bearer {self.netdisk_token}",
            "X-Content-SHA256": sha256,
            "X-Ledger-Name": quote("压测账套"),
            "X-Remark": quote(remark),
            "X-Client-Version": "eacct-bench",
        }
        result = await put_file(self.http, "POST", self.version_url(ledger_id, year), path, headers)
        if result.status != 201:
            raise RuntimeError(f"upload answered {result.status}: {result.body}")
        return result

    async def download(self, ledger_id: str, year: int, dest: Path, version: str = "latest") -> Transfer:
        url = f"{self.version_url(ledger_id, year)}/{version}/content"
        result = await get_file(self.http, url, dest, {"Authorization": f"Bearer {self.netdisk_token}"})
        if result.status != 200:
            raise RuntimeError(f"download answered {result.status}: {result.body}")
        return result


def client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=600))


# ----------------------------------------------------------------------------------------- profiling


class PySpy:
    """`py-spy record` on a pid for the duration of a `with` block; `summary()` says where the busy time went."""

    RATE = 200

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self.proc: subprocess.Popen | None = None
        self.seconds = 0.0
        exe = Path(sys.executable).parent / "py-spy"
        self.exe = str(exe) if exe.exists() else shutil.which("py-spy")

    def __enter__(self) -> "PySpy":
        if self.exe:
            self.out.unlink(missing_ok=True)
            self.proc = subprocess.Popen(
                [self.exe, "record", "--pid", str(self.pid), "--format", "raw", "--rate", str(self.RATE), "--threads",
                 "--nonblocking", "--output", str(self.out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            time.sleep(0.5)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._started
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def summary(self, top: int = 10) -> list[str]:
        """Busy seconds per thread, and the top places by busy seconds (all threads)."""
        if not self.out.exists():
            err = self.proc.stderr.read().decode(errors="replace") if self.proc and self.proc.stderr else ""
            return [f"(no py-spy output: {err.strip()[:300] or 'py-spy not installed'})"]
        per_thread: dict[str, int] = {}
        places: dict[str, int] = {}
        for line in self.out.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = stack.split(";")
            thread = next((f.split(": ", 1)[-1] for f in frames if f.startswith("thread ")), "?")
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
            if not frames or _idle(frames[-1]):
                continue
            n = int(count)
            kind = "aiosqlite" if "_connection_worker_thread" in thread else (
                "workers" if thread.startswith("asyncio_") else thread)
            per_thread[kind] = per_thread.get(kind, 0) + n
            place = _place(frames)
            places[place] = places.get(place, 0) + n
        tick = 1 / self.RATE
        lines = [f"{self.seconds:.1f}s wall; busy seconds per thread: "
                 + ", ".join(f"{name} {n * tick:.1f}" for name, n in sorted(per_thread.items(), key=lambda kv: -kv[1]))]
        for place, n in sorted(places.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"  {n * tick:6.2f}s  {place}")
        return lines


_IDLE_LEAVES = ("EpollSelector.select", "_worker (concurrent/futures/thread.py", "Condition.wait", "Queue.get")


def _idle(leaf: str) -> bool:
    leaf = _short(leaf)
    return leaf.startswith(_IDLE_LEAVES) or (leaf.startswith("_connection_worker_thread") and "core.py:59" in leaf)


def _place(frames: list[str]) -> str:
    """A readable name for where a sample was: SQLAlchemy work by statement kind (its greenlet stacks carry
    no eacct frame), else the deepest eacct function, else the socket layer, else the leaf."""
    joined = ";".join(frames)
    if "sqlalchemy" in joined:
        if "visit_insert" in joined or "bulk_persistence" in joined:
            return "SQLAlchemy INSERT (compile + execute)"
        return "SQLAlchemy other statements (compile + execute + rows)"
    if "_connection_worker_thread" in joined:
        return "SQLite executing (aiosqlite thread)"
    ours = [short for short in map(_short, frames) if "(eacct/" in short]
    if ours:
        return ours[-1]
    if "selector_events" in joined or "aiohttp" in joined:
        return "asyncio/aiohttp socket I/O"
    return _short(frames[-1])


def _short(frame: str) -> str:
    """py-spy's "function (/abs/path/file.py:123)" with the path cut to package-relative."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, line = where.rpartition(":")
    for marker in ("/eacct/", "/site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path[path.index(marker) + 1:]
            break
    return f"{name} ({path}:{line})" if path else name


class FakeOss(_Child):
    """tests/oss_server.py's fake OSS in its own process (see bench/_oss_proc.py); objects live in its memory."""

    name = "oss"
    bucket = "eacct-bench"
    key_id = "bench-key-id"
    secret = "bench-key-secret"

    async def start(self) -> "FakeOss":
        self.port = free_port()
        self.base = f"http://{LOOPBACK}:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self._spawn([sys.executable, "-m", "bench._oss_proc", "--port", str(self.port), "--bucket", self.bucket,
                     "--key-id", self.key_id, "--secret", self.secret], env, ROOT)
        await self.wait_log(f"READY {self.base}")
        self.rss = RssSampler(self.proc.pid).start()
        return self

    def server_env(self) -> dict[str, str]:
        """What the eacct server needs to use this bucket."""
        return {
            "EACCT_STORAGE_URL": f"oss://{self.bucket}?endpoint={self.base}",
            "EACCT_OSS_ACCESS_KEY_ID": self.key_id,
            "EACCT_OSS_ACCESS_KEY_SECRET": self.secret,
        }
