"""desktop_sync stands on eacct.chunks alone: importing it, and a whole upload and download through it, load
none of the server's libraries (checked in a fresh interpreter, where nothing else was imported first)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap

from tests.desktop_sync.test_sync import make_local_ledger

SERVER_ONLY = ["sqlalchemy", "aiohttp.web", "oss2", "wechatpy", "eacct.errors", "eacct.netdisk", "eacct.storage"]

SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from eacct.desktop_sync import DesktopSync, EacctClient, LedgerFolder

    async def main(base_url, account, password, netdisk_password, root, ledger_id):
        client = EacctClient(base_url)
        try:
            await client.log_in(account, password)
            await client.unlock(netdisk_password)
            sync = DesktopSync(client, LedgerFolder(Path(root)))
            await sync.upload_year(ledger_id, 2019, remark="2019年1期")
            await sync.download_year(ledger_id, 2019, overwrite=True)
        finally:
            await client.close()

    asyncio.run(main(*sys.argv[1:]))
    print(json.dumps(sorted(sys.modules)))
""")


def loaded_server_modules(modules: list[str]) -> list[str]:
    return [name for name in SERVER_ONLY if any(m == name or m.startswith(name + ".") for m in modules)]


async def test_desktop_sync_imports_only_eacct_chunks():
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys, json, eacct.desktop_sync; print(json.dumps(sorted(sys.modules)))",
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    out, _ = await process.communicate()
    assert process.returncode == 0
    modules = json.loads(out)
    assert loaded_server_modules(modules) == []


async def test_a_whole_upload_and_download_through_desktop_sync_loads_no_server_library(desktop, base_url, tmp_path):
    owner = await desktop("pure_client", "小王")
    ledger_id = make_local_ledger(tmp_path / "ledgers", "纯客户端", [2019], rows=200)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT, base_url, owner.account, owner.password, owner.netdisk_password,
        str(tmp_path / "ledgers"), ledger_id,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    modules = json.loads(out.decode().splitlines()[-1])
    assert "eacct.chunks.chunker" in modules  # the upload really cut the year with the shared chunker
    assert loaded_server_modules(modules) == []
