"""WeChat web OAuth (网页授权, snsapi_base): where to send a visitor, and how to turn WeChat's `code` into the
visitor's openid (through EACCT_WECHAT_API_BASE, so tests talk to a local fake)."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import aiohttp

from eacct import errors
from eacct.config import Settings

__all__ = ["AUTHORIZE_URL", "authorize_url", "openid_for_code"]

log = logging.getLogger("eacct.wechat.oauth")

AUTHORIZE_URL = "https://open.weixin.qq.com/connect/oauth2/authorize"


def authorize_url(settings: Settings, redirect_uri: str, state: str) -> str:
    """WeChat's authorize page for `snsapi_base`: it comes back to `redirect_uri` with `code` and `state`."""
    query = urlencode({"appid": settings.wechat_appid, "redirect_uri": redirect_uri, "response_type": "code",
                       "scope": "snsapi_base", "state": state})
    return f"{AUTHORIZE_URL}?{query}#wechat_redirect"


async def openid_for_code(settings: Settings, code: str, timeout: float = 10.0) -> str:
    """Exchange an OAuth `code` for the visitor's openid (sns/oauth2/access_token). Forbidden when WeChat
    refuses the code or cannot be reached: either way the visitor has no session and is asked to retry."""
    params = {"appid": settings.wechat_appid, "secret": settings.wechat_secret, "code": code,
              "grant_type": "authorization_code"}
    url = settings.wechat_api_base.rstrip("/") + "/sns/oauth2/access_token"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.get(url, params=params) as response:
                answer = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        # The URL carries the secret: log the kind of failure only.
        log.warning("WeChat OAuth code exchange failed: %s", type(exc).__name__)
        raise errors.Forbidden("暂时无法连接微信，请稍后重新打开页面") from exc
    openid = answer.get("openid") if isinstance(answer, dict) else None
    if not isinstance(openid, str) or not openid or len(openid) > 64:
        log.info("WeChat refused an OAuth code: errcode %s", answer.get("errcode") if isinstance(answer, dict) else "?")
        raise errors.Forbidden("微信授权已失效，请重新打开页面")
    return openid
