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
    │   └── MemberNotFound         404 member_not_found
    ├── Conflict                   409 (account_taken, netdisk_already_opened)
    ├── VersionConflict            412 version_conflict
    ├── QuotaExceeded              413 quota_exceeded
    ├── TooManyVersions            413 too_many_versions
    ├── ChecksumMismatch           400 checksum_mismatch
    ├── BadRequest                 400 bad_request (missing headers, malformed body)
    ├── Invalid                    422 invalid (+ invalid_year, cannot_add_self)
    ├── TooManyAttempts            429 too_many_attempts (+ retry_after)
    └── StorageUnavailable         503 storage_unavailable (the blob store failed; nothing was kept)

Services raise these and never know about HTTP; `eacct.web` maps each class to its status once.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadAnswers",
    "BadCredentials",
    "BadNetdiskPassword",
    "BadRequest",
    "ChecksumMismatch",
    "Conflict",
    "DomainError",
    "Forbidden",
    "Invalid",
    "MemberNotFound",
    "NetdiskTokenRequired",
    "NotAFriend",
    "NotFound",
    "OwnerUsesBackup",
    "QuotaExceeded",
    "RecipientUsesShare",
    "StorageUnavailable",
    "TooManyAttempts",
    "TooManyVersions",
    "Unauthenticated",
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


class Conflict(DomainError):
    code = "conflict"
    message = "与现有数据冲突"


class VersionConflict(DomainError):
    code = "version_conflict"
    message = "云端已有更新的版本，请先下载最新版本再上传"


class QuotaExceeded(DomainError):
    code = "quota_exceeded"
    message = "云盘空间不足"


class TooManyVersions(DomainError):
    code = "too_many_versions"
    message = "云盘中的版本数已达上限，请先删除不需要的账套或年度"


class ChecksumMismatch(DomainError):
    code = "checksum_mismatch"
    message = "上传的数据校验失败（SHA-256 不一致），未保存，请重新上传"


class BadRequest(DomainError):
    code = "bad_request"
    message = "请求格式不正确"


class Invalid(DomainError):
    code = "invalid"
    message = "提交的内容不符合要求"


class TooManyAttempts(DomainError):
    code = "too_many_attempts"
    message = "尝试次数过多，请稍后再试"


class StorageUnavailable(DomainError):
    code = "storage_unavailable"
    message = "云存储暂时不可用，本次操作未保存任何数据，请稍后重试"
