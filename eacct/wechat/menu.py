"""The official account's menu: its click keys are exactly the commands the bot routes (eacct.wechat.service)."""

from __future__ import annotations

from eacct.config import Settings

__all__ = ["MENU", "create_menu", "menu_keys"]

MENU = {
    "button": [
        {"name": "会员中心", "sub_button": [
            {"type": "click", "name": "会员中心", "key": "MEMBER_CENTER"},
            {"type": "click", "name": "会员信息", "key": "MEMBER_INFO"},
            {"type": "click", "name": "我的好友", "key": "MY_FRIENDS"},
        ]},
        {"name": "我的网盘", "sub_button": [
            {"type": "click", "name": "网盘列表", "key": "MY_NETDISK"},
            {"type": "click", "name": "共享列表", "key": "MY_SHARES"},
        ]},
        {"type": "click", "name": "帮助", "key": "HELP"},
    ]
}


def menu_keys(menu: dict = MENU) -> list[str]:
    """Every click key of a menu."""
    keys = []
    for button in menu["button"]:
        for item in button.get("sub_button", [button]):
            if item.get("type") == "click":
                keys.append(item["key"])
    return keys


def create_menu(settings: Settings, timeout: float = 10.0) -> dict:
    """Publish MENU to the official account (WeChat's menu/create); returns WeChat's answer."""
    from eacct.wechat.client import WechatApiClient

    if not (settings.wechat_appid and settings.wechat_secret):
        raise ValueError("EACCT_WECHAT_APPID and EACCT_WECHAT_SECRET are needed to publish the menu")
    client = WechatApiClient(settings.wechat_appid, settings.wechat_secret, settings.wechat_api_base, timeout)
    return client.menu.create(MENU)
