"""Member accounts and bearer tokens: create, log in, authenticate, log out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors, throttle
from eacct.config import Settings
from eacct.db import unit_of_work, utcnow
from eacct.members.models import AccessToken, Member, TokenKind, WechatBinding
from eacct.netdisk.models import Netdisk
from eacct.secrets import hash_secret, hash_token, new_token, verify_secret

__all__ = [
    "Caller", "authenticate", "check_credentials", "create_member", "get_member", "profile", "issue_token", "log_in", "member_view", "rename", "revoke_token",
    "slide_expiry",
]



@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the member, and whether the token also proves the netdisk password."""

    member_id: int
    netdisk: bool
    # A netdisk token whose idle expiry should move on now (`slide_expiry`).
    slide_due: bool = field(default=False, compare=False)


LOGIN_FREE_FAILURES = 10
# A netdisk token's idle expiry is written only when it would move by more than this, so using the netdisk
# is not a database write per request (the token may end up to this much before 30 minutes idle).
TOKEN_SLIDE_STEP = timedelta(seconds=60)

_dummy_hashes: dict[tuple[int, int], str] = {}


async def _dummy_hash(settings: Settings) -> str:
    # Verified against when the account does not exist, so a wrong account costs as long as a wrong password.
    key = (settings.argon2_time_cost, settings.argon2_memory_kib)
    if key not in _dummy_hashes:
        _dummy_hashes[key] = await hash_secret(settings, new_token())
    return _dummy_hashes[key]


def member_view(member: Member) -> dict:
    """`Member` of API.md."""
    return {"id": member.id, "account": member.account, "nickname": member.nickname}


async def create_member(session: AsyncSession, settings: Settings, account: str, password: str, nickname: str) -> Member:
    """Register a member; the account must be free (409 account_taken)."""
    existing = await session.scalar(select(Member.id).where(Member.account == account))
    if existing is not None:
        raise errors.Conflict("该会员账号已被注册", code="account_taken")
    member = Member(account=account, password_hash=await hash_secret(settings, password), nickname=nickname)
    session.add(member)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise errors.Conflict("该会员账号已被注册", code="account_taken") from exc
    return member


async def get_member(session: AsyncSession, member_id: int) -> Member:
    """The member with this id, or NotFound."""
    member = await session.get(Member, member_id)
    if member is None:
        raise errors.NotFound("找不到该会员")
    return member


async def issue_token(session: AsyncSession, member_id: int, kind: str, ttl_seconds: int) -> tuple[str, datetime]:
    """A new bearer token of `kind` for the member; only its hash is kept."""
    token = new_token()
    expires_at = utcnow() + timedelta(seconds=ttl_seconds)
    session.add(AccessToken(token_hash=hash_token(token), member_id=member_id, kind=kind, expires_at=expires_at))
    await session.flush()
    return token, expires_at


async def check_credentials(session: AsyncSession, settings: Settings, account: str, password: str) -> Member | None:
    """The member with this account and password, or None; a wrong account costs as long as a wrong password."""
    member = await session.scalar(select(Member).where(Member.account == account))
    stored = member.password_hash if member is not None else await _dummy_hash(settings)
    if not await verify_secret(settings, stored, password) or member is None:
        return None
    return member


async def log_in(sessions: async_sessionmaker[AsyncSession], settings: Settings, account: str, password: str,
                 ip: str) -> tuple[str, datetime, Member]:
    """Check account and password and open a session (401 bad_credentials, the same for either mistake).

    Guessing is throttled per account and address, so a guesser is slowed down without letting anyone lock
    a member out from elsewhere."""
    key = f"login:{account[:32]}:{ip}"
    async with unit_of_work(sessions) as session:
        await throttle.check_not_locked(session, key)
        member = await check_credentials(session, settings, account, password)
        if member is not None:
            await throttle.clear(session, key)
            token, expires_at = await issue_token(session, member.id, TokenKind.SESSION, settings.session_ttl_seconds)
            return token, expires_at, member
    policy = throttle.Policy(LOGIN_FREE_FAILURES, settings.lockout_base_seconds, settings.lockout_max_seconds)
    until = await throttle.record_failure(sessions, key, policy)
    raise throttle.with_lockout(errors.BadCredentials(), until)


async def authenticate(session: AsyncSession, settings: Settings, token: str) -> Caller:
    """Who holds `token` (reads only). Netdisk tokens expire after 30 minutes idle: when this use should move
    the expiry on, `slide_due` is set and the caller runs `slide_expiry` in a writing unit of work."""
    row = await session.get(AccessToken, hash_token(token))
    now = utcnow()
    if row is None or row.expires_at <= now:
        raise errors.Unauthenticated("登录已失效，请重新登录")
    netdisk = row.kind == TokenKind.NETDISK
    slide_due = netdisk and now + timedelta(seconds=settings.netdisk_token_idle_seconds) - row.expires_at > TOKEN_SLIDE_STEP
    return Caller(member_id=row.member_id, netdisk=netdisk, slide_due=slide_due)


async def slide_expiry(session: AsyncSession, settings: Settings, token: str) -> None:
    """Move a netdisk token's idle expiry to 30 minutes from now; never backwards, never revives an ended token."""
    now = utcnow()
    await session.execute(
        update(AccessToken)
        .where(AccessToken.token_hash == hash_token(token), AccessToken.kind == TokenKind.NETDISK,
               AccessToken.expires_at > now)
        .values(expires_at=now + timedelta(seconds=settings.netdisk_token_idle_seconds))
        .execution_options(synchronize_session=False))


async def revoke_token(session: AsyncSession, token: str) -> None:
    """Log out: the token stops working at once."""
    await session.execute(delete(AccessToken).where(AccessToken.token_hash == hash_token(token)))


async def profile(session: AsyncSession, member_id: int) -> dict:
    """会员信息: the member plus whether WeChat is bound and the netdisk opened."""
    member = await get_member(session, member_id)
    bound = await session.scalar(select(WechatBinding.openid).where(WechatBinding.member_id == member_id))
    opened = await session.scalar(select(Netdisk.member_id).where(Netdisk.member_id == member_id))
    return {**member_view(member), "wechat_bound": bound is not None, "netdisk_opened": opened is not None}


async def rename(session: AsyncSession, member_id: int, nickname: str) -> Member:
    """Change the member's nickname."""
    member = await get_member(session, member_id)
    member.nickname = nickname
    return member
