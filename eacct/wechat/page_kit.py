"""The frame every member page runs in: who is visiting (session cookie, WeChat OAuth or the login form), the
CSRF token, rendering with the navigation, and the headers every page answer carries (no cache, strict CSP)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from eacct.config import Settings
from eacct.secrets import new_token
from eacct.web import SESSIONS, SETTINGS, transaction
from eacct.wechat import oauth, visitors
from eacct.wechat.visitors import WECHAT, PageKeys, Visitor

__all__ = [
    "PAGES", "PAGE_COOKIE", "PRE_COOKIE", "STATIC_ROUTE", "Ctx", "Handler", "PageState", "cookie_options", "csrf_ok",
    "form_text", "member_page", "notice_page", "page_context", "redirect", "render", "safe_next", "same_secret",
    "wechat_oauth_on",
]

PAGE_COOKIE = "eacct_page"
STATIC_ROUTE = "wx_static"
# The pages load nothing from anywhere else (no CDN, no outside font or script).
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                           "base-uri 'none'; frame-ancestors 'none'")
PRE_COOKIE = "eacct_pre"
# The pages a visitor can be sent back to after logging in; nothing else (no open redirect).
PAGE_PATHS = ("/wx/member", "/wx/info", "/wx/friends", "/wx/netdisk", "/wx/shares", "/wx/messages")
NAV = [("/wx/member", "会员中心"), ("/wx/friends", "我的好友"), ("/wx/netdisk", "我的网盘"), ("/wx/messages", "消息中心")]


@dataclass
class PageState:
    """What the pages keep per app: the template environment and the signing keys (loaded on first use)."""

    templates: jinja2.Environment
    keys: PageKeys | None = None


PAGES = web.AppKey("pages", PageState)


# ------------------------------------------------------------------------------------------ visitors


@dataclass
class Ctx:
    """One request's view of the visitor: keys, the session (if any) and the CSRF anchor."""

    request: web.Request
    keys: PageKeys
    visitor: Visitor | None
    anchor: str
    new_pre: str | None = None
    stale_cookie: bool = False
    form: dict = field(default_factory=dict)

    @property
    def member(self):
        return self.visitor.member if self.visitor else None

    @property
    def csrf(self) -> str:
        return self.keys.csrf_token(self.anchor)


async def page_keys(request: web.Request) -> PageKeys:
    """The signing keys of the pages, loaded from the database on first use."""
    state = request.app[PAGES]
    if state.keys is None:
        state.keys = await visitors.load_keys(request.app[SESSIONS])
    return state.keys


async def page_context(request: web.Request) -> Ctx:
    """Who is visiting: the session from the page cookie (if it still holds) and the CSRF anchor."""
    keys = await page_keys(request)
    visitor, stale = None, False
    raw = request.cookies.get(PAGE_COOKIE)
    if raw:
        parsed = keys.unsign(raw)
        if parsed is not None:
            async with transaction(request) as session:
                visitor = await visitors.identify(session, request.app[SETTINGS], *parsed)
        stale = visitor is None
    pre = request.cookies.get(PRE_COOKIE, "")
    new_pre = None
    if not (16 <= len(pre) <= 64):
        pre = new_pre = new_token()
    return Ctx(request, keys, visitor, visitor.token if visitor else pre, new_pre, stale)


def in_wechat(request: web.Request) -> bool:
    """Whether the browser is WeChat's."""
    return "MicroMessenger" in request.headers.get("User-Agent", "")


def wechat_oauth_on(settings: Settings) -> bool:
    """Whether WeChat OAuth is configured."""
    return bool(settings.wechat_appid and settings.wechat_secret)


def safe_next(value: str | None) -> str:
    """Where to go after logging in: one of our pages, never another site (no open redirect)."""
    path = (value or "").split("?", 1)[0]
    return value if path in PAGE_PATHS and "\\" not in value and "//" not in value else "/wx/member"


def base_url(request: web.Request) -> str:
    """The public address of the site (PUBLIC_URL, else what the request came to)."""
    public = request.app[SETTINGS].public_url.rstrip("/")
    return public or f"{request.scheme}://{request.host}"


def cookie_options(request: web.Request) -> dict:
    """The page cookies' options: under /wx, HttpOnly, SameSite=Lax, Secure behind https."""
    secure = request.secure or request.app[SETTINGS].public_url.startswith("https://")
    return {"path": "/wx", "httponly": True, "samesite": "Lax", "secure": secure}


