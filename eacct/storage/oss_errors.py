"""What an OSS failure means: whether another try may help, whether the object is simply missing, and how to
describe it without the SDK's types (the retry loop itself is `OssBlobStore._back_off`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import oss2.exceptions
import oss2.models
import requests
import urllib3.exceptions

from eacct.storage.base import BlobStoreError

__all__ = ["CrcMismatch", "MissingCrc", "RetryPolicy", "check_range_answer", "describe", "is_not_found", "is_transient"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failed OSS request is tried in all, and how long to wait in between."""

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure: doubling each time, with equal jitter so that
        concurrent workers that failed together do not come back together."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class CrcMismatch(Exception):
    """Our CRC64 of downloaded bytes differs from the one OSS reported (worth another try)."""


class MissingCrc(Exception):
    """OSS (or something in between) did not report a CRC64, so the transfer cannot be verified."""


def is_transient(exc: BaseException) -> bool:
    """Whether another try of the same request may succeed (5xx, connection errors, timeouts, CRC mismatches)."""
    if isinstance(exc, oss2.exceptions.ServerError):
        return exc.status >= 500
    return isinstance(
        exc,
        (
            oss2.exceptions.RequestError,  # connection refused or reset, timeouts
            oss2.exceptions.InconsistentError,  # oss2's CRC check on a put or part
            CrcMismatch,
            requests.RequestException,  # a body broken off while reading it
            urllib3.exceptions.HTTPError,
        ),
    )


def is_not_found(exc: BaseException) -> bool:
    """Whether the failure says the object does not exist."""
    if isinstance(exc, oss2.exceptions.NoSuchKey):
        return True
    # HEAD answers carry no body; without OSS's x-oss-err header a 404 cannot say more than this.
    return isinstance(exc, oss2.exceptions.ServerError) and exc.status == 404 and not exc.code


def describe(exc: BaseException) -> str:
    """One line for logs and BlobStoreError messages, without the SDK's types."""
    if isinstance(exc, oss2.exceptions.RequestError):
        return f"connection error: {exc.exception}"
    if isinstance(exc, oss2.exceptions.InconsistentError):
        return f"CRC64 mismatch: {exc.body}"
    if isinstance(exc, oss2.exceptions.ServerError):
        detail = f"HTTP {exc.status} {exc.code or 'error'}"
        if exc.message:
            detail += f": {exc.message}"
        return f"{detail} (request id {exc.request_id or 'unknown'})"
    if isinstance(exc, oss2.exceptions.OssError):
        return str(exc.body)
    if isinstance(exc, CrcMismatch):
        return f"CRC64 mismatch: {exc}"
    if isinstance(exc, (requests.RequestException, urllib3.exceptions.HTTPError)):
        return f"connection error: {exc}"
    if isinstance(exc, OSError):
        return f"local I/O error: {exc}"
    return f"{type(exc).__name__}: {exc}"


def check_range_answer(result: oss2.models.GetObjectResult, offset: int) -> None:
    """Refuse an answer to a range request that does not start at `offset` (a server that ignored Range)."""
    content_range = result.content_range
    start = int(content_range.split(" ", 1)[1].split("-", 1)[0]) if content_range else 0
    if start != offset:
        result.close()
        raise BlobStoreError(f"OSS answered a range request from byte {offset} with bytes from {start}")
