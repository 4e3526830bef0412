"""Cloud backup over HTTP: upload, list, download, ranges, conflicts, quota, deletions (API.md, rules 7, 8, 15–17)."""

from __future__ import annotations

import asyncio
import os
import socket
from urllib.parse import quote, unquote

import pytest

from tests.conftest import new_ledger_id, sha
from tests.netdisk.ledgers import make_year_archive


async def test_upload_then_list_then_download_roundtrip(desktop, data_dir):
    owner = await desktop("13564271675", "小王")
    ledger = new_ledger_id()
    archive = make_year_archive(data_dir, rows=2000)
    status, version, _ = await owner.upload("backups", ledger, 2018, archive, remark="2018年1期", name="123")
    assert status == 201, version
    assert version["via"] == "backup" and version["remark"] == "2018年1期" and version["size"] == len(archive)
    assert version["sha256"] == sha(archive) and version["uploaded_by"]["id"] == owner.id
    assert version["client_version"] == "e会计 6.0"

    status, listing, _ = await owner.call("GET", "/backups", netdisk=True)
    assert status == 200
    [entry] = listing["ledgers"]
    assert entry["ledger_id"] == ledger and entry["name"] == "123" and entry["owner"]["id"] == owner.id
    assert entry["years"] == [{"year": 2018, "latest": version, "versions_count": 1}]

    status, content, headers = await owner.download("backups", ledger, 2018)
    assert status == 200 and content == archive
    assert headers["ETag"] == f'"{sha(archive)}"' and headers["X-Content-SHA256"] == sha(archive)
    assert unquote(headers["X-Remark"]) == "2018年1期" and int(headers["Content-Length"]) == len(archive)
    assert unquote(headers["X-Client-Version"]) == "e会计 6.0"


async def test_rule_8_empty_netdisk_list_is_an_empty_list(desktop):
    owner = await desktop("empty01", "小李")
    status, listing, _ = await owner.call("GET", "/backups", netdisk=True)
    assert status == 200 and listing == {"ledgers": []}


