"""The netdisk: opening it, its password and security questions, quota, the backup listing, deletions.

The netdisk password guards every ledger; only its argon2 hash is stored, and the only way back in
after forgetting it is answering the security questions (nobody, staff included, can read either).
Wrong passwords and wrong answers are counted per member in the database and locked out for a while.
"""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors, throttle
from eacct.config import Settings
from eacct.db import unit_of_work, utcnow
from eacct.members.models import AccessToken, Member, MemberRef, TokenKind
from eacct.members.service import issue_token, session_of
from eacct.netdisk import store
from eacct.netdisk.hooks import NetdiskHooks, ledger_for_backup
from eacct.netdisk.models import (
    Deletion, Ledger, LedgerInfo, Netdisk, NetdiskStatus, SecurityQuestion, Version, VersionInfo, YearSummary, YearVersions,
)
from eacct.netdisk.versions import clean_ledger_name, lock_owner
from eacct.secrets import PasswordHashing, hash_secret, normalise_answer, verify_secret

__all__ = [
    "FIRST_YEAR", "LAST_YEAR", "backup_year", "canonical_ledger_id", "fiscal_year", "change_password", "delete_backup", "deletions", "get_ledger", "is_opened", "ledger_info",
    "list_ledgers", "netdisk_status", "versions_of_ledgers", "open_netdisk", "questions", "rename_ledger", "reset_password", "unlock",
    "verify_password", "year_versions",
]


# The fiscal years a ledger can have a backup of (API.md: invalid_year outside them).
FIRST_YEAR, LAST_YEAR = 1990, 2100


def canonical_ledger_id(raw: object, refusal: errors.DomainError | None = None) -> str:
    """A ledger id as its one canonical UUID string; anything else is `refusal` (default 422 invalid)."""
    text = str(raw)
    try:
        if not text.isascii():  # uuid.UUID reads "١" as 1: one ledger must not have many spellings
            raise ValueError(text)
        return str(uuid.UUID(text))
    except ValueError as exc:
        raise refusal or errors.Invalid("账套ID 格式不正确，应为 UUID") from exc


def fiscal_year(raw: object) -> int:
    """A fiscal year (an int, or ASCII digits) within FIRST_YEAR–LAST_YEAR, else InvalidYear."""
    text = str(raw)
    if not (text.isascii() and text.isdigit() and len(text) <= 4 and FIRST_YEAR <= int(text) <= LAST_YEAR):
        raise errors.InvalidYear()
    return int(text)


def _password_key(member_id: int) -> str:
    return f"netdisk_password:{member_id}"


def _answers_key(member_id: int) -> str:
    return f"netdisk_answers:{member_id}"


def _policy(settings: Settings) -> throttle.Policy:
    return throttle.Policy(settings.lockout_after_failures, settings.lockout_base_seconds, settings.lockout_max_seconds)


async def _netdisk(session: AsyncSession, member_id: int) -> Netdisk:
    netdisk = await session.get(Netdisk, member_id)
    if netdisk is None:
        raise errors.NetdiskNotOpened()
    return netdisk


async def netdisk_status(session: AsyncSession, settings: Settings, member_id: int) -> NetdiskStatus:
    """Opened or not, and quota: total, used, free."""
    netdisk = await session.get(Netdisk, member_id)
    quota = netdisk.quota_bytes if netdisk else settings.netdisk_quota_bytes
    used = await store.used_bytes(session, member_id)
    return NetdiskStatus(opened=netdisk is not None, quota_bytes=quota, used_bytes=used, free_bytes=max(quota - used, 0))


async def is_opened(session: AsyncSession, member_id: int) -> bool:
    """Whether the member has set up their netdisk."""
    return await session.get(Netdisk, member_id) is not None


async def open_netdisk(sessions: async_sessionmaker[AsyncSession], settings: Settings, member_id: int, password: str,
                       questions: list[tuple[str, str]], hashing: PasswordHashing | None = None) -> NetdiskStatus:
    """First use: set the netdisk password and 1–3 security questions (answers trimmed, case-folded, hashed);
    the new netdisk's status."""
    if len({q.strip() for q, _ in questions}) != len(questions):
        raise errors.Invalid("密保问题不能重复")
    if any(not normalise_answer(a) for _, a in questions):
        raise errors.Invalid("密保答案不能为空")
    # Hashed before the transaction: argon2 waits for a hashing slot, which a login holds while it waits for
    # its turn to write, so hashing inside a writing unit would deadlock (and hold the write lock meanwhile).
    password_hash = await hash_secret(settings, password, hashing)
    answer_hashes = [await hash_secret(settings, normalise_answer(answer), hashing) for _, answer in questions]
    async with unit_of_work(sessions) as session:
        if await session.get(Netdisk, member_id) is not None:
            raise errors.NetdiskAlreadyOpened()
        session.add(Netdisk(member_id=member_id, password_hash=password_hash, quota_bytes=settings.netdisk_quota_bytes))
        await session.flush()
        for position, ((question, _), answer_hash) in enumerate(zip(questions, answer_hashes)):
            session.add(SecurityQuestion(member_id=member_id, position=position, question=question.strip(),
                                         answer_hash=answer_hash))
        await session.flush()
        return await netdisk_status(session, settings, member_id)


