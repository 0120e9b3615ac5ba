"""/api/config/privileges[/{id}]: Abiquo's privileges, with Abiquo's ids.

Any authenticated user reads them: they are the vocabulary of roles (a client shows
them next to the roles it may edit), not a secret. The list is fixed by this version,
so its paging, sorting and `has` filter are done in memory.
"""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.endpoint import PAGING, endpoint
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_collection
from abiquo_central.tenants import privileges as domain
from abiquo_runtime.errors import InvalidInput, NotFound

PRIVILEGE_NOT_FOUND = "PRIV-0"


class Privilege(Entity, kw_only=True):
    media = Media.of("privilege")

    id: int
    name: str


def to_model(name: str, hrefs: Hrefs) -> Privilege:
    privilege_id = domain.privilege_id(name)
    return Privilege(
        id=privilege_id,
        name=name,
        links=[
            hrefs.link(
                "self", "config", "privileges", privilege_id, media=Privilege.media.one, title=name
            )
        ],
    )


@endpoint(produces=Privilege.media.many, query=PAGING)
async def list_privileges(request: web.Request) -> web.Response:
    page = parse_page(request, default_limit=len(domain.ALL))
    by = page.by or "id"
    if by not in ("id", "name"):
        raise InvalidInput(f"cannot sort by '{by}'; sort by one of: id, name")
    # ALL is in id order.
    names = [n for n in domain.ALL if not page.has or page.has.lower() in n.lower()]
    if by == "name":
        names.sort()
    if not page.asc:
        names.reverse()
    hrefs = Hrefs.of(request)
    return render_collection(
        request,
        [to_model(n, hrefs) for n in names[page.startwith : page.startwith + page.limit]],
        media=Privilege.media,
        total=len(names),
        page=page,
    )


@endpoint(produces=Privilege.media.one)
async def get_privilege(request: web.Request) -> web.Response:
    name = domain.BY_ID.get(path_id(request, "id"))
    if name is None:
        raise NotFound("The requested privilege does not exist", code=PRIVILEGE_NOT_FOUND)
    return render(request, to_model(name, Hrefs.of(request)))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/config/privileges", list_privileges, name="privileges")
    router.add_get(r"/config/privileges/{id:\d+}", get_privilege, name="privilege")
