"""The member pages in a real browser (headless Chromium through Playwright): a phone in WeChat (375×667,
WeChat's User-Agent, OAuth played by intercepting WeChat's authorize page) and a desktop browser on the web
console each walk bind/login → add friend → share → cancel → messages. Screenshots go to tests/artifacts/.

The browser is the system Chromium (Debian's `chromium`, installed by .ci/run). If it cannot start, these
tests fail: they never skip. No request may leave 127.0.0.1 (no CDN, no outside font or script).
"""

from __future__ import annotations

import re
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.async_api import Page, async_playwright, expect

from eacct.db import unit_of_work
from eacct.share import service as share_service
from tests.conftest import new_ledger_id
from tests.share.conftest import messages
from tests.wechat.pages_client import DESKTOP_UA, WECHAT_UA

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
APPID = "wxbrowser0000000001"
SECRET = "browser-secret-51a9"
AUTHORIZE = "https://open.weixin.qq.com/connect/oauth2/authorize?"


@asynccontextmanager
async def chromium():
    """The system Chromium, started inside the test: a failure to start fails the test (no skip)."""
    async with async_playwright() as playwright:
        try:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:
            pytest.fail(f"headless Chromium ({CHROMIUM}) did not start — install chromium (see .ci/run): {exc}")
        try:
            yield browser
        finally:
            await browser.close()


class Outside:
    """Requests a page tried to send anywhere but the local server: there must be none."""

    def __init__(self) -> None:
        self.requests: list[str] = []


async def guard(context, outside: Outside, wechat_api=None, openid: str = "") -> None:
    """Route every request: 127.0.0.1 passes; a redirect to WeChat's authorize page is answered as WeChat does
    for snsapi_base (at once, back to redirect_uri with a code for `openid` and the same state); anything else
    is recorded and refused. (Playwright does not route the requests a redirect leads to, so the redirect is
    caught on the way out of the local server.)"""

    async def handle(route):
        url = route.request.url
        if urlsplit(url).hostname != "127.0.0.1":
            outside.requests.append(url)
            await route.abort()
            return
        response = await route.fetch(max_redirects=0)
        location = response.headers.get("location", "")
        if wechat_api is not None and location.startswith(AUTHORIZE):
            query = {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}
            back = f"{query['redirect_uri']}&{urlencode({'code': wechat_api.issue_code(openid), 'state': query['state']})}"
            headers = {k: v for k, v in response.headers.items() if k.lower() not in ("location", "content-length")}
            await route.fulfill(status=302, headers={**headers, "Location": back})
        else:
            await route.fulfill(response=response)

    await context.route("**/*", handle)


