"""The netdisk: opening it, its password and security questions, quota, the backup listing, deletions.

The netdisk password guards every ledger; only its argon2 hash is stored, and the only way back in
after forgetting it is answering the security questions (nobody, staff included, can read either).
Wrong passwords and wrong answers are counted per member in the database and locked out for a while.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors, throttle
from eacct.config import Settings
from eacct.db import unit_of_work, utcnow
from eacct.members.models import AccessToken, Member, TokenKind
from eacct.members.service import issue_token, member_view
from eacct.netdisk import store
from eacct.netdisk.blobstore import BlobStore
from eacct.formats import iso
from eacct.netdisk.models import Chunk, Deletion, Ledger, Netdisk, SecurityQuestion, Version
from eacct.secrets import hash_secret, normalise_answer, verify_secret
from eacct.share.access import ledger_for_backup

__all__ = [
    "UploadClaim", "backup_missing_chunks", "backup_upload", "backup_version", "backup_year", "change_password", "clean_ledger_name",
    "delete_backup", "deletions", "find_version", "get_ledger_view", "ledger_view", "list_ledgers", "missing_chunks", "netdisk_status",
    "open_netdisk", "questions", "rename_ledger", "reset_password", "unlock", "upload", "verify_password",
    "version_view", "year_versions",
]


def _password_key(member_id: int) -> str:
    return f"netdisk_password:{member_id}"


def _answers_key(member_id: int) -> str:
    return f"netdisk_answers:{member_id}"


def _policy(settings: Settings) -> throttle.Policy:
    return throttle.Policy(settings.lockout_after_failures, settings.lockout_base_seconds, settings.lockout_max_seconds)


async def _netdisk(session: AsyncSession, member_id: int) -> Netdisk:
    netdisk = await session.get(Netdisk, member_id)
    if netdisk is None:
        raise errors.NotFound("您还没有开通云盘：首次使用请先设置云盘密码和密保问题", code="netdisk_not_opened")
    return netdisk


async def netdisk_status(session: AsyncSession, settings: Settings, member_id: int) -> dict:
    """Opened or not, and quota: total, used, free."""
    netdisk = await session.get(Netdisk, member_id)
    quota = netdisk.quota_bytes if netdisk else settings.netdisk_quota_bytes
    used = await store.used_bytes(session, member_id)
    return {"opened": netdisk is not None, "quota_bytes": quota, "used_bytes": used, "free_bytes": max(quota - used, 0)}


async def open_netdisk(session: AsyncSession, settings: Settings, member_id: int, password: str,
                       questions: list[tuple[str, str]]) -> None:
    """First use: set the netdisk password and 1–3 security questions (answers trimmed, case-folded, hashed)."""
    if await session.get(Netdisk, member_id) is not None:
        raise errors.Conflict("云盘已经开通，不能重复设置", code="netdisk_already_opened")
    if len({q.strip() for q, _ in questions}) != len(questions):
        raise errors.Invalid("密保问题不能重复")
    if any(not normalise_answer(a) for _, a in questions):
        raise errors.Invalid("密保答案不能为空")
    session.add(Netdisk(member_id=member_id, password_hash=await hash_secret(settings, password),
                        quota_bytes=settings.netdisk_quota_bytes))
    await session.flush()
    for position, (question, answer) in enumerate(questions):
        session.add(SecurityQuestion(member_id=member_id, position=position, question=question.strip(),
                                     answer_hash=await hash_secret(settings, normalise_answer(answer))))
    await session.flush()


async def questions(session: AsyncSession, member_id: int) -> list[str]:
    """The member's security questions, in the order they were set."""
    await _netdisk(session, member_id)
    rows = await session.scalars(
        select(SecurityQuestion.question).where(SecurityQuestion.member_id == member_id).order_by(SecurityQuestion.position)
    )
    return list(rows)


async def verify_password(sessions: async_sessionmaker[AsyncSession], settings: Settings, member_id: int,
                          password: str) -> None:
    """Check the netdisk password, counting failures toward the lockout (shared by unlock, change, delete)."""
    key = _password_key(member_id)
    async with unit_of_work(sessions) as session:
        netdisk = await _netdisk(session, member_id)
        await throttle.check_not_locked(session, key)
        stored = netdisk.password_hash
    if not await verify_secret(settings, stored, password):
        until = await throttle.record_failure(sessions, key, _policy(settings))
        raise throttle.with_lockout(errors.BadNetdiskPassword(), until)
    async with unit_of_work(sessions) as session:
        await throttle.clear(session, key)


