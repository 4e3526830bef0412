"""desktop_sync: the client module behind the desktop program's cloud-share dialog, and `eacct-sync`.

`EacctClient` speaks the REST API (transport injected); `LedgerFolder` knows the local ledger layout;
`DesktopSync` joins them and picks the right path (共享人操作云备份，受共享人操作云共享) itself.
"""

from eacct.desktop_sync._client import AiohttpTransport, EacctClient, MockTransport, Request, Response, Transport
from eacct.desktop_sync._exceptions import (
    ApiError, AuthError, ChecksumError, ConflictError, LedgerNotFound, LocalCopyExists, LocalError, NotFoundError,
    QuotaError, RateLimited, SyncError, TransportError, UnsafeArchive, WrongPath,
)
from eacct.desktop_sync._ledgers import LedgerFolder, LocalLedger, pack_year, sha256_of
from eacct.desktop_sync._sync import BACKUP, REMINDER, SHARE, DesktopSync, Transfer

__all__ = [
    "AiohttpTransport", "ApiError", "AuthError", "BACKUP", "ChecksumError", "ConflictError", "DesktopSync",
    "EacctClient", "LedgerFolder", "LedgerNotFound", "LocalCopyExists", "LocalError", "LocalLedger", "MockTransport",
    "NotFoundError", "QuotaError", "REMINDER", "RateLimited", "Request", "Response", "SHARE", "SyncError", "Transfer",
    "Transport", "TransportError", "UnsafeArchive", "WrongPath", "pack_year", "sha256_of",
]
