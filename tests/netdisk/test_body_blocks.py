"""Request bodies in blocks read into reused buffers: a block stays as it was for as long as anything holds it."""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD

from eacct.netdisk.api import BODY_BLOCK, BODY_BUFFERS_KEPT, body_blocks
from eacct.web import SETTINGS

BODY = os.urandom((BODY_BUFFERS_KEPT + 5) * BODY_BLOCK + 12345)


async def _held_every_other_block(request: web.Request) -> web.Response:
    """Keeps every other block to the end (as chunks waiting for their compression keep theirs) and checks each one
    against the body the test sent, then and at the end."""
    held: list[tuple[int, memoryview]] = []
    sizes = []
    digest = hashlib.sha256()
    position = 0
    async for block in body_blocks(request):
        assert block.readonly and bytes(block) == BODY[position : position + len(block)]
        digest.update(block)
        if len(sizes) % 2 == 0:
            held.append((position, block))
        sizes.append(len(block))
        position += len(block)
    intact = all(bytes(block) == BODY[start : start + len(block)] for start, block in held)
    return web.json_response({"sizes": sizes, "sha256": digest.hexdigest(), "held_blocks_intact": intact})


@pytest.fixture
async def body_server(aiohttp_server, settings):
    app = web.Application(client_max_size=len(BODY) * 2)
    app[SETTINGS] = settings
    app.router.add_put("/body", _held_every_other_block)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}/body"


async def _sent_in_pieces(data: bytes, piece: int):
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
async def test_body_blocks_held_while_others_are_read_stay_intact(body_server, http, transfer):
    data = BODY if transfer == "content-length" else _sent_in_pieces(BODY, 100_000)
    async with http.put(body_server, data=data) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["held_blocks_intact"] is True
    assert answer["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert answer["sizes"][:-1] == [BODY_BLOCK] * (len(answer["sizes"]) - 1) and sum(answer["sizes"]) == len(BODY)


async def test_a_small_body_is_one_block_of_its_own_size(body_server, http):
    async with http.put(body_server, data=BODY[:777]) as response:
        answer = await response.json()
    assert answer["sizes"] == [777] and answer["held_blocks_intact"] is True


class _CountedReads:
    """A request body's stream whose reads are counted: a reader that never stops fails instead of spinning."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.reads = 0

    async def readany(self):
        self.reads += 1
        assert self.reads < 100, "body_blocks kept reading an empty body"
        return await self.stream.readany()


async def test_an_empty_body_ends_at_once_even_after_another_request_read_the_shared_empty_stream(settings):
    # aiohttp gives every request without a body one shared EmptyStreamReader: once any reader has had its end, its
    # readchunk() answers (b"", True), "end of an HTTP chunk", for ever; readany() must still end the body.
    await EMPTY_PAYLOAD.readchunk()
    stream = _CountedReads(EMPTY_PAYLOAD)
    request = SimpleNamespace(content=stream, content_length=0, app={SETTINGS: settings})
    assert [block async for block in body_blocks(request)] == []
    assert stream.reads <= 2
