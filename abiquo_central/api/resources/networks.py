"""A VDC's private networks and their addresses:
/api/cloud/virtualdatacenters/{vdc}/privatenetworks[/{net}],
.../privatenetworks/{net}/ips[/{ip}] and .../{vdc}/action/ips (every address of the VDC).

VDC_ENUMERATE reads, VDC_MANAGE_NETWORK changes; the VDC must be in the caller's reach
(see vdcs.py), or everything under it is 404.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from abiquo_central.api.auth import actor
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, endpoint
from abiquo_central.api.keys import ENGINE
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.api.resources.vdcs import scope, vdc_path
from abiquo_central.cloud import networks as domain
from abiquo_central.cloud.addressing import NetworkSpec
from abiquo_central.tenants.privileges import VDC_ENUMERATE, VDC_MANAGE_NETWORK


class Vlan(Entity, kw_only=True):
    media = Media.of("vlan")

    # Absent from the body of a POST: the server assigns them.
    id: int | None = None
    name: str
    tag: int | None = None
    address: str
    # The prefix length (24 for 255.255.255.0).
    mask: int
    gateway: str
    primary_dns: str = msgspec.field(default="", name="primaryDNS")
    secondary_dns: str = msgspec.field(default="", name="secondaryDNS")
    sufix_dns: str = msgspec.field(default="", name="sufixDNS")
    default_network: bool = False
    type: str = "INTERNAL"


class Ip(Entity, kw_only=True):
    media = Media.of("ip")

    id: int
    ip: str
    mac: str
    name: str = ""
    # Neither a NIC of a VM nor in quarantine.
    available: bool
    quarantine: bool = False


def network_path(vdc_id: int, vlan_id: int) -> tuple[str | int, ...]:
    return (*vdc_path(vdc_id), "privatenetworks", vlan_id)


def to_model(net: domain.Network, hrefs: Hrefs) -> Vlan:
    here = network_path(net.vdc_id, net.id)
    s = net.spec
    return Vlan(
        id=net.id,
        name=s.name,
        tag=net.tag,
        address=s.address,
        mask=s.mask,
        gateway=s.gateway,
        primary_dns=s.primary_dns,
        secondary_dns=s.secondary_dns,
        sufix_dns=s.sufix_dns,
        default_network=net.is_default,
        type=s.type,
        links=[
            hrefs.link("edit", *here, media=Vlan.media.one, title=s.name),
            hrefs.link("virtualdatacenter", *vdc_path(net.vdc_id)),
            hrefs.link("ips", *here, "ips", media=Ip.media.many),
        ],
    )


def ip_to_model(found: domain.Address, hrefs: Hrefs) -> Ip:
    network = network_path(found.vdc_id, found.vlan_id)
    return Ip(
        id=found.id,
        ip=found.ip,
        mac=found.mac,
        name=found.name,
        available=found.available,
        quarantine=found.quarantine,
        links=[
            hrefs.link("self", *network, "ips", found.id, media=Ip.media.one, title=found.ip),
            hrefs.link("privatenetwork", *network, media=Vlan.media.one),
        ],
    )


def _spec(body: Vlan) -> NetworkSpec:
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


@endpoint(produces=Vlan.media.many, privileges=[VDC_ENUMERATE], query=PAGING)
async def list_networks(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_networks(
        request.config_dict[ENGINE], path_id(request, "vdc"), scope(request), page=page
    )
    return render_page(request, found, page, to_model, media=Vlan.media)


@endpoint(produces=Vlan.media.one, privileges=[VDC_ENUMERATE])
async def get_network(request: web.Request) -> web.Response:
    net = await domain.get_network(
        request.config_dict[ENGINE],
        path_id(request, "vdc"),
        path_id(request, "net"),
        scope(request),
    )
    return render(request, to_model(net, Hrefs.of(request)))


@endpoint(produces=Vlan.media.one, consumes=Vlan, privileges=[VDC_ENUMERATE, VDC_MANAGE_NETWORK])
async def create_network(request: web.Request) -> web.Response:
    vdc_id = path_id(request, "vdc")
    body = await read_entity(request, Vlan)
    net = await domain.create_network(
        request.config_dict[ENGINE],
        vdc_id,
        _spec(body),
        scope(request),
        is_default=body.default_network,
        actor=actor(request),
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(net, hrefs),
        status=201,
        headers={"Location": hrefs(*network_path(vdc_id, net.id))},
    )


@endpoint(produces=Vlan.media.one, consumes=Vlan, privileges=[VDC_ENUMERATE, VDC_MANAGE_NETWORK])
async def update_network(request: web.Request) -> web.Response:
    vdc_id, vlan_id = path_id(request, "vdc"), path_id(request, "net")
    body = await read_entity(request, Vlan)
    net = await domain.update_network(
        request.config_dict[ENGINE],
        vdc_id,
        vlan_id,
        _spec(body),
        scope(request),
        is_default=body.default_network,
        actor=actor(request),
    )
    return render(request, to_model(net, Hrefs.of(request)))


@endpoint(privileges=[VDC_ENUMERATE, VDC_MANAGE_NETWORK])
async def delete_network(request: web.Request) -> web.Response:
    await domain.delete_network(
        request.config_dict[ENGINE],
        path_id(request, "vdc"),
        path_id(request, "net"),
        scope(request),
        actor=actor(request),
    )
    return web.Response(status=204)


@endpoint(produces=Vlan.media.one, privileges=[VDC_ENUMERATE])
async def get_default_network(request: web.Request) -> web.Response:
    net = await domain.get_default_network(
        request.config_dict[ENGINE], path_id(request, "vdc"), scope(request)
    )
    return render(request, to_model(net, Hrefs.of(request)))


@endpoint(produces=Ip.media.many, privileges=[VDC_ENUMERATE], query=PAGING)
async def list_network_ips(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_addresses(
        request.config_dict[ENGINE],
        path_id(request, "vdc"),
        scope(request),
        page=page,
        vlan_id=path_id(request, "net"),
    )
    return render_page(request, found, page, ip_to_model, media=Ip.media)


@endpoint(produces=Ip.media.many, privileges=[VDC_ENUMERATE], query=PAGING)
async def list_vdc_ips(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_addresses(
        request.config_dict[ENGINE], path_id(request, "vdc"), scope(request), page=page
    )
    return render_page(request, found, page, ip_to_model, media=Ip.media)


@endpoint(produces=Ip.media.one, privileges=[VDC_ENUMERATE])
async def get_ip(request: web.Request) -> web.Response:
    found = await domain.get_address(
        request.config_dict[ENGINE],
        path_id(request, "vdc"),
        path_id(request, "net"),
        path_id(request, "ip"),
        scope(request),
    )
    return render(request, ip_to_model(found, Hrefs.of(request)))


def add_routes(router: web.UrlDispatcher) -> None:
    base = r"/cloud/virtualdatacenters/{vdc:\d+}"
    router.add_get(f"{base}/privatenetworks", list_networks, name="privatenetworks")
    router.add_post(f"{base}/privatenetworks", create_network)
    one = rf"{base}/privatenetworks/{{net:\d+}}"
    router.add_get(one, get_network, name="privatenetwork")
    router.add_put(one, update_network)
    router.add_delete(one, delete_network)
    router.add_get(f"{base}/defaultnetwork", get_default_network, name="defaultnetwork")
    router.add_get(f"{one}/ips", list_network_ips, name="privatenetwork-ips")
    router.add_get(rf"{one}/ips/{{ip:\d+}}", get_ip, name="privatenetwork-ip")
    router.add_get(f"{base}/action/ips", list_vdc_ips, name="virtualdatacenter-ips")
