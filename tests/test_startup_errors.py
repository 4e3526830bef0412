"""A bad setting stops a command with one line naming the setting and the reason, never a traceback; and
`eacct serve` says "serving on" only once it listens (issue 7 item 18)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL

PG_URL = POSTGRES_URL or "postgresql+asyncpg://postgres@127.0.0.1/test"
PG_BASE = PG_URL.rsplit("/", 1)[0]
# A folder nobody may write in, not even root (sysfs).
UNWRITABLE = Path("/sys")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def good_env(tmp_path) -> dict[str, str]:
    """A working configuration; each case spoils one setting of it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("EACCT_")}
    env.update({
        "EACCT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'eacct.db'}",
        "EACCT_STORAGE_URL": f"file://{tmp_path / 'blobs'}",
        "EACCT_PORT": str(free_port()),
        "EACCT_ARGON2_TIME_COST": "1",
        "EACCT_ARGON2_MEMORY_KIB": "1024",
    })
    return env


@pytest.fixture
def port_in_use():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield str(sock.getsockname()[1])


def run_eacct(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eacct.cli", *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


SERVE = ["serve"]
MEMBER_CREATE = ["member", "create", "--account", "13564271675", "--nickname", "小王", "--password", "secret-1"]
STORAGE_CHECK = ["storage", "check"]

# (command, settings changed, setting the message must name, a fragment of the reason)
CASES = {
    "bad_database_url": (SERVE, {"EACCT_DATABASE_URL": "not a database url"}, "EACCT_DATABASE_URL", "不是有效的数据库地址"),
    "sync_sqlite_driver": (SERVE, {"EACCT_DATABASE_URL": "sqlite:///x.db"}, "EACCT_DATABASE_URL", "异步驱动"),
    "sync_postgresql_driver": (SERVE, {"EACCT_DATABASE_URL": "postgresql://postgres@127.0.0.1/test"},
                               "EACCT_DATABASE_URL", "异步驱动"),
    "unknown_database_kind": (SERVE, {"EACCT_DATABASE_URL": "mysql+aiomysql://u@127.0.0.1/x"},
                              "EACCT_DATABASE_URL", "不支持"),
    "unreachable_postgresql": (SERVE, {"EACCT_DATABASE_URL": "postgresql+asyncpg://postgres:s3cret@127.0.0.1:1/test"},
                               "EACCT_DATABASE_URL", "无法连接"),
    "unknown_database_host": (SERVE, {"EACCT_DATABASE_URL": "postgresql+asyncpg://postgres@no-such-host.invalid/test"},
                              "EACCT_DATABASE_URL", "主机名"),
    "unknown_database": (SERVE, {"EACCT_DATABASE_URL": f"{PG_BASE}/eacct_no_such_database"},
                         "EACCT_DATABASE_URL", "does not exist"),
    "unknown_database_schema": (SERVE, {"EACCT_DATABASE_URL": PG_URL, "EACCT_DATABASE_SCHEMA": "eacct_no_such_schema"},
                                "EACCT_DATABASE_SCHEMA", "eacct_no_such_schema"),
    "read_only_data_folder": (SERVE, {"EACCT_DATABASE_URL": f"sqlite+aiosqlite:///{UNWRITABLE}/eacct.db"},
                              "EACCT_DATABASE_URL", str(UNWRITABLE)),
    "data_folder_cannot_be_made": (SERVE, {"EACCT_DATABASE_URL": f"sqlite+aiosqlite:///{UNWRITABLE}/eacct-data/eacct.db"},
                                   "EACCT_DATABASE_URL", "eacct-data"),
    "read_only_blob_folder": (SERVE, {"EACCT_STORAGE_URL": f"file://{UNWRITABLE}"}, "EACCT_STORAGE_URL",
                              str(UNWRITABLE)),
    "blob_folder_cannot_be_made": (SERVE, {"EACCT_STORAGE_URL": f"file://{UNWRITABLE}/eacct-blobs"},
                                   "EACCT_STORAGE_URL", "eacct-blobs"),
    "unsupported_storage_scheme": (SERVE, {"EACCT_STORAGE_URL": "s3://bucket/eacct"}, "EACCT_STORAGE_URL", "不支持"),
    "oss_url_without_endpoint": (SERVE, {"EACCT_STORAGE_URL": "oss://bucket"}, "EACCT_STORAGE_URL", "endpoint"),
    "unknown_host": (SERVE, {"EACCT_HOST": "no-such-host.invalid"}, "EACCT_HOST", "no-such-host.invalid"),
    "host_not_on_this_machine": (SERVE, {"EACCT_HOST": "192.0.2.1"}, "EACCT_HOST", "192.0.2.1"),
    "port_out_of_range": (SERVE, {"EACCT_PORT": "70000"}, "EACCT_PORT", "70000"),
    "port_not_a_number": (SERVE, {"EACCT_PORT": "eighty"}, "EACCT_PORT", "eighty"),
    "bad_trusted_proxies": (SERVE, {"EACCT_TRUSTED_PROXIES": "10.0.0.0/33"}, "EACCT_TRUSTED_PROXIES", "10.0.0.0/33"),
    "member_create_bad_database_url": (MEMBER_CREATE, {"EACCT_DATABASE_URL": "sqlite:///x.db"},
                                       "EACCT_DATABASE_URL", "异步驱动"),
    "member_create_unreachable_postgresql": (MEMBER_CREATE, {"EACCT_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/test"},
                                             "EACCT_DATABASE_URL", "无法连接"),
    "member_create_without_terminal_or_password": (MEMBER_CREATE[:-2], {}, "--password", "终端"),
    "storage_check_unsupported_scheme": (STORAGE_CHECK, {"EACCT_STORAGE_URL": "ftp://host/x"}, "EACCT_STORAGE_URL",
                                         "不支持"),
    "storage_check_folder_cannot_be_made": (STORAGE_CHECK, {"EACCT_STORAGE_URL": f"file://{UNWRITABLE}/eacct-blobs"},
                                            "EACCT_STORAGE_URL", "eacct-blobs"),
    "migrate_bad_database_url": (["migrate"], {"EACCT_DATABASE_URL": "sqlite:///x.db"}, "EACCT_DATABASE_URL", "异步驱动"),
    "gc_unknown_database": (["gc"], {"EACCT_DATABASE_URL": f"{PG_BASE}/eacct_no_such_database"}, "EACCT_DATABASE_URL",
                            "does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_setting_prints_one_line_naming_it(case, good_env, tmp_path):
    command, changes, setting, reason = CASES[case]
    result = run_eacct(command, {**good_env, **changes}, tmp_path)
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3, result.stderr
    assert any(setting in line and reason in line for line in lines), result.stderr
    assert "s3cret" not in result.stderr  # a password in the database URL is never shown
    assert "serving" not in result.stderr + result.stdout


def test_port_in_use_is_named_and_nothing_claims_to_serve(good_env, tmp_path, port_in_use):
    result = run_eacct(SERVE, {**good_env, "EACCT_PORT": port_in_use}, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3, result.stderr
    assert any("EACCT_PORT" in line and port_in_use in line for line in lines), result.stderr
    assert "serving" not in result.stderr + result.stdout


def test_serving_is_logged_only_once_the_port_listens(good_env, tmp_path):
    """The logged address answers at once (port 0: the port the system chose is the one logged)."""
    server = subprocess.Popen([sys.executable, "-m", "eacct.cli", "serve"], env={**good_env, "EACCT_PORT": "0"},
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None:
            line = server.stdout.readline()
            assert line and time.monotonic() < deadline, "no 'serving on' line"
            if match := re.search(r"serving on (http://\S+?)(,|\s|$)", line):
                url = match.group(1)
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:  # no retry: it must listen now
            assert json.load(response) == {"status": "ok"}
    finally:
        server.kill()
        server.wait(timeout=10)
