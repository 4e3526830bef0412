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


# ---------------------------------------------------------------------------------- issue 7, items 7–10

YEAR_ROUTES = [
    ("GET", "/backups/{ledger}/years/{year}"),
    ("DELETE", "/backups/{ledger}/years/{year}"),
    ("GET", "/backups/{ledger}/years/{year}/versions/latest/content"),
    ("POST", "/backups/{ledger}/years/{year}/versions"),
    ("POST", "/backups/{ledger}/years/{year}/chunks/missing"),
    ("GET", "/cloud-shares/{ledger}/years/{year}/versions/latest/content"),
    ("POST", "/cloud-shares/{ledger}/years/{year}/versions"),
    ("POST", "/cloud-shares/{ledger}/years/{year}/chunks/missing"),
]
NOT_ASCII_YEARS = ["¹", "２０１８", "٢٠١٨", "२०१८", "2018\n", "1" * 5000]


@pytest.fixture
async def owner_with_2018(desktop):
    """A member whose ledger has a 2018 version, so a year that were read as 2018 would find it."""
    member = await desktop("digits1", "小王")
    ledger = new_ledger_id()
    status, _, _ = await member.upload("backups", ledger, 2018, b"content", name="L")
    assert status == 201
    return member, ledger


@pytest.mark.parametrize("method, route", YEAR_ROUTES)
async def test_year_in_path_is_ascii_digits_only(owner_with_2018, method, route):
    member, ledger = owner_with_2018
    for year in NOT_ASCII_YEARS:
        path = route.format(ledger=ledger, year=quote(year, safe=""))
        status, body, _ = await member.call(method, path, netdisk=True, json={"chunks": []} if "chunks" in path else None,
                                            headers={"X-Content-SHA256": "0" * 64, "X-Netdisk-Password": "x"})
        assert status == 422 and body["error"]["code"] == "invalid_year", (year, status, body)


@pytest.mark.parametrize("method, route", [("DELETE", "/friends/{}"), ("POST", "/messages/{}/read")])
async def test_numeric_ids_in_path_are_ascii_digits_only(desktop, method, route):
    member = await desktop("digits2", "小王", netdisk=False)
    for value in ["¹", "①", "２", "٣", "7７", "१"]:
        status, body, _ = await member.call(method, route.format(quote(value, safe="")))
        assert status == 422 and body["error"]["code"] == "invalid", (value, status, body)
    for value in ["1" * 5000, "7\n", "-1", "abc"]:  # plain ASCII that names no id (existing rule: 404)
        status, body, _ = await member.call(method, route.format(quote(value, safe="")))
        assert status == 404 and body["error"]["code"] == "not_found", (value, status, body)


@pytest.mark.parametrize("range_header, status, content", [
    # Not ASCII digits: not a range this server knows, so the whole content (RFC 9110 allows ignoring Range).
    ("bytes=¹-", 200, b"content"), ("bytes=0-²", 200, b"content"), ("bytes=-³", 200, b"content"),
    ("bytes=２-", 200, b"content"), ("bytes=0-٣", 200, b"content"),
    # Thousands of digits: positions beyond any version.
    (f"bytes={'9' * 5000}-", 416, None), (f"bytes=0-{'9' * 5000}", 206, b"content"),
    (f"bytes=-{'9' * 5000}", 206, b"content"), (f"bytes={'0' * 5000}1-", 206, b"ontent"),
])
async def test_range_header_numbers_are_ascii_and_any_length(owner_with_2018, range_header, status, content):
    member, ledger = owner_with_2018
    answer_status, answer, headers = await member.download("backups", ledger, 2018, headers={"Range": range_header})
    assert answer_status == status, (answer_status, answer)
    if status == 416:
        assert headers["Content-Range"] == "bytes */7" and json.loads(answer)["error"]["code"] == "range_not_satisfiable"
    else:
        assert answer == content


async def test_archive_size_header_is_ascii_digits_only(owner_with_2018):
    member, ledger = owner_with_2018
    for size in ("¹", "２", "1" * 5000):
        status, body, _ = await member.call(
            "POST", f"/backups/{ledger}/years/2018/versions", netdisk=True, data=b"x",
            headers={"Content-Type": "application/x-eacct-delta", "X-Archive-Size": size, "X-Content-SHA256": "0" * 64})
        assert status == 422 and body["error"]["code"] == "invalid", (size, status, body)


# Every endpoint that reads a JSON body, with what it needs to get as far as parsing it.
JSON_ROUTES = [
    ("POST", "/members", False), ("POST", "/sessions", False), ("PATCH", "/me", False), ("POST", "/netdisk", False),
    ("POST", "/netdisk/unlock", False), ("POST", "/netdisk/reset", False), ("PUT", "/netdisk/password", False),
    ("PATCH", "/backups/{ledger}", True), ("POST", "/backups/{ledger}/years/2018/chunks/missing", True),
    ("POST", "/cloud-shares/{ledger}/years/2018/chunks/missing", True), ("POST", "/friends", False),
    ("POST", "/shares", False),
]
HOSTILE_JSON = {
    "nested-1000": b'{"password": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "nested-100000": b'{"password": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nested-objects": b'{"a": ' * 5000 + b"1" + b"}" * 5000,
    "int-4300-digits": b'{"friend_ids": [' + b"7" * 4301 + b'], "password": 1}',
    "int-50000-digits": b'{"password": ' + b"1" * 50_000 + b"}",
    "lone-surrogate": b'{"account": "\\ud800", "password": "\\udfff-secret", "nickname": "\\ud800",'
                      b' "name": "\\ud800", "chunks": ["\\ud800"]}',
    "surrogate-key": b'{"\\ud800": 1}',
}


