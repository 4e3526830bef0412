"""Fixtures of the WeChat tests: a local fake of WeChat's server API and the app on a free port, configured
with the appid and secret of the test module (`APPID`, `SECRET`)."""

from __future__ import annotations

import pytest

from tests.wechat_api_server import start_wechat_api


@pytest.fixture
async def wechat_api(request):
    api = await start_wechat_api(request.module.APPID, request.module.SECRET)
    yield api
    await api.close()


@pytest.fixture
async def site(request, make_server, settings, blobs, wechat_api):
    settings = settings.with_overrides(wechat_appid=request.module.APPID, wechat_secret=request.module.SECRET,
                                       wechat_token="tok", wechat_api_base=wechat_api.base_url)
    return await make_server(settings, blobs)
