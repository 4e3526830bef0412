"""OSS-specific behaviour of `OssBlobStore`, and the fidelity of the fake OSS server it is tested against.

The shared contract lives in test_blobstore_contract.py; this module covers what only OSS has:
signatures, the protocol's response shapes, retries with their bounds, CRC64 verification, multipart
abort, error conversion, and the storage check's report for a misconfigured bucket.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

import aiohttp
from multidict import CIMultiDict
import oss2
import pytest
import pytest_asyncio

from eacct.storage import BlobNotFound, BlobStoreError, open_blob_store
from eacct.storage.oss import OssBlobStore, RetryPolicy
from eacct.storage.check import run_storage_check
from tests.oss_server import (
    ABORT_MULTIPART,
    COMPLETE_MULTIPART,
    DELETE_OBJECT,
    GET_OBJECT,
    HEAD_OBJECT,
    INITIATE_MULTIPART,
    PUT_OBJECT,
    UPLOAD_PART,
    FakeOssServer,
    crc64_ecma,
    start_oss_server,
)

pytestmark = pytest.mark.asyncio

ACCESS_KEY_ID = "LTAI5tTestKeyId"
SECRET = "s3cr3t-Do-Not-Leak-4b7e"
BUCKET = "eacct-test"
REGION = "cn-hangzhou"
ATTEMPTS = 3
THRESHOLD = 256 * 1024
PART_SIZE = 100 * 1024


@pytest_asyncio.fixture
async def oss() -> AsyncIterator[FakeOssServer]:
    _, server = await start_oss_server(ACCESS_KEY_ID, SECRET, BUCKET, region=REGION)
    try:
        yield server
    finally:
        await server.close()


@pytest_asyncio.fixture
async def make_store(oss: FakeOssServer) -> AsyncIterator[Callable[..., OssBlobStore]]:
    stores: list[OssBlobStore] = []

    def make(*, secret: str = SECRET, region: str | None = None, prefix: str = "", **options) -> OssBlobStore:
        options = {
            "retry": RetryPolicy(attempts=ATTEMPTS, base_delay=0.001, max_delay=0.01),
            "timeout": 5.0,
            "multipart_threshold": THRESHOLD,
            "part_size": PART_SIZE,
            **options,
        }
        store = OssBlobStore.from_url(oss.storage_url(region=region, prefix=prefix), ACCESS_KEY_ID, secret, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture(params=["v1", "v4"])
def region(request: pytest.FixtureRequest) -> str | None:
    """None for v1 signing, the server's region for v4."""
    return REGION if request.param == "v4" else None


