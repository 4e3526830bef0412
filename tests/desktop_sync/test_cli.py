"""`eacct-sync` end to end: two members run the e会计 guide's story through the command against a real server
on a free port, with real SQLite ledger years; then every refusal is one Chinese line with its exit code."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from eacct.desktop_sync.cli import (
    EXIT_AUTH, EXIT_CANCELLED, EXIT_CONFLICT, EXIT_NETWORK, EXIT_NOT_FOUND, EXIT_QUOTA, EXIT_USAGE, EXIT_WRONG_PATH,
)
from tests.desktop_sync.test_sync import make_local_ledger
from tests.netdisk.ledgers import edit_rows


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out.strip().splitlines()[-1])


class Terminal:
    """One member's terminal: their own EACCT_SYNC_HOME, stdin never a terminal."""

    def __init__(self, server: str, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "EACCT_SYNC_SERVER": server, "EACCT_SYNC_HOME": str(home)}
        self.env.pop("EACCT_SYNC_ROOT", None)

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eacct.desktop_sync.cli", *args, env=self.env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def run(self, *args: str, stdin: str = "") -> Result:
        process = await self.start(*args)
        out, err = await process.communicate(stdin.encode())
        result = Result(process.returncode, out.decode(), err.decode())
        assert "Traceback" not in result.err, result.err
        if result.code != 0:
            assert result.err.strip().count("\n") == 0 and result.err.startswith("错误："), result.err
        return result


def refused(result: Result, code: int, *words: str) -> None:
    assert result.code == code, (result.code, result.err)
    for word in words:
        assert word in result.err, result.err


async def signed_up(desktop, base_url, tmp_path, account: str, nickname: str):
    member = await desktop(account, nickname, netdisk=False)
    terminal = Terminal(base_url, tmp_path / f"home-{account}")
    assert (await terminal.run("login", "--account", account, "--password-stdin", stdin=member.password + "\n")).code == 0
    result = await terminal.run("netdisk", "open", "--question", "我的出生地?", "--answer", "杭州",
                                "--password-stdin", stdin=member.netdisk_password + "\n")
    assert result.code == 0, result.err
    return member, terminal