@pytest.mark.parametrize("method, route, netdisk", JSON_ROUTES)
async def test_hostile_json_is_a_4xx_on_every_json_endpoint(owner_with_2018, method, route, netdisk):
    member, ledger = owner_with_2018
    for name, body in HOSTILE_JSON.items():
        status, answer, _ = await member.call(method, route.format(ledger=ledger), netdisk=netdisk, data=body,
                                              headers={"Content-Type": "application/json"})
        assert status in (400, 422), (name, status, answer)
        assert answer["error"]["code"] in ("bad_request", "invalid"), name


async def test_lone_surrogate_in_login_is_a_4xx_and_the_account_still_logs_in(desktop):
    member = await desktop("surro01", "小王", netdisk=False)
    for body in (b'{"account": "surro01", "password": "\\ud800"}', b'{"account": "\\udc00", "password": "x"}'):
        status, answer, _ = await member.call("POST", "/sessions", data=body, headers={"Content-Type": "application/json"})
        assert status == 400 and answer["error"]["code"] == "bad_request", (status, answer)
    status, _, _ = await member.call("POST", "/sessions", json={"account": member.account, "password": member.password})
    assert status == 201


UNSAFE_TEXT = {
    "rlo": "账\u202e套", "lre": "a\u202ab", "pdf": "a\u202cb", "lri": "a\u2066b", "pdi": "a\u2069b", "fsi": "a\u2068b",
    "nul": "a\x00b", "esc": "a\x1bb", "del": "a\x7fb", "c1-nel": "a\x85b", "line-separator": "a\u2028b",
    "paragraph-separator": "a\u2029b",
}


@pytest.mark.parametrize("method, path, field", [
    ("POST", "/members", "nickname"), ("PATCH", "/me", "nickname"), ("POST", "/friends", "nickname"),
    ("POST", "/netdisk", "question"),
])
async def test_nickname_and_question_with_control_or_bidi_characters_are_422(desktop, method, path, field):
    member = await desktop("bidi001", "小王", netdisk=False)
    for name, text in UNSAFE_TEXT.items():
        body = {"nickname": text}
        if path == "/members":
            body = {"account": "bidi002", "password": "secret1", "nickname": text}
        elif path == "/friends":
            body = {"account": "bidi003", "nickname": text}
        elif path == "/netdisk":
            body = {"password": "disk-pass", "questions": [{"question": "我的出生地" + text, "answer": "杭州"}]}
        status, answer, _ = await member.call(method, path, json=body)
        assert status == 422 and answer["error"]["code"] == "invalid", (name, status, answer)


@pytest.mark.parametrize("side", ["backups", "cloud-shares"])
async def test_ledger_name_and_remark_with_control_or_bidi_characters_are_422(desktop, side):
    owner = await desktop("bidi005", "小王")
    ledger = new_ledger_id()
    assert (await owner.upload("backups", ledger, 2018, b"content", name="好账套"))[0] == 201
    uploader = owner
    if side == "cloud-shares":
        from tests.share.conftest import befriend, share
        uploader = await desktop("bidi006", "小李")
        await befriend(owner, uploader)
        await share(owner, ledger, uploader)
    for name, text in UNSAFE_TEXT.items():
        status, body, _ = await owner.upload("backups", new_ledger_id(), 2018, b"content", name=text)
        assert status == 422 and body["error"]["code"] == "invalid", (name, body)
        status, body, _ = await owner.call("PATCH", f"/backups/{ledger}", netdisk=True, json={"name": text})
        assert status == 422 and body["error"]["code"] == "invalid", (name, body)
        status, body, _ = await uploader.upload(side, ledger, 2018, b"content 2", remark=text)
        assert status == 422 and body["error"]["code"] == "invalid", (name, body)
    status, content, headers = await owner.download("backups", ledger, 2018)
    assert status == 200 and content == b"content" and headers["X-Remark"] == ""


@pytest.mark.parametrize("header", ["X-Remark", "X-Ledger-Name", "X-Client-Version"])
async def test_bad_percent_escapes_in_text_headers_are_422(desktop, header):
    member = await desktop("pct0001", "小王")
    ledger = new_ledger_id()
    content = b"content"
    for raw in ["%ZZ", "%", "abc%2", "%G1x", "ok%E4%B8"]:
        status, body, _ = await member.call("POST", f"/backups/{ledger}/years/2018/versions", netdisk=True,
                                            data=content, headers={"X-Content-SHA256": hashlib.sha256(content).hexdigest(),
                                                                   "X-Ledger-Name": "L", header: raw})
        assert status == 422 and body["error"]["code"] == "invalid", (raw, status, body)
    assert (await member.download("backups", ledger, 2018))[0] == 404
