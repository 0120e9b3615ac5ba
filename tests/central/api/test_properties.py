"""/api/config/properties over HTTP, in JSON and XML, on SQLite and on MariaDB."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from abiquo_central.db import tables
from tests.central.config import config_defaults
from tests.central.conftest import ADMIN, USER

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.systemproperty+json"
XML_ONE = "application/vnd.abiquo.systemproperty+xml"
JSON_MANY = "application/vnd.abiquo.systemproperties+json"
BILLING = "client.main.billingUrl"


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


def _path(href: str) -> str:
    """The path of an absolute href, which is what the test client requests."""
    return URL(href).path


async def _code(response: Any) -> str:
    return str((await _json(response))["collection"][0]["code"])


async def test_read_and_change_in_json(api: Client, engine: AsyncEngine) -> None:
    listed = await api.get("/api/config/properties", params={"limit": "100"}, headers=ADMIN)
    assert listed.status == 200, await listed.text()
    assert listed.headers["Content-Type"] == JSON_MANY
    page = await _json(listed)
    assert page["totalSize"] == len(config_defaults().PROPERTIES)

    href = f"{api.make_url('')}/api/config/properties/{BILLING}"
    got = await api.get(f"/api/config/properties/{BILLING}", headers=ADMIN)
    assert got.headers["Content-Type"] == JSON_ONE
    body = await _json(got)
    assert (body["name"], body["value"]) == (BILLING, "")
    assert body["description"] and body["links"] == [
        {"rel": "edit", "href": href, "type": JSON_ONE}
    ]

    put = await api.put(
        _path(href),
        json={"name": BILLING, "value": "https://billing.example", "description": "ignored"},
        headers={**ADMIN, "Content-Type": JSON_ONE, "Accept": JSON_ONE},
    )
    assert put.status == 200, await put.text()
    changed = await _json(put)
    assert changed == {**body, "value": "https://billing.example"}
    # Only the value is in the body: the path names the property.
    again = await api.put(
        _path(href), json={"value": "x"}, headers={**ADMIN, "Content-Type": JSON_ONE}
    )
    assert (await _json(again))["value"] == "x"
    ev = tables.event
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(ev.c.action, ev.c.target).where(ev.c.action == "SYSTEM_PROPERTY_MODIFY")
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("SYSTEM_PROPERTY_MODIFY", f"/config/properties/{BILLING}")
    ] * 2


async def test_in_xml(api: Client) -> None:
    url = "/api/config/properties/client.dashboard.showStartUpAlert"
    put = await api.put(
        url,
        data=b"<systemProperty><value>0</value></systemProperty>",
        headers={**ADMIN, "Content-Type": XML_ONE, "Accept": XML_ONE},
    )
    assert put.status == 200, await put.text()
    root = ET.fromstring(await put.read())
    assert (root.tag, root.findtext("name"), root.findtext("value")) == (
        "systemProperty",
        "client.dashboard.showStartUpAlert",
        "0",
    )
    listed = await api.get(
        "/api/config/properties",
        params={"component": "client.dashboard"},
        headers={**ADMIN, "Accept": "application/vnd.abiquo.systemproperties+xml"},
    )
    page = ET.fromstring(await listed.read())
    assert page.tag == "systemProperties"
    assert [p.findtext("value") for p in page.findall("systemProperty")] == ["0"]


async def test_filter_by_component(api: Client) -> None:
    async def names(component: str) -> list[str]:
        response = await api.get(
            "/api/config/properties",
            params={"component": component, "limit": "100"},
            headers=ADMIN,
        )
        return [p["name"] for p in (await _json(response))["collection"]]

    assert len(await names("client")) == len(config_defaults().PROPERTIES)
    assert await names("client.main") == [
        "client.main.allowLogout",
        "client.main.billingUrl",
        "client.main.disableChangePassword",
        "client.main.enterpriseLogoURL",
    ]
    assert await names("server") == []
    assert await names("%") == []


async def test_only_existing_properties_and_bounded_values(api: Client) -> None:
    write = {**ADMIN, "Content-Type": JSON_ONE}
    missing = await api.put(
        "/api/config/properties/client.main.nothing", json={"value": "1"}, headers=write
    )
    assert (missing.status, await _code(missing)) == (404, "SYSPROP-0")
    assert (await api.get("/api/config/properties/nothing", headers=ADMIN)).status == 404
    too_long = await api.put(
        f"/api/config/properties/{BILLING}", json={"value": "x" * 4097}, headers=write
    )
    assert (too_long.status, await _code(too_long)) == (400, "SYSPROP-1")
    other_name = await api.put(
        f"/api/config/properties/{BILLING}",
        json={"name": "client.logout.url", "value": "1"},
        headers=write,
    )
    assert (other_name.status, await _code(other_name)) == (400, "SYSPROP-2")
    no_value = await api.put(f"/api/config/properties/{BILLING}", json={}, headers=write)
    assert no_value.status == 400


async def test_privileges(api: Client) -> None:
    assert (await api.get("/api/config/properties", headers=USER)).status == 403
    assert (await api.get(f"/api/config/properties/{BILLING}", headers=USER)).status == 403
    put = await api.put(
        f"/api/config/properties/{BILLING}",
        json={"value": "1"},
        headers={**USER, "Content-Type": JSON_ONE},
    )
    assert put.status == 403
