"""How the desktop client's requests travel: the `Transport` interface, the aiohttp transport (client half
only), `MockTransport` for tests, and file bodies read in blocks with progress. Lower-library errors become
the classes of `_exceptions` here, where the transport meets the client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from eacct.desktop_sync._exceptions import DiskError, SyncError, TransportError

__all__ = [
    "BLOCK", "AiohttpTransport", "MockTransport", "Progress", "Request", "Response", "Timeout", "Transport", "file_blocks",
]

BLOCK = 1 << 20

Progress = Callable[[int, int, str], None]
"""A transfer's progress: (bytes done, bytes in all, phase) with phase one of packing, hashing, sending,
receiving, verifying."""


def _no_progress(done: int, total: int, phase: str) -> None:
    pass


@dataclass(frozen=True)
class Timeout:
    """Seconds to wait: to connect, and for each read while an answer arrives (a transfer may take longer)."""

    connect: float = 30.0
    read: float = 300.0


@dataclass
class Request:
    """One HTTP request: `content` bytes, or `size` bytes streamed from `stream` (called once)."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    stream: Callable[[], Iterator[bytes]] | None = None
    size: int = 0


@dataclass
class Response:
    """An answer: status, headers, and the body as an async iterator of blocks."""

    status: int
    headers: dict[str, str]
    stream: AsyncIterator[bytes]

    async def read(self) -> bytes:
        return b"".join([block async for block in self.stream])


class Transport(Protocol):
    """Sends a request and hands the answer to `receive` while its body can still be streamed."""

    async def send(self, request: Request, receive: Callable[[Response], Awaitable[Any]]) -> Any: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    """The real transport: one aiohttp client session, file bodies streamed from disk."""

    def __init__(self, timeout: Timeout = Timeout()) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout.connect, sock_read=timeout.read)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, request: Request, receive: Callable[[Response], Awaitable[Any]]) -> Any:
        headers = dict(request.headers)
        data: Any = request.content
        if request.stream is not None:
            headers["Content-Length"] = str(request.size)
            data = _async_blocks(request.stream())
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=self._timeout)
            async with self._session.request(request.method, request.url, headers=headers, data=data) as answer:
                return await receive(Response(answer.status, dict(answer.headers), answer.content.iter_chunked(BLOCK)))
        except SyncError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            # ValueError: aiohttp's answer to a malformed server URL.
            raise TransportError(f"无法连接 e会计云服务（{type(exc).__name__}: {exc or '连接中断'}）") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def file_blocks(path: Path, progress: Progress = _no_progress, phase: str = "sending") -> Iterator[bytes]:
    """A file in blocks, reporting progress; a disk failure is a DiskError."""
    total = path.stat().st_size
    done = 0
    try:
        with open(path, "rb") as handle:
            while block := handle.read(BLOCK):
                done += len(block)
                yield block
                progress(done, total, phase)
    except OSError as exc:
        raise DiskError(f"读取 {path} 失败：{exc.strerror or exc}") from exc


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
