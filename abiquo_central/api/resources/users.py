"""/api/admin/enterprises/{ent}/users[/{id}]: an enterprise's users.

`{ent}` may be `_` in the listing: every enterprise's users for a caller with
USERS_MANAGE_OTHER_ENTERPRISES, its own enterprise's otherwise.

Who may do what (tenants/users.py checks it against the stored users and roles):
USERS_VIEW reads one's own enterprise's users, USERS_MANAGE_USERS creates, changes and
deletes them, USERS_MANAGE_OTHER_ENTERPRISES extends both to every enterprise (another
enterprise's users are 404 without it). A user reads itself and changes its own name,
surname, email, locale and password without USERS_MANAGE_USERS; nobody deletes itself.
Only roles whose privileges the caller holds, global or of the user's enterprise, may
be given, and only users with such roles managed.

The role is a link `rel="role"` to /admin/roles/{id}; a PUT without one keeps the
user's role. `password` is write-only: taken from bodies, never rendered; a PUT
without one keeps the current password.
"""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.auth import principal
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, endpoint
from abiquo_central.api.keys import ENGINE, PASSWORDS
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.api.resources.roles import Role, referenced_id
from abiquo_central.tenants import users as domain
from abiquo_central.tenants.authentication import ABIQUO
from abiquo_central.tenants.privileges import USERS_MANAGE_USERS, USERS_VIEW
from abiquo_runtime.errors import InvalidInput

# `{ent}` of the listing that means every enterprise the caller reaches.
ANY_ENTERPRISE = "_"


class User(Entity, kw_only=True):
    media = Media.of("user")

    # Absent from the body of a POST: the server assigns it.
    id: int | None = None
    name: str
    surname: str = ""
    nick: str
    email: str = ""
    locale: str = "en_US"
    active: bool = True
    auth_type: str = ABIQUO
    # VDC ids separated by commas; "" for every VDC of the enterprise.
    available_virtual_datacenters: str = ""


class UserBody(User, kw_only=True):
    """A user as a request brings it: with its password, which is never rendered."""

    password: str | None = None


def to_model(user: domain.User, hrefs: Hrefs) -> User:
    ent = ("admin", "enterprises", user.enterprise_id)
    here = (*ent, "users", user.id)
    return User(
        id=user.id,
        name=user.name,
        surname=user.surname,
        nick=user.nick,
        email=user.email,
        locale=user.locale,
        active=user.active,
        auth_type=user.auth_type,
        available_virtual_datacenters=user.available_vdcs,
        links=[
            hrefs.link("self", *here, media=User.media.one, title=user.nick),
            hrefs.link("edit", *here, media=User.media.one, title=user.nick),
            hrefs.link("enterprise", *ent),
            hrefs.link("role", "admin", "roles", user.role_id, media=Role.media.one),
        ],
    )


def to_spec(body: UserBody, role_id: int) -> domain.UserSpec:
    return domain.UserSpec(
        nick=body.nick,
        name=body.name,
        role_id=role_id,
        surname=body.surname,
        email=body.email,
        locale=body.locale,
        active=body.active,
        auth_type=body.auth_type,
        available_vdcs=body.available_virtual_datacenters,
        password=body.password,
    )


def _role_id(body: UserBody) -> int | None:
    link = body.link("role")
    return referenced_id(link, "roles") if link is not None else None


@endpoint(produces=User.media.many, privileges=[USERS_VIEW], query=PAGING)
async def list_users(request: web.Request) -> web.Response:
    page = parse_page(request)
    raw = request.match_info["ent"]
    enterprise_id = None if raw == ANY_ENTERPRISE else path_id(request, "ent")
    found = await domain.list_users(
        request.config_dict[ENGINE], principal(request), page=page, enterprise_id=enterprise_id
    )
    return render_page(request, found, page, to_model, media=User.media)


# USERS_VIEW is declared as the least a route under /admin must ask for; the domain
# lets a user read and change itself without it.
# Open to every user: anyone reads itself; the domain wants USERS_VIEW for the others.
@endpoint(produces=User.media.one)
async def get_user(request: web.Request) -> web.Response:
    user = await domain.get_user(
        request.config_dict[ENGINE],
        principal(request),
        path_id(request, "ent"),
        path_id(request, "id"),
    )
    return render(request, to_model(user, Hrefs.of(request)))


@endpoint(produces=User.media.one, consumes=UserBody, privileges=[USERS_MANAGE_USERS])
async def create_user(request: web.Request) -> web.Response:
    enterprise_id = path_id(request, "ent")
    body = await read_entity(request, UserBody)
    role_id = _role_id(body)
    if role_id is None:
        raise InvalidInput("a user needs a 'role' link to its role", code=domain.INVALID_USER)
    app = request.config_dict
    user = await domain.add_user(
        app[ENGINE], app[PASSWORDS], principal(request), enterprise_id, to_spec(body, role_id)
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(user, hrefs),
        status=201,
        headers={"Location": hrefs("admin", "enterprises", enterprise_id, "users", user.id)},
    )


# Open to every user: anyone edits its own details; the domain decides the rest.
@endpoint(produces=User.media.one, consumes=UserBody)
async def update_user(request: web.Request) -> web.Response:
    enterprise_id, user_id = path_id(request, "ent"), path_id(request, "id")
    body = await read_entity(request, UserBody)
    app, caller = request.config_dict, principal(request)
    role_id = _role_id(body)
    if role_id is None:
        current = await domain.get_user(app[ENGINE], caller, enterprise_id, user_id)
        role_id = current.role_id
    user = await domain.update_user(
        app[ENGINE], app[PASSWORDS], caller, enterprise_id, user_id, to_spec(body, role_id)
    )
    return render(request, to_model(user, Hrefs.of(request)))


@endpoint(privileges=[USERS_MANAGE_USERS])
async def delete_user(request: web.Request) -> web.Response:
    await domain.delete_user(
        request.config_dict[ENGINE],
        principal(request),
        path_id(request, "ent"),
        path_id(request, "id"),
    )
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(r"/admin/enterprises/{ent:(?:\d+|_)}/users", list_users, name="users")
    router.add_post(r"/admin/enterprises/{ent:\d+}/users", create_user)
    router.add_get(r"/admin/enterprises/{ent:\d+}/users/{id:\d+}", get_user, name="user")
    router.add_put(r"/admin/enterprises/{ent:\d+}/users/{id:\d+}", update_user)
    router.add_delete(r"/admin/enterprises/{ent:\d+}/users/{id:\d+}", delete_user)