async def questions(session: AsyncSession, member_id: int) -> list[str]:
    """The member's security questions, in the order they were set."""
    await _netdisk(session, member_id)
    rows = await session.scalars(
        select(SecurityQuestion.question).where(SecurityQuestion.member_id == member_id).order_by(SecurityQuestion.position)
    )
    return list(rows)


async def verify_password(sessions: async_sessionmaker[AsyncSession], settings: Settings, member_id: int,
                          password: str, hashing: PasswordHashing | None = None) -> None:
    """Check the netdisk password, counting the attempt toward the lockout before it is checked (so parallel
    guesses cannot outrun the count) and clearing the count on success (shared by unlock, change, delete)."""
    key = _password_key(member_id)
    async with unit_of_work(sessions) as session:
        netdisk = await _netdisk(session, member_id)
        claimed = await throttle.claim(session, key, _policy(settings))
        stored = netdisk.password_hash
    if not await verify_secret(settings, stored, password, hashing):
        raise throttle.with_lockout(errors.BadNetdiskPassword(), claimed.until)
    async with unit_of_work(sessions) as session:
        await throttle.clear(session, key)


async def unlock(sessions: async_sessionmaker[AsyncSession], settings: Settings, member_id: int, password: str,
                 hashing: PasswordHashing | None = None, via_token: str | None = None):
    """Log in to the netdisk: a netdisk token that expires after 30 minutes idle, tied to the session
    `via_token` belongs to (logging that session out ends it)."""
    await verify_password(sessions, settings, member_id, password, hashing)
    async with unit_of_work(sessions) as session:
        session_hash = await session_of(session, via_token) if via_token else None
        return await issue_token(session, member_id, TokenKind.NETDISK, settings.netdisk_token_idle_seconds,
                                 session_token_hash=session_hash)


async def reset_password(sessions: async_sessionmaker[AsyncSession], settings: Settings, member_id: int,
                         answers: list[str], new_password: str, hashing: PasswordHashing | None = None) -> None:
    """Set a new netdisk password after every security question is answered; ends open netdisk logins.
    The attempt is counted before the answers are checked and the count cleared on success."""
    key = _answers_key(member_id)
    async with unit_of_work(sessions) as session:
        await _netdisk(session, member_id)
        claimed = await throttle.claim(session, key, _policy(settings))
        stored = list(await session.scalars(
            select(SecurityQuestion.answer_hash)
            .where(SecurityQuestion.member_id == member_id)
            .order_by(SecurityQuestion.position)
        ))
    matches = len(answers) == len(stored)
    for stored_hash, answer in zip(stored, answers):
        matches = await verify_secret(settings, stored_hash, normalise_answer(answer), hashing) and matches
    if not matches:
        raise throttle.with_lockout(errors.BadAnswers(), claimed.until)
    new_hash = await hash_secret(settings, new_password, hashing)
    async with unit_of_work(sessions) as session:
        netdisk = await _netdisk(session, member_id)
        netdisk.password_hash = new_hash
        await throttle.clear(session, key)
        await throttle.clear(session, _password_key(member_id))
        await _end_netdisk_logins(session, member_id)


async def change_password(sessions: async_sessionmaker[AsyncSession], settings: Settings, member_id: int,
                          old_password: str, new_password: str, hashing: PasswordHashing | None = None) -> None:
    """Change the netdisk password knowing the old one; ends open netdisk logins."""
    await verify_password(sessions, settings, member_id, old_password, hashing)
    new_hash = await hash_secret(settings, new_password, hashing)
    async with unit_of_work(sessions) as session:
        netdisk = await _netdisk(session, member_id)
        netdisk.password_hash = new_hash
        await _end_netdisk_logins(session, member_id)


