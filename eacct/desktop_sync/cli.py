"""`eacct-sync`: the desktop side from a terminal, a thin layer over EacctClient, LedgerFolder and DesktopSync.

State (the session and netdisk tokens, the member, the server) lives in EACCT_SYNC_HOME (default: %APPDATA%\\
eacct-sync on Windows, $XDG_CONFIG_HOME/eacct-sync or ~/.config/eacct-sync elsewhere), written with 0600
permissions. Passwords come from --password-stdin (one per line) or a hidden prompt, never from an argument.
Tables for people by default; --json prints one JSON object as the last line. Errors are one Chinese line
saying what to do, with an exit code per error class (EXIT_CODES), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from pathlib import Path

from eacct.desktop_sync._client import EacctClient, check_ledger_id, check_year
from eacct.desktop_sync._exceptions import (
    AuthError, BadNetdiskPassword, BadRequest, ChecksumError, ChecksumMismatch, ConflictError,
    InvalidError, LedgerNotFound, LocalCopyExists, LocalError, NetdiskNotOpened, NetdiskTokenRequired,
    NotFoundError, NotLoggedIn, QuotaError, RateLimited, ServerUnavailable, SyncError, TransportError, UploadStalled, UsageError,
    VersionConflict, WrongPath,
)
from eacct.desktop_sync._ledgers import LedgerFolder
from eacct.desktop_sync._terminal import Output, ProgressBar, State, default_home, mb, table
from eacct.desktop_sync._sync import DesktopSync, SyncReport, Transfer, transfer_json

__all__ = ["EXIT_CODES", "main"]

CLIENT_VERSION = "eacct-sync 1.0"

# Exit codes by error class, so a script can tell a conflict from a down server (documented in the README).
EXIT_OK, EXIT_OTHER, EXIT_USAGE, EXIT_AUTH, EXIT_WRONG_PATH, EXIT_NOT_FOUND = 0, 1, 2, 3, 4, 5
EXIT_CONFLICT, EXIT_QUOTA, EXIT_NETWORK, EXIT_LOCAL, EXIT_CANCELLED = 6, 7, 8, 9, 130
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (UsageError, EXIT_USAGE), (InvalidError, EXIT_USAGE), (BadRequest, EXIT_USAGE),
    (AuthError, EXIT_AUTH), (RateLimited, EXIT_AUTH),
    (WrongPath, EXIT_WRONG_PATH),
    (NotFoundError, EXIT_NOT_FOUND), (LedgerNotFound, EXIT_NOT_FOUND),
    (ConflictError, EXIT_CONFLICT), (LocalCopyExists, EXIT_CONFLICT),
    (QuotaError, EXIT_QUOTA),
    (TransportError, EXIT_NETWORK), (ServerUnavailable, EXIT_NETWORK), (UploadStalled, EXIT_NETWORK),
    (LocalError, EXIT_LOCAL), (ChecksumError, EXIT_LOCAL), (ChecksumMismatch, EXIT_LOCAL),
]


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of an error class."""
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return EXIT_OTHER


def hint_for(error: SyncError) -> str:
    """What to type next, named by flag (the terminal's 覆盖本地账套 is --overwrite)."""
    if isinstance(error, LocalCopyExists):
        return "加 --overwrite 覆盖本地账套"
    if isinstance(error, VersionConflict):
        return "先用 download --overwrite 取得云端最新版本（需要时先另存本地修改），再上传"
    if isinstance(error, NetdiskTokenRequired):
        return "先运行 eacct-sync netdisk unlock 输入云盘密码"
    if isinstance(error, BadNetdiskPassword):
        return "请检查云盘密码；忘记了可用 eacct-sync netdisk reset --answer 答案 …"
    if isinstance(error, NetdiskNotOpened):
        return "先运行 eacct-sync netdisk open --question 问题 --answer 答案"
    if isinstance(error, NotLoggedIn):
        return "先运行 eacct-sync login --account 账号（然后 eacct-sync netdisk unlock）"
    if isinstance(error, WrongPath):
        how = "自己的账套用 eacct-sync backup …，好友共享的账套用 eacct-sync share …"
        return how if "共享人操作云备份" in str(error) else f"共享人操作云备份，受共享人操作云共享：{how}"
    if isinstance(error, RateLimited) and error.retry_after:
        return f"请 {error.retry_after} 秒后再试"
    if isinstance(error, QuotaError) and "free_bytes" in error.extra:
        return f"可用空间 {mb(error.extra['free_bytes'])}，请先删除不需要的账套或年度（eacct-sync backup delete）"
    if isinstance(error, TransportError):
        return "请检查网络和 --server 地址（或 EACCT_SYNC_SERVER）"
    return ""


