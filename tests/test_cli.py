"""The `eacct` command: serve (migrating first), migrate, member create, gc."""

from __future__ import annotations

import gc
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import weakref

import pytest

from eacct import cli
from eacct.cli import main


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_on_the_embedded_default_applies_migrations_and_answers(tmp_path):
    """`eacct serve` with no configuration at all: SQLite and blobs under ./eacct-data/."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("EACCT_")}
    env["EACCT_PORT"] = str(port)
    server = subprocess.Popen([sys.executable, "-m", "eacct.cli", "serve"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    assert json.load(response) == {"status": "ok"}
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/members", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"account": "13564271675", "password": "secret-1", "nickname": "小王"}).encode())
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
        if sys.platform == "linux":  # the password was hashed on a worker thread, below the request path's priority
            assert thread_niceness(server.pid)[server.pid] == 0
            assert cli.WORKER_NICENESS in thread_niceness(server.pid).values()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert (tmp_path / "eacct-data" / "eacct.db").is_file()
    assert (tmp_path / "eacct-data" / "blobs").is_dir()


def test_member_create_then_log_in(cli_env, capsys):
    assert main(["member", "create", "--account", "cli_member", "--nickname", "小李", "--password", "secret-1"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["account"] == "cli_member" and created["nickname"] == "小李"
    assert main(["member", "create", "--account", "cli_member", "--nickname", "x", "--password", "secret-1"]) == 1
    assert "account_taken" in capsys.readouterr().err


def test_member_create_validates_like_the_api(cli_env, capsys):
    assert main(["member", "create", "--account", "x", "--nickname", "小李", "--password", "secret-1"]) == 2
    assert "invalid" in capsys.readouterr().err


def test_migrate_and_gc(cli_env, capsys):
    assert main(["migrate"]) == 0
    assert main(["gc", "--grace-seconds", "0"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    # issue 7 item 5: gc also reports the lapsed upload leases and the leftover working files it removed
    # issue 9: and the upload sessions past their day
    assert set(report) == {"chunks", "packs", "pending_packs", "stray_blobs", "leases", "leftovers", "upload_sessions"}


def test_bad_configuration_is_reported(monkeypatch, capsys):
    monkeypatch.setenv("EACCT_PORT", "eighty")
    assert main(["migrate"]) == 2
    assert "EACCT_PORT must be a whole number" in capsys.readouterr().err


def test_storage_check_on_the_local_folder(cli_env, capsys):
    assert main(["storage", "check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("ok") for line in lines)
    assert {"write", "read", "delete"} <= {line.split()[1].rstrip(":") for line in lines}


@pytest.fixture
def oss_server_in_thread():
    """The local OSS-protocol server on its own event loop, for commands that run their own loop."""
    import asyncio
    import threading

    from tests.oss_server import start_oss_server

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    _, server = asyncio.run_coroutine_threadsafe(start_oss_server("LTAI5tCheck", "check-secret", "ops"), loop).result(10)
    yield server
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_storage_check_on_oss_reports_each_step(cli_env, oss_server_in_thread, monkeypatch, capsys):
    monkeypatch.setenv("EACCT_STORAGE_URL", oss_server_in_thread.storage_url(region="cn-hangzhou"))
    monkeypatch.setenv("EACCT_OSS_ACCESS_KEY_ID", "LTAI5tCheck")
    monkeypatch.setenv("EACCT_OSS_ACCESS_KEY_SECRET", "check-secret")
    assert main(["storage", "check"]) == 0
    assert all(line.startswith("ok") for line in capsys.readouterr().out.splitlines())
    assert oss_server_in_thread.objects == {}  # the probe cleaned up after itself

    monkeypatch.setenv("EACCT_OSS_ACCESS_KEY_SECRET", "wrong-secret")
    assert main(["storage", "check"]) == 1
    output = capsys.readouterr().out
    assert "FAIL" in output and "wrong-secret" not in output


def _wait_for_log(server: subprocess.Popen, log_path, marker: str, count: int, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_text(errors="replace")
        if text.count(marker) >= count:
            return text
        assert server.poll() is None, text
        assert time.monotonic() < deadline, f"{marker!r} not seen {count} times:\n{text}"
        time.sleep(0.2)


def test_serve_with_two_workers_answers_from_both_and_migrates_and_collects_garbage_once(tmp_path):
    """`eacct serve --workers 2`: two processes listen on the one port; migrations and the start-up gc ran
    once (in the parent before the workers started, and in the first worker)."""
    import psutil

    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("EACCT_")}
    env.update(EACCT_PORT=str(port), EACCT_ARGON2_TIME_COST="1", EACCT_ARGON2_MEMORY_KIB="1024")
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "eacct.cli", "serve", "--workers", "2"], cwd=tmp_path,
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_log(server, log_path, "start-up gc:", 1)
        text = _wait_for_log(server, log_path, ") serving", 2)
        pids = {int(pid) for pid in re.findall(r"worker \d/2 \(pid (\d+)\) serving", text)}
        workers = [psutil.Process(pid) for pid in pids]
        assert len(workers) == 2 and all(worker.ppid() == server.pid for worker in workers)
        deadline = time.monotonic() + 30
        listening: set[int] = set()
        while len(listening) < 2:
            listening = {worker.pid for worker in workers for connection in worker.net_connections("tcp")
                         if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port}
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        accounts = [f"worker_{n}" for n in range(8)]
        for account in accounts:  # a new connection each: the kernel spreads them over both workers
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/members", method="POST", headers={"Content-Type": "application/json"},
                data=json.dumps({"account": account, "password": "secret-1", "nickname": "小王"}).encode())
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 201
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert json.load(response) == {"status": "ok"}
    finally:
        server.terminate()
        server.wait(timeout=20)
    text = log_path.read_text(errors="replace")
    assert server.returncode == 0, text
    assert text.count("Context impl") == 1, text  # alembic's line each time migrations run
    assert text.count("start-up gc:") == 1, text
    assert all(not worker.is_running() for worker in workers)


def test_eacct_workers_setting_is_read_from_the_environment():
    from eacct.config import Settings

    assert Settings.from_env({}).workers == 1
    assert Settings.from_env({"EACCT_WORKERS": "3"}).workers == 3


def test_server_without_oss_or_wechat_imports_neither_nor_requests(tmp_path):
    """Idle memory: a server configured with local storage and no WeChat has not loaded oss2, wechatpy or
    requests after start-up (they are imported when first needed)."""
    script = f"""
