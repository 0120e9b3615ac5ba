"""/api/admin/datacenters/{dc}/racks over HTTP, in JSON and XML, on SQLite and MariaDB."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from tests.central.conftest import ADMIN, T0, USER

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.rack+json"
XML_ONE = "application/vnd.abiquo.rack+xml"
JSON_MANY = "application/vnd.abiquo.racks+json"


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


@pytest.fixture
async def dc(engine: AsyncEngine) -> int:
    return await ensure_datacenter(engine, uuid="dc-1", name="Madrid", location="", now=T0)


async def _events(engine: AsyncEngine) -> list[tuple[str, str]]:
    ev = tables.event
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ev.c.action, ev.c.target).where(ev.c.component == "RACK").order_by(ev.c.id)
        )
        return [(r.action, r.target) for r in rows]


async def test_crud_in_json(api: Client, dc: int, engine: AsyncEngine) -> None:
    base = f"/api/admin/datacenters/{dc}/racks"
    created = await api.post(
        base,
        json={
            "name": " rack-1 ",
            "vlanIdMin": 100,
            "vlanIdMax": 200,
            "vlansIdAvoided": "150,120-130",
        },
        headers={**ADMIN, "Content-Type": JSON_ONE, "Accept": JSON_ONE},
    )
    assert created.status == 201, await created.text()
    body = await _json(created)
    rack_id = body["id"]
    href = f"{api.make_url('')}{base}/{rack_id}"
    assert created.headers["Location"] == href
    assert body["name"] == "rack-1" and body["vlansIdAvoided"] == "120-130, 150"
    assert (body["vlanPerVdcReserved"], body["nrsq"], body["haEnabled"]) == (1, 10, False)
    links = {link["rel"]: link["href"] for link in body["links"]}
    assert links == {
        "edit": href,
        "datacenter": f"{api.make_url('')}/api/admin/datacenters/{dc}",
        "machines": f"{href}/machines",
    }
    got = await _json(await api.get(f"{base}/{rack_id}", headers=ADMIN))
    assert got == body

    body.update(name="rack-2", haEnabled=True, nrsq=20, shortDescription="short")
    put = await api.put(f"{base}/{rack_id}", json=body, headers={**ADMIN, "Content-Type": JSON_ONE})
    assert put.status == 200, await put.text()
    assert (await _json(put))["shortDescription"] == "short"

    listed = await api.get(base, headers={**ADMIN, "Accept": JSON_MANY})
    assert listed.headers["Content-Type"] == JSON_MANY
    page = await _json(listed)
    assert page["totalSize"] == 1 and page["collection"][0]["name"] == "rack-2"

    assert (await api.delete(f"{base}/{rack_id}", headers=ADMIN)).status == 204
    assert (await api.get(f"{base}/{rack_id}", headers=ADMIN)).status == 404
    target = f"/admin/datacenters/{dc}/racks/{rack_id}"
    assert await _events(engine) == [
        ("RACK_CREATE", target),
        ("RACK_MODIFY", target),
        ("RACK_DELETE", target),
    ]


async def test_xml(api: Client, dc: int) -> None:
    base = f"/api/admin/datacenters/{dc}/racks"
    created = await api.post(
        base,
        data=b"<rack><name>x1</name><vlanIdMin>5</vlanIdMin><haEnabled>true</haEnabled></rack>",
        headers={**ADMIN, "Content-Type": XML_ONE, "Accept": XML_ONE},
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"] == XML_ONE
    root = ET.fromstring(await created.read())
    assert root.tag == "rack"
    assert (root.findtext("name"), root.findtext("vlanIdMin"), root.findtext("vlanIdMax")) == (
        "x1",
        "5",
        "4094",
    )
    assert root.findtext("haEnabled") == "true"
    assert {link.get("rel") for link in root.findall("link")} == {"edit", "datacenter", "machines"}
    listed = await api.get(base, headers={**ADMIN, "Accept": "application/vnd.abiquo.racks+xml"})
    racks = ET.fromstring(await listed.read())
    assert racks.tag == "racks" and racks.findtext("totalSize") == "1"
    assert [r.findtext("name") for r in racks.findall("rack")] == ["x1"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": ""}, "RACK-4"),
        ({"name": "r", "vlanIdMin": 10, "vlanIdMax": 5}, "RACK-2"),
        ({"name": "r", "vlanIdMax": 4095}, "RACK-2"),
        ({"name": "r", "vlansIdAvoided": "1-3"}, "RACK-2"),
        ({"name": "r", "vlansIdAvoided": "a,b"}, "RACK-2"),
        ({"name": "r", "nrsq": 101}, "RACK-2"),
        ({"name": "r", "vlanPerVdcReserved": -1}, "RACK-2"),
        ({"name": "r", "vlanIdMin": "x"}, "GEN-1"),
        ({}, "GEN-1"),
    ],
)
async def test_invalid_bodies_are_400(
    api: Client, dc: int, body: dict[str, Any], code: str
) -> None:
    response = await api.post(
        f"/api/admin/datacenters/{dc}/racks",
        json=body,
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert response.status == 400, await response.text()
    assert (await _json(response))["collection"][0]["code"] == code


async def test_duplicates_and_occupied_racks_are_409(
    api: Client, dc: int, engine: AsyncEngine
) -> None:
    base = f"/api/admin/datacenters/{dc}/racks"
    headers = {**ADMIN, "Content-Type": JSON_ONE}
    first = await _json(await api.post(base, json={"name": "r"}, headers=headers))
    again = await api.post(base, json={"name": "r"}, headers=headers)
    assert again.status == 409
    assert (await _json(again))["collection"][0]["code"] == "RACK-1"
    async with engine.begin() as conn:
        await conn.execute(
            tables.machine.insert().values(
                datacenter_id=dc,
                rack_id=first["id"],
                name="m",
                ip="10.0.0.1",
                type="KVM",
                state="MANAGED",
                cpu=1,
                ram=1,
                created_at=T0,
            )
        )
    refused = await api.delete(f"{base}/{first['id']}", headers=ADMIN)
    assert refused.status == 409
    assert (await _json(refused))["collection"][0]["code"] == "RACK-3"


async def test_unknown_datacenter_is_404(api: Client) -> None:
    response = await api.get("/api/admin/datacenters/999/racks", headers=ADMIN)
    assert response.status == 404
    assert (await _json(response))["collection"][0]["code"] == "DC-0"


async def test_a_user_may_not(api: Client, dc: int) -> None:
    base = f"/api/admin/datacenters/{dc}/racks"
    assert (await api.get(base, headers=USER)).status == 403
    created = await api.post(base, json={"name": "r"}, headers={**USER, "Content-Type": JSON_ONE})
    assert created.status == 403
