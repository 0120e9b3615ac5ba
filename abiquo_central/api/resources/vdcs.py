"""/api/cloud/virtualdatacenters[/{vdc}]: virtual datacenters, with their default network.

Who may do what:
- VDC_ENUMERATE reads, VDC_MANAGE creates, changes and deletes.
- A caller reaches its own enterprise's VDCs only (another's is 404, as if it did not
  exist), unless it holds ENTERPRISE_ADMINISTER_ALL.
- A user whose availableVirtualDatacenters is set reaches only those, unless it holds
  USERS_PROHIBIT_VDC_RESTRICTION: that privilege is Abiquo's "may not be restricted to
  some VDCs", which the enterprise administrator role holds.
"""

from __future__ import annotations

import re

import msgspec
from aiohttp import web

from abiquo_central.api.auth import actor, principal
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, QueryParam, endpoint
from abiquo_central.api.keys import CLOCK, ENGINE
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity, Value
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import MAX_ID, path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.cloud import vdcs as domain
from abiquo_central.cloud.access import Scope
from abiquo_central.cloud.addressing import NetworkSpec
from abiquo_central.config.hypervisor_types import BY_TYPE
from abiquo_central.tenants.enterprises import ENTERPRISE_NOT_FOUND
from abiquo_central.tenants.privileges import (
    ENTERPRISE_ADMINISTER_ALL,
    PHYS_DC_ENUMERATE,
    USERS_PROHIBIT_VDC_RESTRICTION,
    VDC_ENUMERATE,
    VDC_MANAGE,
)
from abiquo_runtime.errors import InvalidInput, NotFound

LOCATION_REQUIRED = "VDC-5"

_LOCATION = re.compile(r"/(?:cloud/locations|admin/datacenters)/(\d{1,10})/?$")
_ENTERPRISE = re.compile(r"/admin/enterprises/(\d{1,10})/?$")


class Network(Value, kw_only=True):
    """A network's settings, nested in a VDC (its default network's)."""

    name: str = "default_private_network"
    address: str = "192.168.0.0"
    # The prefix length (24 for 255.255.255.0).
    mask: int = 24
    gateway: str = "192.168.0.1"
    primary_dns: str = msgspec.field(default="", name="primaryDNS")
    secondary_dns: str = msgspec.field(default="", name="secondaryDNS")
    sufix_dns: str = msgspec.field(default="", name="sufixDNS")
    type: str = "INTERNAL"


class VirtualDatacenter(Entity, kw_only=True):
    media = Media.of("virtualdatacenter", xml="virtualDatacenter")

    # Absent from the body of a POST: the server assigns it.
    id: int | None = None
    name: str
    hypervisor_type: str
    network: Network | None = None
    # 0 is unlimited. RAM in MB; hd and storage in bytes.
    cpu_soft: int = 0
    cpu_hard: int = 0
    ram_soft: int = 0
    ram_hard: int = 0
    hd_soft: int = 0
    hd_hard: int = 0
    storage_soft: int = 0
    storage_hard: int = 0
    vlans_soft: int = 0
    vlans_hard: int = 0
    public_ips_soft: int = 0
    public_ips_hard: int = 0


def scope(request: web.Request) -> Scope:
    """The VDCs the caller may reach (see the module's docstring)."""
    caller = principal(request)
    return Scope(
        enterprise_id=None if caller.holds(ENTERPRISE_ADMINISTER_ALL) else caller.enterprise_id,
        vdcs=frozenset() if caller.holds(USERS_PROHIBIT_VDC_RESTRICTION) else caller.available_vdcs,
    )


def network_model(spec: NetworkSpec) -> Network:
    return Network(
        name=spec.name,
        address=spec.address,
        mask=spec.mask,
        gateway=spec.gateway,
        primary_dns=spec.primary_dns,
        secondary_dns=spec.secondary_dns,
        sufix_dns=spec.sufix_dns,
        type=spec.type,
    )


def network_spec(body: Network) -> NetworkSpec:
    return NetworkSpec(
        name=body.name,
        address=body.address,
        mask=body.mask,
        gateway=body.gateway,
        primary_dns=body.primary_dns,
        secondary_dns=body.secondary_dns,
        sufix_dns=body.sufix_dns,
        type=body.type,
    )


def vdc_path(vdc_id: int) -> tuple[str | int, ...]:
    return ("cloud", "virtualdatacenters", vdc_id)


def to_model(vdc: domain.VirtualDatacenter, hrefs: Hrefs) -> VirtualDatacenter:
    here = vdc_path(vdc.id)
    links = [
        hrefs.link("edit", *here, media=VirtualDatacenter.media.one, title=vdc.name),
        hrefs.link("location", "cloud", "locations", vdc.datacenter_id),
        hrefs.link("enterprise", "admin", "enterprises", vdc.enterprise_id),
        hrefs.link("virtualappliances", *here, "virtualappliances"),
        hrefs.link("privatenetworks", *here, "privatenetworks"),
        hrefs.link("ips", *here, "action", "ips"),
    ]
    if vdc.network_id is not None:
        links.append(hrefs.link("defaultnetwork", *here, "privatenetworks", vdc.network_id))
    return VirtualDatacenter(
        id=vdc.id,
        name=vdc.name,
        hypervisor_type=vdc.hypervisor_type,
        network=network_model(vdc.network) if vdc.network is not None else None,
        **vdc.limits.values(),
        links=links,
    )