def _finish(ctx: Ctx, response: web.StreamResponse) -> web.StreamResponse:
    request = ctx.request
    if ctx.new_pre:
        response.set_cookie(PRE_COOKIE, ctx.new_pre, **cookie_options(request))
    if ctx.stale_cookie and PAGE_COOKIE not in response.cookies:
        response.del_cookie(PAGE_COOKIE, path="/wx")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    return response


def render(ctx: Ctx, template: str, status: int = 200, **values) -> web.StreamResponse:
    """A page from `template`, with the visitor, the CSRF token and the navigation."""
    env = ctx.request.app[PAGES].templates
    text = env.get_template(template).render(
        visitor=ctx.visitor, member=ctx.member, csrf=ctx.csrf, nav=NAV, path=ctx.request.path,
        static_url=str(ctx.request.app.router[STATIC_ROUTE].url_for(filename="weui.css")),
        in_wechat=ctx.visitor.kind == WECHAT if ctx.visitor else in_wechat(ctx.request), **values)
    return _finish(ctx, web.Response(status=status, text=text, content_type="text/html", charset="utf-8"))


def redirect(ctx: Ctx, location: str, status: int = 302) -> web.StreamResponse:
    """A redirect that still sets the visitor's cookies."""
    response = web.Response(status=status, headers={"Location": location})
    return _finish(ctx, response)


def notice_page(ctx: Ctx, title: str, message: str, status: int, links=None) -> web.StreamResponse:
    """A page with one sentence: what happened or why not."""
    return render(ctx, "notice.html", status, title=title, message=message, ok=status < 400, links=links or [])


async def _no_session(ctx: Ctx) -> web.StreamResponse:
    """Who are you? WeChat's browser asks WeChat (OAuth); any other browser gets the login form."""
    request = ctx.request
    settings = request.app[SETTINGS]
    next_path = safe_next(request.path_qs if request.method == "GET" else request.path)
    if in_wechat(request) and wechat_oauth_on(settings):
        if request.method == "POST":
            # A form cannot survive the OAuth round trip (and form-action keeps it from leaving the site).
            return notice_page(ctx, "登录已失效", "登录已失效，请重新打开页面后再操作", 401,
                               links=[(safe_next(request.path), "重新打开")])
        redirect_uri = f"{base_url(request)}/wx/oauth?{urlencode({'next': next_path})}"
        return redirect(ctx, oauth.authorize_url(settings, redirect_uri, ctx.keys.oauth_state(ctx.anchor)))
    message = "登录已失效，请重新登录" if ctx.stale_cookie or request.method == "POST" else ""
    return render(ctx, "login.html", 401 if request.method == "POST" else 200, next=next_path, error=message,
                  account="")


Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]


def member_page(handler: Handler, *, bound: bool = True) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a page handler: a session is needed (and, with `bound`, a bound member); POSTs need the CSRF token."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        ctx = await page_context(request)
        if ctx.visitor is None:
            return await _no_session(ctx)
        if bound and ctx.member is None:
            return redirect(ctx, "/wx/member", 303 if request.method == "POST" else 302)
        if request.method == "POST":
            posted = await request.post()
            ctx.form = {key: value for key, value in posted.items() if isinstance(value, str)}
            # Repeatable fields keep every value (checkboxes, filters).
            for name in ("friend_ids", "status", "kind"):
                ctx.form[name] = [v for v in posted.getall(name, []) if isinstance(v, str)]
            if not csrf_ok(ctx):
                return notice_page(ctx, "页面已过期", "页面已过期或来源不明，请返回刷新页面后重试", 403,
                                   links=[(request.path, "返回")])
        return await handler(ctx)

    return wrapped


def same_secret(given: object, expected: str) -> bool:
    """Constant-time comparison of a posted value with a secret."""
    # Bytes: compare_digest refuses non-ASCII text, and a form may carry anything.
    return hmac.compare_digest(str(given).encode("utf-8", "surrogatepass"), expected.encode())


def csrf_ok(ctx: Ctx) -> bool:
    """Whether the posted form carries this visitor's CSRF token."""
    return same_secret(ctx.form.get("csrf_token", ""), ctx.csrf)


def form_text(ctx: Ctx, name: str, max_length: int = 64) -> str:
    """A posted text field, stripped and cut to `max_length`."""
    return str(ctx.form.get(name, "")).strip()[:max_length]