async def unlock(sessions: async_sessionmaker[AsyncSession], settings: Settings, member_id: int, password: str):
    """Log in to the netdisk: a netdisk token that expires after 30 minutes idle."""
    await verify_password(sessions, settings, member_id, password)
    async with unit_of_work(sessions) as session:
        return await issue_token(session, member_id, TokenKind.NETDISK, settings.netdisk_token_idle_seconds)


async def reset_password(sessions: async_sessionmaker[AsyncSession], settings: Settings, member_id: int,
                         answers: list[str], new_password: str) -> None:
    """Set a new netdisk password after every security question is answered; ends open netdisk logins."""
    key = _answers_key(member_id)
    async with unit_of_work(sessions) as session:
        await _netdisk(session, member_id)
        await throttle.check_not_locked(session, key)
        stored = list(await session.scalars(
            select(SecurityQuestion.answer_hash)
            .where(SecurityQuestion.member_id == member_id)
            .order_by(SecurityQuestion.position)
        ))
    matches = len(answers) == len(stored)
    for stored_hash, answer in zip(stored, answers):
        matches = await verify_secret(settings, stored_hash, normalise_answer(answer)) and matches
    if not matches:
        until = await throttle.record_failure(sessions, key, _policy(settings))
        raise throttle.with_lockout(errors.BadAnswers(), until)
    new_hash = await hash_secret(settings, new_password)
    async with unit_of_work(sessions) as session:
        netdisk = await _netdisk(session, member_id)
        netdisk.password_hash = new_hash
        await throttle.clear(session, key)
        await throttle.clear(session, _password_key(member_id))
        await _end_netdisk_logins(session, member_id)


async def change_password(sessions: async_sessionmaker[AsyncSession], settings: Settings, member_id: int,
                          old_password: str, new_password: str) -> None:
    """Change the netdisk password knowing the old one; ends open netdisk logins."""
    await verify_password(sessions, settings, member_id, old_password)
    new_hash = await hash_secret(settings, new_password)
    async with unit_of_work(sessions) as session:
        netdisk = await _netdisk(session, member_id)
        netdisk.password_hash = new_hash
        await _end_netdisk_logins(session, member_id)


async def _end_netdisk_logins(session: AsyncSession, member_id: int) -> None:
    await session.execute(
        delete(AccessToken).where(AccessToken.member_id == member_id, AccessToken.kind == TokenKind.NETDISK)
    )


# ------------------------------------------------------------------------------------------ listings


def clean_ledger_name(name: str) -> str:
    """A ledger name as people see it: trimmed, 1–100 characters, no control characters and nothing that
    could act as a path when the desktop program names a folder after it."""
    name = name.strip()
    if not 1 <= len(name) <= 100 or any(ord(ch) < 32 for ch in name) or "/" in name or "\\" in name or name in (".", ".."):
        raise errors.Invalid("账套名称应为 1 到 100 个字符，不能包含 / \\ 或控制字符")
    return name


def version_view(version: Version, uploader: Member) -> dict:
    """`Version` of API.md."""
    return {
        "version_id": version.public_id,
        "ledger_id": version.ledger_id,
        "year": version.year,
        "remark": version.remark,
        "size": version.size,
        "sha256": version.sha256,
        "uploaded_at": iso(version.uploaded_at),
        "uploaded_by": member_view(uploader),
        "via": version.via,
        "client_version": version.client_version,
    }


async def year_versions(session: AsyncSession, ledger_id: str, year: int | None = None) -> dict[int, list[dict]]:
    """Every version of a ledger (or of one year), newest first, grouped by year (years ascending)."""
    query = (
        select(Version, Member)
        .join(Member, Member.id == Version.uploaded_by_id)
        .where(Version.ledger_id == ledger_id)
        .order_by(Version.year, Version.id.desc())
    )
    if year is not None:
        query = query.where(Version.year == year)
    grouped: dict[int, list[dict]] = {}
    for version, uploader in (await session.execute(query)).all():
        grouped.setdefault(version.year, []).append(version_view(version, uploader))
    return grouped


async def ledger_view(session: AsyncSession, ledger: Ledger) -> dict:
    """`Ledger` of API.md: owner and, per year, the latest version and how many are kept."""
    owner = await session.get(Member, ledger.owner_id)
    return _ledger_view(ledger, owner, await year_versions(session, ledger.id))


def _ledger_view(ledger: Ledger, owner: Member, years: dict[int, list[dict]]) -> dict:
    return {
        "ledger_id": ledger.id,
        "name": ledger.name,
        "owner": member_view(owner),
        "years": [{"year": y, "latest": v[0], "versions_count": len(v)} for y, v in sorted(years.items())],
    }