# ------------------------------------------------------------------------------------------- arguments


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one Chinese line and the usage exit code, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"参数有误：{message}（eacct-sync {self.prog.split(' ', 1)[-1]} --help 查看用法）")


def build_parser() -> Parser:
    common = Parser(add_help=False)
    common.add_argument("--server", default=argparse.SUPPRESS, help="服务器地址（或 EACCT_SYNC_SERVER）")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="最后一行输出一个 JSON 对象")
    parser = Parser(prog="eacct-sync", description="e会计 云同步 / 云备份 / 云共享（命令行）", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def command(group, name: str, help_text: str, *parents: Parser) -> Parser:
        return group.add_parser(name, help=help_text, description=help_text, parents=[common, *parents])

    password = Parser(add_help=False)
    password.add_argument("--password-stdin", action="store_true", help="从标准输入读取密码（每行一个）")
    where = Parser(add_help=False)
    where.add_argument("--root", type=Path, default=os.environ.get("EACCT_SYNC_ROOT"),
                       help="账套文件夹：<root>/<账套ID>/ledger.json 与 <root>/<账套ID>/<年度>/（或 EACCT_SYNC_ROOT）")
    where.add_argument("--ledger", required=True, help="账套ID")
    where.add_argument("--year", required=True, help="会计年度")

    login = command(commands, "login", "登录会员账号", password)
    login.add_argument("--account", required=True)
    command(commands, "logout", "退出登录")

    netdisk = command(commands, "netdisk", "云盘").add_subparsers(dest="action", required=True, parser_class=Parser)
    command(netdisk, "status", "云盘状态与空间")
    opening = command(netdisk, "open", "首次使用：设置云盘密码和密保问题", password)
    opening.add_argument("--question", action="append", required=True)
    opening.add_argument("--answer", action="append", required=True)
    command(netdisk, "unlock", "输入云盘密码登录云盘", password)
    reset = command(netdisk, "reset", "回答密保问题，重设云盘密码", password)
    reset.add_argument("--answer", action="append", required=True)
    command(netdisk, "passwd", "修改云盘密码（先旧后新）", password)

    backup = command(commands, "backup", "云备份（共享人）").add_subparsers(dest="action", required=True, parser_class=Parser)
    command(backup, "list", "网盘列表与空间")
    versions = command(backup, "versions", "一个年度的版本")
    versions.add_argument("--ledger", required=True)
    versions.add_argument("--year", required=True)
    up = command(backup, "upload", "上传云备份", where)
    up.add_argument("--remark", default="")
    down = command(backup, "download", "下载云备份", where)
    down.add_argument("--version", default="latest")
    down.add_argument("--overwrite", action="store_true", help="覆盖本地账套")
    delete = command(backup, "delete", "删除云备份的账套或年度（需要云盘密码）", password)
    delete.add_argument("--ledger", required=True)
    delete.add_argument("--year")

    share = command(commands, "share", "我的云共享（受共享人）").add_subparsers(dest="action", required=True, parser_class=Parser)
    command(share, "list", "共享列表")
    for name, text in (("download", "下载共享账套"), ("upload", "上传云共享")):
        sub = command(share, name, text, where)
        sub.add_argument("--sharer", help="共享人的会员账号")
        if name == "download":
            sub.add_argument("--version", default="latest")
            sub.add_argument("--overwrite", action="store_true", help="覆盖本地账套")
        else:
            sub.add_argument("--remark", default="")

    sync = command(commands, "sync", "云同步：自己的账套与云备份双向同步")
    sync.add_argument("--root", type=Path, default=os.environ.get("EACCT_SYNC_ROOT"))
    sync.add_argument("--dry-run", action="store_true", help="只列出计划，不做任何改动")

    friends = command(commands, "friends", "我的好友").add_subparsers(dest="action", required=True, parser_class=Parser)
    command(friends, "list", "好友列表")
    add = command(friends, "add", "添加好友（账号和昵称都要对）")
    add.add_argument("--account", required=True)
    add.add_argument("--nickname", required=True)
    command(friends, "remove", "删除好友（同时取消给他的共享）").add_argument("--account", required=True)

    shares = command(commands, "shares", "共享给好友（共享人）").add_subparsers(dest="action", required=True, parser_class=Parser)
    command(shares, "list", "共享列表")
    give = command(shares, "add", "把账套共享给好友")
    give.add_argument("--ledger", required=True)
    give.add_argument("--friend", action="append", required=True, help="好友的会员账号（可重复）")
    command(shares, "cancel", "取消共享").add_argument("--share", required=True, help="共享ID（shares list）")

    messages = command(commands, "messages", "消息中心")
    messages.add_argument("--unread", action="store_true")
    return parser


# ------------------------------------------------------------------------------------------- commands


def read_passwords(args: argparse.Namespace, prompts: list[str]) -> list[str]:
    """Passwords from --password-stdin (one per line) or hidden prompts; never an argument."""
    if getattr(args, "password_stdin", False):
        lines = sys.stdin.read().splitlines()
        if len(lines) < len(prompts) or not all(lines[: len(prompts)]):
            raise UsageError(f"--password-stdin 需要从标准输入逐行提供 {len(prompts)} 个密码（{'、'.join(prompts)}）")
        return lines[: len(prompts)]
    if not sys.stdin.isatty():
        raise UsageError("没有终端可以输入密码：请加 --password-stdin，从标准输入逐行提供密码")
    try:
        return [getpass.getpass(f"{prompt}: ") for prompt in prompts]
    except EOFError:
        raise UsageError("没有输入密码") from None


class Runner:
    """One command: the state, the client built from it, the output."""

    def __init__(self, args: argparse.Namespace, out: Output) -> None:
        self.args = args
        self.out = out
        self.state = State(Path(os.environ.get("EACCT_SYNC_HOME") or default_home()))
        self.server = getattr(args, "server", None) or os.environ.get("EACCT_SYNC_SERVER") or self.state.data.get("server")
        self.progress = ProgressBar()

    def client(self, *, session: bool = True, netdisk: bool = False) -> EacctClient:
        if not self.server:
            raise UsageError("不知道连接哪个服务器：加 --server URL 或设置 EACCT_SYNC_SERVER")
        data = self.state.data
        if session and not data.get("token"):
            raise NotLoggedIn(0, "unauthenticated", "尚未登录")
        if netdisk and not data.get("netdisk_token"):
            raise NetdiskTokenRequired(0, "netdisk_token_required", "云盘尚未解锁")
        return EacctClient(self.server, client_version=CLIENT_VERSION, token=data.get("token", ""),
                           netdisk_token=data.get("netdisk_token", ""), member=data.get("member"))

    def folder(self) -> LedgerFolder:
        root = getattr(self.args, "root", None)
        if not root:
            raise UsageError("需要账套文件夹：加 --root DIR 或设置 EACCT_SYNC_ROOT")
        return LedgerFolder(Path(root))

    async def run(self) -> None:
        args = self.args
        handler = getattr(self, f"do_{args.command}_{getattr(args, 'action', '')}".rstrip("_").replace("-", "_"))
        try:
            await handler()
        except AuthError as exc:
            if not isinstance(exc, NotLoggedIn) or not self.state.data.get("netdisk_token"):
                raise
            await self._explain_locked_netdisk(exc)

    async def _explain_locked_netdisk(self, exc: AuthError) -> None:
        """A netdisk token that stopped working while the session still works: the netdisk locked itself
        (30 minutes idle); say that, not "log in again"."""
        async with self.client() as client:
            try:
                await client.me()
            except AuthError:
                raise exc from None
        self.state.data.pop("netdisk_token", None)
        self.state.save()
        raise NetdiskTokenRequired(401, "netdisk_token_required", "云盘已锁定（30 分钟未使用会自动锁定）") from exc

    # ----- session

    async def do_login(self) -> None:
        client = self.client(session=False)
        (password,) = read_passwords(self.args, ["会员密码"])
        async with client:
            member = await client.log_in(self.args.account, password)
        self.state.data = {"server": self.server, "token": client.token, "member": member}
        self.state.save()
        self.out.result({"id": member["id"], "account": member["account"], "nickname": member["nickname"]},
                        f"已登录：{member['account']}（{member['nickname']}，ID {member['id']}）")

    async def do_logout(self) -> None:
        if self.state.data.get("token") and self.server:
            async with self.client() as client:
                try:
                    await client.log_out()
                except AuthError:
                    pass  # already expired: nothing to end
        self.state.clear()
        self.out.result({"logged_out": True}, "已退出登录")

    # ----- netdisk

    async def do_netdisk_status(self) -> None:
        async with self.client() as client:
            status = await client.netdisk()
        status = {**status, "unlocked": bool(self.state.data.get("netdisk_token"))}
        human = "云盘未开通：运行 eacct-sync netdisk open --question 问题 --answer 答案" if not status["opened"] else \
            f"网盘空间: {mb(status['quota_bytes'])}  已用空间: {mb(status['used_bytes'])}  可用空间: {mb(status['free_bytes'])}"
        self.out.result(status, human)

    async def _unlock(self, client: EacctClient, password: str) -> None:
        answer = await client.unlock(password)
        self.state.data.update(netdisk_token=answer["netdisk_token"], netdisk_expires_at=answer.get("expires_at"))
        self.state.save()

    async def do_netdisk_open(self) -> None:
        args = self.args
        if len(args.question) != len(args.answer):
            raise UsageError("每个 --question 都需要一个 --answer")
        (password,) = read_passwords(args, ["新的云盘密码"])
        async with self.client() as client:
            await client.open_netdisk(password, list(zip(args.question, args.answer)))
            await self._unlock(client, password)
        self.out.result({"opened": True, "unlocked": True}, "云盘已开通并已解锁")

    async def do_netdisk_unlock(self) -> None:
        (password,) = read_passwords(self.args, ["云盘密码"])
        async with self.client() as client:
            await self._unlock(client, password)
        self.out.result({"unlocked": True, "expires_at": self.state.data.get("netdisk_expires_at")}, "云盘已解锁")

    async def do_netdisk_reset(self) -> None:
        (password,) = read_passwords(self.args, ["新的云盘密码"])
        async with self.client() as client:
            await client.reset_netdisk_password(self.args.answer, password)
        self.out.result({"reset": True}, "云盘密码已重设，请用新密码 eacct-sync netdisk unlock")

    async def do_netdisk_passwd(self) -> None:
        old, new = read_passwords(self.args, ["原云盘密码", "新的云盘密码"])
        async with self.client() as client:
            await client.change_netdisk_password(old, new)
        self.out.result({"changed": True}, "云盘密码已修改")

    # ----- backup

    async def do_backup_list(self) -> None:
        async with self.client(netdisk=True) as client:
            ledgers = await client.backups()
            space = await client.netdisk()
        rows = [[ledger["name"], ledger["ledger_id"], y["year"], y["latest"]["remark"], mb(y["latest"]["size"]),
                 y["versions_count"]] for ledger in ledgers for y in ledger["years"]]
        human = table(["账套名称", "账套ID", "年度", "备注", "大小", "版本数"], rows) if rows else "网盘列表为空：还没有上传过云备份"
        human += f"\n网盘空间: {mb(space['quota_bytes'])}  已用空间: {mb(space['used_bytes'])}  可用空间: {mb(space['free_bytes'])}"
        self.out.result({"ledgers": ledgers, "quota_bytes": space["quota_bytes"], "used_bytes": space["used_bytes"],
                         "free_bytes": space["free_bytes"]}, human)

    async def do_backup_versions(self) -> None:
        async with self.client(netdisk=True) as client:
            versions = await client.versions(self.args.ledger, self.args.year)
        rows = [[v["version_id"], v["remark"], mb(v["size"]), v["uploaded_at"],
                 f"{v['uploaded_by']['account']}（{v['uploaded_by']['nickname']}）", v["via"]] for v in versions]
        self.out.result({"versions": versions}, table(["版本", "备注", "大小", "上传时间", "上传人", "方式"], rows))

    async def _transfer(self, call) -> None:
        folder = self.folder()
        check_ledger_id(self.args.ledger)
        check_year(self.args.year)
        async with self.client(netdisk=True) as client:
            try:
                done: Transfer = await call(DesktopSync(client, folder))
            finally:
                self.progress.done()
        if done.reminder:
            print(done.reminder, file=sys.stderr)
        if done.unchanged:
            human = f"{done.size} 字节，与上次同步的版本 {done.version['version_id']} 相同，未上传（unchanged）"
        elif done.received_bytes or "path" in done.version:
            human = f"已下载 版本 {done.version['version_id']}（{done.version.get('remark', '')}），{mb(done.size)}"
        else:
            human = f"已上传 版本 {done.version['version_id']}，年度大小 {mb(done.size)}，本次上传 {mb(done.sent_bytes)}"
        self.out.result(transfer_json(done), human)

    async def do_backup_upload(self) -> None:
        a = self.args
        await self._transfer(lambda s: s.backup_upload(a.ledger, a.year, a.remark, progress=self.progress))

    async def do_backup_download(self) -> None:
        a = self.args
        await self._transfer(lambda s: s.backup_download(a.ledger, a.year, a.version, overwrite=a.overwrite,
                                                         progress=self.progress))

    async def do_backup_delete(self) -> None:
        a = self.args
        check_ledger_id(a.ledger)
        year = check_year(a.year) if a.year else None
        (password,) = read_passwords(a, ["云盘密码"])
        async with self.client(netdisk=True) as client:
            await client.delete_backup(a.ledger, password, year)
        what = f"账套 {a.ledger}" + (f" 的 {year} 年度" if year else "")
        self.out.result({"deleted": True, "ledger_id": a.ledger, "year": year}, f"已删除 {what}（已留下删除记录）")

    # ----- share

    async def do_share_list(self) -> None:
        async with self.client(netdisk=True) as client:
            sharers = await client.cloud_shares()
        rows = []
        for entry in sharers:
            member = entry["member"]
            for ledger in entry["ledgers"]:
                for year in ledger["years"]:
                    latest = year["versions"][0] if year["versions"] else {}
                    rows.append([f"{member['account']}（{member['nickname']}）", ledger["name"], ledger["ledger_id"],
                                 year["year"], latest.get("remark", ""), mb(latest.get("size")),
                                 latest.get("uploaded_by", {}).get("nickname", "")])
        human = table(["共享人", "账套名称", "账套ID", "年度", "备注", "大小", "上传人"], rows) if rows else "共享列表为空"
        self.out.result({"sharers": sharers}, human)

    async def do_share_download(self) -> None:
        a = self.args
        await self._transfer(lambda s: s.share_download(a.ledger, a.year, a.version, overwrite=a.overwrite,
                                                        sharer=a.sharer, progress=self.progress))

    async def do_share_upload(self) -> None:
        a = self.args
        await self._transfer(lambda s: s.share_upload(a.ledger, a.year, a.remark, sharer=a.sharer,
                                                      progress=self.progress))

    # ----- 云同步

    async def do_sync(self) -> None:
        folder = self.folder()
        async with self.client(netdisk=True) as client:
            try:
                report: SyncReport = await DesktopSync(client, folder).sync(dry_run=self.args.dry_run,
                                                                            progress=self.progress)
            finally:
                self.progress.done()
        names = {"upload": "上传", "download": "下载", "conflict": "冲突", "none": "一致", "skip": "跳过"}
        rows = [[a.name, a.ledger_id, a.year or "", names.get(a.action, a.action) + ("（失败）" if a.error else ""),
                 a.error or a.conflict_copy or a.reason] for a in report.actions]
        human = ("计划（--dry-run，未做改动）\n" if report.dry_run else "") + table(["账套名称", "账套ID", "年度", "操作", "说明"], rows)
        for problem in report.problems:
            print(f"注意：{problem}", file=sys.stderr)
        self.out.result({"dry_run": report.dry_run, "problems": report.problems, "conflicts": len(report.conflicts),
                         "actions": [a.__dict__ for a in report.actions]}, human)

    # ----- friends, shares, messages

    async def do_friends_list(self) -> None:
        async with self.client() as client:
            friends = await client.friends()
        rows = [[f["account"], f["nickname"], f["id"], f.get("added_at", "")] for f in friends]
        self.out.result({"friends": friends}, table(["账号", "昵称", "ID", "添加时间"], rows) if rows else "还没有好友")

    async def do_friends_add(self) -> None:
        async with self.client() as client:
            friend = await client.add_friend(self.args.account, self.args.nickname)
        self.out.result({"friend": friend}, f"已添加好友 {friend['account']}（{friend['nickname']}）")

    async def _friend_id(self, client: EacctClient, account: str) -> int:
        for friend in await client.friends():
            if friend["account"] == account:
                return friend["id"]
        raise NotFoundError(404, "not_found", f"{account} 不在您的好友列表里（eacct-sync friends list 查看）")

    async def do_friends_remove(self) -> None:
        async with self.client() as client:
            await client.remove_friend(await self._friend_id(client, self.args.account))
        self.out.result({"removed": self.args.account}, f"已删除好友 {self.args.account}，给他的共享已取消")

    async def do_shares_list(self) -> None:
        async with self.client() as client:
            shares = await client.shares()
        rows = [[ledger["name"], ledger["ledger_id"], f"{r['recipient']['account']}（{r['recipient']['nickname']}）",
                 r["since"], r["share_id"]] for ledger in shares["ledgers"] for r in ledger["recipients"]]
        human = f"共享了 {shares['ledger_count']} 个账套给 {shares['friend_count']} 位好友\n" + \
            table(["账套名称", "账套ID", "好友", "开始日期", "共享ID"], rows)
        self.out.result(shares, human)

    async def do_shares_add(self) -> None:
        check_ledger_id(self.args.ledger)
        async with self.client() as client:
            ids = [await self._friend_id(client, account) for account in self.args.friend]
            shares = await client.share(self.args.ledger, ids)
        self.out.result({"shares": shares}, "\n".join(s["notice"] for s in shares))

    async def do_shares_cancel(self) -> None:
        async with self.client() as client:
            await client.cancel_share(self.args.share)
        self.out.result({"cancelled": self.args.share}, "已取消共享")

    async def do_messages(self) -> None:
        async with self.client() as client:
            box = await client.messages(unread_only=self.args.unread)
        rows = [[m["created_at"], "系统" if m["kind"] == "system" else "个人", "" if m["read"] else "未读", m["title"],
                 m["body"]] for m in box["messages"]]
        self.out.result(box, f"未读 {box['unread_count']} 条\n" + table(["时间", "类型", "状态", "标题", "内容"], rows))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `eacct-sync`: returns the exit code (see EXIT_CODES); never prints a traceback."""
    raw = list(sys.argv[1:] if argv is None else argv)
    out = Output("--json" in raw)
    try:
        args = build_parser().parse_args(raw)
        out.as_json = getattr(args, "json", False)
        asyncio.run(Runner(args, out).run())
        return EXIT_OK
    except KeyboardInterrupt:
        print("\n已取消", file=sys.stderr)
        return EXIT_CANCELLED
    except SyncError as exc:
        return _fail(out, exc, str(exc), hint_for(exc))
    except Exception as exc:  # noqa: BLE001 — the promise is one line, never a traceback
        if os.environ.get("EACCT_SYNC_DEBUG"):
            raise
        return _fail(out, exc, f"内部错误（{type(exc).__name__}: {exc}）", "请把这一行发给客服；设置 EACCT_SYNC_DEBUG=1 可看详情")


def _fail(out: Output, exc: BaseException, message: str, hint: str) -> int:
    code = exit_code_for(exc)
    line = f"错误：{message}" + (f"；{hint}" if hint else "")
    print(line, file=sys.stderr)
    if out.as_json:
        print(json.dumps({"ok": False, "exit_code": code, "error": type(exc).__name__,
                          "code": getattr(exc, "code", ""), "message": line}, ensure_ascii=False))
    return code


if __name__ == "__main__":
    sys.exit(main())
