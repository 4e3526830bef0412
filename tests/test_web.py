"""The HTTP edge (eacct/web.py): how failures and framework refusals leave the server (issue 7, items 6 and 10)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os

import pytest
from aiohttp.test_utils import make_mocked_request
from sqlalchemy import exc as sa_exc

from eacct.netdisk.store import spool
from eacct.web import error_middleware
from tests.conftest import new_ledger_id


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


async def test_full_disk_during_upload_is_503_storage_unavailable_not_connection_lost(desktop, monkeypatch, caplog):
    member = await desktop("enospc1", "小王")
    ledger = new_ledger_id()
    before = (await member.call("GET", "/netdisk"))[1]["used_bytes"]
    # The upload's spool (compressed chunks on their way to becoming a pack) hits a full disk.
    monkeypatch.setattr(spool.PackWriter, "append", disk_full)

    with caplog.at_level(logging.INFO, logger="eacct"):
        status, body, headers = await member.upload("backups", ledger, 2018, os.urandom(300_000), name="L")

    assert status == 503 and headers["Content-Type"].startswith("application/json")
    assert body["error"]["code"] == "storage_unavailable" and body["error"]["message"]
    assert not any("connection lost" in record.getMessage() for record in caplog.records)
    monkeypatch.undo()
    assert (await member.download("backups", ledger, 2018))[0] == 404
    assert (await member.call("GET", "/netdisk"))[1]["used_bytes"] == before


@pytest.mark.parametrize("method, path, allowed", [
    ("PUT", "/api/v1/me", {"GET", "PATCH"}),
    ("GET", "/api/v1/sessions", {"POST"}),
    ("PATCH", "/api/v1/friends", {"GET", "POST"}),
])
async def test_405_is_json_and_carries_allow(http, base_url, method, path, allowed):
    async with http.request(method, base_url + path) as response:
        assert response.status == 405
        assert response.content_type == "application/json"
        body = await response.json()
        assert body["error"]["code"] == "method_not_allowed" and body["error"]["message"]
        assert {m.strip() for m in response.headers["Allow"].split(",")} >= allowed


async def raw_exchange(base_url: str, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """Send bytes as they are; return the status line, headers and body of the answer."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request.replace(b"{host}", host.encode()))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status_line.encode(), headers, body


MALFORMED_REQUESTS = {
    "header-over-8190-bytes": b"GET /api/v1/me HTTP/1.1\r\nHost: {host}\r\nX-Huge: " + b"a" * 9000 + b"\r\n\r\n",
    "request-line-over-8190-bytes": b"GET /api/v1/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: {host}\r\n\r\n",
    "content-length-not-a-number": b"POST /api/v1/sessions HTTP/1.1\r\nHost: {host}\r\nContent-Length: abc\r\n\r\n{}",
    "content-length-negative": b"POST /api/v1/sessions HTTP/1.1\r\nHost: {host}\r\nContent-Length: -5\r\n\r\n{}",
    "content-length-twice": b"POST /api/v1/sessions HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n"
                            b"Content-Length: 3\r\n\r\n{}",
    "bad-chunked-encoding": b"POST /api/v1/sessions HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"zz\r\n{}\r\n0\r\n\r\n",
    "broken-request-line": b"GET\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys())
async def test_framework_refusals_of_malformed_http_are_json_errors(base_url, request_bytes):
    status_line, headers, body = await raw_exchange(base_url, request_bytes)
    assert status_line.split()[1].startswith(b"4"), status_line
    assert headers["content-type"].startswith("application/json"), headers
    answer = json.loads(body[: int(headers["content-length"])])
    assert answer["error"]["code"] == "bad_request" and answer["error"]["message"]


class FakeTransport:
    """The client's side of the connection as the middleware sees it: open, or already closing."""

    def __init__(self, closing: bool) -> None:
        self.closing = closing
        self.aborted = False

    def is_closing(self) -> bool:
        return self.closing or self.aborted

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name, default=None):
        return default


def request_on(transport: FakeTransport):
    return make_mocked_request("POST", "/api/v1/backups/x/years/2018/versions", transport=transport)


async def test_only_a_closed_connection_counts_as_the_client_going_away(caplog):
    async def reset(request):
        raise ConnectionResetError("Connection lost")

    with caplog.at_level(logging.INFO, logger="eacct"), pytest.raises(ConnectionResetError):
        await error_middleware(request_on(FakeTransport(closing=True)), reset)
    assert "connection lost" in caplog.text
    caplog.clear()
    # The same error from another socket (the database, object storage) while the client waits is a 503.
    with caplog.at_level(logging.INFO, logger="eacct"):
        answer = await error_middleware(request_on(FakeTransport(closing=False)), reset)
    assert answer.status == 503 and json.loads(answer.body)["error"]["code"] == "storage_unavailable"
    assert "connection lost" not in caplog.text


async def test_an_exhausted_database_pool_is_503_busy_not_500(desktop, engine, monkeypatch, caplog):
    member = await desktop("poolbusy", "小池")
    pool_class = type(engine.sync_engine.pool)

    def exhausted(self):
        # What the pool raises when every connection stayed checked out for its whole wait.
        raise sa_exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00")

    monkeypatch.setattr(pool_class, "_do_get", exhausted)
    with caplog.at_level(logging.WARNING, logger="eacct"):
        status, body, headers = await member.call("GET", "/me")
    assert status == 503 and body["error"]["code"] == "busy" and body["error"]["message"]
    assert headers["Retry-After"] == "1"
    assert any("pool exhausted or connection lost" in record.getMessage() for record in caplog.records)
    assert not any(record.levelno >= logging.ERROR for record in caplog.records)
    monkeypatch.undo()
    assert (await member.call("GET", "/me"))[0] == 200