async def versions_of_ledgers(session: AsyncSession, ledger_ids: list[str]) -> dict[str, dict[int, list[dict]]]:
    """`year_versions` of several ledgers in one query: ledger id → year → versions, newest first."""
    grouped: dict[str, dict[int, list[dict]]] = {ledger_id: {} for ledger_id in ledger_ids}
    if not ledger_ids:
        return grouped
    query = (
        select(Version, Member)
        .join(Member, Member.id == Version.uploaded_by_id)
        .where(Version.ledger_id.in_(ledger_ids))
        .order_by(Version.ledger_id, Version.year, Version.id.desc())
    )
    for version, uploader in (await session.execute(query)).all():
        grouped[version.ledger_id].setdefault(version.year, []).append(version_view(version, uploader))
    return grouped


async def list_ledgers(session: AsyncSession, member_id: int) -> list[dict]:
    """网盘列表: the member's cloud-backup ledgers, by name (a fixed number of queries however many)."""
    ledgers = list(await session.scalars(
        select(Ledger).where(Ledger.owner_id == member_id).order_by(Ledger.name, Ledger.id)))
    if not ledgers:
        return []
    owner = await session.get(Member, member_id)
    versions = await versions_of_ledgers(session, [ledger.id for ledger in ledgers])
    return [_ledger_view(ledger, owner, versions[ledger.id]) for ledger in ledgers]


async def get_ledger_view(session: AsyncSession, member_id: int, ledger_id: str) -> dict:
    """One of the member's own ledgers (the cloud-backup side)."""
    return await ledger_view(session, await ledger_for_backup(session, member_id, ledger_id))


async def rename_ledger(session: AsyncSession, member_id: int, ledger_id: str, name: str) -> dict:
    """Rename one of the member's ledgers."""
    ledger = await ledger_for_backup(session, member_id, ledger_id)
    ledger.name = clean_ledger_name(name)
    return await ledger_view(session, ledger)


# ------------------------------------------------------------------------------------------ deletion


async def delete_backup(sessions: async_sessionmaker[AsyncSession], settings: Settings, notifier, member_id: int,
                        ledger_id: str, year: int | None, password: str, ip: str) -> None:
    """Delete a whole ledger (`year` None: its shares end too) or one year of it, after the netdisk password
    is given again; releases the quota and leaves a deletion record (who, when, what, from which IP)."""
    # Imported here: share.service builds on this module.
    from eacct.share.service import end_shares_of_ledger

    async with unit_of_work(sessions) as session:
        await ledger_for_backup(session, member_id, ledger_id)
    await verify_password(sessions, settings, member_id, password)
    async with unit_of_work(sessions) as session:
        await store.lock_owner(session, member_id)
        ledger = await ledger_for_backup(session, member_id, ledger_id)
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
            await end_shares_of_ledger(session, notifier, ledger)
            await session.delete(ledger)


async def deletions(session: AsyncSession, member_id: int) -> list[dict]:
    """The member's deletion records, newest first."""
    rows = await session.scalars(
        select(Deletion).where(Deletion.member_id == member_id).order_by(Deletion.id.desc())
    )
    return [
        {"ledger_id": d.ledger_id, "ledger_name": d.ledger_name, "year": d.year, "deleted_at": iso(d.deleted_at), "ip": d.ip}
        for d in rows
    ]


# ---------------------------------------------------------------------------------------- transfers


@dataclass(frozen=True, slots=True)
class UploadClaim:
    """What an upload's headers say: where it goes, how big it is, its checksum, and its labels."""

    ledger_id: str
    year: int
    size: int
    sha256: str
    remark: str = ""
    ledger_name: str | None = None
    client_version: str = ""
    if_match: str | None = None
    # A delta upload (eacct.netdisk.delta): `size` is the whole year's, `body_size` what travels.
    delta: bool = False
    body_size: int | None = None


