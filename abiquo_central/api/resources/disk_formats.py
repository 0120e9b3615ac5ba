"""/api/config/diskformattypes[/{id}]: the disk formats templates come in.

Read by any authenticated user. `{id}` is the format's id or its name (VMDK_FLAT).
"""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.endpoint import endpoint
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.render import render, render_collection
from abiquo_central.config import disk_formats as domain


class DiskFormatType(Entity, kw_only=True):
    media = Media.of("diskformattype", xml="diskFormatType")

    id: int
    name: str
    description: str = ""
    # How OVF envelopes name the format.
    uri: str | None = None


def to_model(info: domain.DiskFormatInfo, hrefs: Hrefs) -> DiskFormatType:
    return DiskFormatType(
        id=info.id,
        name=info.name,
        description=info.description,
        uri=info.uri,
        links=[
            hrefs.link("edit", "config", "diskformattypes", info.id, media=DiskFormatType.media.one)
        ],
    )


@endpoint(produces=DiskFormatType.media.many)
async def list_disk_formats(request: web.Request) -> web.Response:
    hrefs = Hrefs.of(request)
    found = domain.disk_formats()
    return render_collection(
        request, [to_model(f, hrefs) for f in found], media=DiskFormatType.media, total=len(found)
    )


@endpoint(produces=DiskFormatType.media.one)
async def get_disk_format(request: web.Request) -> web.Response:
    found = domain.disk_format(request.match_info["id"])
    return render(request, to_model(found, Hrefs.of(request)))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/config/diskformattypes", list_disk_formats, name="diskformattypes")
    router.add_get(
        r"/config/diskformattypes/{id:[A-Za-z0-9_]{1,64}}", get_disk_format, name="diskformattype"
    )
