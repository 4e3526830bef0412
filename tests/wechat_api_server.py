"""A small fake of WeChat's server API (api.weixin.qq.com), for tests that must not reach Tencent.

It speaks what wechatpy's `WeChatClient` sends and expects:

* `GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…` → `{"access_token", "expires_in"}`;
  a wrong grant type, appid or secret gets WeChat's JSON error (HTTP 200 with `errcode` 40002 / 40013 /
  40001), as WeChat answers.
* `POST /cgi-bin/message/template/send?access_token=…` with a UTF-8 JSON body (wechatpy sends it without a
  Content-Type and with `ensure_ascii=False`): checks the token (41001 missing, 40001 unknown, 42001
  expired), the body (47001 not JSON or no `data` object of `{"value": …}`), `template_id` (40037) and
  `touser` (40003, when the test names the followers); records the payload and answers
  `{"errcode": 0, "errmsg": "ok", "msgid": …}`.

* `GET /sns/oauth2/access_token?appid=…&secret=…&code=…&grant_type=authorization_code` (web OAuth): a code
  from `issue_code(openid)` is good once and answers that openid (40029 for any other or a reused code,
  40013 / 40001 / 40002 as above); recorded in `oauth_requests`.

Tests steer it: `fail_sends` (an errcode, for the next n sends or until `clear_faults`), `hold_sends` /
`release_sends` (a slow WeChat: sends arrive and wait for an asyncio.Event), `expire_tokens`. They observe
it through `sent`, `send_attempts`, `token_requests`, `held`, and wait with `wait_until`.
Start one with `start_wechat_api`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

__all__ = ["FakeWechatApi", "SendFault", "start_wechat_api"]

JSON_TYPE = "application/json"


@dataclass
class SendFault:
    errcode: int
    errmsg: str
    times: int | None  # None: until cleared


class FakeWechatApi:
    """One official account (appid, secret) of WeChat's server API, in memory."""

    def __init__(self, appid: str, secret: str, *, template_ids: set[str] | None = None,
                 followers: set[str] | None = None) -> None:
        self.appid, self.secret = appid, secret
        self.template_ids = template_ids
        self.followers = followers
        self.base_url = ""
        self.tokens: dict[str, bool] = {}  # issued token → still valid
        self.token_requests = 0
        self.send_attempts: list[dict] = []  # every send that reached the handler, with its answer's errcode
        self.sent: list[dict] = []  # template messages WeChat accepted (the JSON payloads)
        self.held = 0  # sends waiting for `release_sends`
        self._fault: SendFault | None = None
        self._gate: asyncio.Event | None = None
        self._changed = asyncio.Event()
        self._msgids = itertools.count(200228332)
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_get("/cgi-bin/token", self._token)
        self.app.router.add_post("/cgi-bin/message/template/send", self._send_template)
        self.app.router.add_post("/cgi-bin/menu/create", self._create_menu)
        self.app.router.add_get("/sns/oauth2/access_token", self._oauth_access_token)
        self.menu: dict | None = None  # the menu as last published
        self.oauth_codes: dict[str, str] = {}  # code WeChat handed a browser → the follower's openid
        self.oauth_requests: list[dict] = []
        self.token_expires_in = 7200
        self.token_delay = 0.0  # seconds each token fetch takes (a slow WeChat makes refresh races real)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host:port` (a free port when 0); return the base URL (what EACCT_WECHAT_API_BASE holds)."""
        self._runner = web.AppRunner(self.app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        return self.base_url

    async def close(self) -> None:
        self.release_sends()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- steering ----------------------------------------------------------------------------------

    def fail_sends(self, errcode: int, errmsg: str, times: int | None = None) -> None:
        """Answer the next `times` sends (all, when None) with this error."""
        self._fault = SendFault(errcode, errmsg, times)

    def clear_faults(self) -> None:
        self._fault = None

    def hold_sends(self) -> None:
        """From now on sends wait (after their checks, before they are recorded) until `release_sends`."""
        self._gate = asyncio.Event()

    def release_sends(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def expire_tokens(self) -> None:
        """Every token issued so far expires (WeChat answers 42001 until a new one is fetched)."""
        self.tokens = dict.fromkeys(self.tokens, False)

    # -- observing ---------------------------------------------------------------------------------

    def sent_to(self, openid: str) -> list[dict]:
        return [message for message in self.sent if message["touser"] == openid]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait (without polling) until `condition()` holds after some request changed this fake's state."""
        async def wait() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def _touch(self) -> None:
        self._changed.set()

    # -- WeChat's API ------------------------------------------------------------------------------

    @staticmethod
    def _answer(payload: dict) -> web.Response:
        # WeChat answers errors with HTTP 200 and a JSON body; its Content-Type is this, not plain JSON.
        return web.Response(text=json.dumps(payload, ensure_ascii=False),
                            headers={"Content-Type": "application/json; encoding=utf-8"})

    @classmethod
    def _error(cls, errcode: int, errmsg: str) -> web.Response:
        return cls._answer({"errcode": errcode, "errmsg": f"{errmsg} rid: {secrets.token_hex(6)}"})

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        self._touch()
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        query = request.query
        if query.get("grant_type") != "client_credential":
            return self._error(40002, "invalid grant_type")
        if query.get("appid") != self.appid:
            return self._error(40013, "invalid appid")
        if query.get("secret") != self.secret:
            return self._error(40001, "invalid credential, access_token is invalid or not latest")
        token = secrets.token_urlsafe(48)
        self.tokens[token] = True
        return self._answer({"access_token": token, "expires_in": self.token_expires_in})

    def issue_code(self, openid: str) -> str:
        """What WeChat's authorize page gives the browser of follower `openid`: a one-time code."""
        code = secrets.token_urlsafe(16)
        self.oauth_codes[code] = openid
        return code

    async def _oauth_access_token(self, request: web.Request) -> web.Response:
        query = request.query
        self.oauth_requests.append(dict(query))
        self._touch()
        if query.get("grant_type") != "authorization_code":
            return self._error(40002, "invalid grant_type")
        if query.get("appid") != self.appid:
            return self._error(40013, "invalid appid")
        if query.get("secret") != self.secret:
            return self._error(40001, "invalid credential")
        openid = self.oauth_codes.pop(query.get("code", ""), None)
        if openid is None:
            return self._error(40029, "invalid code")
        return self._answer({"access_token": secrets.token_urlsafe(32), "expires_in": 7200,
                             "refresh_token": secrets.token_urlsafe(32), "openid": openid, "scope": "snsapi_base"})

    async def _create_menu(self, request: web.Request) -> web.Response:
        if not self.tokens.get(request.query.get("access_token", "")):
            return self._error(40001, "invalid credential, access_token is invalid or not latest")
        try:
            menu = json.loads(await request.read())
        except ValueError:
            return self._error(47001, "data format error")
        buttons = menu.get("button") if isinstance(menu, dict) else None
        if not buttons or len(buttons) > 3 or any(len(b.get("sub_button", [])) > 5 for b in buttons):
            return self._error(40016, "invalid button size")
        self.menu = menu
        return self._answer({"errcode": 0, "errmsg": "ok"})

    async def _send_template(self, request: web.Request) -> web.Response:
        attempt = {"errcode": None}
        self.send_attempts.append(attempt)
        try:
            response, payload = await self._check_send(request, attempt)
            if payload is not None and self._gate is not None:
                gate = self._gate
                self.held += 1
                self._touch()
                try:
                    await gate.wait()
                finally:
                    self.held -= 1
            if payload is not None and self._fault is not None:
                fault = self._fault
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._fault = None
                attempt["errcode"] = fault.errcode
                return self._error(fault.errcode, fault.errmsg)
            if payload is not None:
                attempt["errcode"] = 0
                self.sent.append(payload)
                return self._answer({"errcode": 0, "errmsg": "ok", "msgid": next(self._msgids)})
            return response
        finally:
            self._touch()

    async def _check_send(self, request: web.Request, attempt: dict) -> tuple[web.Response | None, dict | None]:
        token = request.query.get("access_token", "")
        if not token:
            attempt["errcode"] = 41001
            return self._error(41001, "access_token missing"), None
        if token not in self.tokens:
            attempt["errcode"] = 40001
            return self._error(40001, "invalid credential, access_token is invalid or not latest"), None
        if not self.tokens[token]:
            attempt["errcode"] = 42001
            return self._error(42001, "access_token expired"), None
        try:
            payload = json.loads((await request.read()).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            payload = None
        if (not isinstance(payload, dict) or not isinstance(payload.get("data"), dict)
                or not all(isinstance(field, dict) and isinstance(field.get("value"), str)
                           for field in payload["data"].values())):
            attempt["errcode"] = 47001
            return self._error(47001, "data format error"), None
        if not isinstance(payload.get("template_id"), str) or (
                self.template_ids is not None and payload["template_id"] not in self.template_ids):
            attempt["errcode"] = 40037
            return self._error(40037, "invalid template_id"), None
        touser = payload.get("touser")
        if not isinstance(touser, str) or not touser or (self.followers is not None and touser not in self.followers):
            attempt["errcode"] = 40003
            return self._error(40003, "invalid openid"), None
        return None, payload


async def start_wechat_api(appid: str, secret: str, **options) -> FakeWechatApi:
    """Start a fake WeChat API on 127.0.0.1 and a free port (close it after)."""
    api = FakeWechatApi(appid, secret, **options)
    await api.start()
    return api
