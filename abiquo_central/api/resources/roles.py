"""/api/admin/roles[/{id}] and /api/admin/roles/{id}/action/privileges.

Who may do what (tenants/roles.py checks it against the stored role):
- Reading roles needs USERS_VIEW: whoever reads users reads the roles they hold, and
  the enterprise administrator, who has USERS_VIEW but not USERS_MANAGE_ROLES, picks
  roles for the users it creates. One sees the global roles and one's own enterprise's;
  another enterprise's only with USERS_MANAGE_ROLES_OTHER_ENTERPRISES (404 otherwise).
- Creating, modifying and deleting need USERS_MANAGE_ROLES, plus
  USERS_MANAGE_ROLES_OTHER_ENTERPRISES for another enterprise's role and
  USERS_MANAGE_SYSTEM_ROLES for a global one; granting a privilege one does not hold
  is refused (403).

A role's body names its privileges as links `rel="privilege"` to /config/privileges/{id}
and its enterprise, if it has one, as a link `rel="enterprise"`; PUT replaces both.
`blocked` is read-only: only the seed blocks a role (CLOUD_ADMIN).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from abiquo_central.api.auth import principal
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, QueryParam, endpoint
from abiquo_central.api.keys import ENGINE, PRIVILEGES
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity, Link
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import MAX_ID, path_id
from abiquo_central.api.render import render, render_collection, render_page
from abiquo_central.api.resources.privileges import Privilege
from abiquo_central.api.resources.privileges import to_model as privilege_model
from abiquo_central.tenants import privileges
from abiquo_central.tenants import roles as domain
from abiquo_central.tenants.privileges import USERS_MANAGE_ROLES, USERS_VIEW
from abiquo_runtime.errors import InvalidInput

INVALID_LINK = "GEN-10"


class Role(Entity, kw_only=True):
    media = Media.of("role")

    # Absent from the body of a POST: the server assigns it.
    id: int | None = None
    name: str
    blocked: bool = False


def referenced_id(link: Link, collection: str) -> int:
    """The id a body's link names: the last segment of an href .../{collection}/{id}."""
    segments = [s for s in urlsplit(link.href).path.split("/") if s]
    if (
        len(segments) < 2
        or segments[-2] != collection
        or not segments[-1].isascii()
        or not segments[-1].isdigit()
        or int(segments[-1]) > MAX_ID
    ):
        raise InvalidInput(
            f"the '{link.rel}' link must point at .../{collection}/{{id}}, not '{link.href}'",
            code=INVALID_LINK,
        )
    return int(segments[-1])


def to_model(role: domain.Role, hrefs: Hrefs) -> Role:
    here = ("admin", "roles", role.id)
    links = [
        hrefs.link("self", *here, media=Role.media.one, title=role.name),
        hrefs.link("edit", *here, media=Role.media.one, title=role.name),
        hrefs.link("privileges", *here, "action", "privileges", media=Privilege.media.many),
    ]
    if role.enterprise_id is not None:
        links.append(hrefs.link("enterprise", "admin", "enterprises", role.enterprise_id))
    return Role(id=role.id, name=role.name, blocked=role.blocked, links=links)


def to_spec(body: Role) -> domain.RoleSpec:
    names: set[str] = set()
    for link in body.links:
        if link.rel == "privilege":
            privilege_id = referenced_id(link, "privileges")
            name = privileges.BY_ID.get(privilege_id)
            if name is None:
                raise InvalidInput(f"there is no privilege {privilege_id}", code=INVALID_LINK)
            names.add(name)
    enterprise = body.link("enterprise")
    return domain.RoleSpec(
        name=body.name,
        enterprise_id=referenced_id(enterprise, "enterprises") if enterprise else None,
        privileges=frozenset(names),
    )


def _enterprise_filter(request: web.Request) -> int | None:
    raw = request.query.get("identerprise", "").strip()
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_ID:
        raise InvalidInput(f"'identerprise' must be an enterprise id, not '{raw}'")
    return int(raw)


@endpoint(
    produces=Role.media.many,
    privileges=[USERS_VIEW],
    query=[
        *PAGING,
        QueryParam("identerprise", int, "Only the global roles and this enterprise's"),
    ],
)
async def list_roles(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_roles(
        request.config_dict[ENGINE],
        principal(request),
        page=page,
        enterprise_id=_enterprise_filter(request),
    )
    return render_page(request, found, page, to_model, media=Role.media)


@endpoint(produces=Role.media.one, privileges=[USERS_VIEW])
async def get_role(request: web.Request) -> web.Response:
    role = await domain.get_role(
        request.config_dict[ENGINE], path_id(request, "id"), principal(request)
    )
    return render(request, to_model(role, Hrefs.of(request)))


@endpoint(produces=Privilege.media.many, privileges=[USERS_VIEW])
async def get_role_privileges(request: web.Request) -> web.Response:
    names = await domain.get_role_privileges(
        request.config_dict[ENGINE], path_id(request, "id"), principal(request)
    )
    hrefs = Hrefs.of(request)
    return render_collection(
        request, [privilege_model(n, hrefs) for n in names], media=Privilege.media, total=len(names)
    )


@endpoint(produces=Role.media.one, consumes=Role, privileges=[USERS_MANAGE_ROLES])
async def create_role(request: web.Request) -> web.Response:
    body = await read_entity(request, Role)
    role = await domain.create_role(request.config_dict[ENGINE], to_spec(body), principal(request))
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(role, hrefs),
        status=201,
        headers={"Location": hrefs("admin", "roles", role.id)},
    )


@endpoint(produces=Role.media.one, consumes=Role, privileges=[USERS_MANAGE_ROLES])
async def update_role(request: web.Request) -> web.Response:
    role_id = path_id(request, "id")
    body = await read_entity(request, Role)
    role = await domain.update_role(
        request.config_dict[ENGINE], role_id, to_spec(body), principal(request)
    )
    # Its holders' next requests see the change here at once (elsewhere within a TTL).
    request.config_dict[PRIVILEGES].forget(role_id)
    return render(request, to_model(role, Hrefs.of(request)))


@endpoint(privileges=[USERS_MANAGE_ROLES])
async def delete_role(request: web.Request) -> web.Response:
    role_id = path_id(request, "id")
    await domain.delete_role(request.config_dict[ENGINE], role_id, principal(request))
    request.config_dict[PRIVILEGES].forget(role_id)
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/admin/roles", list_roles, name="roles")
    router.add_post("/admin/roles", create_role)
    router.add_get(r"/admin/roles/{id:\d+}", get_role, name="role")
    router.add_put(r"/admin/roles/{id:\d+}", update_role)
    router.add_delete(r"/admin/roles/{id:\d+}", delete_role)
    router.add_get(
        r"/admin/roles/{id:\d+}/action/privileges", get_role_privileges, name="role-privileges"
    )