async def _end_netdisk_logins(session: AsyncSession, member_id: int) -> None:
    await session.execute(
        delete(AccessToken).where(AccessToken.member_id == member_id, AccessToken.kind == TokenKind.NETDISK)
    )


# ------------------------------------------------------------------------------------------ listings


async def year_versions(session: AsyncSession, ledger_id: str, year: int | None = None) -> list[YearVersions]:
    """Every version of a ledger (or of one year), newest first, per year (years ascending)."""
    if year is not None:
        year = fiscal_year(year)
    return (await versions_of_ledgers(session, [ledger_id], year))[ledger_id]


async def ledger_info(session: AsyncSession, ledger: Ledger) -> LedgerInfo:
    """A ledger with its owner and, per year, the latest version and how many are kept."""
    owner = MemberRef.of(await session.get(Member, ledger.owner_id))
    return _ledger_info(ledger.id, ledger.name, owner, await year_versions(session, ledger.id))


def _ledger_info(ledger_id: str, name: str, owner: MemberRef, years: list[YearVersions]) -> LedgerInfo:
    summaries = [YearSummary(y.year, y.versions[0], len(y.versions)) for y in years]
    return LedgerInfo(ledger_id=ledger_id, name=name, owner=owner, years=summaries)


# The listings are what members ask for most: Core statements over the tables, built once, read as plain rows
# (ORM objects and statement building cost more than the database does here).
_LEDGERS, _VERSIONS, _MEMBERS = Ledger.__table__, Version.__table__, Member.__table__
_OWNERS, _UPLOADERS = _MEMBERS.alias("owners"), _MEMBERS.alias("uploaders")
_VERSION_COLUMNS = (
    _VERSIONS.c.public_id, _VERSIONS.c.ledger_id, _VERSIONS.c.year, _VERSIONS.c.remark, _VERSIONS.c.size,
    _VERSIONS.c.sha256, _VERSIONS.c.uploaded_at, _UPLOADERS.c.id, _UPLOADERS.c.account, _UPLOADERS.c.nickname,
    _VERSIONS.c.via, _VERSIONS.c.client_version,
)
_VERSIONS_OF_LEDGERS = (
    select(*_VERSION_COLUMNS)
    .select_from(_VERSIONS.join(_UPLOADERS, _UPLOADERS.c.id == _VERSIONS.c.uploaded_by_id))
    .where(_VERSIONS.c.ledger_id.in_(bindparam("ledger_ids", expanding=True)))
    .order_by(_VERSIONS.c.ledger_id, _VERSIONS.c.year, _VERSIONS.c.id.desc())
)
_VERSIONS_OF_LEDGERS_IN_YEAR = _VERSIONS_OF_LEDGERS.where(_VERSIONS.c.year == bindparam("year"))
# 网盘列表 in one statement: each ledger with its owner, and every version (if any) with its uploader.
_LEDGER_LISTING = (
    select(_LEDGERS.c.id, _LEDGERS.c.name, _OWNERS.c.id, _OWNERS.c.account, _OWNERS.c.nickname, *_VERSION_COLUMNS)
    .select_from(
        _LEDGERS.join(_OWNERS, _OWNERS.c.id == _LEDGERS.c.owner_id)
        .outerjoin(_VERSIONS, _VERSIONS.c.ledger_id == _LEDGERS.c.id)
        .outerjoin(_UPLOADERS, _UPLOADERS.c.id == _VERSIONS.c.uploaded_by_id))
    .where(_LEDGERS.c.owner_id == bindparam("owner_id"))
    .order_by(_LEDGERS.c.name, _LEDGERS.c.id, _VERSIONS.c.year, _VERSIONS.c.id.desc())
)


def _version_of_row(row) -> VersionInfo:
    """A VersionInfo from the `_VERSION_COLUMNS` at the end of a listing row."""
    (version_id, ledger_id, year, remark, size, sha256, uploaded_at, uploader_id, uploader_account,
     uploader_nickname, via, client_version) = row[-len(_VERSION_COLUMNS):]
    return VersionInfo(version_id, ledger_id, year, remark, size, sha256, uploaded_at,
                       MemberRef(uploader_id, uploader_account, uploader_nickname), via, client_version)


def _group_by_year(versions: list[VersionInfo]) -> list[YearVersions]:
    """Versions ordered by year, newest first within a year → one YearVersions per year."""
    years: dict[int, list[VersionInfo]] = {}
    for version in versions:
        years.setdefault(version.year, []).append(version)
    return [YearVersions(year, kept) for year, kept in years.items()]


