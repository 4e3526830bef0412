"""Item 17: the served OpenAPI document is the truth. schemathesis generates requests for every operation of
`GET /api/v1/openapi.json` and checks each answer: no 500 (not_a_server_error), the body matches the documented
schema of its status (response_schema_conformance), and the status is one the document lists
(status_code_conformance). Bounded: a fixed seed and example count, on SQLite, authenticated as members who have
a netdisk, an uploaded version, a friend and a share, so paths carry real ids as well as generated ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from eacct.app import create_app
from eacct.config import Settings
from eacct.db import create_engine
from tests.conftest import empty_tables

EXAMPLES_PER_OPERATION = 25
SEED = 17
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
CONTENT = b"e-kuaiji ledger archive 2018 " * 40


@dataclass
class Fixture:
    """What the seeded server holds: tokens and the real ids paths can name."""

    base_url: str = ""
    owner_token: str = ""  # netdisk token of the owner (works for every member endpoint too)
    recipient_token: str = ""  # netdisk token of the friend the ledger is shared with
    logout_token: str = ""  # a spare session of the owner for DELETE /sessions/current
    ids: dict[str, object] = field(default_factory=dict)


class LiveServer:
    """The real app on 127.0.0.1 in a thread of its own, so schemathesis (synchronous) can call it."""

    def __init__(self, data: Path, database_url: str, schema: str | None) -> None:
        self.data = data
        self.database_url = database_url
        self.schema = schema
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def start(self) -> Fixture:
        self.thread.start()
        return self.run(self._start())

    def stop(self) -> None:
        if self.runner is not None:
            self.run(self.runner.cleanup())
        if self.schema:
            self.run(self._empty_tables())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _empty_tables(self) -> None:
        engine = create_engine(self.database_url, schema=self.schema)
        await empty_tables(engine)
        await engine.dispose()

    async def _start(self) -> Fixture:
        settings = Settings(database_url=self.database_url, database_schema=self.schema or "",
                            storage_url=f"file://{self.data / 'blobs'}", argon2_time_cost=1, argon2_memory_kib=1024,
                            pack_target_bytes=1024 * 1024)
        self.runner = web.AppRunner(create_app(settings, collect_garbage_on_start=False))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        fixture = Fixture(base_url=f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as http:
            await _seed(http, fixture)
        return fixture


async def _seed(http: aiohttp.ClientSession, fixture: Fixture) -> None:
    """Two members, the owner's netdisk with one uploaded version, a friendship and a share."""
    api = fixture.base_url + "/api/v1"

    async def call(method: str, path: str, token: str = "", expect: int = 200, **kwargs):
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})} if token else kwargs.pop("headers", {})
        async with http.request(method, api + path, headers=headers, **kwargs) as response:
            body = await response.json() if response.content_type == "application/json" else None
            assert response.status == expect, (method, path, response.status, body)
            return body

    async def member(account: str, nickname: str) -> tuple[int, str, str]:
        created = await call("POST", "/members", json={"account": account, "password": "pw-123456",
                                                        "nickname": nickname}, expect=201)
        session = await call("POST", "/sessions", json={"account": account, "password": "pw-123456"}, expect=201)
        await call("POST", "/netdisk", session["token"], json={
            "password": "disk-123456", "questions": [{"question": "出生地?", "answer": "杭州"}]}, expect=201)
        unlocked = await call("POST", "/netdisk/unlock", session["token"], json={"password": "disk-123456"}, expect=201)
        return created["id"], session["token"], unlocked["netdisk_token"]

    owner_id, _, fixture.owner_token = await member("owner01", "小王")
    recipient_id, _, fixture.recipient_token = await member("friend01", "小李")
    spare = await call("POST", "/sessions", json={"account": "owner01", "password": "pw-123456"}, expect=201)
    fixture.logout_token = spare["token"]
    ledger_id = str(uuid.uuid4())
    version = await call("POST", f"/backups/{ledger_id}/years/2018/versions", fixture.owner_token, expect=201,
                         data=CONTENT, headers={"Content-Type": "application/octet-stream",
                                                "X-Content-SHA256": hashlib.sha256(CONTENT).hexdigest(),
                                                "X-Ledger-Name": quote("测试账套")})
    await call("POST", "/friends", fixture.owner_token, json={"account": "friend01", "nickname": "小李"}, expect=201)
    await call("POST", "/friends", fixture.recipient_token, json={"account": "owner01", "nickname": "小王"}, expect=201)
    shares = await call("POST", "/shares", fixture.owner_token, json={"ledger_id": ledger_id, "friend_ids": [recipient_id]},
                        expect=201)
    messages = await call("GET", "/messages", fixture.recipient_token)
    opened = await call("POST", f"/backups/{ledger_id}/years/2019/uploads", fixture.owner_token, expect=201,
                        json={"size": len(CONTENT), "sha256": hashlib.sha256(CONTENT).hexdigest()})
    fixture.ids = {"upload_id": opened["upload_id"], "ledger_id": ledger_id, "year": 2018, "version_id": version["version_id"], "member_id": recipient_id,
                   "share_id": shares["shares"][0]["share_id"], "id": messages["messages"][0]["id"], "owner_id": owner_id}


