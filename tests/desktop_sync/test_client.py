"""EacctClient and DesktopSync as a library: the public surface, the one exception tree (nothing else
escapes), progress, role refusal before any request, unchanged years, and what a download leaves on disk."""

from __future__ import annotations

import errno
import inspect
import json
import stat
import sqlite3
import tarfile
import uuid

import pytest

import eacct.desktop_sync as desktop_sync
from eacct import errors as server_errors
from eacct.desktop_sync import (
    BACKUP, REMINDER, DesktopSync, DiskError, EacctClient, InvalidLedgerId, LedgerFolder,
    LocalLedger, MockTransport, ProtocolError, SyncError, TransportError, VersionConflict, WrongPath,
)
from eacct.desktop_sync import _client, _exceptions
from tests.desktop_sync.test_sync import make_local_ledger
from tests.netdisk.ledgers import edit_rows


def test_all_names_exactly_the_public_surface():
    exported = set(desktop_sync.__all__)
    assert len(exported) == len(desktop_sync.__all__)
    for name in exported:
        assert hasattr(desktop_sync, name), name
    # Every public class of the private modules is exported, and every exported error is a SyncError.
    for module in (_client, _exceptions, desktop_sync._ledgers, desktop_sync._sync):
        for name, value in vars(module).items():
            if inspect.isclass(value) and value.__module__ == module.__name__ and not name.startswith("_"):
                assert name in exported, f"{module.__name__}.{name} missing from __all__"
    for name in exported:
        value = getattr(desktop_sync, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            assert issubclass(value, SyncError), name


def test_every_server_error_code_maps_to_its_own_class():
    def codes(cls):
        yield cls
        for sub in cls.__subclasses__():
            yield from codes(sub)

    server_codes = {cls.code for cls in codes(server_errors.DomainError) if cls is not server_errors.DomainError}
    server_codes |= {"account_taken", "netdisk_already_opened", "netdisk_not_opened", "missing_chunks", "retry_upload",
                     "invalid_year", "cannot_add_self", "length_required", "busy", "upload_stalled"}
    for code in server_codes:
        assert code in _exceptions._BY_CODE, code
    raised = _exceptions.error_for(412, {"error": {"code": "version_conflict", "message": "新版本"}})
    assert isinstance(raised, VersionConflict) and raised.message == "新版本"
    assert isinstance(_exceptions.error_for(403, {"error": {"code": "recipient_uses_share", "message": "x"}}), WrongPath)


def test_every_server_error_code_has_a_client_class_of_its_own():
    """No two server codes share a client class, so callers tell them apart with isinstance, never by code string."""
    def codes(cls):
        yield cls
        for sub in cls.__subclasses__():
            yield from codes(sub)

    server_codes = {cls.code for cls in codes(server_errors.DomainError) if cls is not server_errors.DomainError}
    classes = {code: _exceptions._BY_CODE[code] for code in server_codes}
    shared = {cls.__name__: sorted(c for c, k in classes.items() if k is cls) for cls in set(classes.values())}
    assert {name: found for name, found in shared.items() if len(found) > 1} == {}
    for code in server_codes:
        raised = _exceptions.error_for(400, {"error": {"code": code, "message": "x"}})
        assert type(raised) is classes[code] and raised.code == code


def _json(status, body):
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


async def test_a_proxy_html_502_is_a_protocol_error_not_a_json_decode_error():
    transport = MockTransport(lambda request: (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>"))
    client = EacctClient("http://eacct.invalid", transport=transport, token="t")
    with pytest.raises(ProtocolError) as raised:
        await client.friends()
    assert isinstance(raised.value, TransportError) and "502" in str(raised.value)
    ok_but_html = MockTransport(lambda request: (200, {"Content-Type": "text/html"}, b"<html>portal login</html>"))
    with pytest.raises(ProtocolError):
        await EacctClient("http://eacct.invalid", transport=ok_but_html).friends()


async def test_an_unreachable_server_is_a_transport_error():
    client = EacctClient("http://127.0.0.1:1", timeout=desktop_sync.Timeout(connect=2, read=2))
    with pytest.raises(TransportError):
        await client.log_in("a", "b")
    await client.close()
    with pytest.raises(TransportError):
        await EacctClient("not a url at all").log_in("a", "b")


async def test_a_bad_ledger_id_is_refused_before_any_request(tmp_path):
    transport = MockTransport(lambda request: _json(200, {}))
    client = EacctClient("http://eacct.invalid", transport=transport, member={"id": 1})
    sync = DesktopSync(client, LedgerFolder(tmp_path))
    for call in (client.backup("../../etc"), client.versions("nope", 2018),
                 sync.download_year("0f89-bad", 2018), sync.upload_year("x", 2018)):
        with pytest.raises(InvalidLedgerId):
            await call
    with pytest.raises(desktop_sync.UsageError):
        await sync.download_year(str(uuid.uuid4()), "２０１８")
    assert transport.requests == []


async def test_the_explicit_calls_refuse_the_wrong_role_before_any_request(tmp_path):
    folder = LedgerFolder(tmp_path)
    mine = make_local_ledger(tmp_path, "我的", [2018], rows=50)
    theirs = make_local_ledger(tmp_path, "好友的", [2018], rows=50)
    for ledger_id, owner in ((mine, 7), (theirs, 8)):
        ledger = folder.get(ledger_id)
        ledger.owner_id = owner
        folder.save(ledger)
    transport = MockTransport(lambda request: _json(500, {}))
    sync = DesktopSync(EacctClient("http://eacct.invalid", transport=transport, member={"id": 7}), folder)
    for call in (sync.share_download(mine, 2018, overwrite=True), sync.share_upload(mine, 2018),
                 sync.backup_download(theirs, 2018, overwrite=True), sync.backup_upload(theirs, 2018)):
        with pytest.raises(WrongPath) as refused:
            await call
        assert REMINDER in str(refused.value)
    assert transport.requests == []


async def test_a_full_disk_during_download_is_a_disk_error_and_leaves_nothing(tmp_path, monkeypatch):
    ledger_id = str(uuid.uuid4())
    body = b"x" * 100

    def handler(request):
        if "/content" in request.url:
            return 200, {"X-Content-SHA256": "0" * 64, "X-Version-Id": "v1", "Content-Length": "100"}, body
        return _json(200, {"ledger_id": ledger_id, "name": "L"})

    class FullDisk:
        def __init__(self, *args, **kwargs):
            self.real = open(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.real.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_client, "open", FullDisk, raising=False)
    sync = DesktopSync(EacctClient("http://eacct.invalid", transport=MockTransport(handler), member={"id": 1}),
                       LedgerFolder(tmp_path / "root"))
    with pytest.raises(DiskError) as raised:
        await sync.download_year(ledger_id, 2018)
    assert not isinstance(raised.value, OSError) and "磁盘" in str(raised.value)
    assert list((tmp_path / "root").iterdir()) == []


async def test_a_full_disk_while_installing_is_a_disk_error_and_leaves_nothing(tmp_path, monkeypatch):
    folder = LedgerFolder(tmp_path / "root")
    year_dir = tmp_path / "src"
    year_dir.mkdir()
    (year_dir / "a.txt").write_text("a", encoding="utf-8")
    desktop_sync.pack_year(year_dir, tmp_path / "y.tar")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", no_space)
    with pytest.raises(DiskError):
        folder.install(str(uuid.uuid4()), 2018, tmp_path / "y.tar", overwrite=False)
    assert list((tmp_path / "root").iterdir()) == []


@pytest.fixture
async def owner_client(desktop, base_url):
    owner = await desktop("lib_owner", "小王")
    client = EacctClient(base_url, client_version="test")
    await client.log_in(owner.account, owner.password)
    await client.unlock(owner.netdisk_password)
    yield owner, client
    await client.close()


async def test_progress_reports_every_phase_of_a_transfer(owner_client, tmp_path):
    owner, client = owner_client
    seen: list[tuple[int, int, str]] = []
    sync = DesktopSync(client, LedgerFolder(tmp_path / "a"))
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2018], rows=20_000)
    await sync.upload_year(ledger_id, 2018, progress=lambda *p: seen.append(p))
    assert {"packing", "hashing", "sending"} <= {phase for _, _, phase in seen}
    assert all(0 <= done <= total for done, total, _ in seen)
    seen.clear()
    other = DesktopSync(client, LedgerFolder(tmp_path / "b"))
    await other.download_year(ledger_id, 2018, progress=lambda *p: seen.append(p))
    phases = [phase for _, _, phase in seen]
    assert "receiving" in phases and phases[-1] == "verifying"
    assert seen[-1][0] == seen[-1][1] > 0


async def test_an_unchanged_year_is_not_uploaded_again(owner_client, tmp_path):
    owner, client = owner_client
    sync = DesktopSync(client, LedgerFolder(tmp_path / "a"))
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2018], rows=2000)
    first = await sync.upload_year(ledger_id, 2018, remark="1期")
    again = await sync.upload_year(ledger_id, 2018, remark="1期")
    assert again.unchanged and again.sent_bytes == 0 and again.version["version_id"] == first.version["version_id"]
    assert len(await client.versions(ledger_id, 2018)) == 1
    edit_rows(sync.folder.year_dir(ledger_id, 2018) / "data.db", [3])
    changed = await sync.upload_year(ledger_id, 2018, remark="2期")
    assert not changed.unchanged and len(await client.versions(ledger_id, 2018)) == 2


