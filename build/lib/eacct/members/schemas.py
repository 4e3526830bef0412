"""Shapes of the members API."""

from __future__ import annotations

from pydantic import BaseModel

from eacct.schemas import Account, Nickname, Password, Strict


class NewMember(Strict):
    account: Account
    password: Password
    nickname: Nickname


class Credentials(Strict):
    account: str
    password: str


class NicknameChange(Strict):
    nickname: Nickname


class MemberOut(BaseModel):
    id: int
    account: str
    nickname: str


class Me(MemberOut):
    wechat_bound: bool
    netdisk_opened: bool


class SessionOut(BaseModel):
    token: str
    expires_at: str
    member: MemberOut
