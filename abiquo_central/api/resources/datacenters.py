"""/api/admin/datacenters[/{id}]: the datacenters, with their liveness and remote services."""

from __future__ import annotations

from datetime import datetime

import msgspec
from aiohttp import web

from abiquo_central.api.endpoint import endpoint
from abiquo_central.api.keys import CLOCK, ENGINE, SETTINGS
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Collection, Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_collection
from abiquo_central.infrastructure import datacenters as domain
from abiquo_central.tenants.privileges import PHYS_DC_ENUMERATE


class RemoteService(Entity, kw_only=True):
    media = Media.of("remoteservice", xml="remoteService")

    type: str
    uri: str
    # 1 when the service answers, 0 when it does not.
    status: int = 0


class Datacenter(Entity, kw_only=True):
    media = Media.of("datacenter")

    # Absent from the body of a POST: the server assigns them.
    id: int | None = None
    uuid: str | None = None
    name: str
    location: str = ""
    remote_services: Collection[RemoteService] = msgspec.field(default_factory=Collection.empty)
    # Whether central heard from the datacenter within settings.datacenters.liveness_timeout.
    available: bool = False
    last_heartbeat: datetime | None = None


def to_model(dc: domain.Datacenter, hrefs: Hrefs) -> Datacenter:
    here = ("admin", "datacenters", dc.id)
    return Datacenter(
        id=dc.id,
        uuid=dc.uuid,
        name=dc.name,
        location=dc.location,
        remote_services=Collection(
            collection=[
                RemoteService(type=rs.type, uri=rs.uri, status=rs.status)
                for rs in dc.remote_services
            ]
        ),
        available=dc.available,
        last_heartbeat=dc.last_heartbeat,
        links=[
            hrefs.link("edit", *here, media=Datacenter.media.one, title=dc.name),
            hrefs.link("remoteservices", *here, "remoteservices", media=RemoteService.media.many),
            hrefs.link("racks", *here, "racks"),
        ],
    )


@endpoint(produces=Datacenter.media.many, privileges=[PHYS_DC_ENUMERATE])
async def list_datacenters(request: web.Request) -> web.Response:
    page = parse_page(request)
    app = request.config_dict
    found = await domain.list_datacenters(
        app[ENGINE],
        page=page,
        now=app[CLOCK](),
        liveness_timeout=app[SETTINGS].datacenters.liveness_timeout,
    )
    hrefs = Hrefs.of(request)
    return render_collection(
        request,
        [to_model(dc, hrefs) for dc in found.items],
        media=Datacenter.media,
        total=found.total,
        page=page,
    )


@endpoint(produces=Datacenter.media.one, privileges=[PHYS_DC_ENUMERATE])
async def get_datacenter(request: web.Request) -> web.Response:
    app = request.config_dict
    dc = await domain.get_datacenter(
        app[ENGINE],
        path_id(request, "id"),
        now=app[CLOCK](),
        liveness_timeout=app[SETTINGS].datacenters.liveness_timeout,
    )
    return render(request, to_model(dc, Hrefs.of(request)))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/admin/datacenters", list_datacenters, name="datacenters")
    router.add_get(r"/admin/datacenters/{id:\d+}", get_datacenter, name="datacenter")