async def test_range_download(desktop):
    owner = await desktop("range01", "小王")
    ledger = new_ledger_id()
    content = os.urandom(300_000)
    await owner.upload("backups", ledger, 2020, content, name="R")
    for header, expected in (("bytes=0-99", content[:100]), ("bytes=1000-", content[1000:]),
                             ("bytes=-500", content[-500:]), ("bytes=100000-200001", content[100000:200002])):
        status, body, headers = await owner.download("backups", ledger, 2020, headers={"Range": header})
        assert status == 206 and body == expected, header
        assert headers["Content-Range"].endswith(f"/{len(content)}")
    status, _, headers = await owner.download("backups", ledger, 2020, headers={"Range": "bytes=999999-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(content)}"


async def test_rule_15_versions_are_kept_and_any_can_be_restored(desktop):
    owner = await desktop("keep01", "小王")
    ledger = new_ledger_id()
    contents = [os.urandom(5000) for _ in range(3)]
    ids = []
    for index, content in enumerate(contents):
        status, version, _ = await owner.upload("backups", ledger, 2019, content, name="L", remark=f"2019年{index + 1}期")
        assert status == 201
        ids.append(version["version_id"])
    status, year, _ = await owner.call("GET", f"/backups/{ledger}/years/2019", netdisk=True)
    assert [v["version_id"] for v in year["versions"]] == ids[::-1]
    for version_id, content in zip(ids, contents):
        assert (await owner.download("backups", ledger, 2019, version_id))[1] == content


async def test_rule_15_retention_keeps_the_newest_ten(desktop):
    owner = await desktop("keep02", "小王")
    ledger = new_ledger_id()
    ids = []
    for index in range(12):
        status, version, _ = await owner.upload("backups", ledger, 2019, os.urandom(2000) + bytes([index]), name="L")
        assert status == 201
        ids.append(version["version_id"])
    status, year, _ = await owner.call("GET", f"/backups/{ledger}/years/2019", netdisk=True)
    assert [v["version_id"] for v in year["versions"]] == ids[::-1][:10]
    assert (await owner.download("backups", ledger, 2019, ids[0]))[0] == 404


async def test_rule_16_if_match_conflict_is_412_and_names_the_newer_version(desktop):
    owner = await desktop("match01", "小王")
    ledger = new_ledger_id()
    _, first, _ = await owner.upload("backups", ledger, 2018, b"first", name="L")
    _, second, _ = await owner.upload("backups", ledger, 2018, b"second", if_match=first["version_id"])
    status, body, _ = await owner.upload("backups", ledger, 2018, b"third", if_match=first["version_id"])
    assert status == 412 and body["error"]["code"] == "version_conflict"
    assert body["error"]["latest_version_id"] == second["version_id"]
    assert (await owner.download("backups", ledger, 2018))[1] == b"second"


async def test_rule_16_two_concurrent_uploads_with_the_same_if_match_exactly_one_wins(desktop):
    owner = await desktop("match02", "小王")
    ledger = new_ledger_id()
    _, base, _ = await owner.upload("backups", ledger, 2018, os.urandom(1000), name="L")
    contents = [os.urandom(3 * 1024 * 1024) for _ in range(2)]
    results = await asyncio.gather(*[
        owner.upload("backups", ledger, 2018, content, if_match=base["version_id"]) for content in contents
    ])
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201, 412]
    winner = next(content for content, (status, _, _) in zip(contents, results) if status == 201)
    assert (await owner.download("backups", ledger, 2018))[1] == winner
    _, year, _ = await owner.call("GET", f"/backups/{ledger}/years/2018", netdisk=True)
    assert len(year["versions"]) == 2


async def test_checksum_mismatch_keeps_nothing_and_charges_nothing(desktop):
    owner = await desktop("sum01", "小王")
    ledger = new_ledger_id()
    status, body, _ = await owner.upload("backups", ledger, 2018, os.urandom(200_000), name="L", sha256="0" * 64)
    assert status == 400 and body["error"]["code"] == "checksum_mismatch"
    _, disk, _ = await owner.call("GET", "/netdisk")
    assert disk["used_bytes"] == 0
    _, listing, _ = await owner.call("GET", "/backups", netdisk=True)
    assert listing == {"ledgers": []}


async def test_rule_7_quota_counts_distinct_chunks_once(desktop):
    owner = await desktop("quota01", "小王")
    content = os.urandom(400_000)
    await owner.upload("backups", new_ledger_id(), 2018, content, name="A")
    _, disk, _ = await owner.call("GET", "/netdisk")
    assert disk["used_bytes"] == len(content)
    await owner.upload("backups", new_ledger_id(), 2018, content, name="B")
    _, disk, _ = await owner.call("GET", "/netdisk")
    assert disk["used_bytes"] == len(content)
    assert disk["free_bytes"] == disk["quota_bytes"] - len(content)


@pytest.fixture
def small_quota(settings):
    return settings.with_overrides(netdisk_quota_bytes=1_000_000)


async def test_rule_7_quota_exceeded_is_refused_before_the_body(make_server, small_quota, blobs, http):
    from tests.conftest import Desktop

    base_url = await make_server(small_quota, blobs)
    owner = await (await Desktop(http, base_url, "quota02", "小王").register()).open_netdisk()
    ledger = new_ledger_id()
    host, port = base_url.removeprefix("http://").split(":")
    # Announce 5 MB but send no body: the answer must come from the headers alone.
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write((
        f"POST /api/v1/backups/{ledger}/years/2018/versions HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {owner.netdisk_token}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: 5000000\r\nX-Content-SHA256: {'a' * 64}\r\nX-Ledger-Name: L\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 413")
    length = int([line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0].split(b":")[1])
    import json

    error = json.loads(await reader.readexactly(length))["error"]
    writer.close()
    assert error["code"] == "quota_exceeded" and error["needed_bytes"] == 5_000_000
    assert error["free_bytes"] == 1_000_000
    _, disk, _ = await owner.call("GET", "/netdisk")
    assert disk["used_bytes"] == 0


async def test_rule_7_quota_is_enforced_while_streaming_when_dedup_was_assumed(make_server, small_quota, blobs, http):
    from tests.conftest import Desktop

    base_url = await make_server(small_quota, blobs)
    owner = await (await Desktop(http, base_url, "quota03", "小王").register()).open_netdisk()
    ledger = new_ledger_id()
    assert (await owner.upload("backups", ledger, 2018, os.urandom(600_000), name="L"))[0] == 201
    # Same size as the kept version, so the header check hopes for reuse; the bytes are all new.
    status, body, _ = await owner.upload("backups", ledger, 2018, os.urandom(600_000))
    assert status == 413 and body["error"]["code"] == "quota_exceeded"
    _, disk, _ = await owner.call("GET", "/netdisk")
    assert disk["used_bytes"] == 600_000


async def test_invalid_year_and_bad_ledger_id_are_422(desktop):
    owner = await desktop("year01", "小王")
    for year in ("1989", "2101", "20x8", "-5"):
        status, body, _ = await owner.upload("backups", new_ledger_id(), year, b"x", name="L")
        assert status == 422 and body["error"]["code"] == "invalid_year", year
    status, body, _ = await owner.upload("backups", "not-a-uuid", 2018, b"x", name="L")
    assert status == 422 and body["error"]["code"] == "invalid"


async def test_first_upload_needs_a_ledger_name(desktop):
    owner = await desktop("name01", "小王")
    status, body, _ = await owner.upload("backups", new_ledger_id(), 2018, b"data")
    assert status == 422 and body["error"]["code"] == "invalid"


async def test_upload_header_errors_are_4xx(desktop):
    owner = await desktop("head01", "小王")
    ledger = new_ledger_id()
    path = f"/backups/{ledger}/years/2018/versions"
    status, body, _ = await owner.call("POST", path, netdisk=True, data=b"x", headers={"X-Ledger-Name": "L"})
    assert status == 422  # no checksum
    status, body, _ = await owner.call("POST", path, netdisk=True, data=b"x", headers={
        "X-Ledger-Name": "%FF%FE", "X-Content-SHA256": sha(b"x")})
    assert status == 422
    status, body, _ = await owner.call("POST", path, netdisk=True, data=b"x", headers={
        "X-Ledger-Name": "L", "X-Content-SHA256": sha(b"x"), "If-Match": "no-quotes"})
    assert status == 422
    status, body, _ = await owner.call("POST", path, netdisk=True, data=b"x", headers={
        "X-Ledger-Name": "L", "X-Content-SHA256": sha(b"x"), "X-Remark": quote("备" * 201)})
    assert status == 422


async def test_session_token_where_netdisk_token_is_needed(desktop):
    owner = await desktop("tok01", "小王")
    status, body, _ = await owner.call("GET", "/backups")
    assert status == 401 and body["error"]["code"] == "netdisk_token_required"


async def test_rule_17_delete_year_needs_password_and_leaves_a_record(desktop):
    owner = await desktop("del01", "小王")
    ledger = new_ledger_id()
    content = os.urandom(50_000)
    await owner.upload("backups", ledger, 2017, content, name="账套123")
    await owner.upload("backups", ledger, 2018, os.urandom(50_000))
    path = f"/backups/{ledger}/years/2017"
    status, body, _ = await owner.call("DELETE", path, netdisk=True)
    assert status == 401
    status, body, _ = await owner.call("DELETE", path, netdisk=True, headers={"X-Netdisk-Password": "wrong"})
    assert status == 401 and body["error"]["code"] == "bad_netdisk_password"
    status, _, _ = await owner.call("DELETE", path, netdisk=True, headers={"X-Netdisk-Password": owner.netdisk_password})
    assert status == 204
    _, disk, _ = await owner.call("GET", "/netdisk")
    assert disk["used_bytes"] == 50_000
    _, ledger_view, _ = await owner.call("GET", f"/backups/{ledger}", netdisk=True)
    assert [y["year"] for y in ledger_view["years"]] == [2018]
    _, records, _ = await owner.call("GET", "/netdisk/deletions")
    [record] = records["deletions"]
    assert record["ledger_id"] == ledger and record["ledger_name"] == "账套123" and record["year"] == 2017
    assert record["ip"] == "127.0.0.1" and record["deleted_at"].endswith("Z")


async def test_rule_17_delete_ledger_releases_quota_and_leaves_a_record(desktop):
    owner = await desktop("del02", "小王")
    ledger = new_ledger_id()
    await owner.upload("backups", ledger, 2018, os.urandom(70_000), name="L")
    status, _, _ = await owner.call("DELETE", f"/backups/{ledger}", netdisk=True,
                                    headers={"X-Netdisk-Password": owner.netdisk_password})
    assert status == 204
    _, disk, _ = await owner.call("GET", "/netdisk")
    assert disk["used_bytes"] == 0
    assert (await owner.call("GET", f"/backups/{ledger}", netdisk=True))[0] == 404
    _, records, _ = await owner.call("GET", "/netdisk/deletions")
    assert records["deletions"][0]["year"] is None


async def test_rename_ledger(desktop):
    owner = await desktop("ren01", "小王")
    ledger = new_ledger_id()
    await owner.upload("backups", ledger, 2018, b"abc", name="old")
    status, body, _ = await owner.call("PATCH", f"/backups/{ledger}", netdisk=True, json={"name": "新名字"})
    assert status == 200 and body["name"] == "新名字"


async def test_lost_connection_mid_upload_leaves_old_version_and_quota(desktop, base_url, blobs):
    owner = await desktop("lost01", "小王")
    ledger = new_ledger_id()
    old = os.urandom(100_000)
    await owner.upload("backups", ledger, 2018, old, name="L")
    _, before, _ = await owner.call("GET", "/netdisk")

    size = 50 * 1024 * 1024
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall((
        f"POST /api/v1/backups/{ledger}/years/2018/versions HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {owner.netdisk_token}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {size}\r\nX-Content-SHA256: {'b' * 64}\r\n\r\n"
    ).encode())
    block = os.urandom(1024 * 1024)
    loop = asyncio.get_running_loop()
    for _ in range(30):
        await loop.run_in_executor(None, sock.sendall, block)
    sock.close()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if not any(blobs.spool_dir().iterdir()):
            break
    _, after, _ = await owner.call("GET", "/netdisk")
    assert after["used_bytes"] == before["used_bytes"]
    _, year, _ = await owner.call("GET", f"/backups/{ledger}/years/2018", netdisk=True)
    assert len(year["versions"]) == 1
    assert (await owner.download("backups", ledger, 2018))[1] == old
    assert not any(blobs.spool_dir().iterdir())


async def test_download_if_none_match_is_304(desktop):
    owner = await desktop("etag01", "小王")
    ledger = new_ledger_id()
    content = b"ledger-bytes" * 100
    await owner.upload("backups", ledger, 2018, content, name="L")
    status, _, _ = await owner.download("backups", ledger, 2018, headers={"If-None-Match": f'"{sha(content)}"'})
    assert status == 304


async def test_unknown_version_and_year_are_404(desktop):
    owner = await desktop("nf01", "小王")
    ledger = new_ledger_id()
    await owner.upload("backups", ledger, 2018, b"abc", name="L")
    assert (await owner.download("backups", ledger, 2018, "nope"))[0] == 404
    assert (await owner.download("backups", ledger, 2019))[0] == 404
    assert (await owner.call("GET", f"/backups/{ledger}/years/2019", netdisk=True))[0] == 404
    assert (await owner.call("GET", f"/backups/{new_ledger_id()}", netdisk=True))[0] == 404


@pytest.mark.parametrize("trusted, forwarded, recorded", [
    ("", "203.0.113.9", "127.0.0.1"),  # nobody trusted: a forwarded header is not believed
    ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
    ("127.0.0.0/8, 10.0.0.0/8", "198.51.100.7, 203.0.113.9, 10.1.2.3", "203.0.113.9"),
])
async def test_rule_17_deletion_record_ip_behind_trusted_proxies(make_server, settings, blobs, http, trusted,
                                                                 forwarded, recorded):
    from tests.conftest import Desktop

    base_url = await make_server(settings.with_overrides(trusted_proxies=trusted), blobs)
    owner = await (await Desktop(http, base_url, "proxy01", "小王").register()).open_netdisk()
    ledger = new_ledger_id()
    await owner.upload("backups", ledger, 2018, b"abc", name="L")
    status, _, _ = await owner.call("DELETE", f"/backups/{ledger}", netdisk=True, headers={
        "X-Netdisk-Password": owner.netdisk_password, "X-Forwarded-For": forwarded})
    assert status == 204
    _, records, _ = await owner.call("GET", "/netdisk/deletions")
    assert records["deletions"][0]["ip"] == recorded


async def test_rule_15_too_many_versions_is_413_before_the_body(make_server, settings, blobs, http):
    from tests.conftest import Desktop

    base_url = await make_server(settings.with_overrides(max_versions_per_member=2), blobs)
    owner = await (await Desktop(http, base_url, "cap01", "小王").register()).open_netdisk()
    for year in (2017, 2018):
        assert (await owner.upload("backups", new_ledger_id(), year, os.urandom(1000), name="L"))[0] == 201
    status, body, _ = await owner.upload("backups", new_ledger_id(), 2019, os.urandom(1000), name="L")
    assert status == 413 and body["error"]["code"] == "too_many_versions"
    _, listing, _ = await owner.call("GET", "/backups", netdisk=True)
    assert len(listing["ledgers"]) == 2


async def test_item_15_netdisk_password_header_is_percent_encoded_utf8(desktop):
    owner = await desktop("del05", "小王", netdisk=False)
    owner.netdisk_password = "云盘-pass-1"
    await owner.open_netdisk()
    ledger = new_ledger_id()
    await owner.upload("backups", ledger, 2017, os.urandom(20_000), name="账套123")
    await owner.upload("backups", ledger, 2018, os.urandom(20_000))
    status, body, _ = await owner.call("DELETE", f"/backups/{ledger}/years/2017", netdisk=True,
                                       headers={"X-Netdisk-Password": quote("云盘-pass-1", safe="")})
    assert status == 204, body
    # Malformed escapes are refused as bad input, not compared as a (wrong) password.
    for malformed in ("%ZZ", "abc%", "%E4%BA"):
        status, body, _ = await owner.call("DELETE", f"/backups/{ledger}", netdisk=True,
                                           headers={"X-Netdisk-Password": malformed})
        assert status == 422 and body["error"]["code"] == "invalid", malformed
    status, _, _ = await owner.call("DELETE", f"/backups/{ledger}", netdisk=True,
                                    headers={"X-Netdisk-Password": quote("云盘-pass-1", safe="")})
    assert status == 204