async def test_a_download_is_installed_with_ordinary_permissions_and_the_upload_time(owner_client, tmp_path):
    owner, client = owner_client
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2018], rows=500)
    (tmp_path / "a" / ledger_id / "2018" / "sub").mkdir()
    (tmp_path / "a" / ledger_id / "2018" / "sub" / "note.txt").write_text("n", encoding="utf-8")
    await DesktopSync(client, LedgerFolder(tmp_path / "a")).upload_year(ledger_id, 2018)
    uploaded_at = (await client.versions(ledger_id, 2018))[0]["uploaded_at"]
    from datetime import datetime
    expected = int(datetime.fromisoformat(uploaded_at.replace("Z", "+00:00")).timestamp())
    done = await DesktopSync(client, LedgerFolder(tmp_path / "b")).download_year(ledger_id, 2018)
    assert done.side == BACKUP and done.received_bytes == done.size > 0
    year_dir = tmp_path / "b" / ledger_id / "2018"
    for path in [year_dir, *year_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
        assert int(path.stat().st_mtime) == expected, path
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [ledger_id]  # nothing temporary left
    assert sorted(p.name for p in (tmp_path / "b" / ledger_id).iterdir()) == [".eacct", "2018", "ledger.json"]
    assert json.loads((tmp_path / "b" / ledger_id / "ledger.json").read_text(encoding="utf-8"))["name"] == "123"
    with sqlite3.connect(year_dir / "data.db") as connection:
        assert connection.execute("SELECT count(*) FROM voucher").fetchone()[0] == 500


async def test_a_folder_without_ledger_json_is_reported_not_skipped(owner_client, tmp_path):
    owner, client = owner_client
    stray = tmp_path / "a" / str(uuid.uuid4()) / "2018"
    stray.mkdir(parents=True)
    sync = DesktopSync(client, LedgerFolder(tmp_path / "a"))
    report = await sync.sync(dry_run=True)
    assert len(report.problems) == 1 and "ledger.json" in report.problems[0]
    with pytest.raises(desktop_sync.LedgerNotFound) as missing:
        await sync.upload_year(stray.parent.name, 2018)
    assert "ledger.json" in str(missing.value)


def test_the_client_imports_no_server_framework():
    import subprocess
    import sys

    code = ("import sys, eacct.desktop_sync, eacct.desktop_sync.cli; "
            "print([m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic', 'argon2') "
            "or m.startswith('aiohttp.web')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def test_an_answer_missing_promised_fields_is_a_protocol_error_not_a_key_error():
    client = EacctClient("http://eacct.invalid", transport=MockTransport(lambda request: _json(201, {"unexpected": 1})))
    with pytest.raises(ProtocolError):
        await client.log_in("a", "b")
    with pytest.raises(ProtocolError):
        await client.backups()


def test_a_full_disk_writing_ledger_json_is_a_disk_error_and_leaves_nothing(tmp_path, monkeypatch):
    folder = LedgerFolder(tmp_path)
    ledger = LocalLedger(ledger_id=str(uuid.uuid4()), name="L")

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(desktop_sync._ledgers.os, "replace", no_space)
    with pytest.raises(DiskError):
        folder.save(ledger)
    assert list((tmp_path / ledger.ledger_id).iterdir()) == []


async def test_a_download_cancelled_midway_leaves_nothing_behind(tmp_path):
    import asyncio

    ledger_id = str(uuid.uuid4())
    (tmp_path / "root" / ledger_id / "2018").mkdir(parents=True)  # a local year that must survive
    LedgerFolder(tmp_path / "root").save(LocalLedger(ledger_id=ledger_id, name="L", owner_id=1))
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))

    class CutTransport(MockTransport):
        async def send(self, request, receive):
            self.requests.append(request)

            async def stream():
                yield b"x" * 1000
                raise asyncio.CancelledError  # what asyncio.run does to the task on Ctrl-C

            return await receive(desktop_sync.Response(200, {"X-Content-SHA256": "0" * 64, "Content-Length": "9999"},
                                                       stream()))

    sync = DesktopSync(EacctClient("http://eacct.invalid", transport=CutTransport(None), member={"id": 1}),
                       LedgerFolder(tmp_path / "root"))
    with pytest.raises(asyncio.CancelledError):
        await sync.download_year(ledger_id, 2018, overwrite=True)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


