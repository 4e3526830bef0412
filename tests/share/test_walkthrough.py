"""The e会计 guide "账套云共享操作说明" from start to end, over HTTP, with a real SQLite ledger.

A (13564271675) uploads ledger 123 for 2017 and 2018 → adds B as a friend by account and nickname → shares
the ledger with B → B lists 我的云共享, downloads 2018, books a few entries, uploads it with remark
"2018年4期" (上传云共享) → A finds B's version in 云备份 and downloads it → A cancels → B sees nothing.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from urllib.parse import unquote

from tests.conftest import sha
from tests.netdisk.ledgers import edit_rows, make_year_archive, tar_year
from tests.share.conftest import cloud_shares, error_code, messages, used_bytes, versions_of

LEDGER = "0f897626-027a-4768-934e-abdfb8ba0ebe"  # the 账套ID in the guide's screenshots


def book_entries(archive: bytes, workdir: Path, row_ids: list[int]) -> bytes:
    """What the recipient does in e会计 between download and upload: open the year, change entries, save."""
    workdir.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
        tar.extractall(workdir, filter="data")
    edit_rows(workdir / "data.db", row_ids)
    return tar_year({name: workdir / name for name in names})


async def test_guide_walkthrough_share_download_modify_upload_see_and_cancel(desktop, tmp_path):
    a = await desktop("13564271675", "小王")
    b = await desktop("13800138000", "小李")

    # A uploads 云备份 of ledger 123 for two years.
    archives = {}
    for year, rows, period in ((2017, 3000, "2017年12期"), (2018, 20000, "2018年1期")):
        (tmp_path / str(year)).mkdir()
        archives[year] = make_year_archive(tmp_path / str(year), rows=rows, seed=year)
        status, version, _ = await a.upload("backups", LEDGER, year, archives[year], remark=period, name="123")
        assert status == 201 and version["via"] == "backup", version
    a_used_before = await used_bytes(a)

    # 【我的好友】-【添加好友】 with B's account and nickname.
    status, friend, _ = await a.call("POST", "/friends", json={"account": b.account, "nickname": "小李"})
    assert status == 201 and friend["id"] == b.id and friend["account"] == b.account

    # 【分享操作】-【共享给好友】: "该账套于…开始共享给小李".
    status, body, _ = await a.call("POST", "/shares", json={"ledger_id": LEDGER, "friend_ids": [b.id]})
    assert status == 201, body
    [shared] = body["shares"]
    assert shared["notice"].startswith("该账套于") and shared["notice"].endswith("开始共享给小李")
    assert shared["ledger_name"] == "123" and shared["recipient"]["id"] == b.id
    status, share_list, _ = await a.call("GET", "/shares")
    assert share_list["ledger_count"] == 1 and share_list["friend_count"] == 1

    # B at e会计: 【云共享】-【我的云共享】 lists sharer → ledger → years with remark, size and uploader.
    [sharer] = await cloud_shares(b)
    assert sharer["member"] == {"id": a.id, "account": "13564271675", "nickname": "小王"}
    [ledger] = sharer["ledgers"]
    assert ledger["ledger_id"] == LEDGER and ledger["name"] == "123" and ledger["since"] == shared["since"]
    assert [y["year"] for y in ledger["years"]] == [2017, 2018]
    [v2018] = ledger["years"][1]["versions"]
    assert (v2018["remark"], v2018["size"], v2018["uploaded_by"]["id"]) == ("2018年1期", len(archives[2018]), a.id)

    # B downloads 2018 only (one year at a time) ...
    status, downloaded, headers = await b.download("cloud-shares", LEDGER, 2018)
    assert status == 200 and downloaded == archives[2018]
    assert unquote(headers["X-Remark"]) == "2018年1期" and headers["X-Content-SHA256"] == sha(downloaded)
    started_from = headers["X-Version-Id"]

    # ... books a few entries, and 【上传云共享】 with remark "2018年4期".
    changed = book_entries(downloaded, tmp_path / "b-local", [7, 9_000, 19_500])
    assert changed != downloaded and len(changed) == len(downloaded)
    status, uploaded, _ = await b.upload("cloud-shares", LEDGER, 2018, changed, remark="2018年4期", if_match=started_from)
    assert status == 201, uploaded
    assert uploaded["via"] == "share" and uploaded["uploaded_by"]["id"] == b.id and uploaded["remark"] == "2018年4期"

    # A finds it in 云备份 (the owner's side), newest first, marked as B's upload via share ...
    [newest, original] = await versions_of(a, LEDGER, 2018)
    assert newest == uploaded and original["version_id"] == started_from
    status, backups, _ = await a.call("GET", "/backups", netdisk=True)
    [entry] = backups["ledgers"]
    assert entry["years"][1] == {"year": 2018, "latest": uploaded, "versions_count": 2}
    # ... counted against A's quota, and only the changed pages are new.
    assert await used_bytes(b) == 0
    grown = await used_bytes(a) - a_used_before
    assert 0 < grown < len(changed) // 10
    # ... is told about it in the message center ...
    [notice] = (await messages(a, kind="personal"))["messages"]
    assert "小李" in notice["body"] and "2018" in notice["body"] and "2018年4期" in notice["body"]
    # ... and downloads it from 云备份.
    status, content, _ = await a.download("backups", LEDGER, 2018)
    assert status == 200 and content == changed

    # A cancels the share: B's 我的云共享 is empty and the ledger is gone for B.
    status, _, _ = await a.call("DELETE", f"/shares/{shared['share_id']}")
    assert status == 204
    assert await cloud_shares(b) == []
    status, body, _ = await b.download("cloud-shares", LEDGER, 2018)
    assert status == 404 and error_code(body) == "not_found"
    status, body, _ = await b.upload("cloud-shares", LEDGER, 2018, changed + b"!", remark="2018年5期")
    assert status == 404 and error_code(body) == "not_found"
    titles = [m["title"] for m in (await messages(b))["messages"]]
    assert titles == ["共享已取消", "新的共享账套"]
    status, share_list, _ = await a.call("GET", "/shares")
    assert share_list == {"ledger_count": 0, "friend_count": 0, "ledgers": []}
    # A's backup keeps both versions: nothing the recipient uploaded is lost with the share.
    assert [v["version_id"] for v in await versions_of(a, LEDGER, 2018)] == [uploaded["version_id"], started_from]
