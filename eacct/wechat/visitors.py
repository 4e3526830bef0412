"""Who is visiting the H5 pages: signed cookies, page sessions, CSRF tokens and WeChat OAuth state.

Two kinds of visitor carry a session cookie:
- in WeChat's browser, a follower whose openid WeChat's OAuth (snsapi_base) told us: a page session row
  (`WechatPageSession`, token stored as its sha256) that names the openid; the member is whoever that openid
  is bound to *now*, so a binding moved elsewhere takes effect at once;
- in any other browser (the web console), a member who logged in with account and password: the cookie
  carries the member's ordinary session token from `eacct.members.service.log_in` (throttled the same way),
  so logging out and expiry work exactly as for the REST API.

Every cookie value is signed with a key derived from a random server secret kept in the database (the same
for all processes, never logged). CSRF tokens and OAuth `state` are HMACs of the visitor's anchor (their
session token, or before a session a random pre-session cookie), so a form or an OAuth answer only works for
the browser it was made for.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.config import Settings
from eacct.db import unit_of_work, utcnow
from eacct.members import service as members
from eacct.members.models import Member
from eacct.secrets import hash_token, new_token
from eacct.wechat.models import ServerSecret, WechatPageSession
from eacct.wechat.service import bound_member

__all__ = [
    "WECHAT", "WEB", "PageKeys", "Visitor", "end_session", "identify", "load_keys", "open_wechat_session",
    "WECHAT_SESSION_SECONDS",
]

WECHAT = "w"
WEB = "m"
WECHAT_SESSION_SECONDS = 7 * 24 * 3600
_SECRET_NAME = "page_cookies"


@dataclass(frozen=True, slots=True)
class PageKeys:
    """Keys derived from the server secret, one per purpose, so no value can stand in for another."""

    cookie: bytes
    csrf: bytes
    state: bytes

    def sign(self, kind: str, token: str) -> str:
        """The cookie value for a session of `kind` with `token`."""
        return f"{kind}.{token}.{self._mac(self.cookie, kind + '.' + token)}"

    def unsign(self, value: str) -> tuple[str, str] | None:
        """(kind, token) of a cookie value whose signature is ours, else None."""
        kind, _, rest = value.partition(".")
        token, _, signature = rest.rpartition(".")
        if kind not in (WECHAT, WEB) or not token:
            return None
        if not hmac.compare_digest(signature, self._mac(self.cookie, kind + "." + token)):
            return None
        return kind, token

    def csrf_token(self, anchor: str) -> str:
        """The CSRF token of forms shown to the visitor whose anchor (session or pre-session token) this is."""
        return self._mac(self.csrf, anchor)

    def oauth_state(self, anchor: str) -> str:
        """The OAuth `state` that ties WeChat's answer to the browser that asked."""
        return self._mac(self.state, anchor)

    @staticmethod
    def _mac(key: bytes, text: str) -> str:
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:40]


async def load_keys(sessions: async_sessionmaker[AsyncSession]) -> PageKeys:
    """The page keys, from the server secret in the database (made on first use; every process agrees)."""
    async with unit_of_work(sessions) as session:
        insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
        await session.execute(
            insert(ServerSecret).values(name=_SECRET_NAME, value=secrets.token_hex(32), created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        secret = await session.scalar(select(ServerSecret.value).where(ServerSecret.name == _SECRET_NAME))
    root = bytes.fromhex(secret)
    return PageKeys(*(hmac.new(root, purpose, hashlib.sha256).digest() for purpose in (b"cookie", b"csrf", b"state")))


@dataclass(frozen=True, slots=True)
class Visitor:
    """A visitor with a live session: how they came (WECHAT or WEB), their session token, their openid (WeChat
    only) and the member they are (None: a WeChat follower not bound yet)."""

    kind: str
    token: str
    openid: str | None
    member: Member | None


async def open_wechat_session(session: AsyncSession, openid: str, ttl_seconds: int = WECHAT_SESSION_SECONDS) -> str:
    """A new page session for a follower WeChat's OAuth vouched for; returns its token (stored hashed)."""
    token = new_token()
    now = utcnow()
    session.add(WechatPageSession(token_hash=hash_token(token), openid=openid, created_at=now,
                                  expires_at=now + timedelta(seconds=ttl_seconds)))
    await session.execute(delete(WechatPageSession).where(WechatPageSession.expires_at < now))
    return token


async def identify(session: AsyncSession, settings: Settings, kind: str, token: str) -> Visitor | None:
    """The visitor a verified cookie names, or None when that session has ended or expired."""
    if kind == WECHAT:
        row = await session.get(WechatPageSession, hash_token(token))
        if row is None or row.expires_at <= utcnow():
            return None
        return Visitor(WECHAT, token, row.openid, await bound_member(session, row.openid))
    try:
        caller = await members.authenticate(session, settings, token)
    except errors.Unauthenticated:
        return None
    if caller.netdisk:  # only a login session opens the console, never a netdisk token
        return None
    return Visitor(WEB, token, None, await members.get_member(session, caller.member_id))


async def end_session(session: AsyncSession, visitor: Visitor) -> None:
    """Log out: the session stops working at once."""
    if visitor.kind == WECHAT:
        await session.execute(delete(WechatPageSession).where(WechatPageSession.token_hash == hash_token(visitor.token)))
    else:
        await members.revoke_token(session, visitor.token)