def source(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"src-{os.urandom(4).hex()}"
    path.write_bytes(data)
    return path


def signed_request(
    server: FakeOssServer,
    method: str,
    key: str,
    *,
    region: str | None = None,
    secret: str = SECRET,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    data: bytes = b"",
) -> tuple[str, CIMultiDict[str]]:
    """URL and headers for a request signed by oss2's own signer, to send raw (and maybe tamper with)."""
    url = f"{server.base_url}/{server.bucket}/{quote(key, safe='')}"
    request = oss2.http.Request(method, url, data=data, params=params, headers=headers, region=region, product="oss")
    auth = oss2.AuthV4(ACCESS_KEY_ID, secret) if region else oss2.Auth(ACCESS_KEY_ID, secret)
    auth._sign_request(request, server.bucket, key)  # the SDK's signing, exactly as Bucket uses it
    return url, CIMultiDict((name, value) for name, value in request.headers.items() if value is not None)


async def send(
    method: str, url: str, headers: CIMultiDict[str], *, params=None, data: bytes = b""
) -> tuple[int, CIMultiDict[str], bytes]:
    # aiohttp would add a Content-Type of its own to a body, which the signature does not cover.
    async with aiohttp.ClientSession(skip_auto_headers=["Content-Type", "User-Agent"]) as session:
        async with session.request(method, url, headers=headers, params=params, data=data) as response:
            return response.status, CIMultiDict(response.headers), await response.read()


def error_code(document: bytes) -> str:
    return ElementTree.fromstring(document).findtext("Code")


# -- signatures -------------------------------------------------------------------------------------


async def test_wrong_secret_is_refused_and_nothing_is_stored(oss, make_store, region, tmp_path) -> None:
    store = make_store(secret="not-the-secret-at-all", region=region)
    with pytest.raises(BlobStoreError) as raised:
        await store.put("packs/p", source(tmp_path, b"data"))
    assert "SignatureDoesNotMatch" in str(raised.value)
    assert not oss.objects
    assert oss.count(PUT_OBJECT, status=403) == 1, "a refused signature is not retried"
    with pytest.raises(BlobStoreError) as raised:
        await store.get("packs/p")
    assert not isinstance(raised.value, BlobNotFound)
    with pytest.raises(BlobStoreError):
        [info async for info in store.list()]


async def test_v4_client_signing_for_another_region_is_refused(oss, make_store, tmp_path) -> None:
    store = make_store(region="cn-shanghai")
    with pytest.raises(BlobStoreError, match="SignatureDoesNotMatch"):
        await store.put("packs/p", source(tmp_path, b"data"))
    assert not oss.objects


async def test_tampered_requests_get_signature_xml_errors(oss, region) -> None:
    headers = {"Content-Type": "application/octet-stream", "x-oss-meta-note": "original"}
    url, signed = signed_request(oss, "PUT", "packs/ok", region=region, headers=headers, data=b"payload")
    status, _, _ = await send("PUT", url, signed, data=b"payload")
    assert status == 200, "the untampered request is accepted"
    assert oss.objects["packs/ok"].data == b"payload"

    url, signed = signed_request(oss, "PUT", "packs/t", region=region, headers=headers, data=b"payload")
    tampered = signed.copy()
    tampered["x-oss-meta-note"] = "changed after signing"
    status, response_headers, body = await send("PUT", url, tampered, data=b"payload")
    assert status == 403
    assert response_headers["Content-Type"] == "application/xml"
    assert error_code(body) == "SignatureDoesNotMatch"

    elsewhere = url.replace("packs%2Ft", "packs%2Fother")
    status, _, body = await send("PUT", elsewhere, signed, data=b"payload")
    assert (status, error_code(body)) == (403, "SignatureDoesNotMatch")

    url, signed = signed_request(oss, "PUT", "packs/t", region=region, headers=headers, data=b"payload",
                                 secret="wrong-secret")
    status, _, body = await send("PUT", url, signed, data=b"payload")
    assert (status, error_code(body)) == (403, "SignatureDoesNotMatch")
    assert set(oss.objects) == {"packs/ok"}


async def test_signed_subresources_cannot_be_swapped(oss, region) -> None:
    url, signed = signed_request(oss, "POST", "packs/m", region=region, params={"uploads": ""})
    status, _, body = await send("POST", url, signed, params={"uploads": ""})
    assert status == 200
    upload_id = ElementTree.fromstring(body).findtext("UploadId")
    url, signed = signed_request(oss, "PUT", "packs/m", region=region, data=b"x" * 10,
                                 params={"uploadId": upload_id, "partNumber": "1"},
                                 headers={"Content-Type": "application/octet-stream"})
    status, _, body = await send("PUT", url, signed, params={"uploadId": upload_id, "partNumber": "2"}, data=b"x" * 10)
    assert (status, error_code(body)) == (403, "SignatureDoesNotMatch")
    assert not oss.uploads[upload_id].parts


async def test_unsigned_unknown_key_and_stale_requests_are_refused(oss, monkeypatch) -> None:
    url = f"{oss.base_url}/{oss.bucket}/packs%2Fa"
    status, _, body = await send("GET", url, CIMultiDict())
    assert (status, error_code(body)) == (403, "AccessDenied")

    _, signed = signed_request(oss, "GET", "packs/a")
    signed["Authorization"] = signed["Authorization"].replace(ACCESS_KEY_ID, "LTAI5tSomeoneElse")
    status, _, body = await send("GET", url, signed)
    assert (status, error_code(body)) == (403, "InvalidAccessKeyId")

    monkeypatch.setattr(oss2.utils, "http_date", lambda timeval=None: "Mon, 01 Jan 2024 00:00:00 GMT")
    _, signed = signed_request(oss, "GET", "packs/a")
    status, _, body = await send("GET", url, signed)
    assert (status, error_code(body)) == (403, "RequestTimeTooSkewed")


# -- response shapes --------------------------------------------------------------------------------


async def test_head_errors_carry_base64_xml_in_a_header(oss) -> None:
    url, signed = signed_request(oss, "HEAD", "packs/missing")
    status, headers, body = await send("HEAD", url, signed)
    assert (status, body) == (404, b"")
    assert error_code(base64.b64decode(headers["x-oss-err"])) == "NoSuchKey"
    assert re.fullmatch(r"[0-9A-F]{24}", headers["x-oss-request-id"])


async def test_etags_crc_and_listing_look_like_oss(oss, make_store, tmp_path) -> None:
    assert crc64_ecma(b"123456789") == 0x995DC9BBDF1939FA  # the CRC-64/XZ check value OSS's CRC64-ECMA has
    store = make_store()
    small, large = os.urandom(1000), os.urandom(THRESHOLD + 3 * PART_SIZE)
    await store.put("packs/small", source(tmp_path, small))
    await store.put("packs/large", source(tmp_path, large))

    url, signed = signed_request(oss, "GET", "packs/small")
    status, headers, body = await send("GET", url, signed)
    assert (status, body) == (200, small)
    assert headers["ETag"] == f'"{hashlib.md5(small).hexdigest().upper()}"'
    assert headers["x-oss-hash-crc64ecma"] == str(crc64_ecma(small))
    assert headers["x-oss-object-type"] == "Normal"

    url, signed = signed_request(oss, "HEAD", "packs/large")
    status, headers, _ = await send("HEAD", url, signed)
    part_md5s = b"".join(hashlib.md5(large[i:i + PART_SIZE]).digest() for i in range(0, len(large), PART_SIZE))
    parts = -(-len(large) // PART_SIZE)
    assert headers["ETag"] == f'"{hashlib.md5(part_md5s).hexdigest().upper()}-{parts}"'
    assert headers["x-oss-object-type"] == "Multipart"
    assert headers["Content-Length"] == str(len(large))
    assert headers["x-oss-hash-crc64ecma"] == str(crc64_ecma(large))

    params = {"list-type": "2", "prefix": "", "max-keys": "100", "encoding-type": "url"}
    url, signed = signed_request(oss, "GET", "", params=params)
    status, _, body = await send("GET", url, signed, params=params)
    modified = [node.text for node in ElementTree.fromstring(body).iter("LastModified")]
    assert len(modified) == 2
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z", text) for text in modified)


async def test_multipart_protocol_checks_parts(oss) -> None:
    bucket = oss2.Bucket(oss2.Auth(ACCESS_KEY_ID, SECRET), oss.endpoint, BUCKET)

    def scenario() -> None:
        upload_id = bucket.init_multipart_upload("packs/mp").upload_id
        first = bucket.upload_part("packs/mp", upload_id, 1, b"a" * 10)  # too small to be followed by more
        second = bucket.upload_part("packs/mp", upload_id, 2, b"b" * 10)
        listed = bucket.list_parts("packs/mp", upload_id).parts
        assert [(p.part_number, p.etag, p.size) for p in listed] == [(1, first.etag, 10), (2, second.etag, 10)]
        with pytest.raises(oss2.exceptions.ServerError) as raised:
            bucket.complete_multipart_upload("packs/mp", upload_id, [oss2.models.PartInfo(1, "0" * 32)])
        assert (raised.value.status, raised.value.code) == (400, "InvalidPart")
        with pytest.raises(oss2.exceptions.ServerError) as raised:
            bucket.complete_multipart_upload(
                "packs/mp", upload_id, [oss2.models.PartInfo(1, first.etag), oss2.models.PartInfo(2, second.etag)]
            )
        assert raised.value.code == "EntityTooSmall"
        bucket.abort_multipart_upload("packs/mp", upload_id)
        with pytest.raises(oss2.exceptions.NoSuchUpload):
            bucket.list_parts("packs/mp", upload_id)

    try:
        await asyncio.to_thread(scenario)
    finally:
        bucket.session.session.close()
    assert not oss.uploads and not oss.objects


# -- retries and faults -----------------------------------------------------------------------------


async def test_single_transient_500_is_retried(oss, make_store, tmp_path) -> None:
    store = make_store()
    oss.faults.fail(PUT_OBJECT)
    oss.faults.fail(GET_OBJECT, status=503, code="ServiceUnavailable")
    await store.put("packs/p", source(tmp_path, b"content"))
    assert await store.get("packs/p") == b"content"
    assert oss.count(PUT_OBJECT) == 2 and oss.count(GET_OBJECT) == 2


async def test_retries_are_bounded(oss, make_store, tmp_path) -> None:
    store = make_store()
    oss.faults.fail(PUT_OBJECT, status=503, code="ServiceUnavailable", times=None)
    with pytest.raises(BlobStoreError, match=f"gave up after {ATTEMPTS} attempts"):
        await store.put("packs/p", source(tmp_path, b"content"))
    assert oss.count(PUT_OBJECT) == ATTEMPTS
    assert not oss.objects


async def test_client_errors_are_not_retried(oss, make_store, tmp_path) -> None:
    store = make_store()
    oss.faults.fail(PUT_OBJECT, status=400, code="InvalidArgument", times=None)
    with pytest.raises(BlobStoreError, match="InvalidArgument"):
        await store.put("packs/p", source(tmp_path, b"content"))
    assert oss.count(PUT_OBJECT) == 1


async def test_a_failing_part_aborts_the_upload(oss, make_store, tmp_path) -> None:
    store = make_store()
    oss.faults.fail(UPLOAD_PART, part_number=2, times=None)
    with pytest.raises(BlobStoreError, match="upload part 2"):
        await store.put("packs/big", source(tmp_path, os.urandom(THRESHOLD + 4 * PART_SIZE)))
    assert oss.count(UPLOAD_PART, part_number=2) == ATTEMPTS
    assert oss.count(COMPLETE_MULTIPART) == 0
    assert oss.count(ABORT_MULTIPART, status=204) == 1
    assert not oss.uploads and not oss.objects
    assert [info async for info in store.list()] == []


async def test_a_put_cancelled_while_its_multipart_upload_starts_aborts_that_upload(oss, make_store, tmp_path) -> None:
    """An abandoned upload cancels its pack puts; one cancelled while OSS is still starting its multipart upload
    must not leave that upload behind (nothing would ever list or abort it)."""
    store = make_store()
    oss.faults.delay(0.3, INITIATE_MULTIPART)
    put = asyncio.create_task(store.put("packs/abandoned", source(tmp_path, os.urandom(THRESHOLD + PART_SIZE))))
    while oss.count(INITIATE_MULTIPART) == 0:
        await asyncio.sleep(0.005)
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    assert oss.count(INITIATE_MULTIPART, status=200) == 1 and oss.count(UPLOAD_PART) == 0
    assert oss.count(ABORT_MULTIPART, status=204) == 1
    assert not oss.uploads and not oss.objects


async def test_a_part_that_fails_once_is_retried(oss, make_store, tmp_path) -> None:
    store = make_store()
    data = os.urandom(THRESHOLD + 4 * PART_SIZE)
    oss.faults.fail(UPLOAD_PART, part_number=3)
    oss.faults.corrupt_body(UPLOAD_PART, part_number=5)  # OSS stores a damaged part: CRC tells, part is resent
    await store.put("packs/big", source(tmp_path, data))
    assert oss.objects["packs/big"].data == data
    assert oss.count(UPLOAD_PART, part_number=3) == 2 and oss.count(UPLOAD_PART, part_number=5) == 2


async def test_a_timed_out_part_is_retried_boundedly_then_aborted(oss, make_store, tmp_path) -> None:
    store = make_store(timeout=0.2)
    oss.faults.delay(0.6, UPLOAD_PART, part_number=3, times=None)
    started = time.monotonic()
    with pytest.raises(BlobStoreError, match="upload part 3.*connection error"):
        await store.put("packs/slow", source(tmp_path, os.urandom(THRESHOLD + 4 * PART_SIZE)))
    assert time.monotonic() - started < 3.0
    assert oss.count(UPLOAD_PART, part_number=3) == ATTEMPTS
    await oss.idle()  # the delayed parts arrive after the abort and must not revive anything
    assert not oss.uploads and not oss.objects


async def test_a_timed_out_get_is_retried_boundedly(oss, make_store, tmp_path) -> None:
    store = make_store(timeout=0.2)
    await store.put("packs/p", source(tmp_path, b"content"))
    oss.faults.delay(0.5, GET_OBJECT, times=None)
    with pytest.raises(BlobStoreError, match="gave up after"):
        await store.get("packs/p", 0, 3)
    assert oss.count(GET_OBJECT) == ATTEMPTS
    await oss.idle()


async def test_a_put_with_a_wrong_crc_fails_and_leaves_nothing(oss, make_store, tmp_path) -> None:
    store = make_store()
    oss.faults.corrupt_crc(PUT_OBJECT, times=None)
    with pytest.raises(BlobStoreError, match="CRC64"):
        await store.put("packs/p", source(tmp_path, b"content"))
    assert oss.count(PUT_OBJECT) == ATTEMPTS
    assert oss.count(DELETE_OBJECT) == 1 and not oss.objects


async def test_a_put_without_a_crc_fails_and_leaves_nothing(oss, make_store, tmp_path) -> None:
    store = make_store()
    oss.faults.drop_crc(PUT_OBJECT, times=None)
    with pytest.raises(BlobStoreError, match="CRC64"):
        await store.put("packs/p", source(tmp_path, b"content"))
    assert not oss.objects


async def test_a_put_damaged_once_in_transit_is_resent(oss, make_store, tmp_path) -> None:
    store = make_store()
    oss.faults.corrupt_body(PUT_OBJECT)
    await store.put("packs/p", source(tmp_path, b"content"))
    assert oss.objects["packs/p"].data == b"content"
    assert oss.count(PUT_OBJECT) == 2


async def test_a_complete_whose_answer_is_wrong_is_verified_by_head(oss, make_store, tmp_path) -> None:
    # The first complete's CRC header is damaged; the retry finds the upload gone (it did complete) and
    # checks the stored object's CRC instead of failing or completing twice.
    store = make_store()
    data = os.urandom(THRESHOLD + PART_SIZE)
    oss.faults.corrupt_crc(COMPLETE_MULTIPART)
    await store.put("packs/big", source(tmp_path, data))
    assert oss.objects["packs/big"].data == data
    assert oss.count(COMPLETE_MULTIPART, status=200) == 1 and oss.count(COMPLETE_MULTIPART, status=404) == 1
    assert oss.count(HEAD_OBJECT) == 1


async def test_a_multipart_put_with_wrong_crcs_fails_and_leaves_nothing(oss, make_store, tmp_path) -> None:
    store = make_store()
    oss.faults.corrupt_crc(UPLOAD_PART, part_number=1, times=None)
    with pytest.raises(BlobStoreError, match="CRC64"):
        await store.put("packs/big", source(tmp_path, os.urandom(THRESHOLD + PART_SIZE)))
    assert oss.count(UPLOAD_PART, part_number=1) == ATTEMPTS
    assert not oss.uploads and not oss.objects


async def test_gets_verify_the_crc(oss, make_store, tmp_path) -> None:
    store = make_store()
    data = os.urandom(100_000)
    await store.put("packs/p", source(tmp_path, data))

    oss.faults.corrupt_crc(GET_OBJECT, times=None)
    with pytest.raises(BlobStoreError, match="CRC64"):
        await store.get("packs/p")
    assert oss.count(GET_OBJECT) == ATTEMPTS
    with pytest.raises(BlobStoreError, match="CRC64"):
        async for _ in store.stream("packs/p"):
            pass
    oss.faults.clear()

    oss.faults.corrupt_body(GET_OBJECT)
    with pytest.raises(BlobStoreError, match="CRC64"):
        async for _ in store.stream("packs/p"):
            pass
    oss.faults.corrupt_body(GET_OBJECT)
    assert await store.get("packs/p") == data, "a whole-object get is retried after a bad CRC"

    oss.faults.drop_crc(GET_OBJECT)
    with pytest.raises(BlobStoreError, match="crc64"):
        async for _ in store.stream("packs/p"):
            pass


async def test_a_broken_stream_resumes_where_it_stopped(oss, make_store, tmp_path) -> None:
    store = make_store()
    data = os.urandom(300_000)
    await store.put("packs/p", source(tmp_path, data))
    oss.faults.cut_body(100_000)
    assert b"".join([block async for block in store.stream("packs/p", block_size=32 * 1024)]) == data
    ranges = [hit.range for hit in oss.hits if hit.op == GET_OBJECT]
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 100_000

    oss.faults.cut_body(1000)
    assert await store.get("packs/p") == data, "a whole-object get starts over"


async def test_a_stream_does_not_resume_onto_a_replaced_object(oss, make_store, tmp_path) -> None:
    store = make_store()
    await store.put("packs/p", source(tmp_path, os.urandom(300_000)))
    oss.faults.cut_body(100_000)
    replaced = False
    with pytest.raises(BlobStoreError, match="PreconditionFailed"):
        async for _ in store.stream("packs/p", block_size=32 * 1024):
            if not replaced:
                await store.put("packs/p", source(tmp_path, os.urandom(300_000)))
                replaced = True
    assert replaced


# -- errors at the boundary -------------------------------------------------------------------------


async def test_no_such_key_is_blob_not_found_but_no_such_bucket_is_not(oss, make_store) -> None:
    store = make_store()
    for offset, length in [(0, None), (5, 5), (5, 0)]:
        with pytest.raises(BlobNotFound):
            await store.get("packs/none", offset, length)
    assert oss.count(GET_OBJECT) == 2, "not-found is an answer, not a failure to retry"

    elsewhere = OssBlobStore.from_url(f"oss://no-such-bucket?endpoint={oss.endpoint}", ACCESS_KEY_ID, SECRET,
                                      retry=RetryPolicy(attempts=1))
    try:
        with pytest.raises(BlobStoreError, match="NoSuchBucket") as raised:
            await elsewhere.get("packs/none")
        assert not isinstance(raised.value, BlobNotFound)
    finally:
        await elsewhere.close()


async def test_the_secret_never_appears_in_errors(oss, make_store, tmp_path) -> None:
    wrong_secret = "wrong-Secret-Value-e81d"
    failures: list[BaseException] = []
    store = make_store(secret=wrong_secret)
    attempts = [
        lambda: store.put("packs/p", source(tmp_path, b"x")),
        lambda: store.get("packs/p"),
        lambda: store.delete("packs/p"),
    ]
    for attempt in attempts:
        try:
            await attempt()
        except BlobStoreError as exc:
            failures.append(exc)
    # A server or proxy that echoes the secret back must not get it into our messages either.
    store = make_store()
    oss.faults.fail(PUT_OBJECT, times=None, message=f"proxy says: bad credential {SECRET}")
    with pytest.raises(BlobStoreError) as raised:
        await store.put("packs/p", source(tmp_path, b"x"))
    failures.append(raised.value)
    assert len(failures) == 4
    for failure in failures:
        assert SECRET not in str(failure) and wrong_secret not in str(failure)
    assert "***" in str(raised.value)
    assert SECRET not in repr(store)


# -- configuration and lifecycle --------------------------------------------------------------------


async def test_storage_urls_select_signing_and_prefix(oss, tmp_path) -> None:
    store = open_blob_store(
        f"oss://{BUCKET}?endpoint={oss.endpoint}&region={REGION}&prefix=/acme/packs",
        oss_access_key_id=ACCESS_KEY_ID,
        oss_access_key_secret=SECRET,
    )
    try:
        assert isinstance(store, OssBlobStore)
        await store.put("p1", source(tmp_path, b"x"))
        assert list(oss.objects) == ["acme/packs/p1"]
        assert {hit.auth for hit in oss.hits} == {"v4"}
        assert [info.key async for info in store.list()] == ["p1"]
    finally:
        await store.close()
    for bad in (
        f"oss://{BUCKET}",
        f"oss://{BUCKET}?endpoint={oss.endpoint}&regoin=x",
        f"oss://{BUCKET}/path?endpoint={oss.endpoint}",
        f"oss://Bad_Bucket?endpoint={oss.endpoint}",
        f"oss://{BUCKET}?endpoint={oss.endpoint}&prefix=a/../b",
    ):
        with pytest.raises(ValueError):
            OssBlobStore.from_url(bad, ACCESS_KEY_ID, SECRET)
    with pytest.raises(ValueError, match="EACCT_OSS_ACCESS_KEY_ID"):
        OssBlobStore.from_url(f"oss://{BUCKET}?endpoint={oss.endpoint}", ACCESS_KEY_ID, "")


async def test_close_stops_the_pool(make_store, tmp_path) -> None:
    store = make_store()
    await store.put("packs/p", source(tmp_path, b"x"))
    assert any(thread.name.startswith("eacct-oss") for thread in threading.enumerate())
    await store.close()
    assert not any(thread.name.startswith("eacct-oss") for thread in threading.enumerate())
    with pytest.raises(BlobStoreError, match="closed"):
        await store.get("packs/p")
    await store.close()


async def test_storage_check_reports_a_wrong_secret(oss, make_store, region) -> None:
    results = await run_storage_check(make_store(secret="wrong", region=region))
    assert [(name, ok) for name, ok, _ in results] == [
        ("write", False), ("read", False), ("stream", False), ("range read", False), ("list", False),
        ("delete", False),
    ]
    assert "SignatureDoesNotMatch" in results[0][2]
    assert all(detail.startswith("skipped") for _, _, detail in results[1:])
    assert not oss.objects


async def test_storage_check_reports_damaged_reads(oss, make_store) -> None:
    # Reads that come back damaged fail their steps without hiding that the rest works.
    oss.faults.corrupt_body(GET_OBJECT, times=None)
    results = dict((name, (ok, detail)) for name, ok, detail in await run_storage_check(make_store()))
    assert results["write"][0] and results["list"][0] and results["delete"][0]
    assert not results["read"][0] and not results["stream"][0] and not results["range read"][0]
    assert "differ" in results["range read"][1]
    assert not oss.objects
