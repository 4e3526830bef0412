"""我的云共享 and 上传云共享: the recipient's side (DESIGN.md rules 12, 13, with 7 and 16; API.md)."""

from __future__ import annotations

import os
from urllib.parse import quote, unquote

from tests.conftest import Desktop, new_ledger_id, sha
from tests.share.conftest import (
    befriend, blob_keys, cloud_shares, committed_pack_keys, error_code, messages, pending_packs, share, used_bytes,
    versions_of,
)


async def test_rule_12_cloud_share_lists_sharers_then_ledgers_then_years_and_versions(desktop, world):
    owner, li = world.owner, world.recipient
    second_owner = await desktop("13800000006", "老周")
    unshared = new_ledger_id()
    assert (await owner.upload("backups", unshared, 2018, b"private", name="私人账套"))[0] == 201
    _, newer, _ = await owner.upload("backups", world.ledger, 2018, os.urandom(3000), remark="2018年2期")
    theirs = new_ledger_id()
    _, their_version, _ = await second_owner.upload("backups", theirs, 2020, b"zhou's books", name="周记账套",
                                                    remark="2020年3期")
    await befriend(second_owner, li)
    [their_share] = await share(second_owner, theirs, li)
    another = new_ledger_id()
    _, another_version, _ = await owner.upload("backups", another, 2016, b"old books", name="0号账套")
    [another_share] = await share(owner, another, li)

    sharers = await cloud_shares(li)
    assert [s["member"] for s in sharers] == [
        {"id": owner.id, "account": owner.account, "nickname": "小王"},
        {"id": second_owner.id, "account": second_owner.account, "nickname": "老周"},
    ]
    # Per sharer, the ledgers shared with me by name; the unshared one is not there.
    first, ledger = sharers[0]["ledgers"]
    assert first == {"ledger_id": another, "name": "0号账套", "since": another_share["since"],
                     "years": [{"year": 2016, "versions": [another_version]}]}
    assert ledger["ledger_id"] == world.ledger and ledger["name"] == "123"
    assert ledger["years"] == [
        {"year": 2017, "versions": [world.versions[2017]]},
        {"year": 2018, "versions": [newer, world.versions[2018]]},  # newest first
    ]
    shown = ledger["years"][1]["versions"][1]
    assert (shown["year"], shown["remark"], shown["size"], shown["uploaded_by"]["nickname"]) == (
        2018, "2018年1期", len(world.contents[2018]), "小王")
    assert sharers[1]["ledgers"] == [{"ledger_id": theirs, "name": "周记账套", "since": their_share["since"],
                                      "years": [{"year": 2020, "versions": [their_version]}]}]
    # A recipient's own cloud backup stays their own: the shared ledgers are not in it.
    assert (await li.call("GET", "/backups", netdisk=True))[1] == {"ledgers": []}


async def test_rule_12_download_one_year_at_a_time_any_kept_version(world):
    owner, li = world.owner, world.recipient
    _, newer, _ = await owner.upload("backups", world.ledger, 2018, b"closed through period 2", remark="2018年2期")
    status, content, headers = await li.download("cloud-shares", world.ledger, 2018)
    assert status == 200 and content == b"closed through period 2"
    assert headers["X-Version-Id"] == newer["version_id"] and unquote(headers["X-Remark"]) == "2018年2期"
    status, content, headers = await li.download("cloud-shares", world.ledger, 2018, world.versions[2018]["version_id"])
    assert status == 200 and content == world.contents[2018]
    assert headers["ETag"] == f'"{sha(content)}"' and int(headers["Content-Length"]) == len(content)
    status, content, _ = await li.download("cloud-shares", world.ledger, 2017)
    assert status == 200 and content == world.contents[2017]
    # A version id belongs to its year; an unknown year or version is not found.
    for year, version in ((2017, world.versions[2018]["version_id"]), (2019, "latest"), (2018, "nope")):
        status, body, _ = await li.download("cloud-shares", world.ledger, year, version)
        assert status == 404 and error_code(body) == "not_found", (year, version)
    status, part, _ = await li.download("cloud-shares", world.ledger, 2017, headers={"Range": "bytes=100-199"})
    assert status == 206 and part == world.contents[2017][100:200]


