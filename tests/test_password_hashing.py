"""Issue 7, item 13: a login flood must not stall the service. argon2 runs with no database connection held,
at most one hash per core at once (eacct.secrets.PasswordHashing, an app dependency), and the excess is shed
with 503 busy + Retry-After."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from eacct.app import create_app
from eacct.db import unit_of_work
from eacct.secrets import PasswordHashing, hash_secret, verify_secret
from tests.conftest import Desktop

FLOOD = 60
BUDGET_SECONDS = 0.2
# Time for the server to take in the burst itself (parsing 60 requests on a shared, busy machine), after which
# the flood is still being hashed: what is measured is whether hashing stalls the rest of the service.
BURST_SETTLES_SECONDS = 0.3


async def timed_get(http, url: str, token: str | None = None) -> tuple[int, float]:
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as response:
        await response.read()
        return response.status, time.monotonic() - started


async def test_item_13_healthz_and_lists_answer_quickly_during_a_login_flood(aiohttp_server, engine, settings, blobs,
                                                                              http):
    # Real argon2 work per check (the tests' default is nearly free), so the flood lasts as one would.
    settings = settings.with_overrides(argon2_time_cost=3, argon2_memory_kib=32768, trusted_proxies="127.0.0.1/32")
    # Every login of the flood is admitted (none shed), so the hashing lasts while the probes run, whatever the
    # machine's speed; shedding has a test of its own below.
    app = create_app(settings, engine=engine, blobs=blobs, collect_garbage_on_start=False,
                     hashing=PasswordHashing(queue=FLOOD))
    base_url = str((await aiohttp_server(app, host="127.0.0.1")).make_url("")).rstrip("/")
    member = await Desktop(http, base_url, "flood01", "小王").register()

    async def wrong_login(n: int):
        # Unknown accounts from many addresses: no throttle stops these before the password check.
        async with http.post(f"{base_url}/api/v1/sessions", json={"account": f"nobody{n}", "password": "guess-123"},
                             headers={"X-Forwarded-For": f"203.0.113.{n}"}) as response:
            return response.status, await response.json(), response.headers

    # Warm up once (first-use costs such as compiling SQL are not what this measures).
    assert (await wrong_login(250))[0] == 401
    await timed_get(http, f"{base_url}/api/v1/messages", member.token)

    flood = [asyncio.create_task(wrong_login(n)) for n in range(FLOOD)]
    await asyncio.sleep(BURST_SETTLES_SECONDS)
    probes = []
    for _ in range(4):
        probes.append(await timed_get(http, f"{base_url}/healthz"))
        probes.append(await timed_get(http, f"{base_url}/api/v1/messages", member.token))
        await asyncio.sleep(0.02)
    still_flooding = sum(not task.done() for task in flood)
    answers = await asyncio.gather(*flood)
    assert still_flooding, "the flood ended before the probes: nothing was measured"
    assert all(status == 200 for status, _ in probes), probes
    assert max(seconds for _, seconds in probes) < BUDGET_SECONDS, probes
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {401, 503} and 401 in statuses
    for status, body, headers in answers:
        if status == 503:
            assert body["error"]["code"] == "busy" and int(headers["Retry-After"]) > 0


async def test_item_13_hashing_is_bounded_to_its_slots_and_sheds_the_rest():
    hashing = PasswordHashing(slots=2, queue=3)
    running, peak = 0, 0

    def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        time.sleep(0.05)
        running -= 1

    results = await asyncio.gather(*[hashing.run(work) for _ in range(10)], return_exceptions=True)
    shed = [r for r in results if isinstance(r, Exception)]
    assert peak <= 2
    assert len(shed) == 10 - 5 and all(type(r).__name__ == "Busy" and r.extra["retry_after"] >= 1 for r in shed)
    assert PasswordHashing().slots == max(1, os.cpu_count() - 1)  # one core stays with the event loop


async def test_argon2_inside_a_writing_unit_of_work_is_refused(sessions, settings):
    """Hashing inside a writing unit would hold the write lock for the whole hash, and on SQLite deadlock with a
    login that holds the hashing slot while it waits for its turn to write: it fails at once instead."""
    hashing = PasswordHashing(slots=1)
    for bounded in (hashing, None):
        with pytest.raises(RuntimeError, match="argon2 inside a writing unit of work"):
            async with unit_of_work(sessions):
                await hash_secret(settings, "secret", bounded)
    async with unit_of_work(sessions, read_only=True):  # reads hold no write lock: hashing there is allowed
        assert await verify_secret(settings, await hash_secret(settings, "secret", hashing), "secret", hashing)


async def test_hashes_run_on_the_executor_given(settings):
    """The server hands its low-priority bulk pool to PasswordHashing (eacct.cli): argon2 runs there, below the
    request path, and not on the default executor the short hops use."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="given-bulk") as bulk:
        hashing = PasswordHashing(slots=1, executor=bulk)
        threads = []
        stored = await hashing.run(lambda: threads.append(threading.current_thread().name) or "done")
        assert await verify_secret(settings, await hash_secret(settings, "secret", hashing), "secret", hashing)
    assert stored == "done" and threads and threads[0].startswith("given-bulk")