@pytest.fixture
async def cutting_proxy(aiohttp_server, base_url):
    """A proxy in front of the real server that can cut a download after `cut_after` bytes; it records the
    Range header of every content request."""
    import aiohttp
    from aiohttp import web

    state = {"cut_after": None, "ranges": []}
    hop = {"host", "content-length", "transfer-encoding", "connection", "date", "server"}

    async def forward(request: web.Request) -> web.StreamResponse:
        content = "/content" in request.path
        if content:
            state["ranges"].append(request.headers.get("Range"))
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(request.method, base_url + request.path_qs, data=await request.read() or None,
                                       headers={k: v for k, v in request.headers.items() if k.lower() not in hop}) as upstream:
                response = web.StreamResponse(status=upstream.status,
                                              headers={k: v for k, v in upstream.headers.items() if k.lower() not in hop})
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                sent = 0
                async for block in upstream.content.iter_chunked(64 * 1024):
                    cut = state["cut_after"]
                    if content and cut is not None and sent + len(block) > cut:
                        await response.write(block[: cut - sent])
                        state["cut_after"] = None
                        request.transport.close()  # the connection breaks mid-transfer
                        return response
                    await response.write(block)
                    sent += len(block)
                await response.write_eof()
                return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/"), state


async def test_an_interrupted_download_resumes_from_what_is_on_disk(owner_client, cutting_proxy, tmp_path):
    owner, direct = owner_client
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2018], rows=50_000)
    uploaded = await DesktopSync(direct, LedgerFolder(tmp_path / "a")).upload_year(ledger_id, 2018)
    proxy_url, state = cutting_proxy
    client = EacctClient(proxy_url, token=direct.token, netdisk_token=direct.netdisk_token, member=direct.member)
    sync = DesktopSync(client, LedgerFolder(tmp_path / "b"))
    state["cut_after"] = uploaded.size // 2
    with pytest.raises(TransportError):
        await sync.download_year(ledger_id, 2018)
    assert sync.folder.years(ledger_id) == []  # nothing installed from a broken transfer
    (partial,) = (tmp_path / "b" / ".eacct-partial").glob("*.tar")
    kept = partial.stat().st_size
    assert 0 < kept <= uploaded.size // 2
    done = await sync.download_year(ledger_id, 2018)
    assert state["ranges"] == [None, f"bytes={kept}-"]
    assert done.received_bytes == uploaded.size - kept and done.size == uploaded.size
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [ledger_id]  # the partial is gone
    sync.folder.pack(ledger_id, 2018, tmp_path / "b.tar")
    LedgerFolder(tmp_path / "a").pack(ledger_id, 2018, tmp_path / "a.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    await client.close()


async def test_a_kept_part_of_an_older_version_is_not_spliced_onto_a_newer_one(owner_client, cutting_proxy, tmp_path):
    owner, direct = owner_client
    folder_a = LedgerFolder(tmp_path / "a")
    ledger_id = make_local_ledger(tmp_path / "a", "123", [2018], rows=50_000)
    first = await DesktopSync(direct, folder_a).upload_year(ledger_id, 2018)
    proxy_url, state = cutting_proxy
    client = EacctClient(proxy_url, token=direct.token, netdisk_token=direct.netdisk_token, member=direct.member)
    sync = DesktopSync(client, LedgerFolder(tmp_path / "b"))
    state["cut_after"] = first.size // 3
    with pytest.raises(TransportError):
        await sync.download_year(ledger_id, 2018)
    edit_rows(folder_a.year_dir(ledger_id, 2018) / "data.db", [1, 2])
    second = await DesktopSync(direct, folder_a).upload_year(ledger_id, 2018)
    done = await sync.download_year(ledger_id, 2018)
    assert done.version["version_id"] == second.version["version_id"] and done.received_bytes == second.size
    assert state["ranges"][-1] is None  # the ranged answer was of another version: fetched whole
    await client.close()
