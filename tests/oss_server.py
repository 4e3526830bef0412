"""An in-memory server speaking the Aliyun OSS protocol, for tests that must not touch Aliyun.

No OSS emulator is packaged anywhere we can install from, so this one reproduces what `oss2` sends and
checks, closely enough that a client bug visible against real OSS is visible here too:

* authentication: v1 (`OSS ak:signature`, HMAC-SHA1 over method, Content-MD5, Content-Type, Date, the
  sorted `x-oss-*` headers and `/bucket/key` plus signed sub-resources) and v4 (`OSS4-HMAC-SHA256`,
  scoped signing key, canonical request over every query parameter). The signature is recomputed here
  from what arrived on the wire, independently of oss2's signer; a wrong secret or a request altered
  after signing gets OSS's `SignatureDoesNotMatch` XML.
* objects: put, get (with `Range` and OSS's two range behaviours, `If-Match`), head, delete, list v2
  (`encoding-type=url`, continuation tokens); multipart initiate, upload part, list parts, complete,
  abort.
* OSS's response shapes: quoted upper-case MD5 ETags (`MD5(part MD5s)-N` for multipart),
  `LastModified` as `...T..:..:...000Z`, `x-oss-hash-crc64ecma` on puts, parts, completes and gets,
  HEAD errors as base64 XML in `x-oss-err`, `x-oss-request-id` everywhere; keys arrive percent-encoded
  in path style (`/bucket/key`).

Tests steer failures through `FakeOssServer.faults` and observe traffic through `FakeOssServer.hits`.
Start one with `start_oss_server`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote, unquote
from xml.etree import ElementTree

import crcmod
from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "ABORT_MULTIPART",
    "COMPLETE_MULTIPART",
    "DELETE_OBJECT",
    "GET_OBJECT",
    "HEAD_OBJECT",
    "INITIATE_MULTIPART",
    "LIST_OBJECTS_V2",
    "LIST_PARTS",
    "PUT_OBJECT",
    "UPLOAD_PART",
    "FakeOssServer",
    "Faults",
    "FaultRule",
    "Hit",
    "StoredObject",
    "crc64_ecma",
    "start_oss_server",
]

# CRC-64/XZ, which OSS calls CRC64-ECMA: reflected ECMA-182 polynomial, all-ones init and final xor.
crc64_ecma = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)

MIN_PART_SIZE = 100 * 1024
MAX_CLOCK_SKEW = timedelta(minutes=15)

# Query parameters that OSS folds into a v1 signature; all others are left out of it.
V1_SUBRESOURCES = frozenset(
    {
        "acl", "append", "bucketInfo", "callback", "callback-var", "comp", "continuation-token", "cors",
        "delete", "encryption", "endTime", "inventory", "lifecycle", "live", "location", "logging",
        "objectInfo", "objectMeta", "partNumber", "policy", "position", "qos", "referer", "replication",
        "response-cache-control", "response-content-disposition", "response-content-encoding",
        "response-content-language", "response-content-type", "response-expires", "restore",
        "security-token", "sequential", "startTime", "stat", "status", "symlink", "tagging",
        "uploadId", "uploads", "versionId", "versioning", "versions", "vod", "website", "worm",
        "x-oss-process", "x-oss-traffic-limit",
    }
)

# Operation names (OSS's API names) used by hits and fault rules.
PUT_OBJECT = "PutObject"
GET_OBJECT = "GetObject"
HEAD_OBJECT = "HeadObject"
DELETE_OBJECT = "DeleteObject"
LIST_OBJECTS_V2 = "ListObjectsV2"
INITIATE_MULTIPART = "InitiateMultipartUpload"
UPLOAD_PART = "UploadPart"
LIST_PARTS = "ListParts"
COMPLETE_MULTIPART = "CompleteMultipartUpload"
ABORT_MULTIPART = "AbortMultipartUpload"


class OssError(Exception):
    """An error answered as OSS's XML `<Error>` document."""

    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


@dataclass
class StoredObject:
    """One object as the bucket holds it."""

    data: bytes
    etag: str  # without quotes, as OSS computes it
    crc64: int
    modified: datetime
    content_type: str
    object_type: str  # "Normal" or "Multipart"


