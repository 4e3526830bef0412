"""Aliyun OSS backend of the blob store, built on the synchronous `oss2` SDK.

Selected by `EACCT_STORAGE_URL=oss://<bucket>?endpoint=<url>[&region=<id>][&prefix=<dir/>]` with the
access key in EACCT_OSS_ACCESS_KEY_ID / EACCT_OSS_ACCESS_KEY_SECRET. `region=` switches to v4 signing;
`prefix=` keeps all keys under one directory of a shared bucket, invisibly to callers.

oss2 does its HTTP through `requests`, so every call runs on a thread pool owned by this store (not the
loop's default executor, which the rest of the program shares) against one `oss2.Bucket` whose
connection pool is as large as that thread pool. Bodies are streamed both ways: a put hands oss2 an
open file, a large put goes up in parts read straight from the file, and `stream` pulls the answer in
blocks, resuming with a ranged GET pinned to the object's ETag when a connection breaks mid-body.

Integrity: OSS reports the CRC64-ECMA of what it stored (`x-oss-hash-crc64ecma`). oss2 compares it on
puts and parts only when the header is present and never on plain downloads, so this module insists
on the header and checks whole-object downloads itself. A put that fails for good is deleted again, so
nothing half-verified stays visible; a failed multipart upload is aborted.

Retries: each request is retried (`_back_off`) after failures `oss_errors.is_transient` calls transient;
oss2 exceptions never leave: a missing object is `BlobNotFound`, the rest `BlobStoreError`, secret scrubbed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import oss2
import oss2.exceptions
from oss2.models import PartInfo
from oss2.utils import Crc64, SizedFileAdapter

from eacct.storage.base import BlobInfo, BlobNotFound, BlobStore, BlobStoreError, check_key
from eacct.storage.oss_errors import (
    CrcMismatch, MissingCrc, RetryPolicy, check_range_answer, describe, is_not_found, is_transient,
)

__all__ = ["OssBlobStore", "RetryPolicy"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

MIN_PART_SIZE = 100 * 1024  # OSS refuses smaller parts, except the last one
MAX_PARTS = 10_000  # OSS's limit on parts per upload

# Without this header OSS answers a range it cannot satisfy with the whole object and a 200, which would
# hand a chunk reader the wrong bytes; "standard" clamps the end and refuses a start past the object.
_STANDARD_RANGE = {"x-oss-range-behavior": "standard"}
_PACK_HEADERS = {"Content-Type": "application/octet-stream"}


class OssBlobStore(BlobStore):
    """Blobs as objects in one Aliyun OSS bucket, optionally under a key prefix."""

    def __init__(
        self,
        bucket: str,
        endpoint: str,
        access_key_id: str,
        access_key_secret: str,
        *,
        region: str | None = None,
        prefix: str = "",
        workers: int = 8,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        multipart_threshold: int = 32 << 20,
        part_size: int = 4 << 20,
        part_concurrency: int = 4,
        list_page_size: int = 1000,
    ) -> None:
        """`timeout` bounds each connect and each wait for data (not a whole transfer); files larger than
        `multipart_threshold` go up in `part_size` parts, `part_concurrency` at a time."""
        if not access_key_id or not access_key_secret:
            raise ValueError(
                "OSS storage needs an access key: set EACCT_OSS_ACCESS_KEY_ID and EACCT_OSS_ACCESS_KEY_SECRET"
            )
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"OSS parts must be at least {MIN_PART_SIZE} bytes")
        if workers < 1 or part_concurrency < 1 or not 1 <= list_page_size <= 1000:
            raise ValueError("workers, part_concurrency and list_page_size (at most 1000) must be positive")
        prefix = prefix.strip("/")
        self._prefix = check_key(prefix) + "/" if prefix else ""
        self._bucket_name = bucket
        self._endpoint = endpoint
        self._region = region
        self._secret = access_key_secret
        self._retry = retry
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._part_concurrency = part_concurrency
        self._list_page_size = list_page_size
        auth = oss2.AuthV4(access_key_id, access_key_secret) if region else oss2.Auth(access_key_id, access_key_secret)
        # One connection per worker thread: more would sit idle, fewer would make workers wait.
        self._session = oss2.Session(pool_size=workers)
        try:
            self._bucket = oss2.Bucket(auth, endpoint, bucket, session=self._session, connect_timeout=timeout,
                                       enable_crc=True, region=region)
        except oss2.exceptions.ClientError as exc:
            raise ValueError(f"bad OSS bucket {bucket!r} or endpoint {endpoint!r}") from exc
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eacct-oss")
        self._closed = False

    @classmethod
    def from_url(cls, url: str, access_key_id: str, access_key_secret: str, **options: Any) -> OssBlobStore:
        """Build a store from `oss://<bucket>?endpoint=<url>[&region=<id>][&prefix=<dir/>]`.

        `options` are passed to the constructor (timeouts, retry policy, part sizes).
        """
        parts = urlsplit(url)
        if parts.scheme != "oss" or not parts.netloc or parts.path not in ("", "/") or "@" in parts.netloc:
            raise ValueError(f"OSS storage URL must look like oss://<bucket>?endpoint=<url>, not {url!r}")
        params: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in params:
                raise ValueError(f"OSS storage URL repeats {name}=")
            params[name] = value
        unknown = sorted(set(params) - {"endpoint", "region", "prefix"})
        if unknown:
            raise ValueError(f"OSS storage URL has unknown parameters: {', '.join(unknown)}")
        endpoint = params.get("endpoint", "")
        if not endpoint:
            raise ValueError("OSS storage URL needs endpoint=, e.g. endpoint=https://oss-cn-hangzhou.aliyuncs.com")
        return cls(
            parts.netloc,
            endpoint,
            access_key_id,
            access_key_secret,
            region=params.get("region") or None,
            prefix=params.get("prefix", ""),
            **options,
        )

    def __repr__(self) -> str:
        signing = "v4" if self._region else "v1"
        return (
            f"OssBlobStore(bucket={self._bucket_name!r}, endpoint={self._endpoint!r}, "
            f"prefix={self._prefix!r}, signing={signing})"
        )

    # -- the interface ---------------------------------------------------------------------------

    async def put(self, key: str, path: Path) -> None:
        full_key = self._full_key(key)
        try:
            size = await self._run(os.path.getsize, path)
        except OSError as exc:
            raise BlobStoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            if size > self._multipart_threshold:
                await self._put_multipart(key, full_key, path, size)
            else:
                await self._call("put", key, self._put_sync, full_key, path)
        except BaseException:
            # The key is new and unreferenced; whatever a failed attempt may have left under it must not
            # be mistaken for a good pack.
            await asyncio.shield(self._discard(key, full_key))
            raise

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        full_key = self._full_key(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"bad range: offset {offset}, length {length}")
        if offset == 0 and length is None:
            return await self._call("get", key, self._get_whole_sync, full_key)
        if length == 0:
            await self._call("head", key, self._bucket.head_object, full_key)
            return b""
        return await self._call("get", key, self._get_range_sync, full_key, offset, length)


    async def get_many(self, ranges: list[tuple[str, int, int]]) -> list[bytes]:
        # Ranged GETs side by side on the pool (each already a coalesced run of one pack).
        return list(await asyncio.gather(*(self.get(key, offset, length) for key, offset, length in ranges)))

    async def stream(self, key: str, block_size: int = 1 << 20) -> AsyncIterator[bytes]:
        full_key = self._full_key(key)
        result = await self._call("get", key, self._bucket.get_object, full_key)
        expected_crc, etag, size = result.server_crc, result.etag, result.content_length
        crc = Crc64()
        received = 0
        failures = 0
        try:
            if expected_crc is None:
                raise BlobStoreError(f"OSS get {key!r}: no x-oss-hash-crc64ecma in the answer, cannot verify")
            while result is not None:
                try:
                    block = await self._run(result.resp.read, block_size)
                except BlobStoreError:
                    raise
                except Exception as exc:
                    failures += 1
                    result.close()
                    result = None
                    await self._back_off("get", key, exc, failures)  # then resume from `received`
                    result = await self._call("get", key, self._resume_sync, full_key, received, etag)
                    continue
                if not block:
                    break
                crc.update(block)
                received += len(block)
                yield block
        finally:
            if result is not None:
                result.close()
        if crc.crc != expected_crc or (size is not None and received != size):
            raise BlobStoreError(
                f"OSS get {key!r}: CRC64 mismatch, received {received} bytes with CRC {crc.crc}, "
                f"OSS reported {size} bytes with CRC {expected_crc}"
            )

    async def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        try:
            await self._call("delete", key, self._bucket.delete_object, full_key)
        except BlobNotFound:
            pass

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        token = ""
        while True:
            page = await self._call(
                "list",
                prefix,
                functools.partial(
                    self._bucket.list_objects_v2,
                    prefix=self._prefix + prefix,
                    continuation_token=token,
                    max_keys=self._list_page_size,
                ),
            )
            for entry in page.object_list:
                key = entry.key[len(self._prefix):]
                if entry.key.startswith(self._prefix) and _addressable(key):
                    yield BlobInfo(key, entry.size, datetime.fromtimestamp(entry.last_modified, timezone.utc))
            if not page.is_truncated:
                return
            token = page.next_continuation_token

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let calls already running finish; waiting happens off the loop so it keeps serving.
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(self._pool.shutdown, wait=True))
        self._session.session.close()
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None

    # -- puts ------------------------------------------------------------------------------------

    def _put_sync(self, full_key: str, path: Path) -> None:
        with open(path, "rb") as handle:
            # A file object, so oss2 streams it (and computes the CRC64 while sending).
            result = self._bucket.put_object(full_key, handle, headers=dict(_PACK_HEADERS))
        if result.crc is None:
            raise MissingCrc("OSS did not report the CRC64 of the stored object")

    async def _put_multipart(self, key: str, full_key: str, path: Path, size: int) -> None:
        # OSS allows at most MAX_PARTS parts, so very large files need larger parts.
        part_size = max(self._part_size, -(-size // MAX_PARTS))
        upload_id = await self._start_multipart(key, full_key)
        try:
            parts = await self._upload_parts(key, full_key, path, upload_id, size, part_size)
            crc = Crc64()
            expected_crc = 0
            for part in parts:
                expected_crc = crc.combine(expected_crc, part.part_crc, part.size)
            await self._call(
                "complete multipart upload",
                key,
                self._complete_sync(full_key, upload_id, parts, expected_crc, size),
            )
        except BaseException:
            await asyncio.shield(self._abort(key, full_key, upload_id))
            raise

    async def _start_multipart(self, key: str, full_key: str) -> str:
        """Begin a multipart upload, its id; cancelled meanwhile, abort what the request began on OSS (nothing
        else would ever find an upload started for an abandoned pack)."""
        starting = asyncio.ensure_future(self._call(
            "start multipart upload", key, self._bucket.init_multipart_upload, full_key, headers=dict(_PACK_HEADERS)
        ))
        try:
            return (await asyncio.shield(starting)).upload_id
        except asyncio.CancelledError:
            async def abort_once_started() -> None:
                started = (await asyncio.gather(starting, return_exceptions=True))[0]
                if not isinstance(started, BaseException):
                    await self._abort(key, full_key, started.upload_id)

            await asyncio.shield(abort_once_started())
            raise

    async def _upload_parts(
        self, key: str, full_key: str, path: Path, upload_id: str, size: int, part_size: int
    ) -> list[PartInfo]:
        count = -(-size // part_size)
        numbers = iter(range(1, count + 1))
        parts: dict[int, PartInfo] = {}
        failed = False

        async def worker() -> None:
            nonlocal failed
            for number in numbers:
                if failed:
                    return
                offset = (number - 1) * part_size
                length = min(part_size, size - offset)
                try:
                    result = await self._call(f"upload part {number}", key, self._upload_part_sync, full_key,
                                              upload_id, number, path, offset, length)
                except BaseException:
                    failed = True
                    raise
                parts[number] = PartInfo(number, result.etag, size=length, part_crc=result.crc)

        # Workers share one iterator of part numbers; waiting for all of them (rather than cancelling on
        # the first failure) guarantees no part is still in flight when the upload gets aborted.
        outcomes = await asyncio.gather(
            *(worker() for _ in range(min(self._part_concurrency, count))), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [parts[number] for number in range(1, count + 1)]

    def _upload_part_sync(
        self, full_key: str, upload_id: str, number: int, path: Path, offset: int, length: int
    ) -> oss2.models.PutObjectResult:
        with open(path, "rb") as handle:
            handle.seek(offset)
            result = self._bucket.upload_part(full_key, upload_id, number, SizedFileAdapter(handle, length))
        if result.crc is None:
            raise MissingCrc(f"OSS did not report the CRC64 of part {number}")
        return result

    def _complete_sync(
        self, full_key: str, upload_id: str, parts: list[PartInfo], expected_crc: int, size: int
    ) -> Callable[[], None]:
        # Parts without CRCs keep oss2 from checking the answer itself: when its check fails it raises
        # before the answer's body is read, and the connection is lost to the pool. We check instead.
        listed = [PartInfo(part.part_number, part.etag) for part in parts]
        attempted = False

        def complete() -> None:
            nonlocal attempted
            retrying, attempted = attempted, True
            try:
                result = self._bucket.complete_multipart_upload(full_key, upload_id, listed)
            except oss2.exceptions.NoSuchUpload:
                if not retrying:
                    raise
                # An earlier attempt may have completed the upload and lost only the answer.
                self._verify_stored(full_key, expected_crc, size)
                return
            result.resp.read()
            if result.crc is None:
                raise MissingCrc("OSS did not report the CRC64 of the completed object")
            if result.crc != expected_crc:
                raise CrcMismatch(f"completed object has CRC {result.crc}, its parts combine to {expected_crc}")

        return complete

    def _verify_stored(self, full_key: str, expected_crc: int, size: int) -> None:
        head = self._bucket.head_object(full_key)
        if head.server_crc != expected_crc or head.content_length != size:
            raise CrcMismatch(
                f"object holds {head.content_length} bytes with CRC {head.server_crc}, "
                f"expected {size} bytes with CRC {expected_crc}"
            )

    async def _abort(self, key: str, full_key: str, upload_id: str) -> None:
        try:
            await self._call("abort multipart upload", key, self._bucket.abort_multipart_upload, full_key, upload_id)
        except BlobStoreError as exc:
            # Left behind, the parts cost storage until a bucket lifecycle rule removes them.
            log.warning("could not abort OSS multipart upload %s of %r: %s", upload_id, key, exc)

    async def _discard(self, key: str, full_key: str) -> None:
        try:
            await self._call("delete failed upload", key, self._bucket.delete_object, full_key)
        except BlobStoreError as exc:
            log.warning("could not delete %r after its upload failed: %s", key, exc)

    # -- gets ------------------------------------------------------------------------------------

    def _get_whole_sync(self, full_key: str) -> bytes:
        with self._bucket.get_object(full_key) as result:
            expected_crc = result.server_crc
            if expected_crc is None:
                raise MissingCrc("OSS did not report the object's CRC64")
            crc = Crc64()
            blocks = []
            while block := result.resp.read(1 << 20):
                crc.update(block)
                blocks.append(block)
        if crc.crc != expected_crc:
            raise CrcMismatch(f"downloaded bytes have CRC {crc.crc}, OSS reported {expected_crc}")
        return b"".join(blocks)

    def _get_range_sync(self, full_key: str, offset: int, length: int | None) -> bytes:
        last = None if length is None else offset + length - 1
        try:
            result = self._bucket.get_object(full_key, byte_range=(offset, last), headers=dict(_STANDARD_RANGE))
        except oss2.exceptions.ServerError as exc:
            if exc.status == 416:  # starts at or past the end: like reading a file there
                return b""
            raise
        with result:
            check_range_answer(result, offset)
            data = result.resp.read()
        if length is not None and len(data) > length:
            raise BlobStoreError(f"OSS sent {len(data)} bytes for a {length}-byte range")
        return data

    def _resume_sync(self, full_key: str, offset: int, etag: str) -> oss2.models.GetObjectResult | None:
        # If-Match: resuming must read the very object the first bytes came from.
        headers = {"If-Match": f'"{etag}"', **_STANDARD_RANGE}
        try:
            result = self._bucket.get_object(full_key, byte_range=(offset, None), headers=headers)
        except oss2.exceptions.ServerError as exc:
            if exc.status == 416:  # the break came after the last byte
                return None
            raise
        check_range_answer(result, offset)
        return result

    # -- plumbing --------------------------------------------------------------------------------

    def _full_key(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise BlobStoreError("the OSS blob store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    async def _call(self, op: str, key: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run one oss2 request on the pool, retrying transient failures; convert whatever escapes."""
        call = functools.partial(fn, *args, **kwargs)
        failures = 0
        while True:
            try:
                return await self._run(call)
            except BlobStoreError:
                raise
            except Exception as exc:
                failures += 1
                await self._back_off(op, key, exc, failures)

    async def _back_off(self, op: str, key: str, exc: BaseException, failures: int) -> None:
        """After a request's `failures`-th failure: raise the converted error when it is final, else log and wait."""
        if not is_transient(exc) or failures >= self._retry.attempts:
            raise self._convert(op, key, exc, failures) from exc
        delay = self._retry.delay(failures)
        log.warning(
            "OSS %s %r failed (%s); try %d of %d in %.2fs",
            op, key, self._scrub(describe(exc)), failures + 1, self._retry.attempts, delay,
        )
        await asyncio.sleep(delay)

    def _convert(self, op: str, key: str, exc: BaseException, attempts: int) -> BlobStoreError:
        if is_not_found(exc):
            return BlobNotFound(key)
        message = f"OSS {op} {key!r} failed: {describe(exc)}"
        if attempts > 1:
            message += f" (gave up after {attempts} attempts)"
        return BlobStoreError(self._scrub(message))

    def _scrub(self, message: str) -> str:
        # Nothing we format includes the secret, but an SDK or server message might echo it back.
        return message.replace(self._secret, "***")


def _addressable(key: str) -> bool:
    # Console-made "folders" and other names the interface cannot address are not blobs of ours.
    try:
        check_key(key)
    except ValueError:
        return False
    return True