async def test_rule_13_upload_lands_in_the_owners_backup_as_the_recipients_version_via_share(world):
    owner, li = world.owner, world.recipient
    owner_used, li_used = await used_bytes(owner), await used_bytes(li)
    changed = os.urandom(50_000)
    status, version, _ = await li.upload("cloud-shares", world.ledger, 2018, changed, remark="2018年4期",
                                         client_version="e会计 6.1")
    assert status == 201, version
    assert version["via"] == "share" and version["remark"] == "2018年4期" and version["client_version"] == "e会计 6.1"
    assert version["uploaded_by"] == {"id": li.id, "account": li.account, "nickname": "小李"}
    assert version["ledger_id"] == world.ledger and version["year"] == 2018 and version["size"] == len(changed)
    assert [v["version_id"] for v in await versions_of(owner, world.ledger, 2018)] == [
        version["version_id"], world.versions[2018]["version_id"]]
    status, content, _ = await owner.download("backups", world.ledger, 2018)
    assert status == 200 and content == changed
    # Rule 7: it counts against the owner's quota, not the recipient's.
    assert await used_bytes(owner) == owner_used + len(changed)
    assert await used_bytes(li) == li_used == 0
    assert (await li.call("GET", "/backups", netdisk=True))[1] == {"ledgers": []}
    # The recipient sees it in 我的云共享 as the newest version.
    assert (await cloud_shares(li))[0]["ledgers"][0]["years"][1]["versions"][0] == version


async def test_rule_13_recipient_can_upload_a_year_the_owner_has_not_yet(world):
    status, version, _ = await world.recipient.upload("cloud-shares", world.ledger, 2019, b"next year", remark="2019年1期")
    assert status == 201 and version["via"] == "share"
    [only] = await versions_of(world.owner, world.ledger, 2019)
    assert only == version


async def test_rule_13_recipient_upload_does_not_rename_the_owners_ledger(world):
    status, _, _ = await world.recipient.upload("cloud-shares", world.ledger, 2018, b"edited", name="小李的账套")
    assert status == 201
    status, ledger, _ = await world.owner.call("GET", f"/backups/{world.ledger}", netdisk=True)
    assert ledger["name"] == "123"


async def test_rule_13_recipient_upload_with_a_stale_if_match_is_a_conflict(world):
    owner, li = world.owner, world.recipient
    started_from = world.versions[2018]["version_id"]
    _, newer, _ = await owner.upload("backups", world.ledger, 2018, b"owner kept working", if_match=started_from)
    used = await used_bytes(owner)
    status, body, _ = await li.upload("cloud-shares", world.ledger, 2018, b"recipient's edit", if_match=started_from)
    assert status == 412 and error_code(body) == "version_conflict"
    assert body["error"]["latest_version_id"] == newer["version_id"]
    assert [v["version_id"] for v in await versions_of(owner, world.ledger, 2018)] == [newer["version_id"], started_from]
    assert await used_bytes(owner) == used
    # Starting from the newest version, the same upload goes through.
    status, body, _ = await li.upload("cloud-shares", world.ledger, 2018, b"recipient's edit", if_match=newer["version_id"])
    assert status == 201 and body["via"] == "share"


async def test_rule_13_checksum_mismatch_keeps_nothing(world, sessions, blobs):
    owner, li = world.owner, world.recipient
    used = await used_bytes(owner)
    status, body, _ = await li.upload("cloud-shares", world.ledger, 2018, os.urandom(2_500_000), sha256="0" * 64)
    assert status == 400 and error_code(body) == "checksum_mismatch"
    assert len(await versions_of(owner, world.ledger, 2018)) == 1
    assert await used_bytes(owner) == used
    assert await pending_packs(sessions) == 0 and await blob_keys(blobs) == await committed_pack_keys(sessions)
    assert [m["title"] for m in (await messages(owner))["messages"]] == []


