"""/api/config/hypervisortypes[/{id}]: the hypervisor types and the disk formats each
boots; /api/admin/datacenters/{id}/hypervisors: the types a datacenter's machines are.

The configuration is read by any authenticated user; a datacenter's types need
PHYS_DC_ENUMERATE, as the datacenter itself. `{id}` is the type's id or its name (KVM).
"""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.endpoint import endpoint
from abiquo_central.api.keys import ENGINE
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_collection
from abiquo_central.config import hypervisor_types as domain
from abiquo_central.tenants.privileges import PHYS_DC_ENUMERATE


class HypervisorType(Entity, kw_only=True):
    media = Media.of("hypervisortype", xml="hypervisorType")

    id: int
    name: str
    real_name: str = ""
    # What a template is converted into for it when nothing else is asked.
    base_format: str
    # The disk formats it boots without conversion.
    compatibility_table: list[str] = []
    default_port: int | None = None


def to_model(info: domain.HypervisorTypeInfo, hrefs: Hrefs) -> HypervisorType:
    return HypervisorType(
        id=info.id,
        name=info.name,
        real_name=info.real_name,
        base_format=info.base_format.value,
        compatibility_table=[f.value for f in info.compatibility],
        default_port=info.default_port,
        links=[
            hrefs.link(
                "edit",
                "config",
                "hypervisortypes",
                info.name,
                media=HypervisorType.media.one,
                title=info.real_name,
            )
        ],
    )


def _render_all(request: web.Request, found: list[domain.HypervisorTypeInfo]) -> web.Response:
    hrefs = Hrefs.of(request)
    return render_collection(
        request, [to_model(h, hrefs) for h in found], media=HypervisorType.media, total=len(found)
    )


@endpoint(produces=HypervisorType.media.many)
async def list_hypervisor_types(request: web.Request) -> web.Response:
    return _render_all(request, list(domain.hypervisor_types()))


@endpoint(produces=HypervisorType.media.one)
async def get_hypervisor_type(request: web.Request) -> web.Response:
    found = domain.hypervisor_type(request.match_info["id"])
    return render(request, to_model(found, Hrefs.of(request)))


@endpoint(produces=HypervisorType.media.many, privileges=[PHYS_DC_ENUMERATE])
async def list_datacenter_hypervisors(request: web.Request) -> web.Response:
    found = await domain.datacenter_types(request.config_dict[ENGINE], path_id(request, "id"))
    return _render_all(request, found)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/config/hypervisortypes", list_hypervisor_types, name="hypervisortypes")
    router.add_get(
        r"/config/hypervisortypes/{id:[A-Za-z0-9_]{1,64}}",
        get_hypervisor_type,
        name="hypervisortype",
    )
    router.add_get(
        r"/admin/datacenters/{id:\d+}/hypervisors",
        list_datacenter_hypervisors,
        name="datacenter-hypervisors",
    )
