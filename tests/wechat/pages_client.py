"""A browser for the member pages over HTTP: its own cookie jar, a User-Agent, and WeChat's OAuth hop played
against the fake WeChat API (tests/wechat_api_server.py)."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import aiohttp

WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN")
DESKTOP_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """One browser: keeps cookies (HttpOnly ones too) and the last page it saw."""

    def __init__(self, base_url: str, user_agent: str) -> None:
        self.base_url = base_url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          headers={"User-Agent": user_agent})
        self.page = ""

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str, *, follow: bool = True, **params) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.base_url + path, params=params or None, allow_redirects=follow) as response:
            self.page = await response.text()
            return response.status, self.page, response

    async def post(self, path: str, data, *, csrf: str | None = None, follow: bool = True):
        """POST a form; the CSRF token is the one on the last page unless given."""
        fields = list(data.items()) if isinstance(data, dict) else list(data)
        fields.append(("csrf_token", self.csrf() if csrf is None else csrf))
        async with self.http.post(self.base_url + path, data=fields, allow_redirects=follow) as response:
            self.page = await response.text()
            return response.status, self.page, response

    def csrf(self) -> str:
        match = CSRF.search(self.page)
        assert match, "no form with a CSRF token on the last page"
        return html.unescape(match.group(1))

    def cookie(self, name: str) -> str | None:
        for cookie in self.http.cookie_jar:
            if cookie.key == name:
                return cookie.value
        return None

    def set_cookie(self, name: str, value: str) -> None:
        """Replace a cookie (a forged or an old one) as a tampering client would."""
        self.http.cookie_jar.clear(lambda cookie: cookie.key == name)
        self.http.cookie_jar.update_cookies({name: value})

    async def wechat_login(self, wechat_api, openid: str, path: str = "/wx/member") -> tuple[int, str]:
        """Open a page in WeChat's browser: follow the OAuth redirect as WeChat would, as follower `openid`."""
        status, _, response = await self.get(path, follow=False)
        assert status == 302, status
        redirect_uri, state = authorize_params(response.headers["Location"])
        callback = urlsplit(redirect_uri)
        status, text, _ = await self.get(f"{callback.path}?{callback.query}", code=wechat_api.issue_code(openid),
                                         state=state)
        return status, text


def authorize_params(location: str) -> tuple[str, str]:
    """(redirect_uri, state) of a redirect to WeChat's authorize page; checks its fixed shape."""
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://open.weixin.qq.com/connect/oauth2/authorize"
    assert parts.fragment == "wechat_redirect"
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert query["response_type"] == "code" and query["scope"] == "snsapi_base" and query["appid"]
    return query["redirect_uri"], query["state"]
