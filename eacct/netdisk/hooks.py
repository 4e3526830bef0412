"""How packages above the netdisk take part in its rules, without the netdisk importing them.

At start-up the share package registers what the cloud-backup path says to a member who is not a ledger's
owner (a recipient is sent to cloud share instead of being told the ledger does not exist) and what ends with a
deleted ledger (its shares). The app passes the one `NetdiskHooks` to every netdisk service call that needs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from eacct import errors
from eacct.netdisk.models import Ledger

__all__ = ["NetdiskHooks", "ledger_for_backup"]

# Built once: every backup request reads its ledger (bench.load --cost).
_LEDGER = select(Ledger).where(Ledger.id == bindparam("ledger_id"))

NonOwnerCheck = Callable[[AsyncSession, int, Ledger], Awaitable[None]]
LedgerDeleted = Callable[[AsyncSession, Ledger], Awaitable[None]]


@dataclass
class NetdiskHooks:
    """Callbacks registered by higher packages; each list runs in registration order."""

    non_owner_checks: list[NonOwnerCheck] = field(default_factory=list)
    ledger_deleted: list[LedgerDeleted] = field(default_factory=list)

    async def refuse_non_owner(self, session: AsyncSession, member_id: int, ledger: Ledger) -> None:
        """Let a registered rule refuse a non-owner with its own error before the plain not-found."""
        for check in self.non_owner_checks:
            await check(session, member_id, ledger)

    async def end_ledger(self, session: AsyncSession, ledger: Ledger) -> None:
        """Tell every registered package that `ledger` is being deleted (the owner's lock is held)."""
        for hook in self.ledger_deleted:
            await hook(session, ledger)


async def ledger_for_backup(session: AsyncSession, hooks: NetdiskHooks, member_id: int, ledger_id: str, *,
                            may_be_new: bool = False) -> Ledger | None:
    """The caller's own ledger for the cloud-backup path (共享人操作云备份); None for an unknown id when
    `may_be_new` (a first upload). Anyone else is refused by a registered rule or told it does not exist."""
    ledger = (await session.execute(_LEDGER, {"ledger_id": ledger_id})).scalar_one_or_none()
    if ledger is None:
        if may_be_new:
            return None
        raise errors.NotFound("云备份中没有这个账套")
    if ledger.owner_id == member_id:
        return ledger
    await hooks.refuse_non_owner(session, member_id, ledger)
    raise errors.NotFound("云备份中没有这个账套")
