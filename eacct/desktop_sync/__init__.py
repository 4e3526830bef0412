"""desktop_sync: the client module behind the desktop program's cloud-share dialog, and `eacct-sync`.

`EacctClient` speaks the REST API (base URL, timeouts and transport injected); `LedgerFolder` knows the local
ledger layout, apart from any HTTP; `DesktopSync` joins them, picks the right path (共享人操作云备份，受共享人
操作云共享) itself and does 云同步. Every error any of them raises is a `SyncError` (see `_exceptions`).
"""

from eacct.desktop_sync._client import (
    AiohttpTransport, EacctClient, MockTransport, Progress, Request, Response, Timeout, Transport,
)
from eacct.desktop_sync._exceptions import (
    ApiError, AuthError, BadAnswers, BadCredentials, BadNetdiskPassword, BadRequest, ChecksumError, ChecksumMismatch,
    ConflictError, DiskError, ForbiddenError, InvalidError, InvalidLedgerId, LedgerNotFound, LocalCopyExists,
    LocalError, MemberNotFound, NetdiskNotOpened, NetdiskTokenRequired, NotAFriend, NotFoundError, ProtocolError,
    QuotaError, RateLimited, ServerUnavailable, SyncError, TooManyVersions, TransportError, UnsafeArchive,
    UploadStalled, UsageError, VersionConflict, WrongPath,
)
from eacct.desktop_sync._exceptions import (
    AccountTaken, Busy, CannotAddSelf, InvalidYear, LengthRequired, MissingChunks, NetdiskAlreadyOpened, NotLoggedIn,
    OwnerUsesBackup, RecipientUsesShare, RetryUpload, StorageUnavailable,
)
from eacct.desktop_sync._ledgers import LedgerFolder, LocalLedger, pack_year, sha256_of
from eacct.desktop_sync._sync import (
    BACKUP, REMINDER, SHARE, DesktopSync, SyncAction, SyncReport, Transfer, transfer_json,
)

__all__ = [
    "AccountTaken", "AiohttpTransport", "ApiError", "AuthError", "BACKUP", "BadAnswers", "BadCredentials",
    "BadNetdiskPassword", "BadRequest", "Busy", "CannotAddSelf", "ChecksumError", "ChecksumMismatch",
    "ConflictError", "DesktopSync", "DiskError", "EacctClient", "ForbiddenError", "InvalidError", "InvalidLedgerId",
    "InvalidYear", "LedgerFolder", "LedgerNotFound", "LengthRequired", "LocalCopyExists", "LocalError",
    "LocalLedger", "MemberNotFound", "MissingChunks", "MockTransport", "NetdiskAlreadyOpened", "NetdiskNotOpened",
    "NetdiskTokenRequired", "NotAFriend", "NotFoundError", "NotLoggedIn", "OwnerUsesBackup", "Progress",
    "ProtocolError", "QuotaError", "REMINDER", "RateLimited", "RecipientUsesShare", "Request", "Response",
    "RetryUpload", "SHARE", "ServerUnavailable", "StorageUnavailable", "SyncAction", "SyncError", "SyncReport",
    "Timeout", "TooManyVersions", "Transfer", "Transport", "TransportError", "UnsafeArchive", "UploadStalled",
    "UsageError", "VersionConflict", "WrongPath", "pack_year", "sha256_of", "transfer_json",
]
