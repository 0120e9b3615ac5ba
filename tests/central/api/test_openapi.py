from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.api import build_api
from abiquo_central.api.endpoint import QueryParam, endpoint
from abiquo_central.api.media import Media
from abiquo_central.api.model import Collection, Entity
from abiquo_central.api.openapi import build_document, model_of
from abiquo_central.api.resources.enterprises import Enterprise
from abiquo_central.api.resources.login import User
from abiquo_central.db.engine import create_engine
from abiquo_central.settings import CentralSettings
from abiquo_runtime.secrets import SecretBox

Client = TestClient[web.Request, web.Application]


async def served(api: Client) -> dict[str, Any]:
    response = await api.get("/api/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document: dict[str, Any] = await response.json()
    return document


def test_the_document_is_valid(settings: CentralSettings, secrets: SecretBox) -> None:
    # Validating takes most of a second: not on a loop. The engine never connects.
    engine = create_engine("sqlite+aiosqlite://", pool_size=1, echo=False)
    app = build_api(engine=engine, settings=settings, secrets=secrets)
    web.Application().add_subapp("/api", app)
    validate(build_document(app.router))


async def test_the_document_is_public(api: Client) -> None:
    # No credentials at all: the document is public.
    document = await served(api)
    assert document["openapi"].startswith("3.1")
    assert document["servers"] == [{"url": "/api"}]
    assert document["paths"]["/openapi.json"]["get"]["security"] == []
    assert document["paths"]["/version"]["get"]["security"] == []


async def test_the_document_is_built_once(api: Client) -> None:
    first = await api.get("/api/openapi.json")
    second = await api.get("/api/openapi.json")
    assert await first.read() == await second.read()


def _registered(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = str(info.get("formatter") or info.get("path")).removeprefix("/api")
        gets = {id(route.handler) for route in resource if route.method == "GET"}
        for route in resource:
            if route.method == "HEAD" and id(route.handler) in gets:
                continue  # implied by the GET
            found.add((route.method.lower(), path))
    return found


async def test_every_registered_route_is_described(
    engine: AsyncEngine, settings: CentralSettings, secrets: SecretBox
) -> None:
    app = build_api(engine=engine, settings=settings, secrets=secrets)
    root = web.Application()
    root.add_subapp("/api", app)
    document = build_document(app.router)
    described = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert _registered(app) <= described
    assert ("get", "/admin/enterprises/{id}") in described


async def test_models_have_their_wire_names(api: Client) -> None:
    document = await served(api)
    schemas = document["components"]["schemas"]
    enterprise = schemas["Enterprise"]
    assert {"id", "name", "isReservationRestricted", "cpuSoft", "publicIpsHard", "links"} <= set(
        enterprise["properties"]
    )
    assert enterprise["required"] == ["name"]
    assert schemas["Link"]["required"] == ["rel", "href"]
    page = schemas["Collection_Enterprise_"]
    assert page["properties"]["collection"]["items"] == {"$ref": "#/components/schemas/Enterprise"}
    assert "totalSize" in page["properties"]


async def test_operations_carry_their_declarations(api: Client) -> None:
    document = await served(api)
    listing = document["paths"]["/admin/enterprises"]["get"]
    assert listing["tags"] == ["enterprises"]
    assert listing["x-privileges"] == ["ENTERPRISE_ENUMERATE"]
    ok = listing["responses"]["200"]["content"]
    assert ok["application/vnd.abiquo.enterprises+json"]["schema"] == {
        "$ref": "#/components/schemas/Collection_Enterprise_"
    }
    assert ok["application/vnd.abiquo.enterprises+xml"]["schema"]["xml"] == {"name": "enterprises"}
    for status in ("400", "401", "403", "404", "406", "409", "415", "503"):
        assert listing["responses"][status]["$ref"].startswith("#/components/responses/")
    errors = document["components"]["responses"]["NotFound"]["content"]
    assert errors["application/vnd.abiquo.errors+json"]["schema"] == {
        "$ref": "#/components/schemas/Collection_ErrorItem_"
    }
    one = document["paths"]["/admin/enterprises/{id}"]
    assert one["get"]["parameters"] == [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
    ]
    assert set(one["delete"]["responses"]) >= {"204", "404"}
    login = document["paths"]["/login"]["get"]["responses"]["200"]["content"]
    assert login["application/vnd.abiquo.user+json"]["schema"] == {
        "$ref": "#/components/schemas/User"
    }
    assert {s for scheme in listing["security"] for s in scheme} == {
        "basic",
        "token",
        "bearer",
        "cookie",
    }


class Widget(Entity, kw_only=True):
    media = Media.of("widget", xml="wIdget")

    id: int | None = None
    display_name: str


@endpoint(
    produces=Widget.media.one,
    consumes=Widget,
    privileges=["PHYS_DC_MANAGE"],
    query=[QueryParam("force", bool, "even if"), QueryParam("n", int, required=True)],
)
async def put_widget(request: web.Request) -> web.Response:
    """Replace a widget."""
    raise NotImplementedError


async def undeclared(request: web.Request) -> web.Response:
    raise NotImplementedError


def test_a_route_is_described_from_its_declaration_alone() -> None:
    app = web.Application()
    app.router.add_put(r"/admin/widgets/{id:\d+}/{kind:(big|small)}", put_widget)
    app.router.add_get("/things/{name}", undeclared)
    document = build_document(app.router)
    validate(document)
    put = document["paths"]["/admin/widgets/{id}/{kind}"]["put"]
    assert put["summary"] == "Replace a widget."
    assert put["parameters"] == [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
        {
            "name": "kind",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^(?:(big|small))$"},
        },
        {
            "name": "force",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean"},
            "description": "even if",
        },
        {"name": "n", "in": "query", "required": True, "schema": {"type": "integer"}},
    ]
    body = put["requestBody"]["content"]
    assert body["application/vnd.abiquo.widget+json"]["schema"] == {
        "$ref": "#/components/schemas/Widget"
    }
    assert body["application/vnd.abiquo.widget+xml"]["schema"]["xml"] == {"name": "wIdget"}
    assert "displayName" in document["components"]["schemas"]["Widget"]["properties"]
    thing = document["paths"]["/things/{name}"]["get"]
    assert thing["responses"] == {"default": {"description": "Whatever the handler answers"}}
    assert thing["parameters"][0]["schema"]["type"] == "string"


def test_a_many_media_is_a_collection_of_its_entity() -> None:
    assert model_of(Widget.media.one) is Widget
    assert model_of(Widget.media.many) == Collection[Widget]
    assert model_of(Enterprise.media.many) == Collection[Enterprise]
    assert model_of(User.media.one, near=User.__module__) is User
    assert model_of(Media.of("nothing").one) is None
