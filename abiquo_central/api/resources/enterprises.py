"""/api/admin/enterprises[/{id}]: the tenants and their allocation limits.

Who may do what:
- ENTERPRISE_ENUMERATE lets one read enterprises: with ENTERPRISE_ADMINISTER_ALL every
  one of them, without it only one's own (another enterprise is 404, as if it did not
  exist, and the listing holds one's own alone).
- Creating, modifying and deleting need ENTERPRISE_ADMINISTER_ALL. Modifying one's own
  enterprise is no exception: its limits bound what the tenant may consume, and a
  tenant that could raise them would have none.
"""

from __future__ import annotations

from dataclasses import fields

from aiohttp import web

from abiquo_central.api.auth import actor, principal
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, endpoint
from abiquo_central.api.keys import ENGINE
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.tenants import enterprises as domain
from abiquo_central.tenants.privileges import ENTERPRISE_ADMINISTER_ALL, ENTERPRISE_ENUMERATE


class Enterprise(Entity, kw_only=True):
    media = Media.of("enterprise")

    # Absent from the body of a POST: the server assigns it.
    id: int | None = None
    name: str
    is_reservation_restricted: bool = False
    # 0 is unlimited. RAM in MB; hd, storage and repository in bytes.
    cpu_soft: int = 0
    cpu_hard: int = 0
    ram_soft: int = 0
    ram_hard: int = 0
    hd_soft: int = 0
    hd_hard: int = 0
    storage_soft: int = 0
    storage_hard: int = 0
    repository_soft: int = 0
    repository_hard: int = 0
    vlans_soft: int = 0
    vlans_hard: int = 0
    public_ips_soft: int = 0
    public_ips_hard: int = 0


def to_model(ent: domain.Enterprise, hrefs: Hrefs) -> Enterprise:
    here = ("admin", "enterprises", ent.id)
    return Enterprise(
        id=ent.id,
        name=ent.name,
        is_reservation_restricted=ent.is_reservation_restricted,
        **ent.limits.values(),
        links=[
            hrefs.link("self", *here, media=Enterprise.media.one, title=ent.name),
            hrefs.link("edit", *here, media=Enterprise.media.one, title=ent.name),
            hrefs.link("users", *here, "users"),
        ],
    )


def to_spec(body: Enterprise) -> domain.EnterpriseSpec:
    # The body carries the limits under the same names as the domain's.
    limits = domain.Limits(**{f.name: getattr(body, f.name) for f in fields(domain.Limits)})
    return domain.EnterpriseSpec(
        name=body.name, is_reservation_restricted=body.is_reservation_restricted, limits=limits
    )


def visible_to(request: web.Request) -> int | None:
    """The only enterprise the caller may see; None when it may see them all."""
    caller = principal(request)
    return None if caller.holds(ENTERPRISE_ADMINISTER_ALL) else caller.enterprise_id


@endpoint(produces=Enterprise.media.many, privileges=[ENTERPRISE_ENUMERATE], query=PAGING)
async def list_enterprises(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_enterprises(
        request.config_dict[ENGINE], page=page, visible_to=visible_to(request)
    )
    return render_page(request, found, page, to_model, media=Enterprise.media)


@endpoint(produces=Enterprise.media.one, privileges=[ENTERPRISE_ENUMERATE])
async def get_enterprise(request: web.Request) -> web.Response:
    ent = await domain.get_enterprise(
        request.config_dict[ENGINE], path_id(request, "id"), visible_to=visible_to(request)
    )
    return render(request, to_model(ent, Hrefs.of(request)))


@endpoint(
    produces=Enterprise.media.one, consumes=Enterprise, privileges=[ENTERPRISE_ADMINISTER_ALL]
)
async def create_enterprise(request: web.Request) -> web.Response:
    body = await read_entity(request, Enterprise)
    ent = await domain.create_enterprise(
        request.config_dict[ENGINE], to_spec(body), actor=actor(request)
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(ent, hrefs),
        status=201,
        headers={"Location": hrefs("admin", "enterprises", ent.id)},
    )


@endpoint(
    produces=Enterprise.media.one, consumes=Enterprise, privileges=[ENTERPRISE_ADMINISTER_ALL]
)
async def update_enterprise(request: web.Request) -> web.Response:
    enterprise_id = path_id(request, "id")
    body = await read_entity(request, Enterprise)
    ent = await domain.update_enterprise(
        request.config_dict[ENGINE], enterprise_id, to_spec(body), actor=actor(request)
    )
    return render(request, to_model(ent, Hrefs.of(request)))


@endpoint(privileges=[ENTERPRISE_ADMINISTER_ALL])
async def delete_enterprise(request: web.Request) -> web.Response:
    await domain.delete_enterprise(
        request.config_dict[ENGINE], path_id(request, "id"), actor=actor(request)
    )
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/admin/enterprises", list_enterprises, name="enterprises")
    router.add_post("/admin/enterprises", create_enterprise)
    router.add_get(r"/admin/enterprises/{id:\d+}", get_enterprise, name="enterprise")
    router.add_put(r"/admin/enterprises/{id:\d+}", update_enterprise)
    router.add_delete(r"/admin/enterprises/{id:\d+}", delete_enterprise)
