"""Errors of the desktop_sync client: the only exceptions any public call raises.

    SyncError                       anything desktop_sync could not do; str() is a Chinese sentence
    ├── UsageError                  a bad argument, refused before any request
    │   └── InvalidLedgerId         not a UUID (instead of a ValueError)
    ├── LocalError                  the ledger folder, not the server
    │   ├── LocalCopyExists         a download would replace a local year without 覆盖本地账套 (overwrite)
    │   ├── LedgerNotFound          no such ledger or year locally, or a folder without ledger.json
    │   ├── UnsafeArchive           a downloaded archive tried to write outside its year folder
    │   └── DiskError               the disk refused (full, read-only, no permission) — instead of OSError
    ├── TransportError              the server could not be reached or the connection broke
    │   └── ProtocolError           the answer was not the API's (a proxy's HTML 502, broken JSON)
    ├── ChecksumError               downloaded bytes do not match the server's sha256 (nothing was installed)
    └── ApiError                    the server refused; `status`, `code` (API.md), `message`, `extra`
        ├── AuthError               401 (any code of that status)
        │   ├── NotLoggedIn             401 unauthenticated
        │   ├── NetdiskTokenRequired    401 netdisk_token_required
        │   ├── BadCredentials          401 bad_credentials
        │   ├── BadNetdiskPassword      401 bad_netdisk_password
        │   └── BadAnswers              401 bad_answers
        ├── ForbiddenError          403 forbidden
        │   ├── NotAFriend              403 not_a_friend
        │   └── WrongPath               403 the other path is the right one (also raised by the client itself,
        │       │                       before any request, when it knows the role)
        │       ├── OwnerUsesBackup         403 owner_uses_backup
        │       └── RecipientUsesShare      403 recipient_uses_share
        ├── NotFoundError           404 not_found
        │   ├── MemberNotFound          404 member_not_found
        │   └── NetdiskNotOpened        404 netdisk_not_opened
        ├── ConflictError           409 conflict
        │   ├── AccountTaken            409 account_taken
        │   ├── NetdiskAlreadyOpened    409 netdisk_already_opened
        │   ├── MissingChunks           409 missing_chunks
        │   ├── RetryUpload             409 retry_upload
        │   └── VersionConflict         412 version_conflict
        ├── QuotaError              413 quota_exceeded
        │   └── TooManyVersions         413 too_many_versions
        ├── ChecksumMismatch        400 checksum_mismatch
        ├── BadRequest              400 bad_request
        │   └── LengthRequired          400 length_required
        ├── InvalidError            422 invalid
        │   ├── InvalidYear             422 invalid_year
        │   └── CannotAddSelf           422 cannot_add_self
        ├── RateLimited             429 too_many_attempts (`retry_after` seconds)
        ├── UploadStalled           408 upload_stalled
        └── ServerUnavailable       any 5xx with an API body
            ├── Busy                    503 busy
            └── StorageUnavailable      503 storage_unavailable

Every code the server answers has its own class here (`_BY_CODE`), so callers use isinstance, never the code
string; `_BY_STATUS` covers codes this client does not know yet. Server errors are converted where the
transport meets the client, so callers see only these.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccountTaken", "ApiError", "AuthError", "BadAnswers", "BadCredentials", "BadNetdiskPassword", "BadRequest",
    "Busy", "CannotAddSelf", "ChecksumError", "ChecksumMismatch", "ConflictError", "DiskError", "ForbiddenError",
    "InvalidError", "InvalidLedgerId", "InvalidYear", "LedgerNotFound", "LengthRequired", "LocalCopyExists",
    "LocalError", "MemberNotFound", "MissingChunks", "NetdiskAlreadyOpened", "NetdiskNotOpened",
    "NetdiskTokenRequired", "NotAFriend", "NotFoundError", "NotLoggedIn", "OwnerUsesBackup", "ProtocolError",
    "QuotaError", "RateLimited", "RecipientUsesShare", "RetryUpload", "ServerUnavailable", "StorageUnavailable",
    "SyncError", "TooManyVersions", "TransportError", "UnsafeArchive", "UploadStalled", "UsageError",
    "VersionConflict", "WrongPath", "error_for",
]


class SyncError(Exception):
    """Anything desktop_sync could not do; `str()` is a message for people."""


class UsageError(SyncError, ValueError):
    """A bad argument (ledger id, year, missing password), refused before any request."""


class InvalidLedgerId(UsageError):
    """A ledger id that is not a UUID."""


class LocalError(SyncError):
    """A problem with the local ledger folder."""


class LocalCopyExists(LocalError):
    """The year exists locally; download again with overwrite (覆盖本地账套) to replace it."""


class LedgerNotFound(LocalError):
    """No such ledger or year in the local ledger folder (or its folder lacks ledger.json)."""


class UnsafeArchive(LocalError):
    """A downloaded archive holds entries that would land outside the year folder."""


class DiskError(LocalError):
    """The disk refused a read or write (full, read-only, no permission); nothing half-written was kept."""


class TransportError(SyncError):
    """The server could not be reached, or the connection broke mid-transfer."""


class ProtocolError(TransportError):
    """The answer was not the API's: an HTML error page from a proxy, or broken JSON."""


class ChecksumError(SyncError):
    """Downloaded bytes do not match the server's checksum."""


class ApiError(SyncError):
    """The server refused: HTTP `status`, API.md `code`, the server's message, and any extra fields."""

    def __init__(self, status: int, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}


class AuthError(ApiError):
    """401: not logged in, or a wrong password."""


class NotLoggedIn(AuthError):
    """401 unauthenticated: no session, or it expired (log in again)."""


