"""The official account's menu: published with `eacct wechat menu`, every key answered by the bot."""

from __future__ import annotations

import asyncio
import json

from eacct.cli import main
from eacct.config import Settings
from eacct.wechat.menu import build_menu, menu_keys, view_urls
from eacct.wechat.service import COMMANDS
from tests.wechat_api_server import start_wechat_api


PUBLIC = "https://eacct.example"


def test_every_menu_key_is_a_routed_command():
    menu = build_menu(Settings(public_url=PUBLIC))
    assert menu_keys(menu) and set(menu_keys(menu)) <= set(COMMANDS)


def test_menu_rightmost_is_member_center_opening_the_pages():
    menu = build_menu(Settings(public_url=PUBLIC))
    assert len(menu["button"]) <= 3 and all(len(b.get("sub_button", [])) <= 5 for b in menu["button"])
    member_center = menu["button"][-1]
    assert member_center["name"] == "会员中心"
    assert [(b["type"], b["name"]) for b in member_center["sub_button"]] == [
        ("view", "会员中心"), ("view", "会员信息"), ("view", "我的好友"), ("view", "我的网盘"), ("view", "消息中心")]
    assert view_urls(menu) == [PUBLIC + p for p in ("/wx/member", "/wx/info", "/wx/friends", "/wx/netdisk",
                                                     "/wx/messages")]
    # The words of the buttons are also text commands whose answer links the same page.
    for button in member_center["sub_button"]:
        assert COMMANDS[button["name"]].page == button["url"][len(PUBLIC):]


async def test_eacct_wechat_menu_publishes_the_menu(monkeypatch, capsys, cli_env):
    api = await start_wechat_api("wxmenu000000000001", "menu-secret")
    try:
        monkeypatch.setenv("EACCT_WECHAT_APPID", "wxmenu000000000001")
        monkeypatch.setenv("EACCT_WECHAT_SECRET", "menu-secret")
        monkeypatch.setenv("EACCT_WECHAT_API_BASE", api.base_url)
        monkeypatch.setenv("EACCT_PUBLIC_URL", PUBLIC)
        assert await asyncio.to_thread(main, ["wechat", "menu"]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["errcode"] == 0
        assert api.menu == build_menu(Settings(public_url=PUBLIC))

        # Publishing again uses the token kept in the database: no second fetch.
        assert await asyncio.to_thread(main, ["wechat", "menu"]) == 0 and api.token_requests == 1
        capsys.readouterr()

        api.expire_tokens()  # so a new token is needed, which the wrong secret cannot get
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
