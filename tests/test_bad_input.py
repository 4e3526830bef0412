"""Bad input of every kind gets a 4xx with a JSON error, never a 500 and never a half-written state."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from urllib.parse import quote

import pytest

from tests.conftest import new_ledger_id

JUNK_BODIES = [
    b"", b"null", b"[]", b'"text"', b"12", b"{", b'{"a": 1}', b"\xff\xfe\x00", b'{"account": null}',
    json.dumps({"account": ["x"], "password": {"a": 1}, "nickname": 3}).encode(),
    json.dumps({"password": "x" * 100_000}).encode(),
    json.dumps({"ledger_id": "../../etc/passwd", "friend_ids": [-1, 2**40]}).encode(),
    json.dumps({"questions": [{"question": "q", "answer": "a"}] * 50, "password": "123456"}).encode(),
    json.dumps({"answers": "not-a-list", "new_password": 1}).encode(),
]


async def test_every_api_route_answers_junk_with_a_4xx_json_error(desktop, http, base_url):
    member = await desktop("junk01", "小王")
    ledger = new_ledger_id()
    await member.upload("backups", ledger, 2018, b"content", name="L")
    async with http.get(base_url + "/api/v1/openapi.json") as response:
        document = await response.json()
    values = {"ledger_id": [ledger, "not-a-uuid", "..%2F..%2Fetc"], "year": ["2018", "99999", "-1"],
              "version_id": ["latest", "x" * 300], "member_id": ["1", "abc", "99999999999"],
              "share_id": ["nope", "x" * 100], "id": ["1", "-5", "abc"]}
    rng = random.Random(7)
    checked = 0
    for path, operations in document["paths"].items():
        for method in operations:
            for _ in range(4):
                concrete = path
                for name, choices in values.items():
                    concrete = concrete.replace("{" + name + "}", rng.choice(choices))
                body = rng.choice(JUNK_BODIES)
                for netdisk in (True, False):
                    async with http.request(method.upper(), base_url + concrete, data=body, headers={
                        **member.headers(netdisk), "Content-Type": "application/json",
                        "X-Content-SHA256": "zz", "X-Netdisk-Password": "wrong"}) as response:
                        assert response.status < 500, (method, concrete, body, await response.text())
                        if response.status >= 400:
                            answer = await response.json()
                            assert answer["error"]["code"] and answer["error"]["message"]
                        checked += 1
    assert checked > 100
    # Nothing the junk did changed the member's backup (the junk may have logged the member out).
    _, session, _ = await member.call("POST", "/sessions", json={"account": member.account, "password": member.password})
    member.token = session["token"]
    _, unlocked, _ = await member.call("POST", "/netdisk/unlock", json={"password": member.netdisk_password})
    member.netdisk_token = unlocked["netdisk_token"]
    status, content, _ = await member.download("backups", ledger, 2018)
    assert status == 200 and content == b"content"


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b", "a\\b", "..", "x" * 101, "\t", "名\x00字"])
async def test_path_tricks_in_ledger_names_are_refused(desktop, name):
    member = await desktop("trick01", "小王")
    ledger = new_ledger_id()
    status, body, _ = await member.upload("backups", ledger, 2018, b"content", name=name)
    assert status == 422 and body["error"]["code"] == "invalid", name
    await member.upload("backups", ledger, 2018, b"content", name="good")
    status, body, _ = await member.call("PATCH", f"/backups/{ledger}", netdisk=True, json={"name": name})
    assert status == 422, name


async def test_huge_headers_are_refused_with_a_4xx(desktop, base_url):
    member = await desktop("huge01", "小王")
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write((f"GET /api/v1/me HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {member.token}\r\n"
                  f"X-Huge: {'a' * 100_000}\r\n\r\n").encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.split()[1].startswith(b"4")


async def test_upload_with_more_bytes_than_announced_keeps_nothing(desktop, base_url):
    member = await desktop("more01", "小王")
    ledger = new_ledger_id()
    host, port = base_url.removeprefix("http://").split(":")
    content = b"x" * 1000
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write((f"POST /api/v1/backups/{ledger}/years/2018/versions HTTP/1.1\r\nHost: {host}\r\n"
                  f"Authorization: Bearer {member.netdisk_token}\r\nContent-Length: 10\r\n"
                  f"X-Content-SHA256: {hashlib.sha256(content[:10]).hexdigest()}\r\nX-Ledger-Name: L\r\n"
                  "Connection: close\r\n\r\n").encode() + content)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.split()[1].startswith(b"4")
    assert (await member.download("backups", ledger, 2018))[0] == 404


async def test_expect_continue_upload_goes_through(desktop, http, base_url):
    member = await desktop("cont01", "小王")
    ledger = new_ledger_id()
    content = b"ledger" * 10_000
    async with http.post(f"{base_url}/api/v1/backups/{ledger}/years/2018/versions", data=content, expect100=True,
                         headers=member.headers(True, **{"X-Content-SHA256": hashlib.sha256(content).hexdigest(),
                                                         "X-Ledger-Name": quote("账套"),
                                                         "Content-Type": "application/octet-stream"})) as response:
        assert response.status == 201, await response.text()