import asyncio, sys
from aiohttp import web
from eacct.app import create_app
from eacct.config import Settings

async def main():
    settings = Settings(database_url="sqlite+aiosqlite:///{tmp_path}/e.db", storage_url="file://{tmp_path}/blobs")
    from eacct.migrate import upgrade
    from eacct.db import engine_for
    engine = engine_for(settings)
    await upgrade(engine)
    await engine.dispose()
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await runner.cleanup()
    print(sorted(name for name in ("oss2", "wechatpy", "requests") if name in sys.modules))

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def thread_niceness(pid: int) -> dict[int, int]:
    """Each thread of process `pid` and its niceness (Linux /proc; the 19th field of a task's stat)."""
    niceness = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        niceness[int(task)] = int(fields[16])
    return niceness


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")
def test_bulk_threads_run_below_the_request_path_in_cpu_priority():
    """Bulk work (large transfers' blocks, password hashing) gets what the event loop and the database threads
    leave: a 1 GB upload no longer slows every other member's requests (bench/commit_block.py)."""
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with cli.bulk_pool() as pool:
        worker = pool.submit(lambda: (threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0))).result()
        assert worker[1] == cli.WORKER_NICENESS
        assert thread_niceness(os.getpid())[worker[0]] == cli.WORKER_NICENESS
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own  # only the workers, not the caller


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")
def test_default_worker_threads_keep_the_request_paths_priority():
    """Short hops (a small upload's file work and blocks) must not wait behind bulk work at the lowest priority."""
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with cli.worker_pool() as pool:
        worker = pool.submit(lambda: (threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0))).result()
        assert worker[1] == own
        assert thread_niceness(os.getpid())[worker[0]] == own


def test_serving_hands_the_gil_on_after_a_millisecond():
    """The event loop runs Python nearly all the time under load: database threads bringing a statement's result
    wait for the GIL at most this long (CPython's default is 5 ms)."""
    default = sys.getswitchinterval()

    async def serving() -> float:
        return sys.getswitchinterval()

    try:
        assert cli.run_serving(serving()) == cli.GIL_SWITCH_SECONDS == 0.001
    finally:
        sys.setswitchinterval(default)


def test_serving_freezes_what_start_up_built_after_collecting_cyclic_garbage():
    """Full collections then skip start-up's objects (no 50-90 ms stalls), and no garbage cycle is frozen forever."""
    class Node:
        pass

    cycle = Node()
    cycle.self = cycle
    dead = weakref.ref(cycle)
    del cycle
    before = gc.get_freeze_count()
    try:
        cli.freeze_start_up_objects()
        assert dead() is None  # collected before the freeze, not kept in the permanent generation
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_serve_tunes_malloc_so_joined_body_pieces_cost_no_page_faults():
    """aiohttp joins a body's buffered pieces (uvloop reads ~250 KB at a time) into up to ~750 KB. eacct fixes
    glibc's mmap threshold (so freed transfer buffers go back to the system); fixed below that size, as it was,
    every join mapped fresh memory: a page fault per 4 KiB. With eacct's settings they are reused from the heap."""
    probe = textwrap.dedent("""
        import ctypes, resource, sys
        from eacct import cli
        if sys.argv[1] == "eacct":
            cli._tune_malloc()
        else:
            ctypes.CDLL("libc.so.6").mallopt(cli.M_MMAP_THRESHOLD, 256 * 1024)
        pieces = [bytes(250_000), bytes(250_000), bytes(250_000)]
        b"".join(pieces)  # the first one may fault in its pages
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(200):
            joined = b"".join(pieces)
            del joined
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
    faults = {mode: int(subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("eacct", "fixed-256k")}
    assert faults["eacct"] < 200, faults  # not one per 4 KiB joined (200 joins of 750 KB: ~37k)
    assert faults["fixed-256k"] > 10_000, faults  # the probe does see them where they happen