@pytest.fixture
def live(tmp_path, database_url, db_schema) -> Fixture:
    """The seeded server, on this run's database (a migrated SQLite copy, or the PostgreSQL schema)."""
    server = LiveServer(tmp_path, database_url, db_schema)
    try:
        yield server.start()
    finally:
        server.stop()


def _token_for(fixture: Fixture, path: str) -> str:
    """The member a path is for: the recipient on the cloud-share side and for messages, the owner elsewhere."""
    if path == "/api/v1/sessions/current":
        return fixture.logout_token
    if path.startswith(("/api/v1/cloud-shares", "/api/v1/messages")):
        return fixture.recipient_token
    return fixture.owner_token


def _order(operation) -> tuple[int, str]:
    # Destructive operations last (they may end the share or the friendship the others use), logout very last.
    if operation.path == "/api/v1/sessions/current":
        return 3, operation.label
    if operation.method.upper() == "DELETE":
        return (2 if operation.path.startswith("/api/v1/friends") else 1), operation.label
    return 0, operation.label


def _strategy(operation, ids: dict[str, object]):
    """Valid and invalid generated cases, and as many again whose path names the seeded ids (so answers other
    than 404 occur)."""
    names = [p.name for p in operation.path_parameters]
    real = {name: ids[name] for name in names}
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies.append(operation.as_strategy(generation_mode=mode))
        if names:
            strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=real))
    return st.one_of(strategies)


