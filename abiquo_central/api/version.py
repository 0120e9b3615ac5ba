"""GET /api/version: the version of this server, as text/plain."""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.endpoint import endpoint

__version__ = "0.1.0"


@endpoint(public=True)
async def get_version(request: web.Request) -> web.Response:
    return web.Response(text=__version__, content_type="text/plain")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/version", get_version, name="version")
