"""`eacct-sync`: the desktop side from a terminal, a thin layer over DesktopSync.

Credentials come from flags or the environment (EACCT_SYNC_ACCOUNT, EACCT_SYNC_PASSWORD,
EACCT_SYNC_NETDISK_PASSWORD), never from a file.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from pathlib import Path

from eacct.desktop_sync import DesktopSync, EacctClient, LedgerFolder, SyncError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eacct-sync", description="e会计 云备份 / 云共享 from the command line")
    parser.add_argument("--server", default=os.environ.get("EACCT_SYNC_SERVER", "http://127.0.0.1:8080"))
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("EACCT_SYNC_ROOT", "ledgers")),
                        help="the ledger folder: <root>/<ledger_id>/ledger.json and <root>/<ledger_id>/<year>/")
    parser.add_argument("--account", default=os.environ.get("EACCT_SYNC_ACCOUNT"))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ledgers", help="list the local ledgers")
    commands.add_parser("backups", help="云备份: my ledgers in the cloud")
    commands.add_parser("shared", help="我的云共享: ledgers friends shared with me")
    download = commands.add_parser("download", help="download one year")
    download.add_argument("ledger_id")
    download.add_argument("year", type=int)
    download.add_argument("--version", default="latest")
    download.add_argument("--overwrite", action="store_true", help="覆盖本地账套: replace the local year")
    upload = commands.add_parser("upload", help="upload one year (云备份 or 云共享, chosen by who owns the ledger)")
    upload.add_argument("ledger_id")
    upload.add_argument("year", type=int)
    upload.add_argument("--remark", default="")
    return parser


def _secret(variable: str, prompt: str) -> str:
    return os.environ.get(variable) or getpass.getpass(prompt)


async def _run(args: argparse.Namespace) -> object:
    folder = LedgerFolder(args.root)
    if args.command == "ledgers":
        return [ledger.to_json() for ledger in folder.ledgers()]
    if not args.account:
        raise SyncError("需要会员账号：--account 或 EACCT_SYNC_ACCOUNT")
    async with EacctClient(args.server, client_version="eacct-sync 0.1") as client:
        await client.log_in(args.account, _secret("EACCT_SYNC_PASSWORD", "会员密码: "))
        await client.unlock(_secret("EACCT_SYNC_NETDISK_PASSWORD", "云盘密码: "))
        sync = DesktopSync(client, folder)
        if args.command == "backups":
            return await client.backups()
        if args.command == "shared":
            return await client.cloud_shares()
        if args.command == "download":
            done = await sync.download_year(args.ledger_id, args.year, args.version, overwrite=args.overwrite)
        else:
            done = await sync.upload_year(args.ledger_id, args.year, args.remark)
        return {"side": done.side, "version": done.version, "reminder": done.reminder}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `eacct-sync`; prints JSON, exits 1 with the reason on any refusal."""
    args = build_parser().parse_args(argv)
    try:
        result = asyncio.run(_run(args))
    except SyncError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
