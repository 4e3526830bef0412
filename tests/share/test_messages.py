"""消息中心 (DESIGN.md rule 18, API.md "Messages"): personal messages on share events, system messages from the
operator (`eacct message broadcast`), filters, unread count; nothing is ever deleted."""

from __future__ import annotations

import asyncio
import json

from eacct import cli
from eacct.app import create_app
from eacct.db import unit_of_work
from eacct.share import service
from eacct.share.notify import MessageCenterNotifier
from eacct.web import NOTIFIER
from eacct.share.schemas import MessageOut
from tests.conftest import Desktop, new_ledger_id
from tests.share.conftest import befriend, cancel, error_code, messages, share


async def broadcast(sessions, title: str, body: str) -> dict:
    """The operator's broadcast, as the message center would answer it."""
    async with unit_of_work(sessions) as session:
        return MessageOut.model_validate(await service.broadcast(session, title, body)).model_dump(mode="json")


async def test_rule_18_share_created_upload_and_cancel_send_personal_messages(world):
    owner, li = world.owner, world.recipient
    [created] = (await messages(li))["messages"]
    assert created["kind"] == "personal" and created["title"] == "新的共享账套" and not created["read"]
    assert "小王" in created["body"] and owner.account in created["body"] and "123" in created["body"]
    assert created["created_at"].endswith("Z")

    assert (await li.upload("cloud-shares", world.ledger, 2018, b"edited", remark="2018年4期"))[0] == 201
    [uploaded] = (await messages(owner))["messages"]
    assert uploaded["kind"] == "personal" and uploaded["title"] == "好友上传了新版本"
    for part in ("小李", li.account, "123", "2018", "2018年4期", "云备份"):
        assert part in uploaded["body"], part

    await cancel(owner, world.share_id)
    cancelled, again_created = (await messages(li))["messages"]
    assert cancelled["title"] == "共享已取消" and "小王" in cancelled["body"] and "123" in cancelled["body"]
    assert again_created == created
    # The owner is not told about their own actions, and bystanders are told nothing.
    assert len((await messages(owner))["messages"]) == 1
    assert (await messages(world.friend))["messages"] == [] and (await messages(world.stranger))["messages"] == []


async def test_rule_18_filters_and_unread_count(world, sessions):
    li = world.recipient
    [personal] = (await messages(li))["messages"]
    first = await broadcast(sessions, "系统维护通知", "今晚 23:00 至 24:00 云盘维护")
    second = await broadcast(sessions, "新版本发布", "e会计 6.1 已发布")
    assert (await li.call("POST", f"/messages/{first['id']}/read"))[0] == 204

    everything = await messages(li)
    assert [m["id"] for m in everything["messages"]] == [second["id"], first["id"], personal["id"]]  # newest first
    assert [m["read"] for m in everything["messages"]] == [False, True, False]
    assert [m["kind"] for m in everything["messages"]] == ["system", "system", "personal"]
    expected = {
        (): [second, first, personal],
        (("status", "unread"),): [second, personal],
        (("status", "read"),): [first],
        (("status", "unread"), ("status", "read")): [second, first, personal],
        (("kind", "system"),): [second, first],
        (("kind", "personal"),): [personal],
        (("kind", "system"), ("kind", "personal")): [second, first, personal],
        (("status", "unread"), ("kind", "system")): [second],
        (("status", "read"), ("kind", "personal")): [],
    }
    for query, wanted in expected.items():
        filters: dict[str, list[str]] = {}
        for name, value in query:
            filters.setdefault(name, []).append(value)
        answer = await messages(li, **filters)
        assert [m["id"] for m in answer["messages"]] == [m["id"] for m in wanted], query
        assert answer["unread_count"] == 2, query  # the badge counts every unread message, whatever the filter
    for bad in ("status=new", "kind=wechat"):
        status, body, _ = await li.call("GET", f"/messages?{bad}")
        assert status == 422 and error_code(body) == "invalid"


async def test_rule_18_read_state_is_per_member(world, sessions):
    notice = await broadcast(sessions, "系统维护通知", "今晚维护")
    owner, li = world.owner, world.recipient
    assert (await li.call("POST", f"/messages/{notice['id']}/read"))[0] == 204
    assert (await li.call("POST", f"/messages/{notice['id']}/read"))[0] == 204  # again: harmless
    assert [m["read"] for m in (await messages(li, kind="system"))["messages"]] == [True]
    assert [m["read"] for m in (await messages(owner, kind="system"))["messages"]] == [False]
    assert (await messages(owner))["unread_count"] == 1


async def test_rule_18_marking_read_twice_at_once_is_harmless(world):
    [personal] = (await messages(world.recipient))["messages"]
    answers = await asyncio.gather(*[world.recipient.call("POST", f"/messages/{personal['id']}/read")
                                     for _ in range(10)])
    assert [status for status, _, _ in answers] == [204] * 10, [body for _, body, _ in answers]
    answer = await messages(world.recipient)
    assert [m["read"] for m in answer["messages"]] == [True] and answer["unread_count"] == 0


