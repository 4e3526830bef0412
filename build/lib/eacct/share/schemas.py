"""Shapes of the friends, shares, cloud-share and message APIs."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from eacct.members.schemas import MemberOut
from eacct.netdisk.schemas import VersionOut
from eacct.schemas import MemberId, Strict


class FriendIn(Strict):
    account: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    nickname: Annotated[str, StringConstraints(min_length=1, max_length=40)]


class FriendOut(MemberOut):
    added_at: str


class FriendsOut(BaseModel):
    friends: list[FriendOut]


class ShareIn(Strict):
    ledger_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F-]{32,36}$")]
    friend_ids: Annotated[list[MemberId], Field(min_length=1, max_length=100)]


class ShareOut(BaseModel):
    share_id: str
    ledger_id: str
    ledger_name: str
    owner: MemberOut
    recipient: MemberOut
    since: str
    notice: str


class SharesCreated(BaseModel):
    shares: list[ShareOut]


class SharedLedger(BaseModel):
    ledger_id: str
    name: str
    recipients: list[ShareOut]


class ShareList(BaseModel):
    ledger_count: int
    friend_count: int
    ledgers: list[SharedLedger]


class SharedYear(BaseModel):
    year: int
    versions: list[VersionOut]


class CloudShareLedger(BaseModel):
    ledger_id: str
    name: str
    since: str
    years: list[SharedYear]


class Sharer(BaseModel):
    member: MemberOut
    ledgers: list[CloudShareLedger]


class CloudShares(BaseModel):
    sharers: list[Sharer]


class MessageOut(BaseModel):
    id: int
    kind: str
    title: str
    body: str
    created_at: str
    read: bool


class MessagesOut(BaseModel):
    unread_count: int
    messages: list[MessageOut]
