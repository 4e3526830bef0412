"""Downloads go through the service layer: the byte iterator itself re-checks the path's access rule (rule 11)."""

from __future__ import annotations

import os

import pytest

from eacct import errors
from eacct.netdisk import downloads
from eacct.share import service
from tests.share.conftest import cancel

MIB = 1024 * 1024


async def test_rule_11_the_services_download_iterator_ends_when_the_share_is_cancelled(world, sessions, blobs, monkeypatch):
    monkeypatch.setattr(downloads, "RECHECK_EVERY_BYTES", 1)  # re-check after every block
    content = os.urandom(12 * MIB)
    assert (await world.owner.upload("backups", world.ledger, 2019, content))[0] == 201
    download = await service.share_download(sessions, blobs, world.recipient.id, world.ledger, 2019, "latest")
    assert download.version.size == len(content)
    blocks = download.content()
    received = await anext(blocks)
    await cancel(world.owner, world.share_id)
    with pytest.raises(errors.NotFound):
        async for block in blocks:
            received += block
    assert len(received) < len(content)


async def test_a_download_opened_on_latest_keeps_reading_that_version_after_a_newer_one_lands(world, sessions, blobs):
    download = await service.share_download(sessions, blobs, world.recipient.id, world.ledger, 2018, "latest")
    assert (await world.owner.upload("backups", world.ledger, 2018, os.urandom(1000)))[0] == 201
    await download.still_allowed()  # the pinned version is still kept and readable
    assert b"".join([block async for block in download.content()]) == world.contents[2018]
