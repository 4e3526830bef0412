"""Shapes of the netdisk and cloud-backup API."""

from __future__ import annotations

from typing import Annotated

from typing import Literal

from pydantic import Field, StringConstraints

from eacct.members.schemas import MemberOut
from eacct.schemas import LedgerIdOut, Out, Password, PlainText, Sha256Out, Strict, TimeOut
from eacct.schemas import YearOut as Year

Question = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), PlainText]
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


class NetdiskOut(Out):
    opened: bool
    quota_bytes: int
    used_bytes: int
    free_bytes: int


class QuestionsOut(Out):
    questions: list[str]


class UnlockOut(Out):
    netdisk_token: str
    expires_at: TimeOut


class DeletionOut(Out):
    ledger_id: LedgerIdOut
    ledger_name: str
    year: Year | None
    deleted_at: TimeOut
    ip: str


class DeletionsOut(Out):
    deletions: list[DeletionOut]


class VersionOut(Out):
    version_id: str
    ledger_id: LedgerIdOut
    year: Year
    remark: str
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256Out
    uploaded_at: TimeOut
    uploaded_by: MemberOut
    via: Literal["backup", "share"]
    client_version: str


class YearSummary(Out):
    year: Year
    latest: VersionOut
    versions_count: int


class LedgerOut(Out):
    ledger_id: LedgerIdOut
    name: str
    owner: MemberOut
    years: list[YearSummary]


class LedgersOut(Out):
    ledgers: list[LedgerOut]


class YearOut(Out):
    year: Year
    versions: list[VersionOut]


ChunkDigest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ChunkQuery(Strict):
    chunks: Annotated[list[ChunkDigest], Field(max_length=200_000)]


class MissingChunks(Out):
    missing: list[Sha256Out]


class ManifestChunk(Out):
    sha256: Sha256Out
    size: Annotated[int, Field(ge=1)]


class ManifestOut(Out):
    """A version's chunk list in file order, for a chunk-level download."""

    version_id: str
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256Out
    remark: str
    uploaded_at: TimeOut
    chunks: list[ManifestChunk]


class ChunkBatch(Strict):
    """Chunks of a version to fetch, answered as their raw bytes concatenated in this order."""

    chunks: Annotated[list[ChunkDigest], Field(min_length=1, max_length=4096)]
    # "zstd": the same bytes as one zstd stream (Content-Type application/zstd), for slow links.
    encoding: Literal["identity", "zstd"] = "identity"


class UploadSessionIn(Strict):
    """What a resumable upload claims (as a streamed upload's headers do)."""

    size: Annotated[int, Field(ge=0, le=10**15)]
    sha256: ChunkDigest
    remark: Annotated[str, StringConstraints(max_length=200), PlainText] = ""
    ledger_name: Annotated[str, StringConstraints(max_length=100)] | None = None
    client_version: Annotated[str, StringConstraints(max_length=64), PlainText] = ""
    if_match: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r'^[^"]+$')] | None = None


class UploadSessionOut(Out):
    upload_id: str
    expires_at: TimeOut
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256Out
    held: list[Sha256Out]


class ChunksStored(Out):
    stored: Annotated[int, Field(ge=0)]
