"""The application factory: wires settings, database, blob store and every area's routes together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eacct.config import Settings
from eacct.db import engine_for, make_session_factory, unit_of_work
from eacct.netdisk.blobstore import BlobStore, open_blob_store
from eacct.openapi import endpoint, openapi_document
from eacct.web import BLOBS, NOTIFIER, SESSIONS, SETTINGS, error_middleware, json_response

__all__ = ["create_app"]

log = logging.getLogger("eacct")

ENGINE = web.AppKey("engine", AsyncEngine)
JSON_BODY_LIMIT = 1024 * 1024
# How long shutdown waits for WeChat template messages still on their way.
SHUTDOWN_WAIT_SECONDS = 5.0


async def healthz(request: web.Request) -> web.Response:
    async with unit_of_work(request.app[SESSIONS], read_only=True) as session:
        await session.execute(text("SELECT 1"))
    return json_response({"status": "ok"})


@endpoint(auth=False, summary="本接口的 OpenAPI 3 文档")
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app))


def create_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    blobs: BlobStore | None = None,
    collect_garbage_on_start: bool = True,
) -> web.Application:
    """Build the aiohttp application. Given an engine or blob store, the app uses but does not close them."""
    from eacct.members.api import routes as member_routes
    from eacct.netdisk.api import routes as netdisk_routes
    from eacct.share.api import routes as share_routes
    from eacct.share.notify import MessageCenterNotifier
    from eacct.wechat.api import routes as wechat_routes
    from eacct.wechat.notify import WechatTemplateNotifier

    settings.trusted_proxy_networks()  # a malformed EACCT_TRUSTED_PROXIES stops start-up, not a request
    app = web.Application(middlewares=[error_middleware], client_max_size=JSON_BODY_LIMIT)
    app[SETTINGS] = settings
    # Personal messages go to the message center, and as WeChat template messages when WeChat is configured.
    wechat_templates = WechatTemplateNotifier(settings) if WechatTemplateNotifier.configured(settings) else None
    app[NOTIFIER] = MessageCenterNotifier(extra_channels=[wechat_templates] if wechat_templates else [])

    async def resources(app: web.Application) -> AsyncIterator[None]:
        own_engine = engine is None
        app[ENGINE] = engine if engine is not None else engine_for(settings)
        app[SESSIONS] = make_session_factory(app[ENGINE])
        own_blobs = blobs is None
        app[BLOBS] = blobs if blobs is not None else open_blob_store(
            settings.storage_url,
            oss_access_key_id=settings.oss_access_key_id,
            oss_access_key_secret=settings.oss_access_key_secret,
        )
        gc_task = None
        if collect_garbage_on_start:
            gc_task = asyncio.create_task(_collect_garbage(app))
        yield
        if wechat_templates is not None:
            await wechat_templates.close(timeout=SHUTDOWN_WAIT_SECONDS)
        if gc_task is not None:
            gc_task.cancel()
            await asyncio.gather(gc_task, return_exceptions=True)
        if own_blobs:
            await app[BLOBS].close()
        if own_engine:
            await app[ENGINE].dispose()

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.add_routes(member_routes)
    app.add_routes(netdisk_routes)
    app.add_routes(share_routes)
    app.add_routes(wechat_routes)
    return app


async def _collect_garbage(app: web.Application) -> None:
    """Reclaim what crashed uploads left behind, without delaying start-up."""
    from eacct.netdisk.store import collect_garbage

    try:
        report = await collect_garbage(app[SESSIONS], app[BLOBS], app[SETTINGS])
        log.info("start-up gc: %s", report)
    except Exception:
        log.exception("start-up gc failed; `eacct gc` can be run by hand")