def limits_of(body: VirtualDatacenter) -> domain.VdcLimits:
    return domain.VdcLimits(
        cpu_soft=body.cpu_soft,
        cpu_hard=body.cpu_hard,
        ram_soft=body.ram_soft,
        ram_hard=body.ram_hard,
        hd_soft=body.hd_soft,
        hd_hard=body.hd_hard,
        storage_soft=body.storage_soft,
        storage_hard=body.storage_hard,
        vlans_soft=body.vlans_soft,
        vlans_hard=body.vlans_hard,
        public_ips_soft=body.public_ips_soft,
        public_ips_hard=body.public_ips_hard,
    )


def linked_id(body: Entity, rel: str, pattern: re.Pattern[str]) -> int | None:
    """The id the body's link `rel` names (None without one); InvalidInput when its
    href is not of the expected shape, NotFound when the id is out of range."""
    link = body.link(rel)
    if link is None:
        return None
    found = pattern.search(link.href.split("?", 1)[0])
    if found is None:
        raise InvalidInput(f"the link '{rel}' points at nothing it could", code=LOCATION_REQUIRED)
    value = int(found.group(1))
    if value > MAX_ID:
        raise NotFound(f"there is nothing with id {value}")
    return value


def query_id(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 10 or int(raw) > MAX_ID:
        raise InvalidInput(f"'{name}' must be an id, not '{raw[:32]}'")
    return int(raw)


def _hypervisor(name: str) -> str:
    known = {t.value for t in BY_TYPE}
    if name not in known:
        raise InvalidInput(
            f"hypervisorType must be one of {', '.join(sorted(known))}", code=domain.INVALID_VDC
        )
    return name


@endpoint(
    produces=VirtualDatacenter.media.many,
    privileges=[VDC_ENUMERATE],
    query=[
        *PAGING,
        QueryParam("datacenter", int, "Only the VDCs in this datacenter"),
        QueryParam("enterprise", int, "Only the VDCs of this enterprise"),
    ],
)
async def list_vdcs(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_vdcs(
        request.config_dict[ENGINE],
        scope(request),
        page=page,
        datacenter_id=query_id(request, "datacenter"),
        enterprise_id=query_id(request, "enterprise"),
    )
    return render_page(request, found, page, to_model, media=VirtualDatacenter.media)


@endpoint(produces=VirtualDatacenter.media.one, privileges=[VDC_ENUMERATE])
async def get_vdc(request: web.Request) -> web.Response:
    vdc = await domain.get_vdc(request.config_dict[ENGINE], path_id(request, "vdc"), scope(request))
    return render(request, to_model(vdc, Hrefs.of(request)))


@endpoint(
    produces=VirtualDatacenter.media.one,
    consumes=VirtualDatacenter,
    privileges=[VDC_ENUMERATE, VDC_MANAGE],
)
async def create_vdc(request: web.Request) -> web.Response:
    body = await read_entity(request, VirtualDatacenter)
    caller = principal(request)
    datacenter_id = linked_id(body, "location", _LOCATION)
    if datacenter_id is None:
        raise InvalidInput(
            "a virtual datacenter needs a 'location' link to its datacenter",
            code=LOCATION_REQUIRED,
        )
    enterprise_id = linked_id(body, "enterprise", _ENTERPRISE) or caller.enterprise_id
    if enterprise_id != caller.enterprise_id and not caller.holds(ENTERPRISE_ADMINISTER_ALL):
        raise NotFound("The requested enterprise does not exist", code=ENTERPRISE_NOT_FOUND)
    spec = domain.VdcSpec(
        name=body.name,
        hypervisor_type=_hypervisor(body.hypervisor_type),
        datacenter_id=datacenter_id,
        enterprise_id=enterprise_id,
        network=network_spec(body.network) if body.network is not None else NetworkSpec(),
        limits=limits_of(body),
    )
    vdc = await domain.create_vdc(
        request.config_dict[ENGINE],
        spec,
        actor=actor(request),
        reveal_datacenters=caller.holds(PHYS_DC_ENUMERATE),
        now=request.config_dict[CLOCK](),
    )
    hrefs = Hrefs.of(request)
    return render(
        request, to_model(vdc, hrefs), status=201, headers={"Location": hrefs(*vdc_path(vdc.id))}
    )


@endpoint(
    produces=VirtualDatacenter.media.one,
    consumes=VirtualDatacenter,
    privileges=[VDC_ENUMERATE, VDC_MANAGE],
)
async def update_vdc(request: web.Request) -> web.Response:
    vdc_id = path_id(request, "vdc")
    body = await read_entity(request, VirtualDatacenter)
    vdc = await domain.update_vdc(
        request.config_dict[ENGINE],
        vdc_id,
        body.name,
        limits_of(body),
        scope(request),
        actor=actor(request),
    )
    return render(request, to_model(vdc, Hrefs.of(request)))


@endpoint(privileges=[VDC_ENUMERATE, VDC_MANAGE])
async def delete_vdc(request: web.Request) -> web.Response:
    await domain.delete_vdc(
        request.config_dict[ENGINE], path_id(request, "vdc"), scope(request), actor=actor(request)
    )
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/cloud/virtualdatacenters", list_vdcs, name="virtualdatacenters")
    router.add_post("/cloud/virtualdatacenters", create_vdc)
    router.add_get(r"/cloud/virtualdatacenters/{vdc:\d+}", get_vdc, name="virtualdatacenter")
    router.add_put(r"/cloud/virtualdatacenters/{vdc:\d+}", update_vdc)
    router.add_delete(r"/cloud/virtualdatacenters/{vdc:\d+}", delete_vdc)
