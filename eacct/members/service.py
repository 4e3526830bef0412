"""Member accounts and bearer tokens: create, log in, authenticate, log out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors, throttle
from eacct.config import Settings
from eacct.db import unit_of_work, utcnow
from eacct.members.models import AccessToken, Member, Profile, TokenKind, WechatBinding
from eacct.secrets import PasswordHashing, hash_secret, hash_token, new_token, verify_secret

__all__ = [
    "Caller", "authenticate", "claim_login_attempt", "create_member", "get_member", "issue_token",
    "log_in", "profile", "register", "rename", "revoke_token", "session_of", "slide_expiry", "verified_member",
]



@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the member, and whether the token also proves the netdisk password."""

    member_id: int
    netdisk: bool
    # A netdisk token whose idle expiry should move on now (`slide_expiry`).
    slide_due: bool = field(default=False, compare=False)


LOGIN_FREE_FAILURES = 10
# Per account across addresses the lockout backs off but stays short, so nobody can lock a member out for long.
LOGIN_ACCOUNT_MAX_LOCK_SECONDS = 15 * 60
# Per address across accounts (failures only, so an office behind one address logs in normally), and the
# same for registrations answered `account_taken` (each reveals that an account exists).
ADDRESS_FREE_FAILURES = 20
ADDRESS_WINDOW_SECONDS = 3600
# A netdisk token's idle expiry is written only when it would move by more than this, so using the netdisk
# is not a database write per request (the token may end up to this much before 30 minutes idle).
TOKEN_SLIDE_STEP = timedelta(seconds=60)

_dummy_hashes: dict[tuple[int, int], str] = {}


async def _dummy_hash(settings: Settings, hashing: PasswordHashing | None = None) -> str:
    # Verified against when the account does not exist, so a wrong account costs as long as a wrong password.
    key = (settings.argon2_time_cost, settings.argon2_memory_kib)
    if key not in _dummy_hashes:
        _dummy_hashes[key] = await hash_secret(settings, new_token(), hashing)
    return _dummy_hashes[key]


async def create_member(session: AsyncSession, account: str, password_hash: str, nickname: str) -> Member:
    """Register a member; the account must be free (409 account_taken). The password comes hashed
    (`hash_secret`, before the transaction: argon2 must not run inside a writing unit of work)."""
    existing = await session.scalar(select(Member.id).where(Member.account == account))
    if existing is not None:
        raise errors.AccountTaken()
    member = Member(account=account, password_hash=password_hash, nickname=nickname)
    session.add(member)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise errors.AccountTaken() from exc
    return member


def _address_policy(settings: Settings) -> throttle.Policy:
    return throttle.Policy(ADDRESS_FREE_FAILURES, settings.lockout_base_seconds, settings.lockout_max_seconds)


async def register(sessions: async_sessionmaker[AsyncSession], settings: Settings, hashing: PasswordHashing,
                   account: str, password: str, nickname: str, ip: str) -> Member:
    """Register over the API: `account_taken` answers are throttled per address (they reveal accounts), and
    the password is hashed with no database connection held."""
    key = f"register_taken:{ip}"
    async with unit_of_work(sessions) as session:
        claimed = await throttle.claim(session, key, _address_policy(settings), ADDRESS_WINDOW_SECONDS)
        taken = await session.scalar(select(Member.id).where(Member.account == account)) is not None
        if not taken:
            await throttle.refund(session, claimed)  # only answers that reveal an account count
    if taken:
        raise throttle.with_lockout(errors.AccountTaken(), claimed.until)
    password_hash = await hash_secret(settings, password, hashing)
    try:
        async with unit_of_work(sessions) as session:
            return await create_member(session, account, password_hash, nickname)
    except errors.Conflict:
        # Registered by someone else meanwhile: this answer reveals the account too.
        await throttle.record_failure(sessions, key, _address_policy(settings), ADDRESS_WINDOW_SECONDS)
        raise


async def get_member(session: AsyncSession, member_id: int) -> Member:
    """The member with this id, or NotFound."""
    member = await session.get(Member, member_id)
    if member is None:
        raise errors.NotFound("找不到该会员")
    return member


async def issue_token(session: AsyncSession, member_id: int, kind: str, ttl_seconds: int,
                      session_token_hash: str | None = None) -> tuple[str, datetime]:
    """A new bearer token of `kind` for the member; only its hash is kept. A netdisk token names the session
    it was unlocked from, so logging that session out ends it too."""
    token = new_token()
    expires_at = utcnow() + timedelta(seconds=ttl_seconds)
    session.add(AccessToken(token_hash=hash_token(token), member_id=member_id, kind=kind, expires_at=expires_at,
                            session_token_hash=session_token_hash))
    await session.flush()
    return token, expires_at


