"""Netdisk security, ledgers, versions and the content-addressed chunk store's index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from eacct.db import Base, UtcDateTime, utcnow
from eacct.members.models import Member, MemberRef

__all__ = [
    "LedgerInfo",
    "NetdiskStatus",
    "VersionInfo",
    "YearSummary",
    "YearVersions",
    "Chunk",
    "Deletion",
    "Ledger",
    "Netdisk",
    "Pack",
    "SecurityQuestion",
    "UploadLease",
    "Version",
    "VersionManifest",
]


class Netdisk(Base):
    """A member's opened netdisk: its password hash and quota. The row is also the owner's write lock."""

    __tablename__ = "netdisks"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    quota_bytes: Mapped[int] = mapped_column(BigInteger)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SecurityQuestion(Base):
    """One 密保问题 with the argon2 hash of its trimmed, case-folded answer."""

    __tablename__ = "security_questions"

    member_id: Mapped[int] = mapped_column(ForeignKey("netdisks.member_id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    question: Mapped[str] = mapped_column(String(100))
    answer_hash: Mapped[str] = mapped_column(String(200))


class Ledger(Base):
    """A ledger (账套) in its owner's cloud backup; the id is the desktop program's UUID."""

    __tablename__ = "ledgers"
    __table_args__ = (Index("ix_ledgers_owner_id", "owner_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Version(Base):
    """One uploaded copy of a (ledger, year); visible only once every chunk is durable and the sha256 matched."""

    __tablename__ = "versions"
    __table_args__ = (Index("ix_versions_ledger_year", "ledger_id", "year"),)

    # The integer orders versions (newest = highest); `public_id` is what the API calls version_id.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    ledger_id: Mapped[str] = mapped_column(ForeignKey("ledgers.id", ondelete="CASCADE"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    year: Mapped[int] = mapped_column(Integer)
    remark: Mapped[str] = mapped_column(String(200), default="")
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    uploaded_by_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    via: Mapped[str] = mapped_column(String(8))
    client_version: Mapped[str] = mapped_column(String(64), default="")


class VersionManifest(Base):
    """A version's chunk list: 36 bytes per chunk (sha256 digest + big-endian u32 raw size), in file order."""

    __tablename__ = "version_manifests"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    entries: Mapped[bytes] = mapped_column(LargeBinary)


class Pack(Base):
    """A blob holding many compressed chunks. Committed packs are referenced; pending ones may be an upload's."""

    __tablename__ = "packs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    blob_key: Mapped[str] = mapped_column(String(200), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    committed: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # The upload that registered a pending pack; gc reclaims the pack once that upload's lease has lapsed.
    lease_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)


class UploadLease(Base):
    """A running upload's claim on its pending packs and spool files: the process holding it refreshes
    `heartbeat_at` while the upload is alive, so gc can tell a live upload from a dead process's leftovers."""

    __tablename__ = "upload_leases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))  # host:pid:instance of the process, for people reading logs
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class UploadClaim(Base):
    """References a running upload counted ahead of its commit, on chunks it found already stored: a large
    re-upload counts them in short transactions of their own instead of holding the write lock for all of them
    in the commit. They belong to the upload's lease. The commit takes them over (deleting the lease deletes
    these rows; the references stay, now the version's); an upload that fails, or whose lease gc reclaims,
    drops them in the same transaction that deletes its lease."""

    __tablename__ = "upload_claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lease_id: Mapped[str] = mapped_column(ForeignKey("upload_leases.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    digests: Mapped[bytes] = mapped_column(LargeBinary)  # 32 bytes per chunk, one reference each


