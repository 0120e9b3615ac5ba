"""/api/config/categories[/{id}]: the categories templates are filed under.

Any authenticated user reads them; creating, modifying and deleting need
APPLIB_MANAGE_CATEGORIES. `defaultCategory` is read-only: the default category is the
platform's (see config/categories.py), a body cannot make or unmake one.
"""

from __future__ import annotations

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
from abiquo_central.config import categories as domain
from abiquo_central.tenants.privileges import APPLIB_MANAGE_CATEGORIES


class Category(Entity, kw_only=True):
    media = Media.of("category", plural="categories", xml_plural="categories")

    # Absent from the body of a POST: the server assigns it.
    id: int | None = None
    name: str
    erasable: bool = True
    default_category: bool = False


def to_model(found: domain.Category, hrefs: Hrefs) -> Category:
    return Category(
        id=found.id,
        name=found.name,
        erasable=found.erasable,
        default_category=found.is_default,
        links=[
            hrefs.link(
                "edit", "config", "categories", found.id, media=Category.media.one, title=found.name
            )
        ],
    )


def to_spec(body: Category) -> domain.CategorySpec:
    return domain.CategorySpec(name=body.name, erasable=body.erasable)


@endpoint(produces=Category.media.many, query=PAGING)
async def list_categories(request: web.Request) -> web.Response:
    page = parse_page(request)
    found = await domain.list_categories(request.config_dict[ENGINE], page=page)
    return render_page(request, found, page, to_model, media=Category.media)


@endpoint(produces=Category.media.one)
async def get_category(request: web.Request) -> web.Response:
    found = await domain.get_category(request.config_dict[ENGINE], path_id(request, "id"))
    return render(request, to_model(found, Hrefs.of(request)))


@endpoint(produces=Category.media.one, consumes=Category, privileges=[APPLIB_MANAGE_CATEGORIES])
async def create_category(request: web.Request) -> web.Response:
    body = await read_entity(request, Category)
    created = await domain.create_category(
        request.config_dict[ENGINE], to_spec(body), actor=actor(request)
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(created, hrefs),
        status=201,
        headers={"Location": hrefs("config", "categories", created.id)},
    )


@endpoint(produces=Category.media.one, consumes=Category, privileges=[APPLIB_MANAGE_CATEGORIES])
async def update_category(request: web.Request) -> web.Response:
    category_id = path_id(request, "id")
    body = await read_entity(request, Category)
    changed = await domain.update_category(
        request.config_dict[ENGINE], category_id, to_spec(body), actor=actor(request)
    )
    return render(request, to_model(changed, Hrefs.of(request)))


@endpoint(privileges=[APPLIB_MANAGE_CATEGORIES])
async def delete_category(request: web.Request) -> web.Response:
    await domain.delete_category(
        request.config_dict[ENGINE], path_id(request, "id"), actor=actor(request)
    )
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/config/categories", list_categories, name="categories")
    router.add_post("/config/categories", create_category)
    router.add_get(r"/config/categories/{id:\d+}", get_category, name="category")
    router.add_put(r"/config/categories/{id:\d+}", update_category)
    router.add_delete(r"/config/categories/{id:\d+}", delete_category)