def test_successful_answers_match_the_document(live):
    """The answers random data rarely reaches: an accepted upload (both sides), a partial download, a 304, an
    unsatisfiable range, an existing friend (200), the message filters."""
    schema = schemathesis.openapi.from_url(live.base_url + "/api/v1/openapi.json")
    ids = live.ids
    year_path = {"ledger_id": ids["ledger_id"], "year": ids["year"]}
    content_path = {**year_path, "version_id": "latest"}
    sha = hashlib.sha256(CONTENT).hexdigest()
    new_content = CONTENT + b"edited"
    listed = requests.get(f"{live.base_url}/api/v1/backups/{ids['ledger_id']}/years/{ids['year']}/versions/{ids['version_id']}/manifest",
                          headers={"Authorization": f"Bearer {live.owner_token}"}, timeout=30).json()
    first_chunk = [listed["chunks"][0]["sha256"]]
    session_path = {"ledger_id": ids["ledger_id"], "year": 2019, "upload_id": ids["upload_id"]}
    entry = hashlib.sha256(CONTENT).digest() + len(CONTENT).to_bytes(4, "big")  # one chunk: the whole year
    upload_headers = {"Content-Type": "application/octet-stream", "X-Content-SHA256": hashlib.sha256(new_content).hexdigest(),
                      "X-Remark": quote("月末结账"), "If-Match": f'"{ids["version_id"]}"'}
    cases = [
        (live.owner_token, 201, schema["/api/v1/backups/{ledger_id}/years/{year}/versions"]["POST"].Case(
            path_parameters=year_path, headers=upload_headers, body=new_content, media_type="application/octet-stream")),
        (live.recipient_token, 201, schema["/api/v1/cloud-shares/{ledger_id}/years/{year}/versions"]["POST"].Case(
            path_parameters=year_path, body=CONTENT, media_type="application/octet-stream",
            headers={"Content-Type": "application/octet-stream", "X-Content-SHA256": sha})),
        (live.owner_token, 206, schema["/api/v1/backups/{ledger_id}/years/{year}/versions/{version_id}/content"]["GET"].Case(
            path_parameters={**content_path, "version_id": ids["version_id"]}, headers={"Range": "bytes=0-9"})),
        (live.owner_token, 304, schema["/api/v1/backups/{ledger_id}/years/{year}/versions/{version_id}/content"]["GET"].Case(
            path_parameters={**content_path, "version_id": ids["version_id"]}, headers={"If-None-Match": f'"{sha}"'})),
        (live.recipient_token, 416, schema["/api/v1/cloud-shares/{ledger_id}/years/{year}/versions/{version_id}/content"]["GET"].Case(
            path_parameters=content_path, headers={"Range": "bytes=999999-"})),
        (live.recipient_token, 200, schema["/api/v1/cloud-shares/{ledger_id}/years/{year}/versions/{version_id}/content"]["GET"].Case(
            path_parameters=content_path)),
        (live.owner_token, 200, schema["/api/v1/backups/{ledger_id}/years/{year}/versions/{version_id}/manifest"]["GET"].Case(
            path_parameters={**content_path, "version_id": ids["version_id"]})),
        (live.recipient_token, 200, schema["/api/v1/cloud-shares/{ledger_id}/years/{year}/versions/{version_id}/manifest"]["GET"].Case(
            path_parameters=content_path)),
        (live.owner_token, 200, schema["/api/v1/backups/{ledger_id}/years/{year}/versions/{version_id}/chunks"]["POST"].Case(
            path_parameters={**content_path, "version_id": ids["version_id"]}, body={"chunks": first_chunk},
            media_type="application/json")),
        (live.recipient_token, 200, schema["/api/v1/cloud-shares/{ledger_id}/years/{year}/versions/{version_id}/chunks"]["POST"].Case(
            path_parameters=content_path, body={"chunks": first_chunk}, media_type="application/json")),
        (live.recipient_token, 201, schema["/api/v1/cloud-shares/{ledger_id}/years/{year}/uploads"]["POST"].Case(
            path_parameters=year_path, body={"size": len(CONTENT), "sha256": sha, "remark": "续传"},
            media_type="application/json")),
        (live.owner_token, 200, schema["/api/v1/backups/{ledger_id}/years/{year}/uploads/{upload_id}/chunks"]["PUT"].Case(
            path_parameters=session_path, body=entry + CONTENT, media_type="application/octet-stream",
            headers={"Content-Type": "application/octet-stream"})),
        (live.owner_token, 200, schema["/api/v1/backups/{ledger_id}/years/{year}/uploads/{upload_id}"]["GET"].Case(
            path_parameters=session_path)),
        (live.owner_token, 201, schema["/api/v1/backups/{ledger_id}/years/{year}/uploads/{upload_id}/commit"]["POST"].Case(
            path_parameters=session_path, body=entry, media_type="application/octet-stream",
            headers={"Content-Type": "application/octet-stream"})),
        (live.owner_token, 200, schema["/api/v1/friends"]["POST"].Case(body={"account": "friend01", "nickname": "小李"})),
        (live.recipient_token, 200, schema["/api/v1/messages"]["GET"].Case(query={"status": ["unread"], "kind": ["personal", "system"]})),
        (live.recipient_token, 200, schema["/api/v1/cloud-shares"]["GET"].Case()),
        (live.owner_token, 200, schema["/api/v1/shares"]["GET"].Case()),
        (live.owner_token, 200, schema["/api/v1/backups/{ledger_id}/years/{year}"]["GET"].Case(path_parameters=year_path)),
    ]
    http = requests.Session()
    for token, expected, case in cases:
        response = case.call_and_validate(base_url=live.base_url, session=http, checks=CHECKS,
                                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert response.status_code == expected, (case.operation.label, response.status_code, response.text)


def test_every_answer_of_every_operation_is_documented(live):
    """Generated requests, valid and invalid, for every operation of the served document."""
    schema = schemathesis.openapi.from_url(live.base_url + "/api/v1/openapi.json")
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=_order)
    assert len(operations) >= 40
    http = requests.Session()
    failures: list[str] = []
    for operation in operations:
        headers = {"Authorization": f"Bearer {_token_for(live, operation.path)}"}

        @hypothesis_settings(max_examples=EXAMPLES_PER_OPERATION, database=None, deadline=None,
                             phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @seed(SEED)
        @given(case=_strategy(operation, live.ids))
        def exercise(case) -> None:
            case.call_and_validate(base_url=live.base_url, session=http, headers=headers, checks=CHECKS, timeout=30)

        try:
            exercise()
        except (Exception, BaseExceptionGroup) as exc:  # one operation's failure must not hide the others'
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)



