"""/api/admin/datacenters/{dc}/racks[/{rack}]: the racks of a datacenter.

Reading needs PHYS_DC_ENUMERATE; creating, changing and removing PHYS_DC_MANAGE.
"""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.auth import actor
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, endpoint
from abiquo_central.api.keys import CLOCK, ENGINE
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.infrastructure import racks as domain
from abiquo_central.tenants.privileges import PHYS_DC_ENUMERATE, PHYS_DC_MANAGE


class Rack(Entity, kw_only=True):
    media = Media.of("rack")

    # Absent from the body of a POST: the server assigns it.
    id: int | None = None
    name: str
    short_description: str = ""
    long_description: str = ""
    # The VLAN tags its VDC networks get, both included, but the avoided ones ("5, 10-20").
    vlan_id_min: int = domain.DEFAULT_VLAN_ID_MIN
    vlan_id_max: int = domain.DEFAULT_VLAN_ID_MAX
    vlans_id_avoided: str = ""
    vlan_per_vdc_reserved: int = 1
    nrsq: int = 10
    ha_enabled: bool = False


def rack_path(dc_id: int, rack_id: int) -> tuple[str | int, ...]:
    return ("admin", "datacenters", dc_id, "racks", rack_id)


def to_model(rack: domain.Rack, hrefs: Hrefs) -> Rack:
    here = rack_path(rack.datacenter_id, rack.id)
    spec = rack.spec
    return Rack(
        id=rack.id,
        name=spec.name,
        short_description=spec.short_description,
        long_description=spec.long_description,
        vlan_id_min=spec.vlan_id_min,
        vlan_id_max=spec.vlan_id_max,
        vlans_id_avoided=spec.vlans_id_avoided,
        vlan_per_vdc_reserved=spec.vlan_per_vdc_reserved,
        nrsq=spec.nrsq,
        ha_enabled=spec.ha_enabled,
        links=[
            hrefs.link("edit", *here, media=Rack.media.one, title=spec.name),
            hrefs.link(
                "datacenter",
                "admin",
                "datacenters",
                rack.datacenter_id,
                media=Media.of("datacenter").one,
            ),
            hrefs.link("machines", *here, "machines", media=Media.of("machine").many),
        ],
    )


def to_spec(body: Rack) -> domain.RackSpec:
    return domain.RackSpec(
        name=body.name,
        short_description=body.short_description,
        long_description=body.long_description,
        vlan_id_min=body.vlan_id_min,
        vlan_id_max=body.vlan_id_max,
        vlans_id_avoided=body.vlans_id_avoided,
        vlan_per_vdc_reserved=body.vlan_per_vdc_reserved,
        nrsq=body.nrsq,
        ha_enabled=body.ha_enabled,
    )


@endpoint(produces=Rack.media.many, privileges=[PHYS_DC_ENUMERATE], query=PAGING)
async def list_racks(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_racks(request.config_dict[ENGINE], path_id(request, "dc"), page=page)
    return render_page(request, found, page, to_model, media=Rack.media)


@endpoint(produces=Rack.media.one, privileges=[PHYS_DC_ENUMERATE])
async def get_rack(request: web.Request) -> web.Response:
    rack = await domain.get_rack(
        request.config_dict[ENGINE], path_id(request, "dc"), path_id(request, "rack")
    )
    return render(request, to_model(rack, Hrefs.of(request)))


@endpoint(produces=Rack.media.one, consumes=Rack, privileges=[PHYS_DC_MANAGE])
async def create_rack(request: web.Request) -> web.Response:
    dc_id = path_id(request, "dc")
    body = await read_entity(request, Rack)
    rack = await domain.create_rack(
        request.config_dict[ENGINE],
        dc_id,
        to_spec(body),
        actor=actor(request),
        now=request.config_dict[CLOCK](),
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(rack, hrefs),
        status=201,
        headers={"Location": hrefs(*rack_path(dc_id, rack.id))},
    )


@endpoint(produces=Rack.media.one, consumes=Rack, privileges=[PHYS_DC_MANAGE])
async def update_rack(request: web.Request) -> web.Response:
    dc_id, rack_id = path_id(request, "dc"), path_id(request, "rack")
    body = await read_entity(request, Rack)
    rack = await domain.update_rack(
        request.config_dict[ENGINE], dc_id, rack_id, to_spec(body), actor=actor(request)
    )
    return render(request, to_model(rack, Hrefs.of(request)))


@endpoint(privileges=[PHYS_DC_MANAGE])
async def delete_rack(request: web.Request) -> web.Response:
    await domain.delete_rack(
        request.config_dict[ENGINE],
        path_id(request, "dc"),
        path_id(request, "rack"),
        actor=actor(request),
    )
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    base = r"/admin/datacenters/{dc:\d+}/racks"
    router.add_get(base, list_racks, name="racks")
    router.add_post(base, create_rack)
    router.add_get(base + r"/{rack:\d+}", get_rack, name="rack")
    router.add_put(base + r"/{rack:\d+}", update_rack)
    router.add_delete(base + r"/{rack:\d+}", delete_rack)
