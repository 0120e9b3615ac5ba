"""/api/cloud/locations: the datacenters an enterprise has limits in, as a tenant sees them."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.events import Actor
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.tenants import limits
from abiquo_central.tenants.enterprises import Limits
from abiquo_central.tenants.seed import ensure_enterprise
from tests.central.conftest import ADMIN, T0, USER, Seeded

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.datacenter+json"
JSON_MANY = "application/vnd.abiquo.datacenters+json"


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


@pytest.fixture
async def dcs(engine: AsyncEngine, seeded: Seeded) -> tuple[int, int, int]:
    """Barcelona (the seeded enterprise's), Madrid (another's) and Paris (nobody's)."""
    actor = Actor(user_id=seeded.user_id, nick="jdoe", enterprise_id=seeded.enterprise_id)
    bcn = await ensure_datacenter(engine, uuid="dc-1", name="Barcelona", location="ES", now=T0)
    mad = await ensure_datacenter(engine, uuid="dc-2", name="Madrid", location="ES", now=T0)
    par = await ensure_datacenter(engine, uuid="dc-3", name="Paris", location="FR", now=T0)
    other = await ensure_enterprise(engine, "Other", now=T0)
    await limits.create_limit(engine, seeded.enterprise_id, bcn, Limits(), actor=actor)
    await limits.create_limit(engine, other, mad, Limits(), actor=actor)
    return bcn, mad, par


async def test_a_tenant_sees_only_its_locations(api: Client, dcs: tuple[int, int, int]) -> None:
    bcn, mad, par = dcs
    listed = await api.get("/api/cloud/locations", headers=USER)
    assert listed.status == 200, await listed.text()
    assert listed.headers["Content-Type"] == JSON_MANY
    page = await _json(listed)
    assert page["totalSize"] == 1
    href = f"{api.make_url('')}/api/cloud/locations/{bcn}"
    assert page["collection"] == [
        {
            "id": bcn,
            "name": "Barcelona",
            "location": "ES",
            "links": [{"rel": "edit", "href": href, "type": JSON_ONE, "title": "Barcelona"}],
        }
    ]
    one = await api.get(f"/api/cloud/locations/{bcn}", headers=USER)
    assert one.headers["Content-Type"] == JSON_ONE
    body = await _json(one)
    assert body == page["collection"][0]
    # Nothing of the infrastructure shows.
    assert "uuid" not in body and "remoteServices" not in body
    for hidden in (mad, par, 999_999):
        assert (await api.get(f"/api/cloud/locations/{hidden}", headers=USER)).status == 404


async def test_in_xml(api: Client, dcs: tuple[int, int, int]) -> None:
    got = await api.get(
        f"/api/cloud/locations/{dcs[0]}",
        headers={**USER, "Accept": "application/vnd.abiquo.datacenter+xml"},
    )
    root = ET.fromstring(await got.read())
    assert (root.tag, root.findtext("name"), root.find("uuid")) == ("datacenter", "Barcelona", None)
    listed = await api.get(
        "/api/cloud/locations", headers={**USER, "Accept": "application/vnd.abiquo.datacenters+xml"}
    )
    page = ET.fromstring(await listed.read())
    assert (page.tag, [d.findtext("name") for d in page.findall("datacenter")]) == (
        "datacenters",
        ["Barcelona"],
    )


async def test_the_admin_sees_its_own_enterprises_too(
    api: Client, dcs: tuple[int, int, int]
) -> None:
    # The cloud administrator's enterprise is the seeded one: its locations, not all DCs.
    page = await _json(await api.get("/api/cloud/locations", headers=ADMIN))
    assert [d["name"] for d in page["collection"]] == ["Barcelona"]


async def test_without_limits_there_is_nowhere(api: Client) -> None:
    page = await _json(await api.get("/api/cloud/locations", headers=USER))
    assert (page["totalSize"], page["collection"]) == (0, [])