async def shot(page: Page, name: str, focus=None) -> None:
    """A screenshot: the whole page on a desktop; on the phone what its screen shows (a full-page capture would
    paint the fixed tab bar mid-page), scrolled to `focus` if given."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if focus is not None:
        await focus.scroll_into_view_if_needed()
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=page.viewport_size["width"] > 500)


async def setup_members(desktop, sessions, tag: str):
    owner = await desktop(f"wang{tag}", "小王")
    li = await desktop(f"li{tag}", "小李")
    ledger = new_ledger_id()
    assert (await owner.upload("backups", ledger, 2018, b"ledger 2018" * 5000, remark="2018年1期", name="123"))[0] == 201
    assert (await owner.upload("backups", ledger, 2019, b"ledger 2019" * 9000, remark="2019年12期"))[0] == 201
    async with unit_of_work(sessions) as session:
        await share_service.broadcast(session, "系统维护通知", "本周六 22:00 至 23:00 云服务维护，期间暂停上传。")
    return owner, li, ledger


async def walk(page: Page, name: str, owner, li) -> None:
    """add friend → share → cancel → messages, on whichever device `page` is."""
    await page.get_by_role("link", name="我的好友").first.click()
    await page.fill("input[name=account]", li.account)
    await page.fill("input[name=nickname]", "小李")
    await page.get_by_role("button", name="添加好友").click()
    await expect(page.get_by_role("status")).to_contain_text(f"已添加好友：小李（{li.account}）")
    await shot(page, f"{name}-2-friends")

    await page.get_by_role("link", name="我的网盘").first.click()
    await expect(page.locator(".space")).to_contain_text("网盘空间")
    await page.get_by_text("分享操作").click()  # the guide's words; the form is there already
    await page.get_by_role("checkbox", name=re.compile("小李")).check()
    await shot(page, f"{name}-3-share-form", page.get_by_role("button", name="确定"))
    await page.get_by_role("button", name="确定").click()
    await expect(page.get_by_role("status")).to_contain_text(re.compile(r"该账套于\d{4}年\d{1,2}月\d{1,2}日开始共享给小李"))
    await shot(page, f"{name}-4-shared")

    await page.get_by_role("link", name="共享列表").click()
    await expect(page.locator(".share-summary")).to_have_text("已共享1个账套给1位好友")
    await shot(page, f"{name}-5-share-list")
    await page.get_by_role("button", name="取消共享").click()
    await expect(page.get_by_role("status")).to_contain_text("已取消共享：账套 123 不再共享给小李")
    await expect(page.locator(".share-summary")).to_have_text("已共享0个账套给0位好友")

    await page.get_by_role("link", name="消息中心").first.click()
    await expect(page.locator(".unread-count")).to_have_text("1")
    await shot(page, f"{name}-6-messages")
    await page.get_by_role("button", name="标为已读").click()
    await expect(page.get_by_role("status")).to_contain_text("已标为已读")
    await expect(page.locator(".unread-count")).to_have_text("0")
    await shot(page, f"{name}-7-messages-read")
    assert [m["title"] for m in (await messages(li))["messages"]] == ["共享已取消", "新的共享账套", "系统维护通知"]


async def test_phone_in_wechat_binds_adds_a_friend_shares_cancels_and_reads_messages(
        site, wechat_api, desktop, sessions):
    owner, li, _ = await setup_members(desktop, sessions, "p")
    async with chromium() as browser:
        await phone_walk(browser, site, wechat_api, owner, li)


async def phone_walk(chromium, site, wechat_api, owner, li) -> None:
    context = await chromium.new_context(viewport={"width": 375, "height": 667}, user_agent=WECHAT_UA,
                                         device_scale_factor=2, is_mobile=True, has_touch=True, locale="zh-CN")
    outside = Outside()
    await guard(context, outside, wechat_api, "openid-phone")
    page = await context.new_page()
    await page.goto(site + "/wx/member")  # WeChat OAuth, then the bind form (not bound yet)
    await expect(page.locator("input[name=nickname]")).to_be_visible()
    await shot(page, "phone-0-bind")
    await page.fill("input[name=account]", owner.account)
    await page.fill("input[name=password]", owner.password)
    await page.fill("input[name=nickname]", "小王")
    await page.get_by_role("button", name="绑定").click()
    await expect(page.get_by_role("status")).to_contain_text(f"绑定成功：已绑定会员账号 {owner.account}")
    await shot(page, "phone-1-member")
    await walk(page, "phone", owner, li)
    assert outside.requests == []
    await context.close()


async def test_desktop_web_console_logs_in_adds_a_friend_shares_cancels_and_reads_messages(
        site, desktop, sessions):
    owner, li, _ = await setup_members(desktop, sessions, "d")
    async with chromium() as browser:
        await desktop_walk(browser, site, owner, li)


async def desktop_walk(chromium, site, owner, li) -> None:
    context = await chromium.new_context(viewport={"width": 1280, "height": 800}, user_agent=DESKTOP_UA,
                                         locale="zh-CN")
    outside = Outside()
    await guard(context, outside)
    page = await context.new_page()
    await page.goto(site + "/wx/netdisk")
    await expect(page.locator("input[name=password]")).to_be_visible()
    await page.fill("input[name=account]", owner.account)
    await page.fill("input[name=password]", "wrong-password")
    await page.get_by_role("button", name="登录").click()
    await expect(page.get_by_role("alert")).to_contain_text("会员账号或密码错误")
    await expect(page.locator("input[name=account]")).to_have_value(owner.account)
    await shot(page, "desktop-0-login-refused")
    await page.fill("input[name=password]", owner.password)
    await page.get_by_role("button", name="登录").click()
    await expect(page.locator(".space")).to_contain_text("可用空间")
    await shot(page, "desktop-1-netdisk")
    await walk(page, "desktop", owner, li)
    await page.get_by_role("button", name="退出登录").click()
    await expect(page.get_by_text("您已退出登录")).to_be_visible()
    assert outside.requests == []
    await context.close()
