"""The application factory: wires settings, database, blob store (from `eacct.providers`, as the commands get
them) and every area's routes together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eacct.config import Settings
from eacct.db import unit_of_work
from eacct.providers import provide
from eacct.storage import BlobStore
from eacct.openapi import endpoint, openapi_document
from eacct.netdisk.hooks import NetdiskHooks
from eacct.secrets import PasswordHashing
from eacct.web import BLOBS, HASHING, NETDISK_HOOKS, NOTIFIER, SESSIONS, SETTINGS, error_middleware, json_response
from eacct.web import install_json_protocol_errors, remember_started_response

__all__ = ["create_app"]

log = logging.getLogger("eacct")

ENGINE = web.AppKey("engine", AsyncEngine)
JSON_BODY_LIMIT = 1024 * 1024
# How long shutdown waits for WeChat template messages still on their way.
SHUTDOWN_WAIT_SECONDS = 3.0
# At shutdown, requests under way get this long to finish; the rest (an upload whose body is still coming)
# are cancelled and get this long to undo what they stored. With the WeChat wait, shutdown stays under 10 s.
IN_FLIGHT_GRACE_SECONDS = 2.0
CANCELLED_WAIT_SECONDS = 3.0
IN_FLIGHT = web.AppKey("in_flight", set)


@web.middleware
async def track_in_flight(request: web.Request, handler):
    """Remember the task of each request under way, so shutdown can cancel those that would not end."""
    tasks = request.app[IN_FLIGHT]
    task = asyncio.current_task()
    tasks.add(task)
    try:
        return await handler(request)
    finally:
        tasks.discard(task)


async def finish_in_flight(app: web.Application) -> None:
    """On shutdown (no new connections any more): let requests under way finish for a moment, then cancel
    the rest. A cancelled upload abandons its pending packs, so nothing of it becomes visible or stays."""
    tasks = app[IN_FLIGHT]
    if tasks:
        await asyncio.wait(set(tasks), timeout=IN_FLIGHT_GRACE_SECONDS)
    remaining = set(tasks)
    if not remaining:
        return
    log.info("shutdown: cancelling %d request(s) still under way", len(remaining))
    for task in remaining:
        task.cancel()
    _, stuck = await asyncio.wait(remaining, timeout=CANCELLED_WAIT_SECONDS)
    if stuck:
        log.warning("shutdown: %d request(s) did not end in time; gc reclaims what they stored", len(stuck))


class HealthOut(BaseModel):
    status: Literal["ok"]


@endpoint(auth=False, answer=HealthOut, summary="健康检查：数据库可用时答 ok")
async def healthz(request: web.Request) -> web.Response:
    async with unit_of_work(request.app[SESSIONS], read_only=True) as session:
        await session.execute(text("SELECT 1"))
    return json_response({"status": "ok"})


class OpenApiOut(BaseModel):
    """The OpenAPI document itself (its shape is OpenAPI 3.1's)."""

    model_config = ConfigDict(extra="allow")
    openapi: str
    info: dict
    paths: dict
    components: dict


@endpoint(auth=False, answer=OpenApiOut, summary="本接口的 OpenAPI 3 文档")
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app))


def create_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    blobs: BlobStore | None = None,
    collect_garbage_on_start: bool = True,
    hashing: PasswordHashing | None = None,
) -> web.Application:
    """Build the aiohttp application. Given an engine or blob store, the app uses but does not close them;
    `hashing` bounds concurrent argon2 work (default: one slot per core)."""
    from eacct.members.api import routes as member_routes
    from eacct.netdisk.api import routes as netdisk_routes
    from eacct.netdisk.upload_api import routes as upload_session_routes
    from eacct.share.api import routes as share_routes
    from eacct.share import service as share_service
    from eacct.share.notify import MessageCenterNotifier
    from eacct.wechat.api import routes as wechat_routes
    from eacct.wechat.pages import setup_pages
    from eacct.wechat.notify import WechatTemplateNotifier

    settings.trusted_proxy_networks()  # a malformed EACCT_TRUSTED_PROXIES stops start-up, not a request
    app = web.Application(middlewares=[track_in_flight, error_middleware], client_max_size=JSON_BODY_LIMIT)
    install_json_protocol_errors()  # malformed HTTP is refused in API.md's JSON too, not aiohttp's plain text
    app.on_response_prepare.append(remember_started_response)  # no second answer into a begun one
    app[SETTINGS] = settings
    app[HASHING] = hashing if hashing is not None else PasswordHashing()
    app[IN_FLIGHT] = set()
    app.on_shutdown.append(finish_in_flight)
    # Personal messages go to the message center, and as WeChat template messages when WeChat is configured.
    wechat_templates = WechatTemplateNotifier(settings) if WechatTemplateNotifier.configured(settings) else None
    app[NOTIFIER] = MessageCenterNotifier(extra_channels=[wechat_templates] if wechat_templates else [])

    async def resources(app: web.Application) -> AsyncIterator[None]:
        # Registered at start-up, with the notifier the app ends up with.
        app[NETDISK_HOOKS] = NetdiskHooks()
        share_service.register(app[NETDISK_HOOKS], app[NOTIFIER])
        # The caller (`eacct serve`, a test) checked the settings and migrated; given resources are not closed.
        async with provide(settings, engine=engine, blobs=blobs, checked=False) as provided:
            app[ENGINE], app[SESSIONS], app[BLOBS] = provided.engine, provided.sessions, provided.blobs
            if wechat_templates is not None:
                wechat_templates.share_token_through(app[SESSIONS])
            gc_task = None
            if collect_garbage_on_start:
                gc_task = asyncio.create_task(_collect_garbage(app))
            yield
            if wechat_templates is not None:
                await wechat_templates.close(timeout=SHUTDOWN_WAIT_SECONDS)
            if gc_task is not None:
                gc_task.cancel()
                await asyncio.gather(gc_task, return_exceptions=True)

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.add_routes(member_routes)
    app.add_routes(netdisk_routes)
    app.add_routes(upload_session_routes)
    app.add_routes(share_routes)
    app.add_routes(wechat_routes)
    setup_pages(app)
    return app


async def _collect_garbage(app: web.Application) -> None:
    """Reclaim what crashed uploads left behind, without delaying start-up; then keep reclaiming the data of
    uploads whose lease lapses (a process that died, possibly this one's predecessor moments ago)."""
    from eacct.netdisk.store import collect_garbage, reclaim_abandoned_uploads

    try:
        report = await collect_garbage(app[SESSIONS], app[BLOBS], app[SETTINGS])
        log.info("start-up gc: %s", report)
    except Exception:
        log.exception("start-up gc failed; `eacct gc` can be run by hand")
    while True:
        await asyncio.sleep(max(app[SETTINGS].upload_lease_seconds, 1))
        try:
            report = await reclaim_abandoned_uploads(app[SESSIONS], app[BLOBS], app[SETTINGS])
            if any(report.values()):
                log.info("reclaimed abandoned uploads: %s", report)
        except Exception:
            log.warning("reclaiming abandoned uploads failed; will retry", exc_info=True)
