"""Blob storage behind one interface (`base`): a local folder (`local`) or Aliyun OSS (`oss`), picked by
EACCT_STORAGE_URL in `open_blob_store`. `check` writes, reads back and deletes a probe object."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from eacct.storage.base import BlobInfo, BlobNotFound, BlobStore, BlobStoreError, Leftover, check_key
from eacct.storage.local import LocalBlobStore

__all__ = [
    "BlobInfo", "BlobNotFound", "BlobStore", "BlobStoreError", "Leftover", "LocalBlobStore", "check_key", "open_blob_store",
]


def open_blob_store(url: str, *, oss_access_key_id: str = "", oss_access_key_secret: str = "") -> BlobStore:
    """Build the backend named by EACCT_STORAGE_URL (`file://<dir>` or `oss://<bucket>?endpoint=<url>`)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        # file://./eacct-data/blobs is relative: netloc "." plus path.
        return LocalBlobStore(Path(parts.netloc + parts.path))
    if parts.scheme == "oss":
        from eacct.storage.oss import OssBlobStore

        return OssBlobStore.from_url(url, oss_access_key_id, oss_access_key_secret)
    raise ValueError(f"unsupported storage URL: {url}")
