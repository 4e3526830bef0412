"""The HTTP edge (eacct/web.py): how failures and framework refusals leave the server (issue 7, items 6 and 10)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os

import pytest

from eacct.netdisk import store
from tests.conftest import new_ledger_id


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


async def test_full_disk_during_upload_is_503_storage_unavailable_not_connection_lost(desktop, monkeypatch, caplog):
    member = await desktop("enospc1", "小王")
    ledger = new_ledger_id()
    before = (await member.call("GET", "/netdisk"))[1]["used_bytes"]
    # The upload's spool (compressed chunks on their way to becoming a pack) hits a full disk.
    monkeypatch.setattr(store._PackWriter, "append", disk_full)

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
