"""/api/admin/enterprises/{ent}/limits[/{id}]: an enterprise's limits per datacenter.

Who may do what, as for the enterprise itself:
- ENTERPRISE_ENUMERATE lets one read the limits of one's own enterprise; with
  ENTERPRISE_ADMINISTER_ALL those of every enterprise (without it, another enterprise's
  are 404, as if it did not exist).
- Creating, modifying and deleting need ENTERPRISE_ADMINISTER_ALL: a tenant that could
  raise its own limits would have none.

A new limit names its datacenter with a link rel "location" to
/admin/datacenters/{id} (or to the tenant's view of it, /cloud/locations/{id}).
"""

from __future__ import annotations

import re
from dataclasses import fields

from aiohttp import web
from yarl import URL

from abiquo_central.api.auth import actor, principal
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, QueryParam, endpoint
from abiquo_central.api.keys import ENGINE
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity, Link
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import MAX_ID, path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.api.resources.datacenters import Datacenter
from abiquo_central.api.resources.enterprises import Enterprise
from abiquo_central.infrastructure.datacenters import DATACENTER_NOT_FOUND
from abiquo_central.tenants import limits as domain
from abiquo_central.tenants.enterprises import Limits
from abiquo_central.tenants.privileges import ENTERPRISE_ADMINISTER_ALL, ENTERPRISE_ENUMERATE
from abiquo_runtime.errors import InvalidInput, NotFound


class Limit(Entity, kw_only=True):
    media = Media.of("limit")

    # Absent from the body of a POST: the server assigns it.
    id: int | None = None
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


# The path of a datacenter a location link may point at: the administrator's view or
# the tenant's. Ids beyond 18 digits are not ids at all.
_LOCATION_PATH = re.compile(r"/(?:admin/datacenters|cloud/locations)/(\d{1,18})/?$")

DATACENTER_FILTER = QueryParam("datacenter", int, "Only the limits in this datacenter (its id)")


def to_model(found: domain.DatacenterLimits, hrefs: Hrefs) -> Limit:
    ent = ("admin", "enterprises", found.enterprise_id)
    return Limit(
        id=found.id,
        **found.limits.values(),
        links=[
            hrefs.link("edit", *ent, "limits", found.id, media=Limit.media.one),
            hrefs.link("enterprise", *ent, media=Enterprise.media.one),
            hrefs.link(
                "location",
                "admin",
                "datacenters",
                found.datacenter_id,
                media=Datacenter.media.one,
                title=found.datacenter_name,
            ),
        ],
    )


def to_limits(body: Limit) -> Limits:
    # The body carries the limits under the same names as the domain's.
    return Limits(**{f.name: getattr(body, f.name) for f in fields(Limits)})


def location_id(link: Link | None) -> int | None:
    """The datacenter a location link names; None without a link. InvalidInput when the
    href names no datacenter, NotFound when its id cannot be one."""
    if link is None:
        return None
    try:
        path = URL(link.href).path
    except ValueError:
        path = ""
    matched = _LOCATION_PATH.search(path)
    if matched is None:
        raise InvalidInput(
            f"the location link must point at a datacenter (.../admin/datacenters/{{id}}), "
            f"not at '{link.href}'",
            code=domain.LOCATION_REQUIRED,
        )
    dc_id = int(matched.group(1))
    if dc_id > MAX_ID:
        raise NotFound("The requested datacenter does not exist", code=DATACENTER_NOT_FOUND)
    return dc_id


def _datacenter_filter(request: web.Request) -> int | None:
    raw = request.query.get("datacenter")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidInput(f"'datacenter' must be a datacenter's id, not '{raw}'")
    return int(raw)


def visible_to(request: web.Request) -> int | None:
    """The only enterprise whose limits the caller may see; None when it may see all."""
    caller = principal(request)
    return None if caller.holds(ENTERPRISE_ADMINISTER_ALL) else caller.enterprise_id


@endpoint(
    produces=Limit.media.many,
    privileges=[ENTERPRISE_ENUMERATE],
    query=[*PAGING, DATACENTER_FILTER],
)
async def list_limits(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_limits(
        request.config_dict[ENGINE],
        path_id(request, "ent"),
        page=page,
        datacenter_id=_datacenter_filter(request),
        visible_to=visible_to(request),
    )
    return render_page(request, found, page, to_model, media=Limit.media)


@endpoint(produces=Limit.media.one, privileges=[ENTERPRISE_ENUMERATE])
async def get_limit(request: web.Request) -> web.Response:
    found = await domain.get_limit(
        request.config_dict[ENGINE],
        path_id(request, "ent"),
        path_id(request, "id"),
        visible_to=visible_to(request),
    )
    return render(request, to_model(found, Hrefs.of(request)))


@endpoint(produces=Limit.media.one, consumes=Limit, privileges=[ENTERPRISE_ADMINISTER_ALL])
async def create_limit(request: web.Request) -> web.Response:
    enterprise_id = path_id(request, "ent")
    body = await read_entity(request, Limit)
    dc_id = location_id(body.link("location"))
    if dc_id is None:
        raise InvalidInput(
            "new limits need a link rel 'location' to their datacenter",
            code=domain.LOCATION_REQUIRED,
        )
    created = await domain.create_limit(
        request.config_dict[ENGINE], enterprise_id, dc_id, to_limits(body), actor=actor(request)
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(created, hrefs),
        status=201,
        headers={"Location": hrefs("admin", "enterprises", enterprise_id, "limits", created.id)},
    )


@endpoint(produces=Limit.media.one, consumes=Limit, privileges=[ENTERPRISE_ADMINISTER_ALL])
async def update_limit(request: web.Request) -> web.Response:
    enterprise_id, limit_id = path_id(request, "ent"), path_id(request, "id")
    body = await read_entity(request, Limit)
    changed = await domain.update_limit(
        request.config_dict[ENGINE],
        enterprise_id,
        limit_id,
        to_limits(body),
        datacenter_id=location_id(body.link("location")),
        actor=actor(request),
    )
    return render(request, to_model(changed, Hrefs.of(request)))


@endpoint(privileges=[ENTERPRISE_ADMINISTER_ALL])
async def delete_limit(request: web.Request) -> web.Response:
    await domain.delete_limit(
        request.config_dict[ENGINE],
        path_id(request, "ent"),
        path_id(request, "id"),
        actor=actor(request),
    )
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    many = r"/admin/enterprises/{ent:\d+}/limits"
    one = r"/admin/enterprises/{ent:\d+}/limits/{id:\d+}"
    router.add_get(many, list_limits, name="limits")
    router.add_post(many, create_limit)
    router.add_get(one, get_limit, name="limit")
    router.add_put(one, update_limit)
    router.add_delete(one, delete_limit)
