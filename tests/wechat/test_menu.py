"""The official account's menu: published with `eacct wechat menu`, every key answered by the bot."""

from __future__ import annotations

import asyncio
import json

from eacct.cli import main
from eacct.wechat.menu import MENU, menu_keys
from eacct.wechat.service import COMMANDS
from tests.wechat_api_server import start_wechat_api


def test_every_menu_key_is_a_routed_command():
    assert menu_keys() and set(menu_keys()) <= set(COMMANDS)


async def test_eacct_wechat_menu_publishes_the_menu(monkeypatch, capsys):
    api = await start_wechat_api("wxmenu000000000001", "menu-secret")
    try:
        monkeypatch.setenv("EACCT_WECHAT_APPID", "wxmenu000000000001")
        monkeypatch.setenv("EACCT_WECHAT_SECRET", "menu-secret")
        monkeypatch.setenv("EACCT_WECHAT_API_BASE", api.base_url)
        assert await asyncio.to_thread(main, ["wechat", "menu"]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["errcode"] == 0
        assert api.menu == MENU

        monkeypatch.setenv("EACCT_WECHAT_SECRET", "wrong-secret")
        assert await asyncio.to_thread(main, ["wechat", "menu"]) == 1
        error = capsys.readouterr().err
        assert "menu not published" in error and "wrong-secret" not in error
    finally:
        await api.close()


def test_menu_needs_the_app_credentials(monkeypatch, capsys):
    monkeypatch.delenv("EACCT_WECHAT_APPID", raising=False)
    assert main(["wechat", "menu"]) == 1
    assert "EACCT_WECHAT_APPID" in capsys.readouterr().err