async def test_the_guide_story_through_eacct_sync(desktop, base_url, tmp_path):
    owner, a = await signed_up(desktop, base_url, tmp_path, "13564271675", "小王")
    friend, b = await signed_up(desktop, base_url, tmp_path, "13800000000", "小李")
    assert stat.S_IMODE((a.home / "session.json").stat().st_mode) == 0o600
    a_root, b_root = tmp_path / "pc-a", tmp_path / "pc-b"
    ledger_id = make_local_ledger(a_root, "123", [2018], rows=60_000)
    where = lambda root: ["--root", str(root), "--ledger", ledger_id, "--year", "2018"]  # noqa: E731

    # 云备份: the owner's first backup.
    first_upload = await a.run("backup", "upload", *where(a_root), "--remark", "2018年1期", "--json")
    assert first_upload.err == ""  # progress bars only on a terminal
    up = first_upload.json()
    assert up["unchanged"] is False and up["size"] > 2_000_000 and up["sent_bytes"] > 0 and up["version_id"]
    listing = await a.run("backup", "list")
    for text in ("123", ledger_id, "2018年1期", "网盘空间", "已用空间", "可用空间"):
        assert text in listing.out
    assert (await a.run("backup", "list", "--json")).json()["free_bytes"] > 0

    # Steps 2–3: add the friend and share the ledger.
    assert (await a.run("friends", "add", "--account", friend.account, "--nickname", "小李")).code == 0
    shared = await a.run("shares", "add", "--ledger", ledger_id, "--friend", friend.account)
    assert "开始共享给小李" in shared.out

    # Step 4: the friend finds it in 我的云共享 and downloads the year.
    listing = await b.run("share", "list")
    for text in (owner.account, "小王", "123", ledger_id, "2018", "2018年1期"):
        assert text in listing.out
    down = (await b.run("share", "download", "--sharer", owner.account, *where(b_root), "--json")).json()
    assert down["version_id"] == up["version_id"] and down["received_bytes"] == down["size"] == up["size"]
    meta = json.loads((b_root / ledger_id / "ledger.json").read_text(encoding="utf-8"))
    assert meta["id"] == ledger_id and meta["name"] == "123"

    # Step 6: a few rows of work, 上传云共享 — only the changed pages travel; an unchanged year does not.
    edit_rows(b_root / ledger_id / "2018" / "data.db", [1, 2, 3])
    again = (await b.run("share", "upload", "--sharer", owner.account, *where(b_root), "--remark", "2018年4期", "--json")).json()
    assert again["unchanged"] is False and again["sent_bytes"] < again["size"] // 10, again
    same = (await b.run("share", "upload", "--sharer", owner.account, *where(b_root), "--json")).json()
    assert same["unchanged"] is True and same["sent_bytes"] == 0 and same["version_id"] == again["version_id"]
    box = (await a.run("messages", "--unread", "--json")).json()
    assert sum(m["title"] == "好友上传了新版本" for m in box["messages"]) == 1

    # Step 7 and 特别注意: the owner sees the friend's upload in their own cloud backup.
    refused(await a.run("backup", "download", *where(a_root)), EXIT_CONFLICT, "加 --overwrite 覆盖本地账套")
    mine = (await a.run("backup", "download", *where(a_root), "--overwrite", "--json")).json()
    assert mine["version_id"] == again["version_id"]
    versions = (await a.run("backup", "versions", "--ledger", ledger_id, "--year", "2018", "--json")).json()["versions"]
    assert [v["via"] for v in versions] == ["share", "backup"] and versions[0]["remark"] == "2018年4期"

    # 取消共享: the friend's list is empty again; logging out forgets the tokens.
    share_id = (await a.run("shares", "list", "--json")).json()["ledgers"][0]["recipients"][0]["share_id"]
    assert (await a.run("shares", "cancel", "--share", share_id)).code == 0
    assert (await b.run("share", "list", "--json")).json()["sharers"] == []
    assert (await a.run("logout")).code == 0 and not (a.home / "session.json").exists()
    refused(await a.run("backup", "list"), EXIT_AUTH, "eacct-sync login")


