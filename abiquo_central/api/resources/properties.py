"""/api/config/properties[/{name}]: the system properties, by name.

Reading needs SYSCONFIG_VIEW, changing a value SYSCONFIG_ALLOW_MODIFY. Only the
platform's properties exist: a PUT to any other name is 404, and a body's description
is ignored (descriptions are the platform's). Names hold dots (client.main.billingUrl),
which the route accepts.
"""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.auth import actor
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, QueryParam, endpoint
from abiquo_central.api.keys import ENGINE
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.render import render, render_page
from abiquo_central.config import properties as domain
from abiquo_central.tenants.privileges import SYSCONFIG_ALLOW_MODIFY, SYSCONFIG_VIEW
from abiquo_runtime.errors import InvalidInput

# What a body's name must be when it differs from the path's.
NAME_MISMATCH = "SYSPROP-2"

COMPONENT_FILTER = QueryParam(
    "component", str, "Only the properties of this component: those named <component>.*"
)


class SystemProperty(Entity, kw_only=True):
    media = Media.of(
        "systemproperty",
        xml="systemProperty",
        plural="systemproperties",
        xml_plural="systemProperties",
    )

    # Optional in a PUT's body: the path names the property.
    name: str = ""
    value: str
    description: str = ""


def to_model(found: domain.SystemProperty, hrefs: Hrefs) -> SystemProperty:
    return SystemProperty(
        name=found.name,
        value=found.value,
        description=found.description,
        links=[
            hrefs.link("edit", "config", "properties", found.name, media=SystemProperty.media.one)
        ],
    )


@endpoint(
    produces=SystemProperty.media.many,
    privileges=[SYSCONFIG_VIEW],
    query=[*PAGING, COMPONENT_FILTER],
)
async def list_properties(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_properties(
        request.config_dict[ENGINE], page=page, component=request.query.get("component") or None
    )
    return render_page(request, found, page, to_model, media=SystemProperty.media)


@endpoint(produces=SystemProperty.media.one, privileges=[SYSCONFIG_VIEW])
async def get_property(request: web.Request) -> web.Response:
    found = await domain.get_property(request.config_dict[ENGINE], request.match_info["name"])
    return render(request, to_model(found, Hrefs.of(request)))


@endpoint(
    produces=SystemProperty.media.one,
    consumes=SystemProperty,
    privileges=[SYSCONFIG_ALLOW_MODIFY],
)
async def update_property(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await read_entity(request, SystemProperty)
    if body.name and body.name != name:
        raise InvalidInput(
            f"the body names property {body.name[: domain.NAME_MAX]!r}, the path {name!r}",
            code=NAME_MISMATCH,
        )
    changed = await domain.set_property(
        request.config_dict[ENGINE], name, body.value, actor=actor(request)
    )
    return render(request, to_model(changed, Hrefs.of(request)))


def add_routes(router: web.UrlDispatcher) -> None:
    one = r"/config/properties/{name:[A-Za-z0-9_.\-]{1,255}}"
    router.add_get("/config/properties", list_properties, name="properties")
    router.add_get(one, get_property, name="property")
    router.add_put(one, update_property)