async def upload(
    sessions: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
    settings: Settings,
    claim: UploadClaim,
    body: AsyncIterator[bytes],
    *,
    owner_id: int,
    uploader_id: int,
    via: str,
    authorize: Callable[[AsyncSession], Awaitable[Ledger | None]],
    after_commit: Callable[[AsyncSession, Ledger, Version], Awaitable[None]] | None = None,
    on_accepted: Callable[[], Awaitable[None]] | None = None,
) -> dict:
    """Receive a new version of (ledger, year) for `owner_id`; shared by cloud backup and cloud share.

    `authorize` is the path's access rule; it runs before the body is read and again inside the commit,
    so access withdrawn during the transfer (a cancelled share) refuses the version. `on_accepted` runs
    when every check that needs no body byte has passed (the HTTP side answers 100 Continue there).
    """
    if claim.ledger_name is not None:
        claim = replace(claim, ledger_name=clean_ledger_name(claim.ledger_name))
    incoming = store.IncomingVersion(
        owner_id=owner_id, ledger_id=claim.ledger_id, year=claim.year, uploader_id=uploader_id, via=via,
        size=claim.size, sha256=claim.sha256, remark=claim.remark, client_version=claim.client_version,
        if_match=claim.if_match, delta=claim.delta, body_size=claim.body_size,
    )
    async with unit_of_work(sessions) as session:
        ledger = await authorize(session)
        if ledger is None and not claim.ledger_name:
            raise errors.Invalid("首次上传新账套时需要提供账套名称（X-Ledger-Name）")
        free = await store.check_before_upload(session, settings, incoming)
    if on_accepted is not None:
        await on_accepted()

    async def on_commit(session: AsyncSession, version: Version) -> None:
        ledger = await authorize(session)
        if ledger is None and not claim.ledger_name:
            # The ledger existed when the upload began and was deleted while its bytes arrived.
            raise errors.NotFound("云备份中没有这个账套（上传期间已被删除）")
        if ledger is None:
            ledger = Ledger(id=claim.ledger_id, owner_id=owner_id, name=claim.ledger_name)
            session.add(ledger)
            await session.flush()
        elif claim.ledger_name and via == "backup":
            ledger.name = claim.ledger_name
        if after_commit is not None:
            await after_commit(session, ledger, version)

    version = await store.receive_version(sessions, blobs, settings, incoming, body, on_commit, free_bytes=free)
    async with unit_of_work(sessions, read_only=True) as session:
        uploader = await session.get(Member, uploader_id)
    return version_view(version, uploader)


async def missing_chunks(session: AsyncSession, owner_id: int, digests: list[str]) -> list[str]:
    """Which of these chunk digests (hex) the owner's store lacks, in the order asked."""
    wanted = [bytes.fromhex(digest) for digest in dict.fromkeys(digests)]
    have: set[bytes] = set()
    for start in range(0, len(wanted), 500):
        batch = wanted[start : start + 500]
        have.update(await session.scalars(
            select(Chunk.digest).where(Chunk.owner_id == owner_id, Chunk.refs > 0, Chunk.digest.in_(batch))
        ))
    return [digest.hex() for digest in wanted if digest not in have]


async def backup_missing_chunks(session: AsyncSession, member_id: int, ledger_id: str, digests: list[str]) -> list[str]:
    """Before a delta 上传云备份: the chunks the owner's store lacks."""
    await ledger_for_backup(session, member_id, ledger_id, may_be_new=True)
    return await missing_chunks(session, member_id, digests)


async def find_version(session: AsyncSession, ledger_id: str, year: int, version_ref: str) -> Version:
    """A version of (ledger, year) by its id, or the newest for `latest`."""
    if version_ref == "latest":
        version = await store.latest_version(session, ledger_id, year)
    else:
        version = await session.scalar(
            select(Version).where(Version.public_id == version_ref, Version.ledger_id == ledger_id, Version.year == year)
        )
    if version is None:
        raise errors.NotFound("没有这个版本")
    return version


async def backup_upload(sessions, blobs: BlobStore, settings: Settings, member_id: int, claim: UploadClaim,
                        body: AsyncIterator[bytes], on_accepted=None) -> dict:
    """上传云备份: the owner uploads a year of their own ledger (a new ledger on its first upload)."""

    async def authorize(session: AsyncSession) -> Ledger | None:
        return await ledger_for_backup(session, member_id, claim.ledger_id, may_be_new=True)

    return await upload(sessions, blobs, settings, claim, body, owner_id=member_id, uploader_id=member_id,
                        via="backup", authorize=authorize, on_accepted=on_accepted)


async def backup_version(session: AsyncSession, member_id: int, ledger_id: str, year: int, version_ref: str) -> Version:
    """The owner's version to download (restore = download of any kept version)."""
    await ledger_for_backup(session, member_id, ledger_id)
    return await find_version(session, ledger_id, year, version_ref)


async def backup_year(session: AsyncSession, member_id: int, ledger_id: str, year: int) -> dict:
    """One year of the owner's ledger with every kept version, newest first."""
    await ledger_for_backup(session, member_id, ledger_id)
    versions = (await year_versions(session, ledger_id, year)).get(year)
    if not versions:
        raise errors.NotFound(f"该账套没有 {year} 年度的云备份")
    return {"year": year, "versions": versions}
