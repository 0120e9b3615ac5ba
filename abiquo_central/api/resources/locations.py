"""/api/cloud/locations[/{id}]: the datacenters the caller's enterprise may use.

Those are the datacenters it has limits in. Each is shown as a tenant may see it: its
name and where it is, under the datacenter's media type, but without the uuid or the
remote services (how the infrastructure is built is no tenant's business). Any other
datacenter is 404, as if it did not exist. VDC_ENUMERATE is what it takes: locations are
where virtual datacenters are made.
"""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.auth import principal
from abiquo_central.api.endpoint import PAGING, endpoint
from abiquo_central.api.keys import ENGINE
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.tenants import limits as domain
from abiquo_central.tenants.privileges import VDC_ENUMERATE


class Location(Entity, kw_only=True):
    media = Media.of("datacenter")

    id: int
    name: str
    location: str = ""


def to_model(found: domain.Location, hrefs: Hrefs) -> Location:
    return Location(
        id=found.id,
        name=found.name,
        location=found.location,
        links=[
            hrefs.link(
                "edit", "cloud", "locations", found.id, media=Location.media.one, title=found.name
            )
        ],
    )


@endpoint(produces=Location.media.many, privileges=[VDC_ENUMERATE], query=PAGING)
async def list_locations(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_locations(
        request.config_dict[ENGINE], principal(request).enterprise_id, page=page
    )
    return render_page(request, found, page, to_model, media=Location.media)


@endpoint(produces=Location.media.one, privileges=[VDC_ENUMERATE])
async def get_location(request: web.Request) -> web.Response:
    found = await domain.get_location(
        request.config_dict[ENGINE], principal(request).enterprise_id, path_id(request, "id")
    )
    return render(request, to_model(found, Hrefs.of(request)))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/cloud/locations", list_locations, name="locations")
    router.add_get(r"/cloud/locations/{id:\d+}", get_location, name="location")
