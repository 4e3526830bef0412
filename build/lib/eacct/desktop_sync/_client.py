"""EacctClient: the REST API of API.md as the desktop program calls it, with the transport injected.

Pure request building and answer mapping live here; all I/O goes through one `Transport.send`. The default
transport is aiohttp; `MockTransport` answers from a function, for tests of code built on the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

import aiohttp

from eacct.desktop_sync._exceptions import ChecksumError, TransportError, error_for
from eacct.netdisk import delta as delta_format

__all__ = ["AiohttpTransport", "EacctClient", "MockTransport", "Request", "Response", "Transport"]

BLOCK = 1 << 20


@dataclass
class Request:
    """One HTTP request: a JSON body (`json`), or `body_size` bytes streamed from `body` (called once)."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    body: Callable[[], Iterator[bytes]] | None = None
    body_size: int = 0


@dataclass
class Response:
    """An answer: status, headers, and the body as an async iterator of blocks."""

    status: int
    headers: dict[str, str]
    stream: AsyncIterator[bytes]

    async def read(self) -> bytes:
        return b"".join([block async for block in self.stream])

    async def json(self) -> Any:
        raw = await self.read()
        return json.loads(raw) if raw else None


class Transport(Protocol):
    """Sends a request and hands the answer to `receive` while its body can still be streamed."""

    async def send(self, request: Request, receive: Callable[[Response], Awaitable[Any]]) -> Any: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    """The real transport: one aiohttp session, file bodies streamed from disk."""

    def __init__(self, timeout: float = 300.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, request: Request, receive: Callable[[Response], Awaitable[Any]]) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        data = None
        headers = dict(request.headers)
        if request.body is not None:
            headers["Content-Length"] = str(request.body_size)
            data = _async_blocks(request.body())
        try:
            async with self._session.request(request.method, request.url, headers=headers, json=request.json,
                                             data=data) as answer:
                return await receive(Response(answer.status, dict(answer.headers), answer.content.iter_chunked(BLOCK)))
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise TransportError(f"无法连接 e会计云服务：{exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def file_blocks(path: Path) -> Iterator[bytes]:
    """A file in blocks."""
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            yield block


async def _async_blocks(blocks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # Disk reads are short next to the network send; reading on a thread keeps the loop free anyway.
    while (block := await asyncio.to_thread(next, blocks, None)) is not None:
        yield block


class MockTransport:
    """Answers every request with `handler(request) -> (status, headers, body bytes)`."""

    def __init__(self, handler: Callable[[Request], tuple[int, dict[str, str], bytes]]) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    async def send(self, request: Request, receive: Callable[[Response], Awaitable[Any]]) -> Any:
        self.requests.append(request)
        status, headers, body = self.handler(request)

        async def stream() -> AsyncIterator[bytes]:
            yield body

        return await receive(Response(status, headers, stream()))

    async def close(self) -> None:
        pass


class EacctClient:
    """The eacct REST API for one member: log in, unlock the netdisk, list, upload and download years."""

    def __init__(self, base_url: str, *, transport: Transport | None = None, client_version: str = "") -> None:
        self.base_url = base_url.rstrip("/") + "/api/v1"
        self.transport = transport or AiohttpTransport()
        self.client_version = client_version
        self.token = ""
        self.netdisk_token = ""

    async def __aenter__(self) -> "EacctClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the transport."""
        await self.transport.close()

    def _headers(self, netdisk: bool) -> dict[str, str]:
        token = self.netdisk_token if netdisk else self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _json(self, method: str, path: str, *, netdisk: bool = False, body: Any = None,
                    headers: dict[str, str] | None = None) -> Any:
        request = Request(method, self.base_url + path, {**self._headers(netdisk), **(headers or {})}, json=body)

        async def receive(response: Response) -> Any:
            data = await response.json() if response.headers.get("Content-Type", "").startswith("application/json") else None
            if response.status >= 400:
                raise error_for(response.status, data)
            return data

        return await self.transport.send(request, receive)

    async def log_in(self, account: str, password: str) -> dict:
        """Open a session; returns the member."""
        answer = await self._json("POST", "/sessions", body={"account": account, "password": password})
        self.token = answer["token"]
        return answer["member"]

    async def unlock(self, netdisk_password: str) -> None:
        """输入云盘密码登录云盘."""
        answer = await self._json("POST", "/netdisk/unlock", body={"password": netdisk_password})
        self.netdisk_token = answer["netdisk_token"]

    async def me(self) -> dict:
        return await self._json("GET", "/me")

    async def netdisk(self) -> dict:
        return await self._json("GET", "/netdisk")

    async def backups(self) -> list[dict]:
        """网盘列表: my cloud-backup ledgers."""
        return (await self._json("GET", "/backups", netdisk=True))["ledgers"]

    async def backup(self, ledger_id: str) -> dict:
        """One of my ledgers (WrongPath when it is shared with me instead)."""
        return await self._json("GET", f"/backups/{ledger_id}", netdisk=True)

    async def cloud_shares(self) -> list[dict]:
        """我的云共享: sharers → ledgers → years → versions."""
        return (await self._json("GET", "/cloud-shares", netdisk=True))["sharers"]

    async def missing_chunks(self, side: str, ledger_id: str, year: int, digests: list[str]) -> set[str]:
        """Which chunk digests (hex) the cloud lacks for this ledger's owner."""
        missing: set[str] = set()
        for start in range(0, len(digests), 100_000):
            answer = await self._json("POST", f"/{side}/{ledger_id}/years/{year}/chunks/missing", netdisk=True,
                                      body={"chunks": digests[start : start + 100_000]})
            missing.update(answer["missing"])
        return missing

    async def upload(self, side: str, ledger_id: str, year: int, archive: Path, sha256: str, *, remark: str = "",
                     ledger_name: str | None = None, if_match: str | None = None, delta: Path | None = None) -> dict:
        """Upload a year archive on `side` ("backups" or "cloud-shares"); returns the new Version. With
        `delta`, the body is that delta file (eacct.netdisk.delta) instead of the archive."""
        headers = {**self._headers(True), "Content-Type": "application/octet-stream", "X-Content-SHA256": sha256,
                   "X-Remark": quote(remark, safe=""), "X-Client-Version": quote(self.client_version, safe="")}
        if ledger_name:
            headers["X-Ledger-Name"] = quote(ledger_name, safe="")
        if if_match:
            headers["If-Match"] = f'"{if_match}"'
        url = f"{self.base_url}/{side}/{ledger_id}/years/{year}/versions"
        if delta is None:
            request = Request("POST", url, headers, body=lambda: file_blocks(archive), body_size=archive.stat().st_size)
        else:
            headers["Content-Type"] = delta_format.MEDIA_TYPE
            headers["X-Archive-Size"] = str(archive.stat().st_size)
            request = Request("POST", url, headers, body=lambda: file_blocks(delta), body_size=delta.stat().st_size)

        async def receive(response: Response) -> Any:
            data = await response.json()
            if response.status >= 400:
                raise error_for(response.status, data)
            return data

        return await self.transport.send(request, receive)

    async def download(self, side: str, ledger_id: str, year: int, version: str, target: Path) -> dict:
        """Stream a version to `target`, verifying its sha256; returns {version_id, sha256, remark}."""
        request = Request("GET", f"{self.base_url}/{side}/{ledger_id}/years/{year}/versions/{version}/content",
                          self._headers(True))

        async def receive(response: Response) -> dict:
            if response.status >= 400:
                raw = await response.read()
                raise error_for(response.status, json.loads(raw) if raw.startswith(b"{") else None)
            digest = hashlib.sha256()
            with open(target, "wb") as handle:
                async for block in response.stream:
                    digest.update(block)
                    handle.write(block)
            expected = response.headers.get("X-Content-SHA256", "")
            if digest.hexdigest() != expected:
                # A share cancelled mid-download ends the stream short: never take part of a year.
                raise ChecksumError("下载的数据不完整或校验失败，请重新下载")
            return {"version_id": response.headers.get("X-Version-Id", ""), "sha256": expected,
                    "remark": unquote(response.headers.get("X-Remark", ""))}

        return await self.transport.send(request, receive)
