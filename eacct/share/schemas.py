"""Shapes of the friends, shares, cloud-share and message APIs."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import Field, StringConstraints

from eacct.members.schemas import MemberOut
from eacct.netdisk.schemas import VersionOut
from eacct.schemas import MemberId, Out, PlainText, Strict, UtcTime


class FriendIn(Strict):
    account: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    nickname: Annotated[str, StringConstraints(min_length=1, max_length=40), PlainText]


class FriendOut(MemberOut):
    added_at: UtcTime


class FriendsOut(Out):
    friends: list[FriendOut]


class ShareIn(Strict):
    ledger_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F-]{32,36}$")]
    friend_ids: Annotated[list[MemberId], Field(min_length=1, max_length=100)]


class ShareOut(Out):
    share_id: str
    ledger_id: str
    ledger_name: str
    owner: MemberOut
    recipient: MemberOut
    since: date
    notice: str


class SharesCreated(Out):
    shares: list[ShareOut]


class SharedLedger(Out):
    ledger_id: str
    name: str
    recipients: list[ShareOut]


class ShareList(Out):
    ledger_count: int
    friend_count: int
    ledgers: list[SharedLedger]


class SharedYear(Out):
    year: int
    versions: list[VersionOut]


class CloudShareLedger(Out):
    ledger_id: str
    name: str
    since: date
    years: list[SharedYear]


class Sharer(Out):
    member: MemberOut
    ledgers: list[CloudShareLedger]


class CloudShares(Out):
    sharers: list[Sharer]


class MessageOut(Out):
    id: int
    kind: str
    title: str
    body: str
    created_at: UtcTime
    read: bool


class MessagesOut(Out):
    unread_count: int
    messages: list[MessageOut]
