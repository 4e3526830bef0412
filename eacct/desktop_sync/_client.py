"""EacctClient: the REST API of API.md as the desktop program calls it, with base URL, timeouts and transport
injected.

Request building and answer mapping live here; all I/O goes through one `Transport.send` (`_transport`:
aiohttp's client half, or `MockTransport` for tests), so only the classes of `_exceptions` ever leave.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from eacct.chunks import delta as delta_format
from eacct.desktop_sync._exceptions import (
    ApiError, ChecksumError, DiskError, InvalidLedgerId, ProtocolError, TransportError, UsageError,
    error_for,
)
from eacct.desktop_sync._transport import (
    BLOCK, AiohttpTransport, MockTransport, Progress, Request, Response, Timeout, Transport, _no_progress, file_blocks,
)

__all__ = [
    "BACKUP", "SHARE", "AiohttpTransport", "EacctClient", "MockTransport", "Progress", "Request", "Response", "Timeout", "Transport",
    "check_ledger_id", "check_year",
]

BACKUP = "backups"
SHARE = "cloud-shares"


def check_ledger_id(ledger_id: str) -> str:
    """The canonical form of a ledger id (a UUID), or InvalidLedgerId."""
    try:
        return str(uuid.UUID(str(ledger_id)))
    except ValueError:
        raise InvalidLedgerId(f"账套ID “{ledger_id}” 不是有效的账套ID（应为 UUID，如 0f897626-027a-4768-934e-abdfb8ba0ebe）") from None


def check_year(year: Any) -> int:
    """A fiscal year as an int (ASCII digits only), or UsageError."""
    text = str(year)
    if not (text.isascii() and text.isdigit() and 1990 <= int(text) <= 2100):
        raise UsageError(f"会计年度 “{year}” 无效，应为 1990 到 2100 之间的年份")
    return int(text)


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


_NOT_JSON = object()


def _upload_time(headers: dict[str, str]) -> float | None:
    value = headers.get("Last-Modified")
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


class EacctClient:
    """The eacct REST API for one member: session, netdisk, backups, cloud shares, friends, shares, messages.

    `token` / `netdisk_token` may be given (a CLI keeps them between runs); `member` is who logged in.
    """

    def __init__(self, base_url: str, *, transport: Transport | None = None, timeout: Timeout = Timeout(),
                 client_version: str = "", token: str = "", netdisk_token: str = "",
                 member: dict | None = None) -> None:
        self.base_url = base_url.rstrip("/") + "/api/v1"
        self.transport = transport or AiohttpTransport(timeout)
        self.client_version = client_version
        self.token = token
        self.netdisk_token = netdisk_token
        self.member = member
        self.bytes_sent = 0
        self.bytes_received = 0

    async def __aenter__(self) -> "EacctClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the transport."""
        await self.transport.close()

    # ----------------------------------------------------------------------------------- plumbing

    def _headers(self, netdisk: bool) -> dict[str, str]:
        token = self.netdisk_token if netdisk else self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _read_answer(self, response: Response) -> tuple[bytes, Any]:
        """A whole answer, counted, as (bytes, parsed JSON or _NOT_JSON); an error status is its error class."""
        raw = await response.read()
        self.bytes_received += len(raw)
        data = _parse_json(raw)
        if response.status >= 400:
            raise error_for(response.status, None if data is _NOT_JSON else data)
        return raw, data

    async def _call(self, method: str, path: str, *, netdisk: bool = False, body: Any = None,
                    headers: dict[str, str] | None = None) -> Any:
        """One JSON request; the parsed answer, or the error class of its code."""
        all_headers = {**self._headers(netdisk), **(headers or {})}
        content = None
        if body is not None:
            content = json.dumps(body, ensure_ascii=False).encode()
            all_headers["Content-Type"] = "application/json"
        request = Request(method, self.base_url + path, all_headers, content=content)
        self.bytes_sent += len(content or b"")

        async def receive(response: Response) -> Any:
            raw, data = await self._read_answer(response)
            if data is _NOT_JSON or (raw and not response.headers.get("Content-Type", "").startswith("application/json")):
                raise ProtocolError(f"服务器的回答不是 e会计云服务的数据（HTTP {response.status}），请检查 --server 地址")
            return data

        return await self.transport.send(request, receive)

    # ----------------------------------------------------------------------------------- members

    async def register(self, account: str, password: str, nickname: str) -> dict:
        """Create a member account; returns the Member."""
        return await self._call("POST", "/members", body={"account": account, "password": password, "nickname": nickname})

    async def log_in(self, account: str, password: str) -> dict:
        """Open a session; returns the member."""
        answer = await self._call("POST", "/sessions", body={"account": account, "password": password})
        self.token = answer["token"]
        self.member = answer["member"]
        return answer["member"]

    async def log_out(self) -> None:
        """End the session (and every netdisk token unlocked from it)."""
        await self._call("DELETE", "/sessions/current")
        self.token = self.netdisk_token = ""

    async def me(self) -> dict:
        """The member logged in, with wechat_bound and netdisk_opened."""
        answer = await self._call("GET", "/me")
        self.member = {k: answer[k] for k in ("id", "account", "nickname") if k in answer}
        return answer

    # ----------------------------------------------------------------------------------- netdisk

    async def netdisk(self) -> dict:
        """{opened, quota_bytes, used_bytes, free_bytes}: 网盘空间 / 已用空间 / 可用空间."""
        return await self._call("GET", "/netdisk")

    async def open_netdisk(self, password: str, questions: list[tuple[str, str]]) -> None:
        """First use: set the netdisk password and 1–3 security questions with their answers."""
        await self._call("POST", "/netdisk", body={
            "password": password, "questions": [{"question": q, "answer": a} for q, a in questions]})

    async def security_questions(self) -> list[str]:
        """The netdisk's security questions (密保问题)."""
        return (await self._call("GET", "/netdisk/questions"))["questions"]

    async def unlock(self, netdisk_password: str) -> dict:
        """输入云盘密码登录云盘; returns {netdisk_token, expires_at}."""
        answer = await self._call("POST", "/netdisk/unlock", body={"password": netdisk_password})
        self.netdisk_token = answer["netdisk_token"]
        return answer

    async def reset_netdisk_password(self, answers: list[str], new_password: str) -> None:
        """Forgotten netdisk password: answer the security questions and set a new one."""
        await self._call("POST", "/netdisk/reset", body={"answers": answers, "new_password": new_password})

    async def change_netdisk_password(self, old_password: str, new_password: str) -> None:
        """Change the netdisk password."""
        await self._call("PUT", "/netdisk/password", body={"old_password": old_password, "new_password": new_password})

    async def deletions(self) -> list[dict]:
        """The netdisk's deletion records."""
        return (await self._call("GET", "/netdisk/deletions"))["deletions"]

    # ----------------------------------------------------------------------------------- backups

    async def backups(self) -> list[dict]:
        """网盘列表: my cloud-backup ledgers."""
        return (await self._call("GET", "/backups", netdisk=True))["ledgers"]

    async def backup(self, ledger_id: str) -> dict:
        """One of my ledgers (WrongPath when it is shared with me instead)."""
        return await self._call("GET", f"/backups/{check_ledger_id(ledger_id)}", netdisk=True)

    async def versions(self, ledger_id: str, year: int) -> list[dict]:
        """A year's versions in my cloud backup, newest first."""
        ledger_id, year = check_ledger_id(ledger_id), check_year(year)
        return (await self._call("GET", f"/backups/{ledger_id}/years/{year}", netdisk=True))["versions"]

    async def delete_backup(self, ledger_id: str, netdisk_password: str, year: int | None = None) -> None:
        """Delete a ledger (or one year of it) from my cloud backup; needs the netdisk password again."""
        path = f"/backups/{check_ledger_id(ledger_id)}"
        if year is not None:
            path += f"/years/{check_year(year)}"
        await self._call("DELETE", path, netdisk=True, headers={"X-Netdisk-Password": quote(netdisk_password, safe="")})

    # ----------------------------------------------------------------------------------- cloud shares

    async def cloud_shares(self) -> list[dict]:
        """我的云共享: sharers → ledgers → years → versions."""
        return (await self._call("GET", "/cloud-shares", netdisk=True))["sharers"]

    # ----------------------------------------------------------------------------------- friends, shares, messages

    async def friends(self) -> list[dict]:
        """我的好友."""
        return (await self._call("GET", "/friends"))["friends"]

    async def add_friend(self, account: str, nickname: str) -> dict:
        """添加好友 by their account and nickname."""
        return await self._call("POST", "/friends", body={"account": account, "nickname": nickname})

    async def remove_friend(self, member_id: int) -> None:
        """Remove a friend (cancels my shares to them)."""
        await self._call("DELETE", f"/friends/{int(member_id)}")

    async def shares(self) -> dict:
        """共享列表: {ledger_count, friend_count, ledgers: [{ledger_id, name, recipients}]}."""
        return await self._call("GET", "/shares")

    async def share(self, ledger_id: str, friend_ids: list[int]) -> list[dict]:
        """共享给好友."""
        body = {"ledger_id": check_ledger_id(ledger_id), "friend_ids": [int(i) for i in friend_ids]}
        return (await self._call("POST", "/shares", body=body))["shares"]

    async def cancel_share(self, share_id: str) -> None:
        """取消共享."""
        await self._call("DELETE", f"/shares/{quote(str(share_id), safe='')}")

    async def messages(self, unread_only: bool = False) -> dict:
        """消息中心: {unread_count, messages}."""
        return await self._call("GET", "/messages" + ("?status=unread" if unread_only else ""))

    async def mark_read(self, message_id: int) -> None:
        """Mark a message read."""
        await self._call("POST", f"/messages/{int(message_id)}/read")

    # ----------------------------------------------------------------------------------- transfers

    async def missing_chunks(self, side: str, ledger_id: str, year: int, digests: list[str]) -> set[str]:
        """Which chunk digests (hex) the cloud lacks for this ledger's owner."""
        missing: set[str] = set()
        for start in range(0, len(digests), 100_000):
            answer = await self._call("POST", f"/{side}/{check_ledger_id(ledger_id)}/years/{check_year(year)}/chunks/missing",
                                      netdisk=True, body={"chunks": digests[start : start + 100_000]})
            missing.update(answer["missing"])
        return missing

    async def upload(self, side: str, ledger_id: str, year: int, archive: Path, sha256: str, *, remark: str = "",
                     ledger_name: str | None = None, if_match: str | None = None, delta: Path | None = None,
                     progress: Progress = _no_progress) -> dict:
        """Upload a year archive on `side` ("backups" or "cloud-shares"); returns the new Version. With
        `delta`, the body is that delta file (eacct.chunks.delta) instead of the archive."""
        ledger_id, year = check_ledger_id(ledger_id), check_year(year)
        headers = {**self._headers(True), "Content-Type": "application/octet-stream", "X-Content-SHA256": sha256,
                   "X-Remark": quote(remark, safe=""), "X-Client-Version": quote(self.client_version, safe="")}
        if ledger_name:
            headers["X-Ledger-Name"] = quote(ledger_name, safe="")
        if if_match:
            headers["If-Match"] = f'"{if_match}"'
        body = archive
        if delta is not None:
            headers["Content-Type"] = delta_format.MEDIA_TYPE
            headers["X-Archive-Size"] = str(archive.stat().st_size)
            body = delta
        size = body.stat().st_size
        request = Request("POST", f"{self.base_url}/{side}/{ledger_id}/years/{year}/versions", headers,
                          stream=lambda: file_blocks(body, progress, "sending"), size=size)
        self.bytes_sent += size

        async def receive(response: Response) -> Any:
            _, data = await self._read_answer(response)
            if not isinstance(data, dict) or "version_id" not in data:
                raise ProtocolError(f"服务器的回答不是 e会计云服务的数据（HTTP {response.status}）")
            return data

        return await self.transport.send(request, receive)

    async def download(self, side: str, ledger_id: str, year: int, version: str, target: Path, *,
                       progress: Progress = _no_progress, resume: bool = False) -> dict:
        """Stream a version to `target`, verifying its sha256; returns {version_id, sha256, remark, size,
        uploaded_at (POSIX seconds or None), received_bytes}.

        Without `resume`, `target` is removed on any failure. With it, a connection that breaks keeps what
        arrived (and `<target>.version` naming its version), and the next call asks only for the rest
        (`Range`); the rest is taken only if the server serves the same version, else the whole is fetched.
        """
        ledger_id, year = check_ledger_id(ledger_id), check_year(year)
        url = f"{self.base_url}/{side}/{ledger_id}/years/{year}/versions/{quote(str(version), safe='')}/content"
        marker = target.with_name(target.name + ".version")
        offset, partial_of = 0, ""
        if resume and target.is_file() and marker.is_file():
            offset, partial_of = target.stat().st_size, marker.read_text(encoding="utf-8").strip()
        received = 0

        async def receive(response: Response) -> dict:
            nonlocal received
            if response.status >= 400:
                raw = await response.read()
                data = _parse_json(raw)
                raise error_for(response.status, None if data is _NOT_JSON else data)
            expected = response.headers.get("X-Content-SHA256", "")
            served = response.headers.get("X-Version-Id", "")
            if response.status not in (200, 206) or len(expected) != 64:
                raise ProtocolError(f"服务器的回答不是 e会计云服务的数据（HTTP {response.status}）")
            length = int(response.headers.get("Content-Length", "0") or 0)
            start = 0
            if response.status == 206:
                start = int(response.headers.get("Content-Range", "bytes 0-").split(" ", 1)[-1].split("-", 1)[0] or 0)
                if served != partial_of or start != offset:
                    raise _Restart()
            digest = hashlib.sha256()
            done = start
            try:
                if start:
                    with open(target, "rb") as kept:  # what an earlier, broken download left
                        while block := kept.read(BLOCK):
                            digest.update(block)
                if resume:
                    marker.write_text(served, encoding="utf-8")
                with open(target, "ab" if start else "wb") as handle:
                    async for block in response.stream:
                        digest.update(block)
                        handle.write(block)
                        done += len(block)
                        received += len(block)
                        self.bytes_received += len(block)
                        progress(done, start + length, "receiving")
            except OSError as exc:
                if isinstance(exc, ConnectionError):
                    raise
                raise DiskError(f"写入 {target.parent} 失败（{exc.strerror or exc}），磁盘可能已满；未保存任何数据") from exc
            progress(done, done, "verifying")
            if digest.hexdigest() != expected:
                # A share cancelled mid-download ends the stream short: never take part of a year.
                raise ChecksumError("下载的数据不完整或校验失败，请重新下载")
            return {"version_id": served, "sha256": expected,
                    "remark": unquote(response.headers.get("X-Remark", "")), "size": done,
                    "uploaded_at": _upload_time(response.headers), "received_bytes": received}

        def forget() -> None:
            for path in (target, marker):
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass

        try:
            try:
                headers = {**self._headers(True), **({"Range": f"bytes={offset}-"} if offset else {})}
                result = await self.transport.send(Request("GET", url, headers), receive)
            except (_Restart, ChecksumError, ApiError) as exc:
                # 416: the kept part is already whole or longer than the version.
                if not offset or (isinstance(exc, ApiError) and exc.status != 416):
                    raise
                # The kept part belongs to another version (or is bad): fetch the whole year.
                forget()
                offset, partial_of = 0, ""
                result = await self.transport.send(Request("GET", url, self._headers(True)), receive)
        except TransportError:
            if not resume:
                forget()
            raise
        except BaseException:
            forget()
            raise
        marker.unlink(missing_ok=True)
        return result


class _Restart(Exception):
    """A ranged answer that does not continue the kept part."""


def _answers_as_documented(method):
    """An answer missing a field the API promises is the server's (or a proxy's) fault, not a KeyError."""

    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ProtocolError(f"服务器的回答缺少应有的内容（{type(exc).__name__}: {exc}），请检查 --server 地址") from exc

    return wrapper


for _name, _method in list(vars(EacctClient).items()):
    if not _name.startswith("_") and inspect.iscoroutinefunction(_method) and _name != "close":
        setattr(EacctClient, _name, _answers_as_documented(_method))