async def test_rule_7_recipient_upload_is_refused_when_the_owners_quota_is_full(make_server, settings, blobs, http):
    base_url = await make_server(settings.with_overrides(netdisk_quota_bytes=1_000_000), blobs)
    owner = await (await Desktop(http, base_url, "13564271675", "小王").register()).open_netdisk()
    li = await (await Desktop(http, base_url, "13800000002", "小李").register()).open_netdisk()
    ledger = new_ledger_id()
    assert (await owner.upload("backups", ledger, 2017, os.urandom(700_000), name="123"))[0] == 201
    await befriend(owner, li)
    await share(owner, ledger, li)
    status, body, _ = await li.upload("cloud-shares", ledger, 2018, os.urandom(400_000))
    assert status == 413 and error_code(body) == "quota_exceeded"
    assert body["error"]["needed_bytes"] == 400_000 and body["error"]["free_bytes"] == 300_000
    assert await used_bytes(owner) == 700_000 and await used_bytes(li) == 0
    assert await versions_of(owner, ledger, 2018) == []
    # The recipient's own free space does not help; what fits in the owner's does go through.
    assert (await li.upload("cloud-shares", ledger, 2018, os.urandom(250_000)))[0] == 201
    assert await used_bytes(owner) == 950_000


async def test_rule_13_upload_headers_are_checked_on_the_share_side_too(world):
    li = world.recipient
    path = f"/cloud-shares/{world.ledger}/years/2018/versions"
    status, body, _ = await li.call("POST", path, netdisk=True, data=b"x")
    assert status == 422 and error_code(body) == "invalid"
    status, body, _ = await li.upload("cloud-shares", world.ledger, 1989, b"x")
    assert status == 422 and error_code(body) == "invalid_year"
    status, body, _ = await li.upload("cloud-shares", "not-a-uuid", 2018, b"x")
    assert status == 422 and error_code(body) == "invalid"
    status, body, _ = await li.call("POST", path, netdisk=True, data=b"x", headers={
        "X-Content-SHA256": sha(b"x"), "X-Remark": quote("备" * 201)})
    assert status == 422
    assert len(await versions_of(world.owner, world.ledger, 2018)) == 1


async def test_rule_12_cloud_share_needs_the_netdisk_password(world):
    li = world.recipient
    for method, path in (("GET", "/cloud-shares"),
                         ("GET", f"/cloud-shares/{world.ledger}/years/2018/versions/latest/content"),
                         ("POST", f"/cloud-shares/{world.ledger}/years/2018/versions")):
        status, body, _ = await li.call(method, path, netdisk=False)
        assert status == 401 and error_code(body) == "netdisk_token_required", path


async def test_item_16_recipient_uploads_never_evict_the_owners_own_latest_backup(world):
    owner, li = world.owner, world.recipient
    owners_own = world.versions[2018]
    for n in range(11):
        status, version, _ = await li.upload("cloud-shares", world.ledger, 2018, os.urandom(5_000), remark=f"第{n}次")
        assert status == 201, version
    kept = await versions_of(owner, world.ledger, 2018)
    kept_ids = [v["version_id"] for v in kept]
    assert owners_own["version_id"] in kept_ids
    # Ten newest plus the owner's own last backup; the oldest recipient upload made room.
    assert len(kept) == 11 and sum(v["via"] == "share" for v in kept) == 10
    status, content, _ = await owner.download("backups", world.ledger, 2018, owners_own["version_id"])
    assert status == 200 and content == world.contents[2018]
    # Once the owner backs up again, the new one is protected and the old one ages out like any other.
    status, newer, _ = await owner.upload("backups", world.ledger, 2018, os.urandom(5_000))
    assert status == 201, newer
    kept_ids = [v["version_id"] for v in await versions_of(owner, world.ledger, 2018)]
    assert newer["version_id"] in kept_ids and owners_own["version_id"] not in kept_ids and len(kept_ids) == 10
