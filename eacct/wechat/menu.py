"""The official account's menu. The rightmost button is 会员中心, whose sub-buttons open the member pages
(`view` buttons; the page itself goes through WeChat OAuth); the click keys are commands the bot routes
(eacct.wechat.service.COMMANDS). WeChat allows at most 3 top-level buttons and 5 sub-buttons each."""

from __future__ import annotations

import asyncio

from eacct.config import Settings

__all__ = ["MEMBER_PAGES", "build_menu", "create_menu", "menu_keys", "view_urls"]

# 会员中心's sub-buttons: (name, page path), in the order the guide names them.
MEMBER_PAGES = [
    ("会员中心", "/wx/member"),
    ("会员信息", "/wx/info"),
    ("我的好友", "/wx/friends"),
    ("我的网盘", "/wx/netdisk"),
    ("消息中心", "/wx/messages"),
]


def build_menu(settings: Settings) -> dict:
    """The menu for this deployment: page buttons point at EACCT_PUBLIC_URL."""
    base = settings.public_url.rstrip("/")
    if not base:
        raise ValueError("EACCT_PUBLIC_URL is needed: the 会员中心 buttons open pages under it")
    return {
        "button": [
            {"type": "click", "name": "帮助", "key": "HELP"},
            {"name": "网盘共享", "sub_button": [
                {"type": "click", "name": "网盘列表", "key": "MY_NETDISK"},
                {"type": "click", "name": "共享列表", "key": "MY_SHARES"},
            ]},
            {"name": "会员中心", "sub_button": [
                {"type": "view", "name": name, "url": base + path} for name, path in MEMBER_PAGES
            ]},
        ]
    }


def _items(menu: dict):
    for button in menu["button"]:
        yield from button.get("sub_button", [button])


def menu_keys(menu: dict) -> list[str]:
    """Every click key of a menu."""
    return [item["key"] for item in _items(menu) if item.get("type") == "click"]


def view_urls(menu: dict) -> list[str]:
    """Every page a menu's view buttons open."""
    return [item["url"] for item in _items(menu) if item.get("type") == "view"]


def create_menu(settings: Settings, timeout: float = 10.0) -> dict:
    """Publish the menu to the official account (WeChat's menu/create); returns WeChat's answer. The access
    token is the one the servers share in the database, so publishing does not retire theirs."""
    if not (settings.wechat_appid and settings.wechat_secret):
        raise ValueError("EACCT_WECHAT_APPID and EACCT_WECHAT_SECRET are needed to publish the menu")
    return asyncio.run(_publish(settings, build_menu(settings), timeout))


async def _publish(settings: Settings, menu: dict, timeout: float) -> dict:
    from eacct.providers import provide
    from eacct.wechat.client import WechatApiClient
    from eacct.wechat.tokens import DatabaseTokenStorage

    # The database only (the shared access token lives there), opened as the server opens it, not migrated.
    async with provide(settings, storage=False, migrate=False) as provided:
        storage = DatabaseTokenStorage(provided.sessions, asyncio.get_running_loop())
        client = WechatApiClient(settings.wechat_appid, settings.wechat_secret, settings.wechat_api_base, timeout,
                                 storage)
        return await asyncio.to_thread(client.with_token_retry, lambda: client.menu.create(menu))