async def verified_member(settings: Settings, hashing: PasswordHashing | None, member: Member | None,
                          password: str) -> Member | None:
    """`member` if `password` is theirs, else None; an unknown member (None) costs as long as a wrong password."""
    stored = member.password_hash if member is not None else await _dummy_hash(settings, hashing)
    if not await verify_secret(settings, stored, password, hashing) or member is None:
        return None
    return member


def _account_key(account: str) -> str:
    return f"login_account:{account[:32]}"


async def claim_login_attempt(session: AsyncSession, settings: Settings, account: str) -> throttle.Claim:
    """Count a password check of `account` (from any address or door) before it runs: backs off, capped short."""
    policy = throttle.Policy(LOGIN_FREE_FAILURES, settings.lockout_base_seconds,
                             min(settings.lockout_max_seconds, LOGIN_ACCOUNT_MAX_LOCK_SECONDS))
    return await throttle.claim(session, _account_key(account), policy)


async def log_in(sessions: async_sessionmaker[AsyncSession], settings: Settings, account: str, password: str,
                 ip: str, hashing: PasswordHashing | None = None) -> tuple[str, datetime, Member]:
    """Check account and password and open a session (401 bad_credentials, the same for either mistake).

    Each attempt is counted before the password is checked, per account and address (long lockouts: they
    only stop that address), per account across addresses (short ones) and per address across accounts
    (failures only); a success clears the first two and takes back its count on the third. The argon2 check
    runs with no database connection held."""
    if hashing is None:
        return await _log_in(sessions, settings, account, password, ip, None)
    async with hashing.slot():  # shed a flood before it touches the database, and bound its transactions
        return await _log_in(sessions, settings, account, password, ip, hashing)


async def _log_in(sessions: async_sessionmaker[AsyncSession], settings: Settings, account: str, password: str,
                  ip: str, hashing: PasswordHashing | None) -> tuple[str, datetime, Member]:
    pair_key = f"login:{account[:32]}:{ip}"
    pair_policy = throttle.Policy(LOGIN_FREE_FAILURES, settings.lockout_base_seconds, settings.lockout_max_seconds)
    async with unit_of_work(sessions) as session:
        # The order matters only for which lockout is reported; a refusal rolls every claim back.
        address = await throttle.claim(session, f"login_address:{ip}", _address_policy(settings), ADDRESS_WINDOW_SECONDS)
        pair = await throttle.claim(session, pair_key, pair_policy)
        per_account = await claim_login_attempt(session, settings, account)
        member = await session.scalar(select(Member).where(Member.account == account))
    member = await verified_member(settings, hashing, member, password)
    if member is None:
        until = max((c.until for c in (address, pair, per_account) if c.until is not None), default=None)
        raise throttle.with_lockout(errors.BadCredentials(), until)
    async with unit_of_work(sessions) as session:
        await throttle.clear(session, pair.key)
        await throttle.clear(session, per_account.key)
        await throttle.refund(session, address)
        token, expires_at = await issue_token(session, member.id, TokenKind.SESSION, settings.session_ttl_seconds)
        return token, expires_at, member


# Every authenticated request runs this: a prepared Core statement (no ORM objects, built once).
_TOKENS = AccessToken.__table__
_TOKEN_LOOKUP = (select(_TOKENS.c.member_id, _TOKENS.c.kind, _TOKENS.c.expires_at)
                 .where(_TOKENS.c.token_hash == bindparam("token_hash")))


async def authenticate(session: AsyncSession, settings: Settings, token: str) -> Caller:
    """Who holds `token` (reads only). Netdisk tokens expire after 30 minutes idle: when this use should move
    the expiry on, `slide_due` is set and the caller runs `slide_expiry` in a writing unit of work."""
    row = (await session.execute(_TOKEN_LOOKUP, {"token_hash": hash_token(token)})).first()
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
    """Log out: the token, and every netdisk token unlocked from it, stop working at once."""
    token_hash = hash_token(token)
    await session.execute(
        delete(AccessToken).where((AccessToken.token_hash == token_hash) | (AccessToken.session_token_hash == token_hash))
    )


async def session_of(session: AsyncSession, token: str) -> str | None:
    """The hash of the session token `token` belongs to: itself, or for a netdisk token the session it came from."""
    row = await session.get(AccessToken, hash_token(token))
    if row is None:
        return None
    return row.session_token_hash if row.kind == TokenKind.NETDISK else row.token_hash


async def profile(session: AsyncSession, member_id: int,
                  netdisk_opened: Callable[[AsyncSession, int], Awaitable[bool]]) -> Profile:
    """会员信息: the member plus whether WeChat is bound and the netdisk opened."""
    member = await get_member(session, member_id)
    bound = await session.scalar(select(WechatBinding.openid).where(WechatBinding.member_id == member_id))
    return Profile(member.id, member.account, member.nickname, wechat_bound=bound is not None,
                   netdisk_opened=await netdisk_opened(session, member_id))


async def rename(session: AsyncSession, member_id: int, nickname: str) -> Member:
    """Change the member's nickname."""
    member = await get_member(session, member_id)
    member.nickname = nickname
    return member
