"""wechatpy's client as eacct uses it (template messages, the menu); its own module so that wechatpy and
requests are imported only by a process that talks to WeChat's API."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import requests
from wechatpy import WeChatClient
from wechatpy.constants import WeChatErrorCode
from wechatpy.exceptions import WeChatClientException

if TYPE_CHECKING:
    from eacct.wechat.tokens import DatabaseTokenStorage

__all__ = ["TOKEN_REFUSED", "WeChatClientException", "WechatApiClient"]

T = TypeVar("T")

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
    timeouts, and one token fetch at a time between the pool's threads. With a `DatabaseTokenStorage` the
    token is shared by every process and refreshed by one of them at a time, before it expires; without one
    (tests of this class alone) wechatpy's per-process MemoryStorage keeps it."""

    def __init__(self, appid: str, secret: str, api_base: str, timeout: float,
                 storage: DatabaseTokenStorage | None = None) -> None:
        super().__init__(appid, secret, session=storage, timeout=timeout, auto_retry=False)
        self.API_BASE_URL = api_base.rstrip("/") + "/cgi-bin/"
        self._http = _TimeoutSession(timeout)
        self._token_lock = threading.RLock()
        self._shared = storage
        self._last_token: str | None = None

    def _fetch_new_token(self):
        return self._fetch_access_token(
            url=self.API_BASE_URL + "token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )

    def fetch_access_token(self):
        """A new token, because WeChat refused the one last used (another process may already have it)."""
        with self._token_lock:
            if self._shared is None:
                return self._fetch_new_token()
            self._shared.refresh(self.access_token_key, self._fetch_new_token, stale=self._last_token)

    def with_token_retry(self, call: Callable[[], T]) -> T:
        """Run an API call; when WeChat refuses the token (expired, or retired by a newer one), get a new one
        and try once more."""
        try:
            return call()
        except WeChatClientException as exc:
            if exc.errcode not in TOKEN_REFUSED:
                raise
            self.fetch_access_token()
            return call()

    @property
    def access_token(self):
        with self._token_lock:
            if self._shared is None:
                return super().access_token
            token = self._shared.get(self.access_token_key)
            if token is None:
                self._shared.refresh(self.access_token_key, self._fetch_new_token)
                token = self._shared.get(self.access_token_key)
            self._last_token = token
            return token
