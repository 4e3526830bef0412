"""Errors of the desktop_sync client.

    SyncError
    ├── LocalError                  the ledger folder, not the server
    │   ├── LocalCopyExists         a download would overwrite a local year without 覆盖本地账套
    │   ├── LedgerNotFound          no such ledger or year in the local folder
    │   └── UnsafeArchive           a downloaded archive tried to write outside its year folder
    ├── TransportError              the server could not be reached or the connection broke
    ├── ChecksumError               downloaded bytes do not match the server's sha256 (nothing was unpacked)
    └── ApiError                    the server refused; `code` is API.md's error code
        ├── AuthError               401 (unauthenticated, bad_credentials, bad_netdisk_password, …)
        ├── WrongPath               403 owner_uses_backup / recipient_uses_share
        ├── NotFoundError           404
        ├── ConflictError           409 / 412 version_conflict
        ├── QuotaError              413 quota_exceeded / too_many_versions
        └── RateLimited             429 too_many_attempts (`retry_after` seconds)

Server errors are converted where the transport meets the client, so callers see only these.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError", "AuthError", "ChecksumError", "ConflictError", "LedgerNotFound", "LocalCopyExists", "LocalError",
    "NotFoundError", "QuotaError", "RateLimited", "SyncError", "TransportError", "UnsafeArchive", "WrongPath",
    "error_for",
]


class SyncError(Exception):
    """Anything desktop_sync could not do; `str()` is a message for people."""


class LocalError(SyncError):
    """A problem with the local ledger folder."""


class LocalCopyExists(LocalError):
    """The year exists locally; download again with overwrite (覆盖本地账套) to replace it."""


class LedgerNotFound(LocalError):
    """No such ledger or year in the local ledger folder."""


class UnsafeArchive(LocalError):
    """A downloaded archive holds entries that would land outside the year folder."""


class TransportError(SyncError):
    """The server could not be reached, or the connection broke mid-transfer."""


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


class WrongPath(ApiError):
    """403: 共享人操作云备份，受共享人操作云共享 — the other path is the right one."""


class NotFoundError(ApiError):
    """404: no such ledger, year, version or share (or no longer shared with you)."""


class ConflictError(ApiError):
    """409 / 412: the cloud has a newer version than the one this copy started from."""


class QuotaError(ApiError):
    """413: not enough netdisk space (`needed_bytes`, `free_bytes`) or too many versions."""


class RateLimited(ApiError):
    """429: too many wrong attempts; try again after `retry_after` seconds."""

    @property
    def retry_after(self) -> int:
        return int(self.extra.get("retry_after", 0))


_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthError, 403: WrongPath, 404: NotFoundError, 409: ConflictError, 412: ConflictError, 413: QuotaError,
    429: RateLimited,
}


def error_for(status: int, body: dict[str, Any] | None) -> ApiError:
    """The exception for an error answer of the API."""
    error = (body or {}).get("error") or {}
    code = str(error.get("code", "http_error"))
    message = str(error.get("message", f"服务器返回 HTTP {status}"))
    extra = {k: v for k, v in error.items() if k not in ("code", "message")}
    cls = _BY_STATUS.get(status, ApiError)
    if cls is WrongPath and code not in ("owner_uses_backup", "recipient_uses_share"):
        cls = ApiError
    return cls(status, code, message, extra)
