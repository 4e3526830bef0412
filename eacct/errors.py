"""Domain errors: one hierarchy, each with a stable `code` (API.md) and a Chinese message for people.

    DomainError
    ├── Unauthenticated            401 unauthenticated
    │   ├── NetdiskTokenRequired   401 netdisk_token_required
    │   ├── BadCredentials         401 bad_credentials
    │   ├── BadNetdiskPassword     401 bad_netdisk_password
    │   └── BadAnswers             401 bad_answers
    ├── Forbidden                  403 forbidden
    │   ├── NotAFriend             403 not_a_friend
    │   ├── OwnerUsesBackup        403 owner_uses_backup
    │   └── RecipientUsesShare     403 recipient_uses_share
    ├── NotFound                   404 not_found
    │   ├── MemberNotFound         404 member_not_found
    │   └── NetdiskNotOpened       404 netdisk_not_opened
    ├── Conflict                   409 conflict
    │   ├── AccountTaken           409 account_taken
    │   ├── NetdiskAlreadyOpened   409 netdisk_already_opened
    │   ├── MissingChunks          409 missing_chunks (a delta named chunks the store lacks; + missing)
    │   └── RetryUpload            409 retry_upload (gc raced the upload; sending it again succeeds)
    ├── VersionConflict            412 version_conflict
    ├── QuotaExceeded              413 quota_exceeded (+ needed_bytes, free_bytes)
    ├── TooManyVersions            413 too_many_versions
    ├── ChecksumMismatch           400 checksum_mismatch
    ├── BadRequest                 400 bad_request (missing headers, malformed body)
    │   └── LengthRequired         400 length_required
    ├── Invalid                    422 invalid
    │   ├── InvalidYear            422 invalid_year
    │   └── CannotAddSelf          422 cannot_add_self
    ├── TooManyAttempts            429 too_many_attempts (+ retry_after)
    ├── StorageUnavailable         503 storage_unavailable (the blob store failed; nothing was kept)
    ├── UploadStalled              408 upload_stalled (the body stopped arriving; nothing was kept)
    └── Busy                       503 busy (+ retry_after: the server sheds a flood of password checks)

Services raise these and never know about HTTP; `eacct.web` maps each class to its status once.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccountTaken",
    "BadAnswers",
    "BadCredentials",
    "BadNetdiskPassword",
    "BadRequest",
    "Busy",
    "CannotAddSelf",
    "ChecksumMismatch",
    "Conflict",
    "DomainError",
    "Forbidden",
    "Invalid",
    "InvalidYear",
    "LengthRequired",
    "MemberNotFound",
    "MissingChunks",
    "NetdiskAlreadyOpened",
    "NetdiskNotOpened",
    "NetdiskTokenRequired",
    "NotAFriend",
    "NotFound",
    "OwnerUsesBackup",
    "QuotaExceeded",
    "RecipientUsesShare",
    "RetryUpload",
    "StorageUnavailable",
    "TooManyAttempts",
    "TooManyVersions",
    "Unauthenticated",
    "UploadStalled",
    "UploadStalled",
    "VersionConflict",
]


class DomainError(Exception):
    """A refusal the client can understand: stable `code`, message for people, optional extra fields."""

    code = "error"
    message = "请求无法完成"

    def __init__(self, message: str | None = None, *, code: str | None = None, **extra: Any) -> None:
        self.message = message or type(self).message
        if code:
            self.code = code
        self.extra = extra
        super().__init__(self.message)


class Unauthenticated(DomainError):
    code = "unauthenticated"
    message = "请先登录"


class NetdiskTokenRequired(Unauthenticated):
    code = "netdisk_token_required"
    message = "请先输入云盘密码登录云盘"


class BadCredentials(Unauthenticated):
    code = "bad_credentials"
    message = "会员账号或密码错误"


class BadNetdiskPassword(Unauthenticated):
    code = "bad_netdisk_password"
    message = "云盘密码错误"


class BadAnswers(Unauthenticated):
    code = "bad_answers"
    message = "密保问题的答案不正确"


class Forbidden(DomainError):
    code = "forbidden"
    message = "没有权限进行此操作"


class NotAFriend(Forbidden):
    code = "not_a_friend"
    message = "只能共享给您的好友，请先添加好友"


class OwnerUsesBackup(Forbidden):
    code = "owner_uses_backup"
    message = "这是您自己的账套：共享人请在【云备份】中下载和上传，受共享人才使用【云共享】"


class RecipientUsesShare(Forbidden):
    code = "recipient_uses_share"
    message = "这是好友共享给您的账套：受共享人请在【云共享】中下载和上传，【云备份】只供共享人使用"


class NotFound(DomainError):
    code = "not_found"
    message = "找不到请求的内容"


class MemberNotFound(NotFound):
    code = "member_not_found"
    message = "找不到该会员，请核对会员账号和昵称"


class NetdiskNotOpened(NotFound):
    code = "netdisk_not_opened"
    message = "您还没有开通云盘：首次使用请先设置云盘密码和密保问题"


class Conflict(DomainError):
    code = "conflict"
    message = "与现有数据冲突"


class AccountTaken(Conflict):
    code = "account_taken"
    message = "该会员账号已被注册"


class NetdiskAlreadyOpened(Conflict):
    code = "netdisk_already_opened"
    message = "云盘已经开通，不能重复设置"


class MissingChunks(Conflict):
    code = "missing_chunks"
    message = "云端缺少部分数据块，请重新上传（将发送完整数据）"


class RetryUpload(Conflict):
    code = "retry_upload"
    message = "云端数据正在整理，请重新上传"


class VersionConflict(DomainError):
    code = "version_conflict"
    message = "云端已有更新的版本，请先下载最新版本再上传"


class QuotaExceeded(DomainError):
    code = "quota_exceeded"
    message = "云盘空间不足"

    @classmethod
    def for_upload(cls, needed: int, free: int) -> QuotaExceeded:
        """The refusal of an upload that needs `needed` bytes where `free` are left (both in the answer)."""
        mib = 1024 * 1024
        return cls(f"云盘空间不足：本次上传需要 {needed / mib:.2f} MB，可用空间只有 {max(free, 0) / mib:.2f} MB",
                   needed_bytes=needed, free_bytes=max(free, 0))


class TooManyVersions(DomainError):
    code = "too_many_versions"
    message = "云盘中的版本数已达上限，请先删除不需要的账套或年度"


class ChecksumMismatch(DomainError):
    code = "checksum_mismatch"
    message = "上传的数据校验失败（SHA-256 不一致），未保存，请重新上传"


class BadRequest(DomainError):
    code = "bad_request"
    message = "请求格式不正确"


class LengthRequired(BadRequest):
    code = "length_required"
    message = "上传需要 Content-Length"


class Invalid(DomainError):
    code = "invalid"
    message = "提交的内容不符合要求"


class InvalidYear(Invalid):
    code = "invalid_year"
    message = "会计年度应为 1990 到 2100 之间的年份"


class CannotAddSelf(Invalid):
    code = "cannot_add_self"
    message = "不能添加自己为好友"


class TooManyAttempts(DomainError):
    code = "too_many_attempts"
    message = "尝试次数过多，请稍后再试"


class StorageUnavailable(DomainError):
    code = "storage_unavailable"
    message = "云存储暂时不可用，本次操作未保存任何数据，请稍后重试"


class UploadStalled(DomainError):
    code = "upload_stalled"
    message = "上传中断：长时间没有收到数据，本次上传未保存，请重新上传"
class Busy(DomainError):
    """503 busy: the server sheds load (a flood of password checks); `retry_after` says when to try again."""

    code = "busy"
    message = "服务器繁忙，请稍后重试"