def _bad_input_cases(schema, ids: dict[str, object]) -> list[tuple[str, object, bytes | None, int]]:
    """(name, case, raw body replacing the case's, expected status): bad input of every kind, each a 4xx."""
    year_path = {"ledger_id": ids["ledger_id"], "year": ids["year"]}
    content_path = {**year_path, "version_id": "latest"}
    year = schema["/api/v1/backups/{ledger_id}/years/{year}"]["GET"]
    upload = schema["/api/v1/backups/{ledger_id}/years/{year}/versions"]["POST"]
    download = schema["/api/v1/backups/{ledger_id}/years/{year}/versions/{version_id}/content"]["GET"]
    me = schema["/api/v1/me"]["PATCH"]
    shares = schema["/api/v1/shares"]["POST"]

    def upload_case(**headers: str):
        return upload.Case(path_parameters=year_path, body=CONTENT, media_type="application/octet-stream",
                           headers={"Content-Type": "application/octet-stream",
                                    "X-Content-SHA256": hashlib.sha256(CONTENT).hexdigest(), **headers})

    return [
        ("ledger id that is not a UUID", year.Case(path_parameters={**year_path, "ledger_id": "not-a-uuid"}), None, 422),
        ("year out of range", year.Case(path_parameters={**year_path, "year": "99999"}), None, 422),
        ("malformed JSON", me.Case(body={"nickname": "x"}), b'{"nickname": ', 400),
        ("JSON of the wrong shape", me.Case(body={"nickname": "x"}), b'{"nickname": ["x"]}', 422),
        ("unknown message filter", schema["/api/v1/messages"]["GET"].Case(query={"status": ["bogus"]}), None, 422),
        ("malformed If-Match", upload_case(**{"If-Match": "no-quotes"}), None, 422),
        ("missing X-Content-SHA256", upload.Case(path_parameters=year_path, body=CONTENT,
                                                 media_type="application/octet-stream",
                                                 headers={"Content-Type": "application/octet-stream"}), None, 422),
        ("unsatisfiable Range", download.Case(path_parameters=content_path, headers={"Range": "bytes=999999-"}), None, 416),
        ("unicode digits in a year", year.Case(path_parameters={**year_path, "year": "¹"}), None, 422),
        ("fullwidth digits in a year", year.Case(path_parameters={**year_path, "year": "２０１８"}), None, 422),
        ("unicode digits in a message id", schema["/api/v1/messages/{id}/read"]["POST"].Case(path_parameters={"id": "①"}),
         None, 422),
        ("unicode digits in a member id", schema["/api/v1/friends/{member_id}"]["DELETE"].Case(
            path_parameters={"member_id": "¹"}), None, 422),
        ("JSON nested 1000 deep", me.Case(body={"nickname": "x"}),
         b'{"nickname": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400),
        ("integer of 5000 digits in JSON", shares.Case(body={"ledger_id": ids["ledger_id"], "friend_ids": [1]}),
         b'{"ledger_id": "%s", "friend_ids": [%s]}' % (str(ids["ledger_id"]).encode(), b"9" * 5000), 400),
        ("integer of 5000 digits in Range", download.Case(path_parameters=content_path,
                                                           headers={"Range": "bytes=" + "9" * 5000 + "-"}), None, 416),
        ("lone surrogate in a login", schema["/api/v1/sessions"]["POST"].Case(body={"account": "a", "password": "b"}),
         b'{"account": "\\ud800", "password": "x"}', 400),
        ("bidi control in a nickname", me.Case(body={"nickname": "小\u202e王"}), None, 422),
        ("invalid percent escape in X-Remark", upload_case(**{"X-Remark": "%ZZ"}), None, 422),
    ]


def test_bad_input_answers_are_documented_4xx(live):
    """Each bad-input shape answers its 4xx, in the documented error schema."""
    schema = schemathesis.openapi.from_url(live.base_url + "/api/v1/openapi.json")
    http = requests.Session()
    failures = []
    for name, case, raw_body, expected in _bad_input_cases(schema, live.ids):
        headers = {"Authorization": f"Bearer {live.owner_token}"}
        extra = {}
        if raw_body is not None:
            headers["Content-Type"] = "application/json"
            extra["data"] = raw_body
        try:
            response = case.call_and_validate(base_url=live.base_url, session=http, checks=CHECKS, timeout=30,
                                              headers=headers, **extra)
            if response.status_code != expected:
                failures.append(f"{name}: {response.status_code} {response.text[:200]}")
        except (Exception, BaseExceptionGroup) as exc:  # every case is reported, not just the first
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)
