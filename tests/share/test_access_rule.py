"""共享人操作云备份，受共享人操作云共享 (DESIGN.md rule 14, API.md): every backup and cloud-share endpoint, tried
by owner, recipient, former recipient, friend without a share and stranger.

- the owner on `/cloud-shares/{own ledger}/…` → 403 owner_uses_backup;
- a recipient with an active share on `/backups/{that ledger}/…` → 403 recipient_uses_share;
- a former recipient, a friend without a share, a stranger → 404 not_found, the same answer as for a ledger
  that does not exist.

One test per endpoint (a row of the matrix); it asks every role and compares the whole row at once, refused
roles first and the allowed one last, and checks that the refusals changed nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

from tests.conftest import Desktop, new_ledger_id
from tests.share.conftest import ROLES, World, cloud_shares, error_code, versions_of

YEAR = 2018
OUTSIDERS = ("former recipient", "friend without share", "stranger")


async def json_call(member: Desktop, method: str, path: str, *, body=None, password: bool = False):
    """One JSON request with the member's netdisk token; returns (status, error code or None, parsed body)."""
    # DELETE needs the netdisk password again: each caller gives their own, correct one.
    headers = {"X-Netdisk-Password": member.netdisk_password} if password else None
    status, parsed, _ = await member.call(method, path, netdisk=True, json=body, headers=headers)
    return status, error_code(parsed), parsed


def content(side: str, which: str) -> Callable:
    async def request(world: World, member: Desktop, ledger: str):
        version = world.versions[YEAR]["version_id"] if which == "id" else "latest"
        status, data, _ = await member.download(side, ledger, YEAR, version)
        return status, error_code(data), data
    return request


def upload(side: str) -> Callable:
    async def request(world: World, member: Desktop, ledger: str):
        status, parsed, _ = await member.upload(side, ledger, YEAR, b"edited by " + member.account.encode(),
                                                remark="2018年4期", name="我的账套")
        return status, error_code(parsed), parsed
    return request


@dataclass(frozen=True)
class Endpoint:
    name: str
    side: str  # "backups" or "cloud-shares"
    request: Callable  # (world, member, ledger_id) -> (status, error code, body)
    success: int


ENDPOINTS = [
    Endpoint("GET /backups/{ledger}", "backups",
             lambda w, m, l: json_call(m, "GET", f"/backups/{l}"), 200),
    Endpoint("PATCH /backups/{ledger}", "backups",
             lambda w, m, l: json_call(m, "PATCH", f"/backups/{l}", body={"name": "改名"}), 200),
    Endpoint("DELETE /backups/{ledger}", "backups",
             lambda w, m, l: json_call(m, "DELETE", f"/backups/{l}", password=True), 204),
    Endpoint("GET /backups/{ledger}/years/{year}", "backups",
             lambda w, m, l: json_call(m, "GET", f"/backups/{l}/years/{YEAR}"), 200),
    Endpoint("DELETE /backups/{ledger}/years/{year}", "backups",
             lambda w, m, l: json_call(m, "DELETE", f"/backups/{l}/years/{YEAR}", password=True), 204),
    Endpoint("POST /backups/{ledger}/years/{year}/versions", "backups", upload("backups"), 201),
    Endpoint("GET /backups/…/versions/latest/content", "backups", content("backups", "latest"), 200),
    Endpoint("GET /backups/…/versions/{version_id}/content", "backups", content("backups", "id"), 200),
    Endpoint("POST /cloud-shares/{ledger}/years/{year}/versions", "cloud-shares", upload("cloud-shares"), 201),
    Endpoint("GET /cloud-shares/…/versions/latest/content", "cloud-shares", content("cloud-shares", "latest"), 200),
    Endpoint("GET /cloud-shares/…/versions/{version_id}/content", "cloud-shares", content("cloud-shares", "id"), 200),
]


def expected_row(endpoint: Endpoint) -> dict[str, tuple[int, str | None]]:
    allowed = "owner" if endpoint.side == "backups" else "recipient"
    wrong_path = ("recipient", (403, "recipient_uses_share")) if allowed == "owner" else ("owner", (403, "owner_uses_backup"))
    row = {role: (404, "not_found") for role in ROLES}
    row[allowed] = (endpoint.success, None)
    row[wrong_path[0]] = wrong_path[1]
    return row


async def owner_state(world: World) -> tuple:
    """Everything a refused call must leave alone: the ledger, its versions, the owner's quota."""
    status, ledger, _ = await world.owner.call("GET", f"/backups/{world.ledger}", netdisk=True)
    _, disk, _ = await world.owner.call("GET", "/netdisk")
    return status, ledger, await versions_of(world.owner, world.ledger, YEAR), disk["used_bytes"]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
async def test_rule_14_each_endpoint_answers_each_role_as_api_md_says(world, endpoint):
    expected = expected_row(endpoint)
    allowed = next(role for role, (status, _) in expected.items() if status < 400)
    before = await owner_state(world)
    row = {}
    for role in [r for r in ROLES if r != allowed] + [allowed]:
        if role == allowed:
            assert await owner_state(world) == before, "a refused call changed the owner's ledger"
        member = world.role(role)
        status, code, body = await endpoint.request(world, member, world.ledger)
        row[role] = (status, code)
        if role in OUTSIDERS and not endpoint.name.startswith("POST"):
            # Outsiders cannot even tell the ledger exists: the answer is the one for an id nobody uploaded.
            # (An upload to an unknown id is left out: it creates a new ledger of the caller's own.)
            assert (status, code, body) == await endpoint.request(world, member, new_ledger_id()), role
    assert row == expected
    if "content" in endpoint.name:
        assert body == world.contents[YEAR]  # the allowed caller got the year's bytes


async def test_rule_14_owner_on_cloud_share_path_gets_owner_uses_backup(world):
    status, body, _ = await world.owner.upload("cloud-shares", world.ledger, YEAR, b"mine")
    assert status == 403 and error_code(body) == "owner_uses_backup"
    assert "云备份" in body["error"]["message"]  # the answer says which path to use
    status, content, _ = await world.owner.download("cloud-shares", world.ledger, YEAR)
    assert status == 403 and error_code(content) == "owner_uses_backup"
    assert len(await versions_of(world.owner, world.ledger, YEAR)) == 1


async def test_rule_14_recipient_on_backup_path_gets_recipient_uses_share(world):
    status, body, _ = await world.recipient.upload("backups", world.ledger, YEAR, b"edit", name="123")
    assert status == 403 and error_code(body) == "recipient_uses_share"
    assert "云共享" in body["error"]["message"]
    status, content, _ = await world.recipient.download("backups", world.ledger, YEAR)
    assert status == 403 and error_code(content) == "recipient_uses_share"
    assert len(await versions_of(world.owner, world.ledger, YEAR)) == 1


async def test_rule_14_listings_show_the_ledger_only_on_the_right_side(world):
    seen = {}
    for role in ROLES:
        member = world.role(role)
        status, backups, _ = await member.call("GET", "/backups", netdisk=True)
        assert status == 200
        in_backups = world.ledger in [l["ledger_id"] for l in backups["ledgers"]]
        in_shares = world.ledger in [l["ledger_id"] for s in await cloud_shares(member) for l in s["ledgers"]]
        seen[role] = (in_backups, in_shares)
    assert seen == {"owner": (True, False), "recipient": (False, True), "former recipient": (False, False),
                    "friend without share": (False, False), "stranger": (False, False)}
