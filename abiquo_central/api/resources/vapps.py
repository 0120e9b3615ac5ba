"""/api/cloud/virtualdatacenters/{vdc}/virtualappliances[/{va}] and .../{va}/state.

VDC_ENUMERATE reads, VDC_MANAGE_VAPP changes; the VDC must be in the caller's reach (see
vdcs.py). An appliance's state is derived from its VMs' (cloud/states.py).
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
from abiquo_central.api.resources.vdcs import scope, vdc_path
from abiquo_central.cloud import vapps as domain
from abiquo_central.tenants.privileges import VDC_ENUMERATE, VDC_MANAGE_VAPP


class VirtualAppliance(Entity, kw_only=True):
    media = Media.of("virtualappliance", xml="virtualAppliance")

    # Absent from the body of a POST: the server assigns or derives them.
    id: int | None = None
    name: str
    state: str | None = None
    error: bool = False
    high_disponibility: bool = False
    public_app: bool = False
    nodeconnections: str = ""


class VirtualApplianceState(Entity, kw_only=True):
    media = Media.of("virtualappliancestate")

    state: str


def vapp_path(vdc_id: int, vapp_id: int) -> tuple[str | int, ...]:
    return (*vdc_path(vdc_id), "virtualappliances", vapp_id)


def to_model(va: domain.VirtualAppliance, hrefs: Hrefs) -> VirtualAppliance:
    here = vapp_path(va.vdc_id, va.id)
    return VirtualAppliance(
        id=va.id,
        name=va.spec.name,
        state=va.state.value,
        error=va.error,
        high_disponibility=va.spec.high_disponibility,
        public_app=va.spec.public_app,
        nodeconnections=va.spec.nodeconnections,
        links=[
            hrefs.link("edit", *here, media=VirtualAppliance.media.one, title=va.spec.name),
            hrefs.link("virtualdatacenter", *vdc_path(va.vdc_id)),
            hrefs.link("enterprise", "admin", "enterprises", va.enterprise_id),
            hrefs.link("virtualmachines", *here, "virtualmachines"),
            hrefs.link("state", *here, "state", media=VirtualApplianceState.media.one),
            hrefs.link("deploy", *here, "action", "deploy"),
            hrefs.link("undeploy", *here, "action", "undeploy"),
        ],
    )


def _spec(body: VirtualAppliance) -> domain.VappSpec:
    return domain.VappSpec(
        name=body.name,
        high_disponibility=body.high_disponibility,
        public_app=body.public_app,
        nodeconnections=body.nodeconnections,
    )


@endpoint(produces=VirtualAppliance.media.many, privileges=[VDC_ENUMERATE], query=PAGING)
async def list_vapps(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_vapps(
        request.config_dict[ENGINE], path_id(request, "vdc"), scope(request), page=page
    )
    return render_page(request, found, page, to_model, media=VirtualAppliance.media)


@endpoint(produces=VirtualAppliance.media.one, privileges=[VDC_ENUMERATE])
async def get_vapp(request: web.Request) -> web.Response:
    va = await domain.get_vapp(
        request.config_dict[ENGINE], path_id(request, "vdc"), path_id(request, "va"), scope(request)
    )
    return render(request, to_model(va, Hrefs.of(request)))


@endpoint(produces=VirtualApplianceState.media.one, privileges=[VDC_ENUMERATE])
async def get_vapp_state(request: web.Request) -> web.Response:
    vdc_id, vapp_id = path_id(request, "vdc"), path_id(request, "va")
    va = await domain.get_vapp(request.config_dict[ENGINE], vdc_id, vapp_id, scope(request))
    hrefs = Hrefs.of(request)
    return render(
        request,
        VirtualApplianceState(
            state=va.state.value,
            links=[
                hrefs.link("virtualappliance", *vapp_path(vdc_id, vapp_id)),
            ],
        ),
    )


@endpoint(
    produces=VirtualAppliance.media.one,
    consumes=VirtualAppliance,
    privileges=[VDC_ENUMERATE, VDC_MANAGE_VAPP],
)
async def create_vapp(request: web.Request) -> web.Response:
    vdc_id = path_id(request, "vdc")
    body = await read_entity(request, VirtualAppliance)
    va = await domain.create_vapp(
        request.config_dict[ENGINE],
        vdc_id,
        _spec(body),
        scope(request),
        actor=actor(request),
        now=request.config_dict[CLOCK](),
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(va, hrefs),
        status=201,
        headers={"Location": hrefs(*vapp_path(vdc_id, va.id))},
    )


@endpoint(
    produces=VirtualAppliance.media.one,
    consumes=VirtualAppliance,
    privileges=[VDC_ENUMERATE, VDC_MANAGE_VAPP],
)
async def update_vapp(request: web.Request) -> web.Response:
    vdc_id, vapp_id = path_id(request, "vdc"), path_id(request, "va")
    body = await read_entity(request, VirtualAppliance)
    va = await domain.update_vapp(
        request.config_dict[ENGINE],
        vdc_id,
        vapp_id,
        _spec(body),
        scope(request),
        actor=actor(request),
    )
    return render(request, to_model(va, Hrefs.of(request)))


@endpoint(privileges=[VDC_ENUMERATE, VDC_MANAGE_VAPP])
async def delete_vapp(request: web.Request) -> web.Response:
    await domain.delete_vapp(
        request.config_dict[ENGINE],
        path_id(request, "vdc"),
        path_id(request, "va"),
        scope(request),
        actor=actor(request),
    )
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    base = r"/cloud/virtualdatacenters/{vdc:\d+}/virtualappliances"
    router.add_get(base, list_vapps, name="virtualappliances")
    router.add_post(base, create_vapp)
    one = rf"{base}/{{va:\d+}}"
    router.add_get(one, get_vapp, name="virtualappliance")
    router.add_put(one, update_vapp)
    router.add_delete(one, delete_vapp)
    router.add_get(f"{one}/state", get_vapp_state, name="virtualappliance-state")