async def test_eacct_sync_refusals_are_one_line_with_their_exit_code(desktop, base_url, tmp_path):
    owner, a = await signed_up(desktop, base_url, tmp_path, "refuse_owner", "小王")
    friend, b = await signed_up(desktop, base_url, tmp_path, "refuse_friend", "小李")
    a_root, b_root = tmp_path / "pc-a", tmp_path / "pc-b"
    ledger_id = make_local_ledger(a_root, "123", [2018], rows=500)
    where = lambda root: ["--root", str(root), "--ledger", ledger_id, "--year", "2018"]  # noqa: E731
    assert (await a.run("backup", "upload", *where(a_root))).code == 0

    # No terminal and no --password-stdin: one line, not an EOFError.
    refused(await a.run("login", "--account", owner.account), EXIT_USAGE, "--password-stdin")
    refused(await a.run("netdisk", "unlock"), EXIT_USAGE, "--password-stdin")
    # Wrong passwords.
    refused(await a.run("login", "--account", owner.account, "--password-stdin", stdin="wrong\n"), EXIT_AUTH, "密码错误")
    refused(await a.run("netdisk", "unlock", "--password-stdin", stdin="wrong\n"), EXIT_AUTH, "云盘密码错误", "netdisk reset")
    # Bad input never reaches the server as a traceback.
    refused(await a.run("backup", "download", "--root", str(a_root), "--ledger", "not-a-uuid", "--year", "2018"),
            EXIT_USAGE, "账套ID")
    refused(await a.run("backup", "versions", "--ledger", ledger_id, "--year", "１８"), EXIT_USAGE, "会计年度")
    refused(await a.run("backup", "frobnicate"), EXIT_USAGE)

    # Not shared yet → not found; then shared.
    refused(await b.run("share", "download", *where(b_root)), EXIT_NOT_FOUND)
    await a.run("friends", "add", "--account", friend.account, "--nickname", "小李")
    await a.run("shares", "add", "--ledger", ledger_id, "--friend", friend.account)
    assert (await b.run("share", "download", "--sharer", owner.account, *where(b_root))).code == 0

    # 共享人操作云备份，受共享人操作云共享, both ways.
    refused(await a.run("share", "download", *where(tmp_path / "elsewhere")), EXIT_WRONG_PATH, "共享人操作云备份")
    refused(await a.run("share", "upload", *where(a_root)), EXIT_WRONG_PATH, "共享人操作云备份")
    refused(await b.run("backup", "upload", *where(b_root)), EXIT_WRONG_PATH, "受共享人操作云共享")
    refused(await b.run("share", "download", "--sharer", "somebody_else", *where(tmp_path / "x")), EXIT_NOT_FOUND)

    # No overwrite without --overwrite; a conflict names the way out.
    refused(await b.run("share", "download", *where(b_root)), EXIT_CONFLICT, "--overwrite")
    edit_rows(a_root / ledger_id / "2018" / "data.db", [1])
    assert (await a.run("backup", "upload", *where(a_root), "--remark", "2期")).code == 0
    edit_rows(b_root / ledger_id / "2018" / "data.db", [2])
    refused(await b.run("share", "upload", *where(b_root)), EXIT_CONFLICT, "download --overwrite")

    # A folder without ledger.json is reported.
    (a_root / "3f1a2b3c-0000-4000-8000-000000000000" / "2018").mkdir(parents=True)
    result = await a.run("sync", "--root", str(a_root), "--dry-run", "--json")
    assert result.code == 0 and "ledger.json" in result.err and len(result.json()["problems"]) == 1


async def test_eacct_sync_sync_command_plans_and_syncs(desktop, base_url, tmp_path):
    owner, a = await signed_up(desktop, base_url, tmp_path, "sync_cli", "小王")
    ledger_id = make_local_ledger(tmp_path / "pc", "123", [2018], rows=500)
    plan = (await a.run("sync", "--root", str(tmp_path / "pc"), "--dry-run", "--json")).json()
    assert plan["dry_run"] and [x["action"] for x in plan["actions"]] == ["upload"]
    done = await a.run("sync", "--root", str(tmp_path / "pc"))
    assert done.code == 0 and "上传" in done.out and ledger_id in done.out
    fresh = (await a.run("sync", "--root", str(tmp_path / "other"), "--json")).json()
    assert [x["action"] for x in fresh["actions"]] == ["download"]


@dataclass
class Proxy:
    url: str
    arrived: asyncio.Event


@pytest.fixture
async def proxy(aiohttp_server):
    """A proxy in front of a dead server (HTML 502), and one that never answers (`arrived` once asked)."""
    arrived = asyncio.Event()

    async def bad_gateway(request):
        return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")

    async def hang(request):
        arrived.set()
        await asyncio.sleep(60)
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/gateway/{tail:.*}", bad_gateway)
    app.router.add_route("*", "/hang/{tail:.*}", hang)
    server = await aiohttp_server(app, host="127.0.0.1")
    return Proxy(str(server.make_url("")).rstrip("/"), arrived)


def logged_in(terminal: Terminal) -> Terminal:
    terminal.home.mkdir(parents=True)
    (terminal.home / "session.json").write_text(json.dumps({"token": "t", "netdisk_token": "n"}), encoding="utf-8")
    return terminal


async def test_eacct_sync_reports_a_proxy_error_page_as_a_network_error(proxy, tmp_path):
    terminal = logged_in(Terminal(proxy.url + "/gateway", tmp_path / "home"))
    refused(await terminal.run("backup", "list"), EXIT_NETWORK, "502")
    refused(await terminal.run("friends", "list", "--json"), EXIT_NETWORK)
    unreachable = logged_in(Terminal("http://127.0.0.1:1", tmp_path / "home2"))
    refused(await unreachable.run("messages"), EXIT_NETWORK, "--server")


