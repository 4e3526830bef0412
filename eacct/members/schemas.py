"""Shapes of the members API."""

from __future__ import annotations

from eacct.schemas import Account, Nickname, Out, Password, Strict, TimeOut


class NewMember(Strict):
    account: Account
    password: Password
    nickname: Nickname


class Credentials(Strict):
    account: str
    password: str


class NicknameChange(Strict):
    nickname: Nickname


class MemberOut(Out):
    id: int
    account: str
    nickname: str


class Me(MemberOut):
    wechat_bound: bool
    netdisk_opened: bool


class SessionOut(Out):
    token: str
    expires_at: TimeOut
    member: MemberOut
