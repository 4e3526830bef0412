"""`eacct serve` as a real process: shutting down promptly and cleanly on SIGTERM / SIGINT (issue 7 item 4)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from eacct.db import create_engine
from eacct.netdisk.models import Pack

SHUTDOWN_LIMIT_SECONDS = 10.0
DECLARED_BODY = 16 * 1024 * 1024
SENT_BEFORE_SIGNAL = 7 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `eacct serve` subprocess on a free port."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"
        full_env = {**os.environ, **env, "EACCT_PORT": str(self.port)}
        self.process = subprocess.Popen([sys.executable, "-m", "eacct.cli", "serve"], cwd=cwd, env=full_env,
                                        stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1):
                    return
            except OSError:
                assert self.process.poll() is None, self.output()
                assert time.monotonic() < deadline, "server did not start:\n" + self.output()
                time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def call(self, method: str, path: str, body: dict | None = None, token: str = "") -> tuple[int, object]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.base + "/api/v1" + path, method=method, headers=headers,
                                         data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def serve_env(cli_env, tmp_path) -> dict[str, str]:
    # Small packs, so a few MiB of body already put pending packs into the blob store before the signal.
    return {**cli_env, "EACCT_PACK_TARGET_BYTES": str(256 * 1024), "PYTHONUNBUFFERED": "1"}


def member_with_open_netdisk(server: Server) -> tuple[str, str]:
    """Register, log in, open and unlock the netdisk; return (session token, netdisk token)."""
    account, password = "13564271675", "secret-1"
    assert server.call("POST", "/members", {"account": account, "password": password, "nickname": "小王"})[0] == 201
    status, session = server.call("POST", "/sessions", {"account": account, "password": password})
    assert status == 201, session
    token = session["token"]
    status, body = server.call("POST", "/netdisk", {"password": "disk-pass-1", "questions": [
        {"question": "我的出生地?", "answer": "杭州"}, {"question": "第一所学校?", "answer": "Yuying"}]}, token)
    assert status == 201, body
    status, body = server.call("POST", "/netdisk/unlock", {"password": "disk-pass-1"}, token)
    assert status == 201, body
    return token, body["netdisk_token"]


def start_slow_upload(server: Server, netdisk_token: str, ledger_id: str) -> socket.socket:
    """An upload whose body arrives only partly: headers promise 16 MiB, 7 MiB are sent, then nothing."""
    content = os.urandom(DECLARED_BODY)
    head = (
        f"POST /api/v1/backups/{ledger_id}/years/2024/versions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {netdisk_token}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {DECLARED_BODY}\r\n"
        f"X-Content-SHA256: {hashlib.sha256(content).hexdigest()}\r\n"
        "X-Ledger-Name: L\r\n\r\n"
    ).encode()
    client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    client.sendall(head + content[:SENT_BEFORE_SIGNAL])
    return client


def pack_files(blob_root: Path) -> list[Path]:
    return [path for path in (blob_root / "packs").rglob("*") if path.is_file()] if (blob_root / "packs").exists() else []


def pack_rows(env: dict[str, str]) -> int:
    """Pack rows in the server's database, pending or committed."""

    async def count() -> int:
        engine = create_engine(env["EACCT_DATABASE_URL"], schema=env["EACCT_DATABASE_SCHEMA"] or None)
        try:
            async with engine.connect() as connection:
                return await connection.scalar(select(func.count()).select_from(Pack))
        finally:
            await engine.dispose()

    return asyncio.run(count())


def refuses_connections_soon(port: int, seconds: float) -> bool:
    """Whether new connections to `port` are refused within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):
            # Reset: the connection reached the listen backlog just as the listener closed; not served either.
            return True
        time.sleep(0.05)
    return False


def answer_or_close_within(client: socket.socket, seconds: float) -> bytes:
    """What the client receives until the server answers and closes, or closes; fails if it must wait longer."""
    client.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    try:
        while chunk := client.recv(65536):
            received += chunk
            client.settimeout(max(deadline - time.monotonic(), 0.01))
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the uploading client was left waiting more than {seconds} s")
    return received


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_upload_shuts_down_within_10s_and_leaves_nothing(serve_env, tmp_path, stop_signal):
    server = Server(serve_env, tmp_path)
    restarted = None
    client = None
    try:
        token, netdisk_token = member_with_open_netdisk(server)
        blob_root = Path(serve_env["EACCT_STORAGE_URL"].removeprefix("file://"))
        ledger_id = str(uuid.uuid4())
        client = start_slow_upload(server, netdisk_token, ledger_id)
        deadline = time.monotonic() + 20
        while not pack_files(blob_root):  # the upload is really under way: pending packs are stored
            assert time.monotonic() < deadline, "the upload stored no pack:\n" + server.output()
            time.sleep(0.05)

        signalled = time.monotonic()
        server.process.send_signal(stop_signal)
        assert refuses_connections_soon(server.port, 1.5), "still accepting connections after the signal"
        answer_or_close_within(client, SHUTDOWN_LIMIT_SECONDS - (time.monotonic() - signalled))
        try:
            code = server.process.wait(timeout=max(SHUTDOWN_LIMIT_SECONDS - (time.monotonic() - signalled), 0.1))
        except subprocess.TimeoutExpired:
            pytest.fail(f"eacct serve still running {SHUTDOWN_LIMIT_SECONDS} s after the signal:\n" + server.output())
        assert code == 0, server.output()
        assert "Traceback" not in server.output(), server.output()
        # The abandoned upload's pending packs were reclaimed before the process ended.
        assert pack_files(blob_root) == []
        assert pack_rows(serve_env) == 0

        restarted = Server(serve_env, tmp_path)
        status, ledgers = restarted.call("GET", "/backups", token=netdisk_token)
        assert status == 200, ledgers
        assert ledgers == {"ledgers": []}
        assert restarted.call("GET", f"/backups/{ledger_id}", token=netdisk_token)[0] == 404
    finally:
        if client is not None:
            client.close()
        server.stop()
        if restarted is not None:
            restarted.stop()