async def test_eacct_sync_ctrl_c_says_cancelled_and_leaves_nothing_behind(proxy, tmp_path):
    terminal = logged_in(Terminal(proxy.url + "/hang", tmp_path / "home"))
    process = await terminal.start("sync", "--root", str(tmp_path / "pc"))
    await asyncio.wait_for(proxy.arrived.wait(), 60)  # mid-request, not mid-start-up
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == EXIT_CANCELLED and "已取消" in err.decode() and "Traceback" not in err.decode()
    assert list((tmp_path / "pc").iterdir()) == []


async def test_eacct_sync_netdisk_reset_and_passwd(desktop, base_url, tmp_path):
    member, terminal = await signed_up(desktop, base_url, tmp_path, "reset_me", "小王")
    refused(await terminal.run("netdisk", "reset", "--answer", "上海", "--password-stdin", stdin="new-disk-1\n"),
            EXIT_AUTH, "密保")
    assert (await terminal.run("netdisk", "reset", "--answer", " 杭州 ", "--password-stdin", stdin="new-disk-1\n")).code == 0
    refused(await terminal.run("netdisk", "unlock", "--password-stdin", stdin=member.netdisk_password + "\n"), EXIT_AUTH)
    assert (await terminal.run("netdisk", "unlock", "--password-stdin", stdin="new-disk-1\n")).code == 0
    refused(await terminal.run("netdisk", "passwd", "--password-stdin", stdin="new-disk-1\n"), EXIT_USAGE, "2 个密码")
    assert (await terminal.run("netdisk", "passwd", "--password-stdin", stdin="new-disk-1\nnew-disk-2\n")).code == 0
    assert (await terminal.run("netdisk", "unlock", "--password-stdin", stdin="new-disk-2\n")).code == 0
    status = (await terminal.run("netdisk", "status", "--json")).json()
    assert status["opened"] and status["unlocked"] and status["free_bytes"] == status["quota_bytes"]


async def test_eacct_sync_quota_exceeded_has_its_exit_code(make_server, settings, blobs, http, tmp_path):
    server = await make_server(dataclasses.replace(settings, netdisk_quota_bytes=64 * 1024), blobs)
    async with http.post(server + "/api/v1/members", json={"account": "quota_me", "password": "pw-quota",
                                                          "nickname": "小王"}) as answer:
        assert answer.status == 201
    terminal = Terminal(server, tmp_path / "home")
    assert (await terminal.run("login", "--account", "quota_me", "--password-stdin", stdin="pw-quota\n")).code == 0
    assert (await terminal.run("netdisk", "open", "--question", "q?", "--answer", "a", "--password-stdin",
                               stdin="disk-quota\n")).code == 0
    ledger_id = make_local_ledger(tmp_path / "pc", "大账套", [2018], rows=5000)
    refused(await terminal.run("backup", "upload", "--root", str(tmp_path / "pc"), "--ledger", ledger_id, "--year", "2018"),
            EXIT_QUOTA, "可用空间")


async def test_eacct_sync_a_locked_netdisk_says_unlock_not_log_in(desktop, base_url, tmp_path):
    member, terminal = await signed_up(desktop, base_url, tmp_path, "locked_me", "小王")
    state = json.loads((terminal.home / "session.json").read_text(encoding="utf-8"))
    state["netdisk_token"] = "expired-or-ended"
    (terminal.home / "session.json").write_text(json.dumps(state), encoding="utf-8")
    result = await terminal.run("backup", "list")
    refused(result, EXIT_AUTH, "云盘已锁定", "eacct-sync netdisk unlock")
    assert "login" not in result.err
    refused(await terminal.run("backup", "list"), EXIT_AUTH, "netdisk unlock")  # the stale token was dropped
    assert (await terminal.run("netdisk", "unlock", "--password-stdin", stdin=member.netdisk_password + "\n")).code == 0
    assert (await terminal.run("backup", "list")).code == 0