@dataclass
class _Part:
    data: bytes
    md5: bytes
    crc64: int
    modified: datetime

    @property
    def etag(self) -> str:
        return self.md5.hex().upper()


@dataclass
class Upload:
    """A multipart upload between initiate and complete/abort."""

    key: str
    content_type: str
    initiated: datetime
    parts: dict[int, _Part] = field(default_factory=dict)


@dataclass
class Hit:
    """One request the server received, in arrival order."""

    method: str
    op: str
    key: str
    part_number: int | None
    range: str | None
    auth: str = ""  # "v1" or "v4" as the Authorization header claimed, "" when unsigned
    status: int = 0  # filled in once answered


@dataclass
class FaultRule:
    """A failure to inject into the next `times` requests that match (every one when `times` is None)."""

    action: str  # fail | delay | corrupt_crc | drop_crc | corrupt_body | cut_body
    op: str | None = None
    method: str | None = None
    key: str | None = None
    part_number: int | None = None
    times: int | None = 1
    status: int = 500
    code: str = "InternalError"
    message: str = "We encountered an internal error. Please try again."
    seconds: float = 0.0
    after_bytes: int = 0
    fired: int = 0

    def matches(self, hit: Hit) -> bool:
        return (
            (self.times is None or self.fired < self.times)
            and (self.op is None or self.op == hit.op)
            and (self.method is None or self.method == hit.method)
            and (self.key is None or self.key == hit.key)
            and (self.part_number is None or self.part_number == hit.part_number)
        )


class Faults:
    """What the server should do wrong next. Rules are tried in the order they were added; at most one
    fires per request, and only after the request authenticated."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def fail(self, op: str | None = None, *, status: int = 500, code: str = "InternalError", **match) -> FaultRule:
        """Answer matching requests with an OSS error (500 InternalError unless told otherwise); `message=`
        sets the error document's Message."""
        return self._add(FaultRule("fail", op, status=status, code=code, **match))

    def delay(self, seconds: float, op: str | None = None, **match) -> FaultRule:
        """Sit on matching requests for `seconds` (after reading the body), then serve them normally."""
        return self._add(FaultRule("delay", op, seconds=seconds, **match))

    def corrupt_crc(self, op: str | None = None, **match) -> FaultRule:
        """Report a wrong `x-oss-hash-crc64ecma` for matching requests; the stored data stays right."""
        return self._add(FaultRule("corrupt_crc", op, **match))

    def drop_crc(self, op: str | None = None, **match) -> FaultRule:
        """Leave `x-oss-hash-crc64ecma` out of matching answers."""
        return self._add(FaultRule("drop_crc", op, **match))

    def corrupt_body(self, op: str | None = None, **match) -> FaultRule:
        """Flip a byte: of the data stored by a put or part, or of the body a get sends."""
        return self._add(FaultRule("corrupt_body", op, **match))

    def cut_body(self, after_bytes: int, op: str = GET_OBJECT, **match) -> FaultRule:
        """Send only `after_bytes` of a get's body, then drop the connection."""
        return self._add(FaultRule("cut_body", op, after_bytes=after_bytes, **match))

    def clear(self) -> None:
        """Forget every rule."""
        self.rules.clear()

    def _add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def take(self, hit: Hit) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(hit):
                rule.fired += 1
                return rule
        return None


@dataclass
class _Ctx:
    request: web.Request
    key: str
    body: bytes
    request_id: str
    fault: FaultRule | None

    def fault_is(self, action: str) -> bool:
        return self.fault is not None and self.fault.action == action


