"""/api/config/privileges over HTTP: Abiquo's 53, with Abiquo's ids."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from aiohttp import web
from aiohttp.test_utils import TestClient

from abiquo_central.tenants import privileges
from tests.central.conftest import ADMIN, USER

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.privilege+json"
JSON_MANY = "application/vnd.abiquo.privileges+json"
XML_MANY = "application/vnd.abiquo.privileges+xml"


async def test_every_user_lists_the_53_in_abiquos_order(api: Client) -> None:
    response = await api.get("/api/config/privileges", headers=USER)
    assert response.status == 200
    assert response.headers["Content-Type"] == JSON_MANY
    body = await response.json(content_type=None)
    assert body["totalSize"] == 53
    names = [(p["id"], p["name"]) for p in body["collection"]]
    assert names[0] == (1, "ENTERPRISE_ENUMERATE")
    assert (4, "PHYS_DC_ENUMERATE") in names
    assert (49, "PRICING_VIEW") in names and (50, "PRICING_MANAGE") in names
    assert names[-1] == (53, "APPLIB_MANAGE_GLOBAL_CATEGORIES")
    first = body["collection"][0]
    assert first["links"][0]["href"] == f"{api.make_url('')}/api/config/privileges/1"


async def test_one_privilege_and_an_unknown_one(api: Client) -> None:
    response = await api.get("/api/config/privileges/36", headers=USER)
    assert response.headers["Content-Type"] == JSON_ONE
    assert (await response.json(content_type=None))["name"] == privileges.USERS_MANAGE_ROLES
    missing = await api.get("/api/config/privileges/54", headers=USER)
    assert missing.status == 404
    assert (await missing.json(content_type=None))["collection"][0]["code"] == "PRIV-0"
    assert (await api.get("/api/config/privileges/1")).status == 401


async def test_paging_filter_and_sort_in_xml(api: Client) -> None:
    response = await api.get(
        "/api/config/privileges",
        params={"has": "pricing", "by": "name", "asc": "false", "limit": "1"},
        headers={**ADMIN, "Accept": XML_MANY},
    )
    assert response.status == 200
    root = ET.fromstring(await response.text())
    assert root.tag == "privileges"
    assert root.findtext("totalSize") == "2"
    assert [p.findtext("name") for p in root.iter("privilege")] == ["PRICING_VIEW"]
    bad = await api.get("/api/config/privileges", params={"by": "nope"}, headers=ADMIN)
    assert bad.status == 400
