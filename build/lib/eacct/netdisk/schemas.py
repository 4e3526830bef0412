"""Shapes of the netdisk and cloud-backup API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from eacct.members.schemas import MemberOut
from eacct.schemas import Password, Strict

Question = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]*$")]
Answer = Annotated[str, StringConstraints(min_length=1, max_length=100)]
LedgerName = Annotated[str, StringConstraints(max_length=200)]  # the service checks the rest


class QuestionIn(Strict):
    question: Question
    answer: Answer


class OpenNetdisk(Strict):
    password: Password
    questions: Annotated[list[QuestionIn], Field(min_length=1, max_length=3)]


class Unlock(Strict):
    password: Annotated[str, StringConstraints(max_length=128)]


class Reset(Strict):
    answers: Annotated[list[Annotated[str, StringConstraints(max_length=100)]], Field(min_length=1, max_length=3)]
    new_password: Password


class PasswordChange(Strict):
    old_password: Annotated[str, StringConstraints(max_length=128)]
    new_password: Password


class LedgerRename(Strict):
    name: LedgerName


class NetdiskOut(BaseModel):
    opened: bool
    quota_bytes: int
    used_bytes: int
    free_bytes: int


class QuestionsOut(BaseModel):
    questions: list[str]


class UnlockOut(BaseModel):
    netdisk_token: str
    expires_at: str


class DeletionOut(BaseModel):
    ledger_id: str
    ledger_name: str
    year: int | None
    deleted_at: str
    ip: str


class DeletionsOut(BaseModel):
    deletions: list[DeletionOut]


class VersionOut(BaseModel):
    version_id: str
    ledger_id: str
    year: int
    remark: str
    size: int
    sha256: str
    uploaded_at: str
    uploaded_by: MemberOut
    via: str
    client_version: str


class YearSummary(BaseModel):
    year: int
    latest: VersionOut
    versions_count: int


class LedgerOut(BaseModel):
    ledger_id: str
    name: str
    owner: MemberOut
    years: list[YearSummary]


class LedgersOut(BaseModel):
    ledgers: list[LedgerOut]


class YearOut(BaseModel):
    year: int
    versions: list[VersionOut]


ChunkDigest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ChunkQuery(Strict):
    chunks: Annotated[list[ChunkDigest], Field(max_length=200_000)]


class MissingChunks(BaseModel):
    missing: list[str]
