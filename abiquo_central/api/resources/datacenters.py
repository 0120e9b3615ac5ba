"""/api/admin/datacenters[/{id}]: the datacenters, with their liveness and remote services.

Reading needs PHYS_DC_ENUMERATE; creating (with the remote services, in one go, as Abiquo
clients do), modifying and deleting need PHYS_DC_MANAGE.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from aiohttp import web

from abiquo_central.api.auth import actor
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, endpoint
from abiquo_central.api.keys import CLOCK, ENGINE, ON_QUEUED, SETTINGS
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Collection, Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.api.resources import remote_services
from abiquo_central.api.resources.remote_services import RemoteService
from abiquo_central.infrastructure import datacenters as domain
from abiquo_central.tenants.privileges import PHYS_DC_ENUMERATE, PHYS_DC_MANAGE

__all__ = ["Datacenter", "RemoteService", "add_routes", "to_model"]


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
            collection=[remote_services.to_model(rs, hrefs) for rs in dc.remote_services]
        ),
        available=dc.available,
        last_heartbeat=dc.last_heartbeat,
        links=[
            hrefs.link("edit", *here, media=Datacenter.media.one, title=dc.name),
            hrefs.link("remoteservices", *here, "remoteservices", media=RemoteService.media.many),
            hrefs.link("racks", *here, "racks"),
        ],
    )


def to_spec(body: Datacenter) -> domain.DatacenterSpec:
    return domain.DatacenterSpec(
        name=body.name,
        location=body.location,
        remote_services=tuple((rs.type, rs.uri) for rs in body.remote_services.collection),
    )


@endpoint(produces=Datacenter.media.many, privileges=[PHYS_DC_ENUMERATE], query=PAGING)
async def list_datacenters(request: web.Request) -> web.Response:
    page = parse_page(request)
    app = request.config_dict
    found = await domain.list_datacenters(
        app[ENGINE],
        page=page,
        now=app[CLOCK](),
        liveness_timeout=app[SETTINGS].datacenters.liveness_timeout,
    )
    return render_page(request, found, page, to_model, media=Datacenter.media)


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


async def _shown(
    request: web.Request, dc_id: int, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    app = request.config_dict
    dc = await domain.get_datacenter(
        app[ENGINE],
        dc_id,
        now=app[CLOCK](),
        liveness_timeout=app[SETTINGS].datacenters.liveness_timeout,
    )
    return render(request, to_model(dc, Hrefs.of(request)), status=status, headers=headers)


@endpoint(produces=Datacenter.media.one, consumes=Datacenter, privileges=[PHYS_DC_MANAGE])
async def create_datacenter(request: web.Request) -> web.Response:
    body = await read_entity(request, Datacenter)
    dc_id = await domain.create_datacenter(
        request.config_dict[ENGINE],
        to_spec(body),
        checker=remote_services.checker(request),
        actor=actor(request),
        now=request.config_dict[CLOCK](),
    )
    # Its factory may have named it: a request to it was queued (AnnounceTemplates).
    request.config_dict[ON_QUEUED]()
    edit = Hrefs.of(request)("admin", "datacenters", dc_id)
    return await _shown(request, dc_id, status=201, headers={"Location": edit})


@endpoint(produces=Datacenter.media.one, consumes=Datacenter, privileges=[PHYS_DC_MANAGE])
async def update_datacenter(request: web.Request) -> web.Response:
    dc_id = path_id(request, "id")
    body = await read_entity(request, Datacenter)
    await domain.update_datacenter(
        request.config_dict[ENGINE], dc_id, to_spec(body), actor=actor(request)
    )
    return await _shown(request, dc_id)


@endpoint(privileges=[PHYS_DC_MANAGE])
async def delete_datacenter(request: web.Request) -> web.Response:
    await domain.delete_datacenter(
        request.config_dict[ENGINE], path_id(request, "id"), actor=actor(request)
    )
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/admin/datacenters", list_datacenters, name="datacenters")
    router.add_post("/admin/datacenters", create_datacenter)
    router.add_get(r"/admin/datacenters/{id:\d+}", get_datacenter, name="datacenter")
    router.add_put(r"/admin/datacenters/{id:\d+}", update_datacenter)
    router.add_delete(r"/admin/datacenters/{id:\d+}", delete_datacenter)