class Chunk(Base):
    """Where one distinct chunk of an owner lives. `refs` counts the versions using it; quota = sum of
    `raw_size` over chunks with refs > 0. Unreferenced rows stay until gc, so a concurrent upload that
    found the chunk can still count on it."""

    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("owner_id", "digest", name="uq_chunks_owner_digest"),
        Index("ix_chunks_pack_id", "pack_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    pack_id: Mapped[str] = mapped_column(ForeignKey("packs.id", ondelete="CASCADE"))
    offset: Mapped[int] = mapped_column(BigInteger)
    stored_length: Mapped[int] = mapped_column(Integer)
    raw_size: Mapped[int] = mapped_column(Integer)
    refs: Mapped[int] = mapped_column(Integer, default=0)


class Deletion(Base):
    """A record of a deleted ledger or year: who, when, what, from which IP."""

    __tablename__ = "deletions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    ledger_id: Mapped[str] = mapped_column(String(36))
    ledger_name: Mapped[str] = mapped_column(String(100))
    year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    deleted_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    ip: Mapped[str] = mapped_column(String(64), default="")


# ------------------------------------------------------------------ what the netdisk service answers with


@dataclass(frozen=True, slots=True)
class NetdiskStatus:
    """Opened or not, and the quota: total, used (distinct chunks, uncompressed) and free."""

    opened: bool
    quota_bytes: int
    used_bytes: int
    free_bytes: int


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One kept version of a (ledger, year) with the member who uploaded it."""

    version_id: str
    ledger_id: str
    year: int
    remark: str
    size: int
    sha256: str
    uploaded_at: datetime
    uploaded_by: MemberRef
    via: str
    client_version: str

    @classmethod
    def of(cls, version: Version, uploader: Member) -> VersionInfo:
        """The version row seen with its uploader."""
        return cls(version.public_id, version.ledger_id, version.year, version.remark, version.size, version.sha256,
                   version.uploaded_at, MemberRef.of(uploader), version.via, version.client_version)


@dataclass(frozen=True, slots=True)
class YearVersions:
    """A year of a ledger with every kept version, newest first."""

    year: int
    versions: list[VersionInfo]


@dataclass(frozen=True, slots=True)
class YearSummary:
    """A year as the ledger listing shows it: the newest version and how many are kept."""

    year: int
    latest: VersionInfo
    versions_count: int


@dataclass(frozen=True, slots=True)
class LedgerInfo:
    """A ledger in the owner's cloud backup (网盘列表) with its years."""

    ledger_id: str
    name: str
    owner: MemberRef
    years: list[YearSummary]


class UploadSession(Base):
    """A resumable upload: what its first request claimed, and the lease its pending chunks live under.

    Its chunks are pending data (packs with `lease_id`), charged to no one until the commit makes them a
    version; the lease's heartbeat is set a day ahead, so gc reclaims an abandoned session's data after that.
    """

    __tablename__ = "upload_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    uploader_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    ledger_id: Mapped[str] = mapped_column(String(36))
    year: Mapped[int] = mapped_column(Integer)
    via: Mapped[str] = mapped_column(String(8))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    remark: Mapped[str] = mapped_column(String(200), default="")
    ledger_name: Mapped[str | None] = mapped_column(String(100), default=None)
    client_version: Mapped[str] = mapped_column(String(64), default="")
    if_match: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class UploadSessionPack(Base):
    """A stored batch of an upload session: one of its pending packs. The chunks the session holds are the index
    rows in its packs, plus the few each pack records as `unindexed` (another upload's row for the chunk came
    first): one row per batch, not one per chunk, to write while a batch holds the write lock and to delete when
    the session ends."""

    __tablename__ = "upload_session_packs"

    session_id: Mapped[str] = mapped_column(ForeignKey("upload_sessions.id", ondelete="CASCADE"), primary_key=True)
    pack_id: Mapped[str] = mapped_column(ForeignKey("packs.id", ondelete="CASCADE"), primary_key=True, index=True)
    chunk_count: Mapped[int] = mapped_column(Integer)
    raw_bytes: Mapped[int] = mapped_column(BigInteger)
    # `eacct.netdisk.store.sessions.UNINDEXED` entries (digest, offset, stored length, raw size), usually none.
    unindexed: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
