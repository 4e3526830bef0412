"""The one place that decides who may reach a ledger, and by which path.

共享人操作云备份，受共享人操作云共享: the owner reads and writes a ledger only through cloud backup, a
recipient with an active share only through cloud share. Each wrong path gets an error naming the right
one; anyone else (and a former recipient) is told the ledger does not exist. Every route to a ledger's
data (REST, WeChat pages, downloads, uploads, and the commit of an upload) goes through here.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from eacct import errors
from eacct.netdisk.models import Ledger
from eacct.share.models import Share

__all__ = ["active_share", "ledger_for_backup", "ledger_for_share"]


async def active_share(session: AsyncSession, ledger_id: str, recipient_id: int) -> Share | None:
    """The recipient's active share of the ledger, if any."""
    return await session.scalar(
        select(Share).where(
            Share.ledger_id == ledger_id, Share.recipient_id == recipient_id, Share.cancelled_at.is_(None)
        ).limit(1)
    )


async def ledger_for_backup(session: AsyncSession, member_id: int, ledger_id: str, *, may_be_new: bool = False) -> Ledger | None:
    """The caller's own ledger for the cloud-backup path; None for an unknown id when `may_be_new` (first upload)."""
    ledger = await session.get(Ledger, ledger_id)
    if ledger is None:
        if may_be_new:
            return None
        raise errors.NotFound("云备份中没有这个账套")
    if ledger.owner_id == member_id:
        return ledger
    if await active_share(session, ledger_id, member_id) is not None:
        raise errors.RecipientUsesShare()
    raise errors.NotFound("云备份中没有这个账套")


async def ledger_for_share(session: AsyncSession, member_id: int, ledger_id: str) -> tuple[Ledger, Share]:
    """A ledger shared with the caller, for the cloud-share path, with the share that grants it."""
    ledger = await session.get(Ledger, ledger_id)
    if ledger is None:
        raise errors.NotFound("没有这个共享账套")
    if ledger.owner_id == member_id:
        raise errors.OwnerUsesBackup()
    share = await active_share(session, ledger_id, member_id)
    if share is None:
        raise errors.NotFound("没有这个共享账套")
    return ledger, share
