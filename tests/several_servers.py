"""Several `eacct serve` processes as one service: real server subprocesses on the test's database and blob
store, a round-robin proxy in front (every request goes to the next process, like a load balancer), and
`eacct gc` looping in another process throughout.

With EACCT_TEST_SERVERS=N (N ≥ 2) the `make_server` fixture in tests/conftest.py returns the proxy's URL
instead of an in-process app, so the end-to-end suites run unchanged across N processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from eacct.config import Settings

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
# Hop-by-hop headers and those aiohttp recomputes: never forwarded by the proxy.
NOT_FORWARDED = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade",
                 "proxy-connection"}
GC_PAUSE_SECONDS = 0.3
READY_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def settings_env(settings: Settings, *, schema: str | None, storage_env: dict[str, str] | None) -> dict[str, str]:
    """The environment that makes a subprocess read exactly `settings` (plus schema and blob store)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EACCT_")}
    for field in dataclasses.fields(Settings):
        env[f"EACCT_{field.name.upper()}"] = str(getattr(settings, field.name))
    env["EACCT_DATABASE_SCHEMA"] = schema or ""
    env["EACCT_WORKERS"] = "1"
    env.update(storage_env or {})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServerProcess:
    """One `python -m eacct.cli serve` on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.env = {**env, "EACCT_HOST": LOOPBACK, "EACCT_PORT": str(self.port)}
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "eacct.cli", "serve", env=self.env, cwd=ROOT, stdout=log, stderr=log)

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        deadline = asyncio.get_running_loop().time() + READY_SECONDS
        while True:
            if self.process.returncode is not None:
                raise RuntimeError(f"eacct serve exited {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                async with http.get(self.base_url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"eacct serve did not start: {self.log_path.read_text()[-2000:]}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await stop_process(self.process)


async def stop_process(process: asyncio.subprocess.Process | None) -> None:
    """SIGINT, then SIGKILL after a few seconds."""
    if process is None or process.returncode is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


class GcLoop:
    """`eacct gc` run again and again in a separate process until stopped; counts the runs that failed."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        # A shell loop: each round is a fresh `eacct gc` process, as cron would run it; a failed round is logged.
        script = (f'while :; do "{sys.executable}" -m eacct.cli gc >/dev/null 2>>"{self.log_path}" '
                  f'|| echo "GC FAILED" >>"{self.log_path}"; sleep {GC_PAUSE_SECONDS}; done')
        self.process = await asyncio.create_subprocess_exec(
            "sh", "-c", script, env=self.env, cwd=ROOT, start_new_session=True)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        # The loop and its current `eacct gc` form one process group.
        os.killpg(self.process.pid, signal.SIGTERM)
        await self.process.wait()

    def failures(self) -> int:
        return self.log_path.read_text().count("GC FAILED") if self.log_path.exists() else 0


class RoundRobinProxy:
    """A reverse proxy that sends each request to the next upstream in turn, streaming both bodies."""

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = upstreams
        self.turn = itertools.cycle(upstreams)
        self.http: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        self.http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 40)
        app.router.add_route("*", "/{tail:.*}", self.forward, expect_handler=self.defer_continue)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, LOOPBACK, port).start()
        self.base_url = f"http://{LOOPBACK}:{port}"
        return self.base_url

    async def forward(self, request: web.Request) -> web.StreamResponse:
        upstream = next(self.turn)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
        if request.content_length is not None:  # the server requires it on uploads; the body is streamed as is
            headers["Content-Length"] = str(request.content_length)
        expect = request.headers.get("Expect", "").lower() == "100-continue"
        headers.pop("Expect", None)
        body = self.body_after_continue(request) if expect else request.content if request.body_exists else None
        async with self.http.request(request.method, upstream + request.rel_url.raw_path_qs, headers=headers,
                                     data=body, expect100=expect, allow_redirects=False) as answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            for name, value in answer.headers.items():
                if name.lower() not in NOT_FORWARDED:
                    response.headers.add(name, value)
            if answer.headers.get("Content-Length") is not None:
                response.content_length = int(answer.headers["Content-Length"])
            await response.prepare(request)
            async for block in answer.content.iter_chunked(1 << 16):
                await response.write(block)
            await response.write_eof()
            return response

    async def defer_continue(self, request: web.Request) -> None:
        """Send no 100 Continue yet: the upstream decides (it may refuse from the headers alone)."""

    @staticmethod
    async def body_after_continue(request: web.Request):
        # Asked for only once the upstream answered 100 Continue: pass that on, then stream the body.
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        async for block in request.content.iter_any():
            yield block

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.http is not None:
            await self.http.close()


class SeveralServers:
    """N server processes on one database and blob store behind a round-robin proxy, with gc looping."""

    def __init__(self, settings: Settings, *, count: int, schema: str | None, storage_env: dict[str, str] | None,
                 log_dir: Path, gc_loop: bool = True) -> None:
        env = settings_env(settings, schema=schema, storage_env=storage_env)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.servers = [ServerProcess(env, log_dir / f"server{i}.log") for i in range(count)]
        self.gc = GcLoop(env, log_dir / "gc.log") if gc_loop else None
        self.proxy: RoundRobinProxy | None = None

    @property
    def urls(self) -> list[str]:
        """The processes' own base URLs (to reach one process directly)."""
        return [server.base_url for server in self.servers]

    async def start(self) -> str:
        """Start everything; return the proxy's base URL."""
        for server in self.servers:
            await server.start()
        async with aiohttp.ClientSession() as http:
            for server in self.servers:
                await server.wait_ready(http)
        if self.gc is not None:
            await self.gc.start()
        self.proxy = RoundRobinProxy(self.urls)
        return await self.proxy.start()

    async def stop(self) -> None:
        if self.proxy is not None:
            await self.proxy.stop()
        if self.gc is not None:
            await self.gc.stop()
        await asyncio.gather(*(server.stop() for server in self.servers))