class NetdiskTokenRequired(AuthError):
    """401: the netdisk is locked (or its token expired): unlock it with the netdisk password."""


class BadCredentials(AuthError):
    """401: wrong member account or password."""


class BadNetdiskPassword(AuthError):
    """401: wrong netdisk password."""


class BadAnswers(AuthError):
    """401: wrong answers to the security questions."""


class ForbiddenError(ApiError):
    """403: not allowed."""


class NotAFriend(ForbiddenError):
    """403: shares go to friends only."""


class WrongPath(ForbiddenError):
    """403: 共享人操作云备份，受共享人操作云共享 — the other path is the right one."""


class OwnerUsesBackup(WrongPath):
    """403 owner_uses_backup: the member owns the ledger, so 云备份 is the path."""


class RecipientUsesShare(WrongPath):
    """403 recipient_uses_share: the ledger is shared with the member, so 云共享 is the path."""


class NotFoundError(ApiError):
    """404: no such ledger, year, version or share (or no longer shared with you)."""


class MemberNotFound(NotFoundError):
    """404: no member with that account and nickname."""


class NetdiskNotOpened(NotFoundError):
    """404: the netdisk was never opened (set a netdisk password and security questions first)."""


class ConflictError(ApiError):
    """409: the request clashes with what the server holds."""


class AccountTaken(ConflictError):
    """409 account_taken: another member has that account name."""


class NetdiskAlreadyOpened(ConflictError):
    """409 netdisk_already_opened: the netdisk is open already."""


class MissingChunks(ConflictError):
    """409 missing_chunks: a delta upload named chunks the server no longer has; send the whole year."""


class RetryUpload(ConflictError):
    """409 retry_upload: the upload raced a cleanup; sending it again succeeds."""


class VersionConflict(ConflictError):
    """412: the cloud has a newer version than the one this copy started from."""


class QuotaError(ApiError):
    """413: not enough netdisk space (`needed_bytes`, `free_bytes`)."""


class TooManyVersions(QuotaError):
    """413: the member holds the most versions allowed."""


class ChecksumMismatch(ApiError):
    """400: the server received bytes whose sha256 differs from the one announced; nothing was kept."""


class BadRequest(ApiError):
    """400: a malformed request."""


class LengthRequired(BadRequest):
    """400 length_required: an upload without Content-Length."""


class InvalidError(ApiError):
    """422: a field the server refuses (year out of range, adding yourself as a friend, …)."""


class InvalidYear(InvalidError):
    """422 invalid_year: a fiscal year outside 1990–2100."""


class CannotAddSelf(InvalidError):
    """422 cannot_add_self: a member cannot be their own friend."""


class RateLimited(ApiError):
    """429: too many wrong attempts; try again after `retry_after` seconds."""

    @property
    def retry_after(self) -> int:
        return int(self.extra.get("retry_after", 0))


class UploadStalled(ApiError):
    """408: the upload body stopped arriving; nothing was kept."""


class ServerUnavailable(ApiError):
    """503 (busy, storage_unavailable) or another 5xx: try again later; nothing was kept."""


class Busy(ServerUnavailable):
    """503 busy: the server is overloaded right now."""


class StorageUnavailable(ServerUnavailable):
    """503 storage_unavailable: the blob storage failed; nothing was kept."""


# The server's error code table (eacct/errors.py and the codes its services add), in one place.
_BY_CODE: dict[str, type[ApiError]] = {
    "unauthenticated": NotLoggedIn,
    "netdisk_token_required": NetdiskTokenRequired,
    "bad_credentials": BadCredentials,
    "bad_netdisk_password": BadNetdiskPassword,
    "bad_answers": BadAnswers,
    "forbidden": ForbiddenError,
    "not_a_friend": NotAFriend,
    "owner_uses_backup": OwnerUsesBackup,
    "recipient_uses_share": RecipientUsesShare,
    "not_found": NotFoundError,
    "member_not_found": MemberNotFound,
    "netdisk_not_opened": NetdiskNotOpened,
    "conflict": ConflictError,
    "account_taken": AccountTaken,
    "netdisk_already_opened": NetdiskAlreadyOpened,
    "missing_chunks": MissingChunks,
    "retry_upload": RetryUpload,
    "version_conflict": VersionConflict,
    "quota_exceeded": QuotaError,
    "too_many_versions": TooManyVersions,
    "checksum_mismatch": ChecksumMismatch,
    "bad_request": BadRequest,
    "length_required": LengthRequired,
    "invalid": InvalidError,
    "invalid_year": InvalidYear,
    "cannot_add_self": CannotAddSelf,
    "too_many_attempts": RateLimited,
    "upload_stalled": UploadStalled,
    "busy": Busy,
    "storage_unavailable": StorageUnavailable,
}

# For a code this client does not know yet: the class of its status.
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: AuthError, 403: ForbiddenError, 404: NotFoundError, 408: UploadStalled,
    409: ConflictError, 412: VersionConflict, 413: QuotaError, 422: InvalidError, 429: RateLimited,
}


def error_for(status: int, body: Any) -> SyncError:
    """The exception for an error answer; a body that is not API.md's error JSON becomes ProtocolError."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        if status >= 500:
            return ProtocolError(f"e会计云服务暂时不可用（HTTP {status}），请稍后重试")
        return ProtocolError(f"服务器的回答无法识别（HTTP {status}），请检查 --server 地址")
    code = error["code"]
    message = str(error.get("message") or f"服务器返回 HTTP {status}")
    extra = {k: v for k, v in error.items() if k not in ("code", "message")}
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerUnavailable if status >= 500 else ApiError)
    return cls(status, code, message, extra)
