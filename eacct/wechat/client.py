"""wechatpy's client as eacct uses it (template messages, the menu); its own module so that wechatpy and
requests are imported only by a process that talks to WeChat's API."""

from __future__ import annotations

import threading

import requests
from wechatpy import WeChatClient
from wechatpy.constants import WeChatErrorCode
from wechatpy.exceptions import WeChatClientException

__all__ = ["TOKEN_REFUSED", "WeChatClientException", "WechatApiClient"]

# WeChat's answers to a token it no longer accepts: fetch a new one and try once more.
TOKEN_REFUSED = {WeChatErrorCode.INVALID_CREDENTIAL, WeChatErrorCode.INVALID_ACCESS_TOKEN,
                 WeChatErrorCode.EXPIRED_ACCESS_TOKEN}


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout: wechatpy fetches the access token without one."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method, url, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, **kwargs)


class WechatApiClient(WeChatClient):
    """wechatpy's client against `api_base` (its token fetch ignores API_BASE_URL, so it is redone here), with
    timeouts, and one token fetch at a time between the pool's threads. The token is cached in wechatpy's
    MemoryStorage: enough for one process (several processes each keep their own token; WeChat accepts the
    old token for five minutes after a new one is issued)."""

    def __init__(self, appid: str, secret: str, api_base: str, timeout: float) -> None:
        super().__init__(appid, secret, timeout=timeout, auto_retry=False)
        self.API_BASE_URL = api_base.rstrip("/") + "/cgi-bin/"
        self._http = _TimeoutSession(timeout)
        self._token_lock = threading.RLock()

    def fetch_access_token(self):
        with self._token_lock:
            return self._fetch_access_token(
                url=self.API_BASE_URL + "token",
                params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
            )

    @property
    def access_token(self):
        with self._token_lock:
            return super().access_token
