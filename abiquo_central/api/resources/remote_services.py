"""/api/admin/datacenters/{id}/remoteservices[/{type}[/action/check]]: a datacenter's
remote services, registered at their URIs and checked there.

{type} is Abiquo's type name in any case (VIRTUAL_FACTORY, virtual_factory) or its path
name (virtualfactory, and the datacenter's own: vsm, am, bpm-async, ...). Reading needs
PHYS_DC_ENUMERATE; registering, changing, checking and removing need PHYS_DC_MANAGE.
"""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.auth import actor
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, endpoint
from abiquo_central.api.keys import CLOCK, ENGINE, HTTP_CLIENT, LINK, ON_QUEUED, SETTINGS
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.infrastructure import remote_services as domain
from abiquo_central.infrastructure.checks import check_timeout
from abiquo_central.tenants.privileges import PHYS_DC_ENUMERATE, PHYS_DC_MANAGE
from abiquo_runtime.errors import InvalidInput


class RemoteService(Entity, kw_only=True):
    media = Media.of("remoteservice", xml="remoteService")

    # Absent from the body of a POST: the server assigns it.
    id: int | None = None
    # VIRTUAL_FACTORY, VIRTUAL_SYSTEM_MONITOR, NODE_COLLECTOR, STORAGE_SYSTEM_MONITOR,
    # APPLIANCE_MANAGER, BPM_SERVICE or DHCP_SERVICE.
    type: str = ""
    # http(s)://host:port/path; omapi://host:port for the DHCP_SERVICE.
    uri: str = ""
    # 1 when the service answers and its datacenter is alive, 0 otherwise.
    status: int = 0


def to_model(rs: domain.RemoteService, hrefs: Hrefs) -> RemoteService:
    dc = ("admin", "datacenters", rs.datacenter_id)
    here = (*dc, "remoteservices", rs.type.path_name)
    return RemoteService(
        id=rs.id,
        type=rs.type.value,
        uri=rs.uri,
        status=rs.status,
        links=[
            hrefs.link("edit", *here, media=RemoteService.media.one, title=rs.type.value),
            hrefs.link("check", *here, "action", "check"),
            hrefs.link("datacenter", *dc, media=Media.of("datacenter").one),
        ],
    )


def checker(request: web.Request) -> domain.Checker:
    """How the API checks remote services: its HTTP client, its link, a short timeout."""
    app = request.config_dict
    return domain.Checker(
        session=app[HTTP_CLIENT],
        link=app[LINK],
        timeout=check_timeout(app[SETTINGS].datacenters.request_timeout),
    )


def _kind(request: web.Request) -> domain.ServiceType:
    return domain.parse_type(request.match_info["type"], in_path=True)


async def _shown(
    request: web.Request,
    dc_id: int,
    kind: domain.ServiceType,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    app = request.config_dict
    rs = await domain.get_remote_service(
        app[ENGINE],
        dc_id,
        kind,
        now=app[CLOCK](),
        liveness_timeout=app[SETTINGS].datacenters.liveness_timeout,
    )
    return render(request, to_model(rs, Hrefs.of(request)), status=status, headers=headers)


@endpoint(produces=RemoteService.media.many, privileges=[PHYS_DC_ENUMERATE], query=PAGING)
async def list_remote_services(request: web.Request) -> web.Response:
    page = parse_page(request)
    app = request.config_dict
    found = await domain.list_remote_services(
        app[ENGINE],
        path_id(request, "id"),
        page=page,
        now=app[CLOCK](),
        liveness_timeout=app[SETTINGS].datacenters.liveness_timeout,
    )
    return render_page(request, found, page, to_model, media=RemoteService.media)


@endpoint(produces=RemoteService.media.one, privileges=[PHYS_DC_ENUMERATE])
async def get_remote_service(request: web.Request) -> web.Response:
    return await _shown(request, path_id(request, "id"), _kind(request))


@endpoint(produces=RemoteService.media.one, consumes=RemoteService, privileges=[PHYS_DC_MANAGE])
async def create_remote_service(request: web.Request) -> web.Response:
    dc_id = path_id(request, "id")
    body = await read_entity(request, RemoteService)
    kind = domain.parse_type(body.type)
    await domain.create_remote_service(
        request.config_dict[ENGINE],
        dc_id,
        kind,
        body.uri,
        checker=checker(request),
        actor=actor(request),
        now=request.config_dict[CLOCK](),
    )
    # A factory that named its datacenter queued a request to it (AnnounceTemplates).
    request.config_dict[ON_QUEUED]()
    edit = Hrefs.of(request)("admin", "datacenters", dc_id, "remoteservices", kind.path_name)
    return await _shown(request, dc_id, kind, status=201, headers={"Location": edit})


@endpoint(produces=RemoteService.media.one, consumes=RemoteService, privileges=[PHYS_DC_MANAGE])
async def update_remote_service(request: web.Request) -> web.Response:
    dc_id, kind = path_id(request, "id"), _kind(request)
    body = await read_entity(request, RemoteService)
    if body.type.strip() and domain.parse_type(body.type) is not kind:
        raise InvalidInput(
            f"a remote service's type cannot change: this one is the {kind.value}",
            code=domain.INVALID_TYPE,
        )
    await domain.update_remote_service(
        request.config_dict[ENGINE],
        dc_id,
        kind,
        body.uri,
        checker=checker(request),
        actor=actor(request),
        now=request.config_dict[CLOCK](),
    )
    request.config_dict[ON_QUEUED]()
    return await _shown(request, dc_id, kind)


@endpoint(privileges=[PHYS_DC_MANAGE])
async def delete_remote_service(request: web.Request) -> web.Response:
    await domain.delete_remote_service(
        request.config_dict[ENGINE], path_id(request, "id"), _kind(request), actor=actor(request)
    )
    return web.Response(status=204)


@endpoint(privileges=[PHYS_DC_MANAGE])
async def check_remote_service(request: web.Request) -> web.Response:
    """204 when the service answers; 503 (RS-7) when it does not, 409 when it answers as
    another datacenter's. What was found is stored either way."""
    try:
        await domain.check_remote_service(
            request.config_dict[ENGINE],
            path_id(request, "id"),
            _kind(request),
            checker=checker(request),
            actor=actor(request),
            now=request.config_dict[CLOCK](),
        )
    finally:
        # What was found is stored even when the check fails: it may have queued.
        request.config_dict[ON_QUEUED]()
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    many = r"/admin/datacenters/{id:\d+}/remoteservices"
    one = many + r"/{type:[A-Za-z_\-]{1,64}}"
    router.add_get(many, list_remote_services, name="remoteservices")
    router.add_post(many, create_remote_service)
    router.add_get(one, get_remote_service, name="remoteservice")
    router.add_put(one, update_remote_service)
    router.add_delete(one, delete_remote_service)
    router.add_get(one + "/action/check", check_remote_service)
