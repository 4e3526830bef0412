"""Members and sessions over HTTP (API.md "Members and sessions")."""

from __future__ import annotations

from openapi_spec_validator import validate

from tests.conftest import Desktop


async def test_register_log_in_and_read_profile(desktop):
    member = await desktop("13564271675", "小王", netdisk=False)
    status, me, _ = await member.call("GET", "/me")
    assert status == 200
    assert me == {"id": member.id, "account": "13564271675", "nickname": "小王", "wechat_bound": False,
                  "netdisk_opened": False}


async def test_account_taken_is_409(desktop):
    member = await desktop("wang01", "小王", netdisk=False)
    status, body, _ = await member.call("POST", "/members", json={"account": "wang01", "password": "secret1", "nickname": "x"})
    assert status == 409 and body["error"]["code"] == "account_taken"


async def test_bad_credentials_are_indistinguishable(desktop):
    member = await desktop("wang02", "小王", netdisk=False)
    wrong_password = await member.call("POST", "/sessions", json={"account": "wang02", "password": "nope-nope"})
    wrong_account = await member.call("POST", "/sessions", json={"account": "nobody", "password": "nope-nope"})
    assert wrong_password[0] == wrong_account[0] == 401
    assert wrong_password[1] == wrong_account[1]
    assert wrong_password[1]["error"]["code"] == "bad_credentials"


async def test_logout_revokes_the_token(desktop):
    member = await desktop("wang03", "小王", netdisk=False)
    assert (await member.call("DELETE", "/sessions/current"))[0] == 204
    status, body, _ = await member.call("GET", "/me")
    assert status == 401 and body["error"]["code"] == "unauthenticated"


async def test_nickname_change(desktop):
    member = await desktop("wang04", "小王", netdisk=False)
    status, body, _ = await member.call("PATCH", "/me", json={"nickname": "王会计"})
    assert status == 200 and body["nickname"] == "王会计"


async def test_member_validation_errors_are_422_with_details(desktop, http, base_url):
    cases = [
        {"account": "ab", "password": "secret1", "nickname": "x"},
        {"account": "ok_account", "password": "123", "nickname": "x"},
        {"account": "ok_account", "password": "secret1", "nickname": ""},
        {"account": "ok_account", "password": "secret1", "nickname": "x" * 21},
        {"account": "bad account!", "password": "secret1", "nickname": "x"},
        {"account": "ok_account", "password": "secret1", "nickname": "x", "admin": True},
        {"account": 12345, "password": "secret1", "nickname": "x"},
    ]
    for body in cases:
        async with http.post(base_url + "/api/v1/members", json=body) as response:
            answer = await response.json()
            assert response.status == 422, body
            assert answer["error"]["code"] == "invalid" and answer["error"]["details"]


async def test_malformed_json_is_400(http, base_url):
    for raw in (b"{not json", b"\xff\xfe", b"[1, 2]"):
        async with http.post(base_url + "/api/v1/members", data=raw,
                             headers={"Content-Type": "application/json"}) as response:
            assert response.status in (400, 422)
            assert (await response.json())["error"]["code"] in ("bad_request", "invalid")


async def test_missing_and_garbage_tokens_are_401(http, base_url):
    for header in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"}):
        async with http.get(base_url + "/api/v1/me", headers=header) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthenticated"


async def test_unknown_path_is_json_404(http, base_url):
    async with http.get(base_url + "/api/v1/nothing-here") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_healthz_and_openapi(http, base_url):
    async with http.get(base_url + "/healthz") as response:
        assert response.status == 200 and await response.json() == {"status": "ok"}
    async with http.get(base_url + "/api/v1/openapi.json") as response:
        document = await response.json()
    assert document["openapi"].startswith("3.")
    validate(document)
    assert "/api/v1/backups/{ledger_id}/years/{year}/versions" in document["paths"]
    assert "NewMember" in document["components"]["schemas"]


async def test_password_guessing_is_throttled_per_account_and_address(desktop):
    member = await desktop("guess01", "小王", netdisk=False)
    for attempt in range(10):
        status, body, _ = await member.call("POST", "/sessions", json={"account": "guess01", "password": f"wrong-{attempt}"})
        assert status == 401 and body["error"]["code"] == "bad_credentials"
    assert "locked_until" in body["error"]
    status, body, headers = await member.call("POST", "/sessions", json={"account": "guess01", "password": member.password})
    assert status == 429 and int(headers["Retry-After"]) > 0
    # Other accounts from the same address are not affected, and unknown accounts are throttled alike.
    other = await desktop("guess02", "小李", netdisk=False)
    assert (await other.call("POST", "/sessions", json={"account": "guess02", "password": other.password}))[0] == 201
    for attempt in range(10):
        assert (await other.call("POST", "/sessions", json={"account": "nobody-here", "password": "x"}))[0] == 401
    assert (await other.call("POST", "/sessions", json={"account": "nobody-here", "password": "x"}))[0] == 429


async def test_item_14_logout_ends_the_netdisk_tokens_unlocked_from_that_session(desktop, http, base_url):
    member = await desktop("wang05", "小王")
    # The same member on a second computer: its own session and netdisk token.
    other = Desktop(http, base_url, "wang05", "小王")
    other.password, other.netdisk_password = member.password, member.netdisk_password
    status, body, _ = await other.call("POST", "/sessions", json={"account": "wang05", "password": member.password})
    other.token = body["token"]
    status, body, _ = await other.call("POST", "/netdisk/unlock", json={"password": member.netdisk_password})
    other.netdisk_token = body["netdisk_token"]
    # A second netdisk token unlocked from the first session, this time presenting its netdisk token.
    status, body, _ = await member.call("POST", "/netdisk/unlock", netdisk=True, json={"password": member.netdisk_password})
    assert status == 201
    second_token = body["netdisk_token"]

    assert (await member.call("DELETE", "/sessions/current"))[0] == 204
    status, body, _ = await member.call("GET", "/backups", netdisk=True)
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    member.netdisk_token = second_token
    assert (await member.call("GET", "/backups", netdisk=True))[0] == 401
    # The other computer's session and netdisk login go on.
    assert (await other.call("GET", "/backups", netdisk=True))[0] == 200
    assert (await other.call("GET", "/me"))[0] == 200