class FakeOssServer:
    """One bucket of an OSS service, in memory, with one access key."""

    def __init__(self, access_key_id: str, access_key_secret: str, bucket: str, region: str = "cn-hangzhou") -> None:
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.bucket = bucket
        self.region = region
        self.objects: dict[str, StoredObject] = {}
        self.uploads: dict[str, Upload] = {}
        self.faults = Faults()
        self.hits: list[Hit] = []
        self.base_url = ""
        self.endpoint = ""
        self._runner: web.AppRunner | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.app = web.Application(client_max_size=1 << 30)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host:port` (a free port when 0) and return the base URL."""
        # A short shutdown timeout: a test that injected a long delay should not hang its teardown.
        self._runner = web.AppRunner(self.app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        self.endpoint = self.base_url
        return self.base_url

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def idle(self, timeout: float = 5.0) -> None:
        """Wait until no request is being handled (delayed requests included)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    def storage_url(self, *, region: str | None = None, prefix: str = "") -> str:
        """An `oss://` URL for this server, as EACCT_STORAGE_URL would hold it."""
        url = f"oss://{self.bucket}?endpoint={self.endpoint}"
        if region:
            url += f"&region={region}"
        if prefix:
            url += f"&prefix={quote(prefix, safe='')}"
        return url

    def count(self, op: str | None = None, **match) -> int:
        """How many requests of `op` (and matching `method`, `key`, `part_number`, `status`) arrived."""
        return sum(
            1
            for hit in self.hits
            if (op is None or hit.op == op) and all(getattr(hit, name) == value for name, value in match.items())
        )

    # -- dispatch --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._inflight += 1
        self._idle.clear()
        try:
            return await self._serve(request)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        request_id = secrets.token_hex(12).upper()
        hit = Hit(request.method, "Unknown", "", None, request.headers.get("Range"))
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("OSS4-HMAC-SHA256 "):
            hit.auth = "v4"
        elif authorization.startswith("OSS "):
            hit.auth = "v1"
        self.hits.append(hit)
        try:
            bucket, key = _split_path(request.rel_url.raw_path)
            hit.key = key
            hit.op = _operation(request.method, bucket, key, request.query)
            if "partNumber" in request.query and request.query["partNumber"].isdigit():
                hit.part_number = int(request.query["partNumber"])
            body = await request.read()
            self._authenticate(request, bucket, key, body)
            if bucket != self.bucket:
                raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=bucket)
            fault = self.faults.take(hit)
            if fault is not None and fault.action == "delay":
                await asyncio.sleep(fault.seconds)
            if fault is not None and fault.action == "fail":
                raise OssError(fault.status, fault.code, fault.message)
            ctx = _Ctx(request, key, body, request_id, fault)
            response = await self._handlers[hit.op](self, ctx)
        except OssError as err:
            response = self._error(request, err, request_id)
        hit.status = response.status
        return response

    def _headers(self, request_id: str) -> CIMultiDict[str]:
        return CIMultiDict({"x-oss-request-id": request_id, "Server": "AliyunOSS"})

    def _error(self, request: web.Request, err: OssError, request_id: str) -> web.Response:
        root = ElementTree.Element("Error")
        fields = {
            "Code": err.code,
            "Message": err.message,
            "RequestId": request_id,
            "HostId": f"{self.bucket}.{request.host}",
            **err.extra,
        }
        for name, value in fields.items():
            ElementTree.SubElement(root, name).text = value
        document = _xml_bytes(root)
        headers = self._headers(request_id)
        if request.method == "HEAD":
            # A HEAD answer has no body, so OSS carries the error document in a header instead.
            headers["x-oss-err"] = base64.b64encode(document).decode()
            return web.Response(status=err.status, headers=headers)
        headers["Content-Type"] = "application/xml"
        return web.Response(status=err.status, body=document, headers=headers)

    # -- authentication --------------------------------------------------------------------------

    def _authenticate(self, request: web.Request, bucket: str, key: str, body: bytes) -> None:
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("OSS4-HMAC-SHA256 "):
            self._check_v4(request, bucket, key, body, authorization)
        elif authorization.startswith("OSS "):
            self._check_v1(request, bucket, key, authorization)
        else:
            raise OssError(403, "AccessDenied", "You have no right to access this object because of bucket acl.")
        content_md5 = request.headers.get("Content-MD5")
        if content_md5 is not None and content_md5 != base64.b64encode(hashlib.md5(body).digest()).decode():
            raise OssError(400, "InvalidDigest", "The Content-MD5 you specified is not valid.")

    def _check_access_key(self, access_key_id: str) -> None:
        if access_key_id != self.access_key_id:
            raise OssError(403, "InvalidAccessKeyId",
                           "The OSS Access Key Id you provided does not exist in our records.",
                           OSSAccessKeyId=access_key_id)

    def _check_v1(self, request: web.Request, bucket: str, key: str, authorization: str) -> None:
        access_key_id, _, provided = authorization[len("OSS "):].rpartition(":")
        self._check_access_key(access_key_id)
        headers = request.headers
        date = headers.get("x-oss-date") or headers.get("Date", "")
        try:
            sent = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            raise OssError(403, "AccessDenied", "OSS authentication requires a valid Date.") from None
        _check_clock(sent)
        canonical_headers = "".join(f"{name}:{value}\n" for name, value in _oss_headers(headers))
        subresources = sorted((k, v) for k, v in request.query.items() if k in V1_SUBRESOURCES)
        resource = f"/{bucket}/{key}"
        if subresources:
            resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in subresources)
        string_to_sign = "\n".join(
            [request.method, headers.get("Content-MD5", ""), headers.get("Content-Type", ""), date,
             canonical_headers + resource]
        )
        digest = hmac.new(self.access_key_secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), provided):
            raise _signature_mismatch(string_to_sign, access_key_id, provided)

    def _check_v4(self, request: web.Request, bucket: str, key: str, body: bytes, authorization: str) -> None:
        fields = {}
        for item in authorization[len("OSS4-HMAC-SHA256 "):].split(","):
            name, _, value = item.strip().partition("=")
            fields[name] = value
        credential = fields.get("Credential", "").split("/")
        provided = fields.get("Signature", "")
        if len(credential) != 5 or credential[3] != "oss" or credential[4] != "aliyun_v4_request" or not provided:
            raise OssError(400, "InvalidArgument", "Malformed OSS4-HMAC-SHA256 Authorization header.")
        access_key_id, scope_date, scope_region = credential[:3]
        self._check_access_key(access_key_id)
        headers = request.headers
        stamp = headers.get("x-oss-date", "")
        try:
            sent = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise OssError(403, "AccessDenied", "V4 signing requires x-oss-date as yyyymmddThhmmssZ.") from None
        _check_clock(sent)
        if scope_date != stamp[:8]:
            raise OssError(403, "SignatureDoesNotMatch", "The credential scope date does not match x-oss-date.")
        payload_hash = headers.get("x-oss-content-sha256")
        if payload_hash is None:
            raise OssError(400, "InvalidArgument", "x-oss-content-sha256 is required for V4 signatures.")
        if payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(body).hexdigest():
            raise OssError(400, "InvalidArgument", "x-oss-content-sha256 does not match the body.")
        additional = sorted(h.lower() for h in fields.get("AdditionalHeaders", "").split(";") if h)
        signed = [
            (name, value)
            for name, value in ((k.lower(), v) for k, v in headers.items())
            if name.startswith("x-oss-") or name in ("content-type", "content-md5") or name in additional
        ]
        signed.sort(key=lambda item: item[0])
        query = sorted((_v4_quote(k), _v4_quote(v)) for k, v in request.query.items())
        canonical_request = "\n".join(
            [
                request.method,
                _v4_quote(f"/{bucket}/{key}", keep_slash=True),
                "&".join(f"{k}={v}" if v else k for k, v in query),
                "".join(f"{name}:{value}\n" for name, value in signed),
                ";".join(additional),
                payload_hash,
            ]
        )
        # The server signs with its own region: a client configured for another region fails here.
        scope = f"{scope_date}/{self.region}/oss/aliyun_v4_request"
        string_to_sign = "\n".join(
            ["OSS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
        )
        signing_key = ("aliyun_v4" + self.access_key_secret).encode()
        for part in (scope_date, self.region, "oss", "aliyun_v4_request"):
            signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if scope_region != self.region or not hmac.compare_digest(expected, provided):
            raise _signature_mismatch(string_to_sign, access_key_id, provided, CanonicalRequest=canonical_request)

    # -- objects ---------------------------------------------------------------------------------

    def _object(self, key: str) -> StoredObject:
        stored = self.objects.get(key)
        if stored is None:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        return stored

    def _stored_data(self, ctx: _Ctx) -> bytes:
        data = ctx.body
        if ctx.fault_is("corrupt_body") and data:
            data = _flip_first_byte(data)
        return data

    def _checksum_headers(self, ctx: _Ctx, headers: CIMultiDict[str], crc: int) -> None:
        if ctx.fault_is("drop_crc"):
            return
        if ctx.fault_is("corrupt_crc"):
            crc ^= 1
        headers["x-oss-hash-crc64ecma"] = str(crc)

    async def _put_object(self, ctx: _Ctx) -> web.StreamResponse:
        if "x-oss-copy-source" in ctx.request.headers:
            raise OssError(501, "NotImplemented", "CopyObject is not supported by this test server.")
        _check_key(ctx.key)
        data = self._stored_data(ctx)
        stored = StoredObject(
            data=data,
            etag=hashlib.md5(data).hexdigest().upper(),
            crc64=crc64_ecma(data),
            modified=_now(),
            content_type=ctx.request.headers.get("Content-Type", "application/octet-stream"),
            object_type="Normal",
        )
        self.objects[ctx.key] = stored
        headers = self._headers(ctx.request_id)
        headers["ETag"] = f'"{stored.etag}"'
        self._checksum_headers(ctx, headers, stored.crc64)
        return web.Response(status=200, headers=headers)

    def _object_headers(self, ctx: _Ctx, stored: StoredObject) -> CIMultiDict[str]:
        headers = self._headers(ctx.request_id)
        headers["Content-Type"] = stored.content_type
        headers["ETag"] = f'"{stored.etag}"'
        headers["Last-Modified"] = format_datetime(stored.modified, usegmt=True)
        headers["Accept-Ranges"] = "bytes"
        headers["x-oss-object-type"] = stored.object_type
        headers["x-oss-storage-class"] = "Standard"
        # OSS reports the whole object's CRC even on ranged answers.
        self._checksum_headers(ctx, headers, stored.crc64)
        return headers

    def _check_preconditions(self, ctx: _Ctx, stored: StoredObject) -> None:
        if_match = ctx.request.headers.get("If-Match")
        if if_match is not None and if_match.strip('"') != stored.etag:
            raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.",
                           Condition="If-Match")

    async def _head_object(self, ctx: _Ctx) -> web.StreamResponse:
        stored = self._object(ctx.key)
        self._check_preconditions(ctx, stored)
        headers = self._object_headers(ctx, stored)
        headers["Content-Length"] = str(len(stored.data))
        return web.Response(status=200, headers=headers)

    async def _get_object(self, ctx: _Ctx) -> web.StreamResponse:
        stored = self._object(ctx.key)
        self._check_preconditions(ctx, stored)
        headers = self._object_headers(ctx, stored)
        data = stored.data
        status = 200
        span = _parse_range(ctx.request.headers.get("Range"), len(data),
                            ctx.request.headers.get("x-oss-range-behavior") == "standard")
        if span is not None:
            start, end = span
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start:end + 1]
            status = 206
        if ctx.fault_is("corrupt_body") and data:
            data = _flip_first_byte(data)
        headers["Content-Length"] = str(len(data))
        if not ctx.fault_is("cut_body"):
            return web.Response(status=status, body=data, headers=headers)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(ctx.request)
        await response.write(data[:ctx.fault.after_bytes])
        # Dropping the connection mid-body is what a broken network looks like to the client.
        assert ctx.request.transport is not None
        ctx.request.transport.close()
        return response

    async def _delete_object(self, ctx: _Ctx) -> web.StreamResponse:
        self.objects.pop(ctx.key, None)
        return web.Response(status=204, headers=self._headers(ctx.request_id))

    async def _list_objects_v2(self, ctx: _Ctx) -> web.StreamResponse:
        query = ctx.request.query
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        start_after = query.get("start-after", "")
        token = query.get("continuation-token", "")
        url_encoded = query.get("encoding-type") == "url"
        try:
            max_keys = int(query.get("max-keys", "100"))
        except ValueError:
            max_keys = -1
        if not 0 <= max_keys <= 1000:
            raise OssError(400, "InvalidArgument", "max-keys must be between 0 and 1000.", ArgumentName="max-keys")
        after = start_after
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise OssError(400, "InvalidArgument", "The continuation token is not valid.",
                               ArgumentName="continuation-token") from None
        # Python orders str by code point, which is the UTF-8 byte order OSS lists in.
        candidates = sorted(k for k in self.objects if k.startswith(prefix) and k > after)
        contents: list[str] = []
        common: list[str] = []
        last = after
        truncated = False
        for candidate in candidates:
            if candidate <= last:
                continue  # already rolled into a common prefix
            if len(contents) + len(common) >= max_keys:
                truncated = True
                break
            rest = candidate[len(prefix):]
            cut = rest.find(delimiter) if delimiter else -1
            if cut >= 0:
                folded = prefix + rest[:cut + len(delimiter)]
                common.append(folded)
                last = folded + "\U0010ffff"
            else:
                contents.append(candidate)
                last = candidate

        def enc(text: str) -> str:
            return quote(text, safe="/") if url_encoded else text

        root = ElementTree.Element("ListBucketResult")
        for name, value in [("Name", self.bucket), ("Prefix", enc(prefix)), ("MaxKeys", str(max_keys)),
                            ("Delimiter", enc(delimiter)), ("IsTruncated", "true" if truncated else "false")]:
            ElementTree.SubElement(root, name).text = value
        if url_encoded:
            ElementTree.SubElement(root, "EncodingType").text = "url"
        if start_after:
            ElementTree.SubElement(root, "StartAfter").text = enc(start_after)
        if token:
            ElementTree.SubElement(root, "ContinuationToken").text = enc(token)
        if truncated:
            next_token = base64.urlsafe_b64encode(last.encode()).decode()
            ElementTree.SubElement(root, "NextContinuationToken").text = enc(next_token)
        ElementTree.SubElement(root, "KeyCount").text = str(len(contents) + len(common))
        for key in contents:
            stored = self.objects[key]
            node = ElementTree.SubElement(root, "Contents")
            for name, value in [("Key", enc(key)), ("LastModified", _iso8601(stored.modified)),
                                ("ETag", f'"{stored.etag}"'), ("Type", stored.object_type),
                                ("Size", str(len(stored.data))), ("StorageClass", "Standard")]:
                ElementTree.SubElement(node, name).text = value
            if query.get("fetch-owner") == "true":
                owner = ElementTree.SubElement(node, "Owner")
                ElementTree.SubElement(owner, "ID").text = self.access_key_id
                ElementTree.SubElement(owner, "DisplayName").text = self.access_key_id
        for folded in common:
            ElementTree.SubElement(ElementTree.SubElement(root, "CommonPrefixes"), "Prefix").text = enc(folded)
        return self._xml_response(ctx, root)

    # -- multipart -------------------------------------------------------------------------------

    def _upload(self, ctx: _Ctx) -> Upload:
        upload = self.uploads.get(ctx.request.query["uploadId"])
        if upload is None or upload.key != ctx.key:
            raise OssError(404, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, "
                           "or the upload may have been aborted or completed.",
                           UploadId=ctx.request.query["uploadId"])
        return upload

    async def _initiate_multipart(self, ctx: _Ctx) -> web.StreamResponse:
        _check_key(ctx.key)
        upload_id = secrets.token_hex(16).upper()
        self.uploads[upload_id] = Upload(
            key=ctx.key,
            content_type=ctx.request.headers.get("Content-Type", "application/octet-stream"),
            initiated=_now(),
        )
        root = ElementTree.Element("InitiateMultipartUploadResult")
        for name, value in [("Bucket", self.bucket), ("Key", ctx.key), ("UploadId", upload_id)]:
            ElementTree.SubElement(root, name).text = value
        return self._xml_response(ctx, root)

    async def _upload_part(self, ctx: _Ctx) -> web.StreamResponse:
        upload = self._upload(ctx)
        number_text = ctx.request.query.get("partNumber", "")
        if not number_text.isdigit() or not 1 <= int(number_text) <= 10000:
            raise OssError(400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive.",
                           ArgumentName="partNumber")
        data = self._stored_data(ctx)
        part = _Part(data=data, md5=hashlib.md5(data).digest(), crc64=crc64_ecma(data), modified=_now())
        upload.parts[int(number_text)] = part
        headers = self._headers(ctx.request_id)
        headers["ETag"] = f'"{part.etag}"'
        self._checksum_headers(ctx, headers, part.crc64)
        return web.Response(status=200, headers=headers)

    async def _list_parts(self, ctx: _Ctx) -> web.StreamResponse:
        upload = self._upload(ctx)
        query = ctx.request.query
        marker = int(query.get("part-number-marker") or 0)
        max_parts = int(query.get("max-parts") or 1000)
        numbers = sorted(n for n in upload.parts if n > marker)
        page, truncated = numbers[:max_parts], len(numbers) > max_parts
        root = ElementTree.Element("ListPartsResult")
        for name, value in [("Bucket", self.bucket), ("Key", ctx.key), ("UploadId", query["uploadId"]),
                            ("PartNumberMarker", str(marker)),
                            ("NextPartNumberMarker", str(page[-1] if page else marker)),
                            ("MaxParts", str(max_parts)), ("IsTruncated", "true" if truncated else "false")]:
            ElementTree.SubElement(root, name).text = value
        for number in page:
            part = upload.parts[number]
            node = ElementTree.SubElement(root, "Part")
            for name, value in [("PartNumber", str(number)), ("LastModified", _iso8601(part.modified)),
                                ("ETag", f'"{part.etag}"'), ("HashCrc64ecma", str(part.crc64)),
                                ("Size", str(len(part.data)))]:
                ElementTree.SubElement(node, name).text = value
        return self._xml_response(ctx, root)

    async def _complete_multipart(self, ctx: _Ctx) -> web.StreamResponse:
        upload = self._upload(ctx)
        try:
            root = ElementTree.fromstring(ctx.body)
            requested = [
                (int(node.findtext("PartNumber", "")), node.findtext("ETag", "").strip('"'))
                for node in root.findall("Part")
            ]
        except (ElementTree.ParseError, ValueError):
            requested = []
        if not requested:
            raise OssError(400, "MalformedXML", "The XML you provided was not well-formed or did not validate "
                           "against our published schema.")
        numbers = [number for number, _ in requested]
        if numbers != sorted(set(numbers)):
            raise OssError(400, "InvalidPartOrder", "The list of parts was not in ascending order. "
                           "Parts list must be specified in order by part number.")
        parts = []
        for number, etag in requested:
            part = upload.parts.get(number)
            if part is None or part.etag != etag.upper():
                raise OssError(400, "InvalidPart", "One or more of the specified parts could not be found or the "
                               "specified entity tag might not have matched the part's entity tag.",
                               PartNumber=str(number), ETag=etag)
            parts.append(part)
        for part in parts[:-1]:
            if len(part.data) < MIN_PART_SIZE:
                raise OssError(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size.")
        data = b"".join(part.data for part in parts)
        etag = f"{hashlib.md5(b''.join(part.md5 for part in parts)).hexdigest().upper()}-{len(parts)}"
        stored = StoredObject(data=data, etag=etag, crc64=crc64_ecma(data), modified=_now(),
                              content_type=upload.content_type, object_type="Multipart")
        self.objects[ctx.key] = stored
        del self.uploads[ctx.request.query["uploadId"]]
        result = ElementTree.Element("CompleteMultipartUploadResult")
        for name, value in [("Location", f"{self.base_url}/{self.bucket}/{quote(ctx.key)}"),
                            ("Bucket", self.bucket), ("Key", ctx.key), ("ETag", f'"{etag}"')]:
            ElementTree.SubElement(result, name).text = value
        response = self._xml_response(ctx, result)
        response.headers["ETag"] = f'"{etag}"'
        self._checksum_headers(ctx, response.headers, stored.crc64)
        return response

    async def _abort_multipart(self, ctx: _Ctx) -> web.StreamResponse:
        self._upload(ctx)
        del self.uploads[ctx.request.query["uploadId"]]
        return web.Response(status=204, headers=self._headers(ctx.request_id))

    def _xml_response(self, ctx: _Ctx, root: ElementTree.Element) -> web.Response:
        headers = self._headers(ctx.request_id)
        headers["Content-Type"] = "application/xml"
        return web.Response(status=200, body=_xml_bytes(root), headers=headers)

    _handlers: dict[str, Callable[[FakeOssServer, _Ctx], Awaitable[web.StreamResponse]]] = {
        PUT_OBJECT: _put_object,
        GET_OBJECT: _get_object,
        HEAD_OBJECT: _head_object,
        DELETE_OBJECT: _delete_object,
        LIST_OBJECTS_V2: _list_objects_v2,
        INITIATE_MULTIPART: _initiate_multipart,
        UPLOAD_PART: _upload_part,
        LIST_PARTS: _list_parts,
        COMPLETE_MULTIPART: _complete_multipart,
        ABORT_MULTIPART: _abort_multipart,
    }


async def start_oss_server(
    access_key_id: str, secret: str, bucket: str, *, region: str = "cn-hangzhou"
) -> tuple[str, FakeOssServer]:
    """Start a fake OSS on 127.0.0.1 and a free port; return its base URL and the server (close it after)."""
    server = FakeOssServer(access_key_id, secret, bucket, region)
    return await server.start(), server


# -- protocol details ------------------------------------------------------------------------------


def _split_path(raw_path: str) -> tuple[str, str]:
    bucket, _, raw_key = raw_path.lstrip("/").partition("/")
    try:
        return unquote(bucket, errors="strict"), unquote(raw_key, errors="strict")
    except UnicodeDecodeError:
        raise OssError(400, "InvalidObjectName", "The object name is not valid UTF-8.") from None


def _operation(method: str, bucket: str, key: str, query) -> str:
    if not bucket:
        raise OssError(501, "NotImplemented", "Service-level operations are not supported by this test server.")
    if not key:
        if method == "GET" and query.get("list-type") == "2":
            return LIST_OBJECTS_V2
        raise OssError(501, "NotImplemented", "This bucket operation is not supported by this test server.")
    if "uploadId" in query:
        operation = {"PUT": UPLOAD_PART, "GET": LIST_PARTS, "POST": COMPLETE_MULTIPART, "DELETE": ABORT_MULTIPART}
    elif "uploads" in query:
        operation = {"POST": INITIATE_MULTIPART}
    elif any(name in V1_SUBRESOURCES for name in query):
        raise OssError(501, "NotImplemented", "This object sub-resource is not supported by this test server.")
    else:
        operation = {"PUT": PUT_OBJECT, "GET": GET_OBJECT, "HEAD": HEAD_OBJECT, "DELETE": DELETE_OBJECT}
    if method not in operation:
        raise OssError(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
    return operation[method]


def _check_key(key: str) -> None:
    if len(key.encode()) > 1023 or key.startswith("/") or key.startswith("\\"):
        raise OssError(400, "InvalidObjectName", "The specified object name is not valid.")


def _check_clock(sent: datetime) -> None:
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=timezone.utc)
    if abs(_now() - sent) > MAX_CLOCK_SKEW:
        raise OssError(403, "RequestTimeTooSkewed", "The difference between the request time and the current time "
                       "is too large.")


def _oss_headers(headers) -> list[tuple[str, str]]:
    return sorted((name.lower(), value) for name, value in headers.items() if name.lower().startswith("x-oss-"))


def _v4_quote(text: str, keep_slash: bool = False) -> str:
    return quote(text, safe="-_.~/" if keep_slash else "-_.~")


def _signature_mismatch(string_to_sign: str, access_key_id: str, provided: str, **extra: str) -> OssError:
    return OssError(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        StringToSign=string_to_sign,
        OSSAccessKeyId=access_key_id,
        SignatureProvided=provided,
        **extra,
    )


def _parse_range(header: str | None, size: int, standard: bool) -> tuple[int, int] | None:
    """The inclusive span a `Range` header selects, or None for the whole object.

    OSS by default ignores a range it cannot satisfy and sends the whole object; with
    `x-oss-range-behavior: standard` it clamps an end past the object and refuses a start past it.
    """
    if header is None or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes="):].partition("-")
    try:
        if first == "":
            if not last:
                return None
            suffix = int(last)
            if suffix <= 0 or size == 0:
                return None
            return max(0, size - suffix), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or end < start:
        return None
    if start >= size:
        if standard:
            raise OssError(416, "InvalidRange", "The requested range cannot be satisfied", RangeRequested=header,
                           ActualObjectSize=str(size))
        return None
    if end >= size:
        if not standard:
            return None
        end = size - 1
    return start, end


def _flip_first_byte(data: bytes) -> bytes:
    return bytes([data[0] ^ 0xFF]) + data[1:]


def _now() -> datetime:
    # OSS keeps modification times to the second.
    return datetime.now(timezone.utc).replace(microsecond=0)


def _iso8601(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _xml_bytes(root: ElementTree.Element) -> bytes:
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
