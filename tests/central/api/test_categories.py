"""/api/config/categories over HTTP, in JSON and XML, on SQLite and on MariaDB."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from abiquo_central.db import tables
from tests.central.conftest import ADMIN, USER

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.category+json"
XML_ONE = "application/vnd.abiquo.category+xml"
JSON_MANY = "application/vnd.abiquo.categories+json"


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


def _path(href: str) -> str:
    """The path of an absolute href, which is what the test client requests."""
    return URL(href).path


async def _code(response: Any) -> str:
    return str((await _json(response))["collection"][0]["code"])


async def _events(engine: AsyncEngine) -> list[tuple[str, str]]:
    ev = tables.event
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ev.c.action, ev.c.target).where(ev.c.action.like("CATEGORY_%")).order_by(ev.c.id)
        )
        return [(r.action, r.target) for r in rows]


async def _default(api: Client) -> dict[str, Any]:
    page = await _json(await api.get("/api/config/categories", headers=USER))
    found: dict[str, Any] = next(c for c in page["collection"] if c["defaultCategory"])
    return found


async def test_crud_in_json_records_events(api: Client, engine: AsyncEngine) -> None:
    created = await api.post(
        "/api/config/categories",
        json={"name": " Databases "},
        headers={**ADMIN, "Content-Type": JSON_ONE, "Accept": JSON_ONE},
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"] == JSON_ONE
    body = await _json(created)
    href = f"{api.make_url('')}/api/config/categories/{body['id']}"
    assert created.headers["Location"] == href
    assert body == {
        "id": body["id"],
        "name": "Databases",
        "erasable": True,
        "defaultCategory": False,
        "links": [{"rel": "edit", "href": href, "type": JSON_ONE, "title": "Databases"}],
    }
    # Any authenticated user reads them.
    assert await _json(await api.get(_path(href), headers=USER)) == body

    put = await api.put(
        _path(href), json={**body, "name": "DB"}, headers={**ADMIN, "Content-Type": JSON_ONE}
    )
    assert put.status == 200 and (await _json(put))["name"] == "DB"

    listed = await api.get("/api/config/categories", headers=USER)
    assert listed.headers["Content-Type"] == JSON_MANY
    assert [c["name"] for c in (await _json(listed))["collection"]] == ["DB", "Others"]

    assert (await api.delete(_path(href), headers=ADMIN)).status == 204
    assert (await api.get(_path(href), headers=USER)).status == 404
    target = f"/config/categories/{body['id']}"
    assert await _events(engine) == [
        ("CATEGORY_CREATE", target),
        ("CATEGORY_MODIFY", target),
        ("CATEGORY_DELETE", target),
    ]


async def test_create_and_read_in_xml(api: Client) -> None:
    created = await api.post(
        "/api/config/categories",
        data=b"<category><name>Web</name><erasable>false</erasable></category>",
        headers={**ADMIN, "Content-Type": XML_ONE, "Accept": XML_ONE},
    )
    assert created.status == 201, await created.text()
    root = ET.fromstring(await created.read())
    assert (root.tag, root.findtext("name"), root.findtext("erasable")) == (
        "category",
        "Web",
        "false",
    )
    assert root.findtext("defaultCategory") == "false"
    listed = await api.get(
        "/api/config/categories",
        headers={**USER, "Accept": "application/vnd.abiquo.categories+xml"},
    )
    page = ET.fromstring(await listed.read())
    assert page.tag == "categories"
    assert [c.findtext("name") for c in page.findall("category")] == ["Others", "Web"]


async def test_the_default_category_stays(api: Client, engine: AsyncEngine) -> None:
    default = await _default(api)
    assert (default["name"], default["erasable"]) == ("Others", False)
    href = f"/api/config/categories/{default['id']}"
    deleted = await api.delete(_path(href), headers=ADMIN)
    assert (deleted.status, await _code(deleted)) == (409, "CATEGORY-3")
    renamed = await api.put(
        _path(href),
        json={"name": "Misc", "erasable": False},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert (renamed.status, await _code(renamed)) == (409, "CATEGORY-3")
    assert await _events(engine) == []


async def test_conflicts_and_validation(api: Client) -> None:
    write = {**ADMIN, "Content-Type": JSON_ONE}
    dup = await api.post("/api/config/categories", json={"name": "Others"}, headers=write)
    assert (dup.status, await _code(dup)) == (409, "CATEGORY-1")
    for bad in ({"name": ""}, {"name": "x" * 129}, {}, {"name": 3}):
        refused = await api.post("/api/config/categories", json=bad, headers=write)
        assert refused.status == 400, bad
    kept = await api.post(
        "/api/config/categories", json={"name": "Kept", "erasable": False}, headers=write
    )
    undeletable = await api.delete(_path(kept.headers["Location"]), headers=ADMIN)
    assert (undeletable.status, await _code(undeletable)) == (409, "CATEGORY-2")
    missing = await api.get("/api/config/categories/999999", headers=USER)
    assert (missing.status, await _code(missing)) == (404, "CATEGORY-0")


async def test_writes_need_manage_categories(api: Client) -> None:
    write = {**USER, "Content-Type": JSON_ONE}
    assert (
        await api.post("/api/config/categories", json={"name": "Mine"}, headers=write)
    ).status == 403
    default = await _default(api)
    href = f"/api/config/categories/{default['id']}"
    assert (await api.put(_path(href), json={"name": "Mine"}, headers=write)).status == 403
    assert (await api.delete(_path(href), headers=USER)).status == 403