async def versions_of_ledgers(session: AsyncSession, ledger_ids: list[str],
                              year: int | None = None) -> dict[str, list[YearVersions]]:
    """Every version of several ledgers (or of one year of them) in one query: ledger id → its years (ascending)
    → versions, newest first."""
    grouped: dict[str, list[VersionInfo]] = {ledger_id: [] for ledger_id in ledger_ids}
    if ledger_ids:
        if year is None:
            rows = await session.execute(_VERSIONS_OF_LEDGERS, {"ledger_ids": ledger_ids})
        else:
            rows = await session.execute(_VERSIONS_OF_LEDGERS_IN_YEAR, {"ledger_ids": ledger_ids, "year": year})
        for row in rows:
            version = _version_of_row(row)
            grouped[version.ledger_id].append(version)
    return {ledger_id: _group_by_year(versions) for ledger_id, versions in grouped.items()}


async def list_ledgers(session: AsyncSession, member_id: int) -> list[LedgerInfo]:
    """网盘列表: the member's cloud-backup ledgers, by name, in one query however many there are."""
    ledgers: dict[str, tuple[str, MemberRef, list[VersionInfo]]] = {}
    for row in await session.execute(_LEDGER_LISTING, {"owner_id": member_id}):
        ledger_id, name, owner_id, owner_account, owner_nickname = row[:5]
        if ledger_id not in ledgers:
            ledgers[ledger_id] = (name, MemberRef(owner_id, owner_account, owner_nickname), [])
        if row[5] is not None:  # a version (the outer join gives a ledger without any one row of NULLs)
            ledgers[ledger_id][2].append(_version_of_row(row))
    return [_ledger_info(ledger_id, name, owner, _group_by_year(versions))
            for ledger_id, (name, owner, versions) in ledgers.items()]


async def get_ledger(session: AsyncSession, hooks: NetdiskHooks, member_id: int, ledger_id: str) -> LedgerInfo:
    """One of the member's own ledgers (the cloud-backup side)."""
    return await ledger_info(session, await ledger_for_backup(session, hooks, member_id, ledger_id))


async def rename_ledger(session: AsyncSession, hooks: NetdiskHooks, member_id: int, ledger_id: str, name: str) -> LedgerInfo:
    """Rename one of the member's ledgers."""
    ledger = await ledger_for_backup(session, hooks, member_id, ledger_id)
    ledger.name = clean_ledger_name(name)
    return await ledger_info(session, ledger)


# ------------------------------------------------------------------------------------------ deletion


async def delete_backup(sessions: async_sessionmaker[AsyncSession], settings: Settings, hooks: NetdiskHooks, member_id: int,
                        ledger_id: str, year: int | None, password: str, ip: str,
                        hashing: PasswordHashing | None = None) -> None:
    """Delete a whole ledger (`year` None: its shares end too) or one year of it, after the netdisk password
    is given again; releases the quota and leaves a deletion record (who, when, what, from which IP)."""
    if year is not None:
        year = fiscal_year(year)
    async with unit_of_work(sessions) as session:
        await ledger_for_backup(session, hooks, member_id, ledger_id)
    await verify_password(sessions, settings, member_id, password, hashing)
    async with unit_of_work(sessions) as session:
        await lock_owner(session, member_id)
        ledger = await ledger_for_backup(session, hooks, member_id, ledger_id)
        query = select(Version.id).where(Version.ledger_id == ledger_id)
        if year is not None:
            query = query.where(Version.year == year)
        version_ids = list(await session.scalars(query))
        if year is not None and not version_ids:
            raise errors.NotFound(f"该账套没有 {year} 年度的云备份")
        await store.release_versions(session, member_id, version_ids)
        session.add(Deletion(member_id=member_id, ledger_id=ledger_id, ledger_name=ledger.name, year=year,
                             deleted_at=utcnow(), ip=ip))
        if year is None:
            await hooks.end_ledger(session, ledger)
            await session.delete(ledger)


async def deletions(session: AsyncSession, member_id: int) -> list[Deletion]:
    """The member's deletion records, newest first."""
    rows = await session.scalars(
        select(Deletion).where(Deletion.member_id == member_id).order_by(Deletion.id.desc())
    )
    return list(rows)


async def backup_year(session: AsyncSession, hooks: NetdiskHooks, member_id: int, ledger_id: str, year: int) -> YearVersions:
    """One year of the owner's ledger with every kept version, newest first."""
    await ledger_for_backup(session, hooks, member_id, ledger_id)
    years = await year_versions(session, ledger_id, year)
    if not years:
        raise errors.NotFound(f"该账套没有 {year} 年度的云备份")
    return years[0]