async def test_rule_18_nobody_reads_someone_elses_personal_message(world):
    [personal] = (await messages(world.recipient))["messages"]
    for member in (world.owner, world.stranger):
        status, body, _ = await member.call("POST", f"/messages/{personal['id']}/read")
        assert status == 404 and error_code(body) == "not_found"
        assert personal["id"] not in [m["id"] for m in (await messages(member))["messages"]]
    assert (await messages(world.recipient))["messages"] == [personal]  # still unread for its owner
    for unknown in ("999999", "abc"):
        assert (await world.recipient.call("POST", f"/messages/{unknown}/read"))[0] == 404


async def test_rule_18_messages_are_never_deleted(world, sessions):
    owner, li = world.owner, world.recipient
    await broadcast(sessions, "系统通知", "正文")
    before = (await messages(li))["messages"]
    for message in before:  # there is no way to delete one: no such endpoint
        status, body, _ = await li.call("DELETE", f"/messages/{message['id']}")
        assert status in (404, 405) and error_code(body) in ("not_found", "method_not_allowed"), body
    assert (await messages(li))["messages"] == before
    # Reading, cancelling the share, removing the friend and deleting the ledger only ever add messages.
    assert (await li.call("POST", f"/messages/{before[0]['id']}/read"))[0] == 204
    await cancel(owner, world.share_id)
    assert (await owner.call("DELETE", f"/friends/{li.id}"))[0] == 204
    status, _, _ = await owner.call("DELETE", f"/backups/{world.ledger}", netdisk=True,
                                    headers={"X-Netdisk-Password": owner.netdisk_password})
    assert status == 204
    after = (await messages(li))["messages"]
    assert [m["id"] for m in after[-len(before):]] == [m["id"] for m in before]
    assert [m["title"] for m in after[:-len(before)]] == ["共享已取消"]
    former_titles = [m["title"] for m in (await messages(world.former))["messages"]]
    assert former_titles == ["系统通知", "共享已取消", "新的共享账套"]


async def test_rule_18_broadcast_from_the_command_line(world, cli_env, capsys):
    """`eacct message broadcast` against the running server's database (on PostgreSQL: its schema)."""
    argv = ["message", "broadcast", "--title", "春节放假通知", "--body", "2月9日至2月17日客服休息，云盘照常使用"]
    assert await asyncio.to_thread(cli.main, argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kind"] == "system" and printed["title"] == "春节放假通知"
    for member in (world.owner, world.recipient, world.stranger):
        answer = await messages(member, kind="system")
        [notice] = answer["messages"]
        assert notice == {"id": printed["id"], "kind": "system", "title": "春节放假通知",
                          "body": "2月9日至2月17日客服休息，云盘照常使用", "created_at": printed["created_at"],
                          "read": False}
    assert (await messages(world.owner))["unread_count"] == 1

    assert await asyncio.to_thread(cli.main, ["message", "broadcast", "--title", "  ", "--body", "x"]) == 1
    assert "invalid" in capsys.readouterr().err
    assert len((await messages(world.owner, kind="system"))["messages"]) == 1


async def test_rule_18_every_personal_message_goes_through_the_one_notifier(aiohttp_server, engine, settings, blobs,
                                                                            http):
    """A second channel (the WeChat issue's template messages) plugs into the notifier and sees every event."""
    heard = []

    class Recorder:
        async def personal(self, session, member_id: int, title: str, body: str) -> None:
            heard.append((member_id, title, body))

    app = create_app(settings, engine=engine, blobs=blobs, collect_garbage_on_start=False)
    app[NOTIFIER] = MessageCenterNotifier([Recorder()])
    base_url = str((await aiohttp_server(app, host="127.0.0.1")).make_url("")).rstrip("/")
    owner = await (await Desktop(http, base_url, "13564271675", "小王").register()).open_netdisk()
    li = await (await Desktop(http, base_url, "13800000002", "小李").register()).open_netdisk()
    ledger = new_ledger_id()
    assert (await owner.upload("backups", ledger, 2018, b"books", name="123"))[0] == 201
    await befriend(owner, li)
    [shared] = await share(owner, ledger, li)
    assert (await li.upload("cloud-shares", ledger, 2018, b"edited", remark="2018年4期"))[0] == 201
    await cancel(owner, shared["share_id"])
    await share(owner, ledger, li)
    assert (await owner.call("DELETE", f"/friends/{li.id}"))[0] == 204
    await befriend(owner, li)
    await share(owner, ledger, li)
    status, _, _ = await owner.call("DELETE", f"/backups/{ledger}", netdisk=True,
                                    headers={"X-Netdisk-Password": owner.netdisk_password})
    assert status == 204

    in_center = []
    for member in (owner, li):
        for message in reversed((await messages(member, kind="personal"))["messages"]):
            in_center.append((member.id, message["title"], message["body"]))
    assert sorted(heard) == sorted(in_center)
    assert [title for _, title, _ in heard] == [
        "新的共享账套", "好友上传了新版本", "共享已取消",  # share, upload, cancel
        "新的共享账套", "共享已取消",  # share, friend removed
        "新的共享账套", "共享已取消",  # share, ledger deleted
    ]
