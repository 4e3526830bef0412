"""Shapes of the friends, shares, cloud-share and message APIs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from eacct.members.schemas import MemberOut
from eacct.netdisk.schemas import VersionOut
from eacct.schemas import DateOut, LedgerIdOut, MemberId, Out, PlainText, Strict, TimeOut
from eacct.schemas import YearOut as Year


class FriendIn(Strict):
    account: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    nickname: Annotated[str, StringConstraints(min_length=1, max_length=40), PlainText]


class FriendOut(MemberOut):
    added_at: TimeOut


class FriendsOut(Out):
    friends: list[FriendOut]


class ShareIn(Strict):
    ledger_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F-]{32,36}$")]
    friend_ids: Annotated[list[MemberId], Field(min_length=1, max_length=100)]


class ShareOut(Out):
    share_id: str
    ledger_id: LedgerIdOut
    ledger_name: str
    owner: MemberOut
    recipient: MemberOut
    since: DateOut
    notice: str


class SharesCreated(Out):
    shares: list[ShareOut]


class SharedLedger(Out):
    ledger_id: LedgerIdOut
    name: str
    recipients: list[ShareOut]


class ShareList(Out):
    ledger_count: int
    friend_count: int
    ledgers: list[SharedLedger]


class SharedYear(Out):
    year: Year
    versions: list[VersionOut]


class CloudShareLedger(Out):
    ledger_id: LedgerIdOut
    name: str
    since: DateOut
    years: list[SharedYear]


class Sharer(Out):
    member: MemberOut
    ledgers: list[CloudShareLedger]


class CloudShares(Out):
    sharers: list[Sharer]


class MessageOut(Out):
    id: int
    kind: Literal["system", "personal"]
    title: str
    body: str
    created_at: TimeOut
    read: bool


class MessagesOut(Out):
    unread_count: int
    messages: list[MessageOut]
