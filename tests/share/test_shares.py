"""共享给好友, 共享列表 and 取消共享: the owner's side of shares (DESIGN.md rules 9–11, API.md)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from eacct.share.models import Share
from tests.conftest import new_ledger_id
from tests.share.conftest import befriend, cancel, cloud_shares, error_code, messages, share, versions_of

BEIJING = timezone(timedelta(hours=8))


def china_today():
    return datetime.now(BEIJING).date()


async def owner_with_friends(desktop, *nicknames: str):
    owner = await desktop("13564271675", "小王")
    friends = []
    for index, nickname in enumerate(nicknames):
        friend = await desktop(f"1380000000{index}", nickname)
        await befriend(owner, friend)
        friends.append(friend)
    return owner, friends


async def upload_ledger(owner, name: str = "123", years=(2018,)) -> str:
    ledger = new_ledger_id()
    for year in years:
        status, body, _ = await owner.upload("backups", ledger, year, f"{name}-{year}".encode() * 100, name=name)
        assert status == 201, body
    return ledger


async def test_rule_9_share_a_ledger_with_several_friends_and_show_the_notice(desktop):
    before = china_today()
    owner, (li, zhang) = await owner_with_friends(desktop, "小李", "小张")
    ledger = await upload_ledger(owner)
    status, body, _ = await owner.call("POST", "/shares", json={"ledger_id": ledger, "friend_ids": [li.id, zhang.id]})
    after = china_today()
    assert status == 201
    shares = body["shares"]
    assert [s["recipient"]["id"] for s in shares] == [li.id, zhang.id]
    for s, nickname in zip(shares, ("小李", "小张")):
        assert s["ledger_id"] == ledger and s["ledger_name"] == "123" and s["owner"]["id"] == owner.id
        assert s["since"] in {before.isoformat(), after.isoformat()}
        day = datetime.strptime(s["since"], "%Y-%m-%d").date()
        # "该账套于2026年11月22日开始共享给小李": year, month and day as people write them (no zero padding).
        assert s["notice"] == f"该账套于{day.year}年{day.month}月{day.day}日开始共享给{nickname}"
    assert len({s["share_id"] for s in shares}) == 2
    for friend in (li, zhang):
        [sharer] = await cloud_shares(friend)
        assert sharer["member"]["id"] == owner.id and sharer["ledgers"][0]["ledger_id"] == ledger


async def test_rule_9_a_share_covers_every_year_including_later_ones(desktop):
    owner, (li,) = await owner_with_friends(desktop, "小李")
    ledger = await upload_ledger(owner, years=(2017, 2018))
    await share(owner, ledger, li)
    assert (await owner.upload("backups", ledger, 2019, b"the new year" * 50))[0] == 201
    [sharer] = await cloud_shares(li)
    assert [y["year"] for y in sharer["ledgers"][0]["years"]] == [2017, 2018, 2019]
    for year in (2017, 2018, 2019):
        assert (await li.download("cloud-shares", ledger, year))[0] == 200


async def test_rule_9_only_friends_can_be_chosen(desktop):
    owner, (li,) = await owner_with_friends(desktop, "小李")
    stranger = await desktop("13900000000", "路人")
    # Being in the stranger's list is not enough: the owner's own friend list decides.
    await befriend(stranger, owner)
    ledger = await upload_ledger(owner)
    for friend_ids in ([stranger.id], [li.id, stranger.id], [owner.id], [999999]):
        status, body, _ = await owner.call("POST", "/shares", json={"ledger_id": ledger, "friend_ids": friend_ids})
        assert status == 403 and error_code(body) == "not_a_friend", friend_ids
    # All or nothing: the friend in the refused request got no share and no message.
    assert (await owner.call("GET", "/shares"))[1]["ledger_count"] == 0
    assert await cloud_shares(li) == [] and await cloud_shares(stranger) == []
    assert (await messages(li))["messages"] == []


async def test_rule_9_only_my_own_uploaded_ledger_can_be_shared(desktop):
    owner, (li, zhang) = await owner_with_friends(desktop, "小李", "小张")
    await befriend(li, zhang)
    ledger = await upload_ledger(owner)
    await share(owner, ledger, li)
    # The recipient cannot pass the owner's ledger on, and an id nobody uploaded is not found.
    for member, ledger_id in ((li, ledger), (owner, new_ledger_id())):
        status, body, _ = await member.call("POST", "/shares", json={"ledger_id": ledger_id, "friend_ids": [zhang.id]})
        assert status == 404 and error_code(body) == "not_found"
    assert await cloud_shares(zhang) == []
    status, body, _ = await owner.call("POST", "/shares", json={"ledger_id": "123", "friend_ids": [li.id]})
    assert status == 422
    status, body, _ = await owner.call("POST", "/shares", json={"ledger_id": ledger, "friend_ids": []})
    assert status == 422


async def test_rule_9_sharing_again_keeps_the_share_and_its_date(desktop):
    owner, (li, zhang) = await owner_with_friends(desktop, "小李", "小张")
    ledger = await upload_ledger(owner)
    [first] = await share(owner, ledger, li)
    again = await share(owner, ledger, li, zhang)
    assert again[0] == first and again[1]["recipient"]["id"] == zhang.id
    assert [m["title"] for m in (await messages(li))["messages"]] == ["新的共享账套"]
    listing = (await owner.call("GET", "/shares"))[1]
    assert [r["share_id"] for r in listing["ledgers"][0]["recipients"]] == [first["share_id"], again[1]["share_id"]]


async def test_rule_10_share_list_counts_ledgers_and_friends_per_ledger(desktop):
    owner, (li, zhang, zhao) = await owner_with_friends(desktop, "小李", "小张", "小赵")
    ledger_a = await upload_ledger(owner, "A账套")
    ledger_b = await upload_ledger(owner, "B账套")
    await upload_ledger(owner, "C账套")  # never shared: not in the list
    shares_a = await share(owner, ledger_a, li, zhang)
    [share_b] = await share(owner, ledger_b, li)
    [gone] = await share(owner, ledger_b, zhao)
    await cancel(owner, gone["share_id"])  # cancelled shares are not listed
    status, listing, _ = await owner.call("GET", "/shares")
    assert status == 200
    assert listing["ledger_count"] == 2 and listing["friend_count"] == 2
    assert [(l["ledger_id"], l["name"]) for l in listing["ledgers"]] == [(ledger_a, "A账套"), (ledger_b, "B账套")]
    assert listing["ledgers"][0]["recipients"] == shares_a
    assert listing["ledgers"][1]["recipients"] == [share_b]
    # The list is the owner's: a recipient's own share list is empty.
    assert (await li.call("GET", "/shares"))[1] == {"ledger_count": 0, "friend_count": 0, "ledgers": []}


async def test_rule_10_cancel_from_the_share_list(desktop):
    owner, (li, zhang) = await owner_with_friends(desktop, "小李", "小张")
    ledger = await upload_ledger(owner)
    [to_li, to_zhang] = await share(owner, ledger, li, zhang)
    # Only the owner can cancel; anyone else is told there is no such share.
    for member in (li, zhang):
        status, body, _ = await member.call("DELETE", f"/shares/{to_li['share_id']}")
        assert status == 404 and error_code(body) == "not_found"
    await cancel(owner, to_li["share_id"])
    status, body, _ = await owner.call("DELETE", f"/shares/{to_li['share_id']}")
    assert status == 404 and error_code(body) == "not_found"
    for unknown in ("nope", "x" * 40):
        assert (await owner.call("DELETE", f"/shares/{unknown}"))[0] == 404
    listing = (await owner.call("GET", "/shares"))[1]
    assert listing["friend_count"] == 1 and listing["ledgers"][0]["recipients"] == [to_zhang]
    assert await cloud_shares(li) == []
    assert len(await cloud_shares(zhang)) == 1


async def test_rule_11_cancel_ends_download_upload_and_listing_at_once(world):
    owner, li = world.owner, world.recipient
    assert (await li.download("cloud-shares", world.ledger, 2018))[0] == 200
    await cancel(owner, world.share_id)
    # The very next requests, with the same netdisk login, find nothing.
    assert await cloud_shares(li) == []
    for year, version in ((2018, "latest"), (2018, world.versions[2018]["version_id"]), (2017, "latest")):
        status, body, _ = await li.download("cloud-shares", world.ledger, year, version)
        assert status == 404 and error_code(body) == "not_found"
    status, body, _ = await li.upload("cloud-shares", world.ledger, 2018, b"too late", remark="2018年5期")
    assert status == 404 and error_code(body) == "not_found"
    assert await versions_of(owner, world.ledger, 2018) == [world.versions[2018]]
    # A former recipient is told exactly what a stranger is told.
    stranger = await world.stranger.download("cloud-shares", world.ledger, 2018)
    assert (status, body) == (stranger[0], json.loads(stranger[1]))


async def test_deleting_a_year_keeps_the_share_of_the_rest(world):
    owner, li = world.owner, world.recipient
    status, _, _ = await owner.call("DELETE", f"/backups/{world.ledger}/years/2017", netdisk=True,
                                    headers={"X-Netdisk-Password": owner.netdisk_password})
    assert status == 204
    [sharer] = await cloud_shares(li)
    assert [y["year"] for y in sharer["ledgers"][0]["years"]] == [2018]
    assert (await li.download("cloud-shares", world.ledger, 2017))[0] == 404
    assert (await li.download("cloud-shares", world.ledger, 2018))[1] == world.contents[2018]
    assert (await li.upload("cloud-shares", world.ledger, 2017, b"re-made 2017"))[0] == 201


async def test_rule_11_sharing_again_after_a_cancel_starts_a_new_share(desktop):
    owner, (li,) = await owner_with_friends(desktop, "小李")
    ledger = await upload_ledger(owner)
    [first] = await share(owner, ledger, li)
    await cancel(owner, first["share_id"])
    [second] = await share(owner, ledger, li)
    assert second["share_id"] != first["share_id"]
    assert (await li.download("cloud-shares", ledger, 2018))[0] == 200
    # The old share stays cancelled: cancelling it again is still "no such share".
    assert (await owner.call("DELETE", f"/shares/{first['share_id']}"))[0] == 404
    assert (await li.download("cloud-shares", ledger, 2018))[0] == 200


async def test_deleting_a_ledger_ends_its_shares_for_good(desktop, sessions):
    owner, (li,) = await owner_with_friends(desktop, "小李")
    ledger = await upload_ledger(owner)
    kept = await upload_ledger(owner, "另一个账套")
    await share(owner, ledger, li)
    await share(owner, kept, li)
    status, _, _ = await owner.call("DELETE", f"/backups/{ledger}", netdisk=True,
                                    headers={"X-Netdisk-Password": owner.netdisk_password})
    assert status == 204
    [sharer] = await cloud_shares(li)
    assert [l["ledger_id"] for l in sharer["ledgers"]] == [kept]
    listing = (await owner.call("GET", "/shares"))[1]
    assert listing["ledger_count"] == 1 and listing["ledgers"][0]["ledger_id"] == kept
    [ended, *_] = (await messages(li, kind="personal"))["messages"]
    assert ended["title"] == "共享已取消" and "共享人已删除该账套" in ended["body"]
    async with sessions() as session:
        active = list(await session.scalars(select(Share).where(Share.ledger_id == ledger, Share.cancelled_at.is_(None))))
    assert active == []
    # The owner uploads the same 账套ID again: the old share does not come back with it.
    assert (await owner.upload("backups", ledger, 2018, b"fresh start", name="123"))[0] == 201
    assert [l["ledger_id"] for l in (await cloud_shares(li))[0]["ledgers"]] == [kept]
    status, body, _ = await li.download("cloud-shares", ledger, 2018)
    assert status == 404 and error_code(body) == "not_found"
    assert await versions_of(owner, ledger, 2018) != []


async def test_shares_need_a_login(http, base_url):
    for method, path in (("GET", "/shares"), ("POST", "/shares"), ("DELETE", "/shares/abc")):
        async with http.request(method, base_url + "/api/v1" + path) as response:
            assert response.status == 401 and (await response.json())["error"]["code"] == "unauthenticated"


async def test_share_id_and_friend_choice_rules_live_in_the_share_service():
    """REST and the pages both rely on the service for these: it refuses before any lock or look-up."""
    import pytest

    from eacct import errors
    from eacct.share import service as share_service

    with pytest.raises(errors.NotFound, match="没有这个共享"):
        await share_service.cancel_share(None, None, 1, "a" * 33)
    with pytest.raises(errors.NotFound, match="没有这个共享"):
        await share_service.cancel_share(None, None, 1, "")
    with pytest.raises(errors.Invalid, match="选中要共享的好友"):
        await share_service.create_shares(None, None, 1, "0f897626-027a-4768-934e-abdfb8ba0ebe", [])
