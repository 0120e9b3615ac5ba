"""/api/admin/datacenters over HTTP, on SQLite and on MariaDB."""

from __future__ import annotations

from datetime import datetime, timedelta
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.infrastructure import datacenters
from abiquo_central.infrastructure.remote_services import DC_PATHS
from tests.central.conftest import ADMIN, T0, USER, FakeClock, basic

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.datacenter+json"
XML_ONE = "application/vnd.abiquo.datacenter+xml"
JSON_MANY = "application/vnd.abiquo.datacenters+json"
XML_MANY = "application/vnd.abiquo.datacenters+xml"

SERVICES = {
    "virtualfactory": "RUNNING",
    "vsm": "RUNNING",
    "nodecollector": "RUNNING",
    "ssm": "FAILED",
    "am": "RUNNING",
    "bpm-async": "RETRYING",
}


async def _register(engine: AsyncEngine, n: int = 1, *, services: bool = True) -> int:
    """A datacenter with the six services of a DC process, each found up by its last check."""
    dc_id = await datacenters.ensure_datacenter(
        engine, uuid=f"uuid-{n}", name=f"dc {n}", location=f"site {n}", now=T0
    )
    if services:
        async with engine.begin() as conn:
            for kind, path in DC_PATHS.items():
                await conn.execute(
                    tables.remote_service.insert().values(
                        datacenter_id=dc_id,
                        type=kind.value,
                        uri=f"http://dc{n}.local:8009/{path}",
                        status=1,
                        checked_at=T0,
                    )
                )
    return dc_id


async def _heartbeat(engine: AsyncEngine, *, at: datetime, sequence: int = 1, n: int = 1) -> None:
    await datacenters.record_heartbeat(
        engine,
        dc_uuid=f"uuid-{n}",
        name=f"dc {n}",
        sequence=sequence,
        started_at=T0 - timedelta(hours=1),
        sent_at=at,
        http_url=f"http://dc{n}.local:8009",
        services=SERVICES,
    )


async def _error(response: object) -> dict[str, str]:
    body = await response.json(content_type=None)  # type: ignore[attr-defined]
    assert list(body) == ["collection"]
    [error] = body["collection"]
    return dict(error)


# -- authentication and authorisation ------------------------------------------------


async def test_version_needs_no_credentials(api: Client) -> None:
    response = await api.get("/api/version")
    assert response.status == 200
    assert await response.text() == "0.1.0"


@pytest.mark.parametrize("path", ["/api/admin/datacenters", "/api/admin/datacenters/1"])
async def test_no_credentials_is_401_with_a_challenge(api: Client, path: str) -> None:
    response = await api.get(path)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Abiquo Api"'
    assert (await _error(response))["code"] == "AUTH-1"


@pytest.mark.parametrize(
    "headers",
    [
        basic("admin", "wrong"),
        basic("nobody", "admin-secret"),
        {"Authorization": "Basic !!notbase64"},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic " + "YWRtaW4="},  # "admin" without a colon
    ],
)
async def test_bad_credentials_are_401(api: Client, headers: dict[str, str]) -> None:
    response = await api.get("/api/admin/datacenters", headers=headers)
    assert response.status == 401
    assert "WWW-Authenticate" in response.headers


async def test_a_user_without_the_privilege_is_403(api: Client) -> None:
    response = await api.get("/api/admin/datacenters", headers=USER)
    assert response.status == 403
    error = await _error(response)
    assert error["code"] == "AUTH-2"
    assert "PHYS_DC_ENUMERATE" in error["message"]


async def test_unknown_paths_need_credentials_too(api: Client) -> None:
    assert (await api.get("/api/nothing/here")).status == 401
    response = await api.get("/api/nothing/here", headers=USER)
    assert response.status == 404
    assert (await _error(response))["code"] == "GEN-2"
    # Undeclared routes under /admin default to the administrators' privilege.
    assert (await api.get("/api/admin/nothing", headers=USER)).status == 403
    assert (await api.get("/api/admin/nothing", headers=ADMIN)).status == 404


async def test_wrong_method_is_405(api: Client) -> None:
    response = await api.delete("/api/admin/datacenters", headers=ADMIN)
    assert response.status == 405
    assert (await _error(response))["code"] == "GEN-6"
    assert "GET" in response.headers["Allow"]


# -- representations -------------------------------------------------------------------


async def test_list_as_json(api: Client, engine: AsyncEngine, clock: FakeClock) -> None:
    dc_id = await _register(engine)
    await _heartbeat(engine, at=T0)
    clock.advance(5)
    response = await api.get("/api/admin/datacenters", headers=ADMIN)
    assert response.status == 200
    assert response.headers["Content-Type"] == JSON_MANY
    body = await response.json(content_type=None)
    assert body["totalSize"] == 1
    assert [link["rel"] for link in body["links"]] == ["first", "last"]
    [dc] = body["collection"]
    base = str(api.make_url(""))
    assert {k: dc[k] for k in ("id", "uuid", "name", "location", "available")} == {
        "id": dc_id,
        "uuid": "uuid-1",
        "name": "dc 1",
        "location": "site 1",
        "available": True,
    }
    assert datetime.fromisoformat(dc["lastHeartbeat"]) == T0
    assert dc["links"] == [
        {
            "rel": "edit",
            "href": f"{base}/api/admin/datacenters/{dc_id}",
            "type": JSON_ONE,
            "title": "dc 1",
        },
        {
            "rel": "remoteservices",
            "href": f"{base}/api/admin/datacenters/{dc_id}/remoteservices",
            "type": "application/vnd.abiquo.remoteservices+json",
        },
        {"rel": "racks", "href": f"{base}/api/admin/datacenters/{dc_id}/racks"},
    ]
    services = {rs["type"]: (rs["uri"], rs["status"]) for rs in dc["remoteServices"]["collection"]}
    assert services == {
        "VIRTUAL_FACTORY": ("http://dc1.local:8009/virtualfactory", 1),
        "VIRTUAL_SYSTEM_MONITOR": ("http://dc1.local:8009/vsm", 1),
        "NODE_COLLECTOR": ("http://dc1.local:8009/nodecollector", 1),
        "STORAGE_SYSTEM_MONITOR": ("http://dc1.local:8009/ssm", 0),
        "APPLIANCE_MANAGER": ("http://dc1.local:8009/am", 1),
        "BPM_SERVICE": ("http://dc1.local:8009/bpm-async", 0),
    }


async def test_list_as_xml(api: Client, engine: AsyncEngine) -> None:
    await _register(engine, 1, services=False)
    await _register(engine, 2)
    await _heartbeat(engine, at=T0, n=2)
    response = await api.get(
        "/api/admin/datacenters", headers={**ADMIN, "Accept": f"{XML_MANY}; version=4.0"}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == f"{XML_MANY}; version=4.0"
    root = ET.fromstring(await response.read())
    assert root.tag == "datacenters"
    assert root.findtext("totalSize") == "2"
    assert [link.get("rel") for link in root.findall("link")] == ["first", "last"]
    assert root.find("link").get("type") == XML_MANY  # type: ignore[union-attr]
    first, second = root.findall("datacenter")
    assert first.findtext("name") == "dc 1"
    assert first.findtext("available") == "false"
    assert first.find("lastHeartbeat") is None
    assert list(first.find("remoteServices") or []) == []
    assert second.findtext("available") == "true"
    assert [rs.findtext("type") for rs in second.findall("remoteServices/remoteService")][:2] == [
        "VIRTUAL_FACTORY",
        "VIRTUAL_SYSTEM_MONITOR",
    ]


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, JSON_ONE),
        ("*/*", JSON_ONE),
        ("application/json", JSON_ONE),
        ("application/xml", XML_ONE),
        (XML_ONE, XML_ONE),
    ],
)
async def test_get_one(
    api: Client, engine: AsyncEngine, accept: str | None, content_type: str
) -> None:
    dc_id = await _register(engine)
    headers = {**ADMIN, **({"Accept": accept} if accept else {})}
    response = await api.get(f"/api/admin/datacenters/{dc_id}", headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    if content_type == XML_ONE:
        root = ET.fromstring(await response.read())
        assert (root.tag, root.findtext("id"), root.findtext("uuid")) == (
            "datacenter",
            str(dc_id),
            "uuid-1",
        )
        assert root.find("link").get("type") == XML_ONE  # type: ignore[union-attr]
    else:
        body = await response.json(content_type=None)
        assert (body["id"], body["name"], body["available"], body["lastHeartbeat"]) == (
            dc_id,
            "dc 1",
            False,
            None,
        )


async def test_links_follow_the_proxy(api: Client, engine: AsyncEngine) -> None:
    dc_id = await _register(engine)
    response = await api.get(
        f"/api/admin/datacenters/{dc_id}",
        headers={
            **ADMIN,
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "cloud.example.com",
            "X-Forwarded-Prefix": "/abiquo",
        },
    )
    body = await response.json(content_type=None)
    assert (
        body["links"][0]["href"]
        == f"https://cloud.example.com/abiquo/api/admin/datacenters/{dc_id}"
    )


async def test_unacceptable_is_406(api: Client, engine: AsyncEngine) -> None:
    dc_id = await _register(engine)
    response = await api.get(
        f"/api/admin/datacenters/{dc_id}",
        headers={**ADMIN, "Accept": "application/vnd.abiquo.virtualmachine+xml"},
    )
    assert response.status == 406
    assert response.headers["Content-Type"] == "application/vnd.abiquo.errors+xml"
    assert ET.fromstring(await response.read()).findtext("error/code") == "GEN-7"


@pytest.mark.parametrize("accept", ["application/json", XML_ONE])
async def test_unknown_id_is_404_in_either_format(api: Client, accept: str) -> None:
    for path in ("/api/admin/datacenters/999999", "/api/admin/datacenters/99999999999999999999"):
        response = await api.get(path, headers={**ADMIN, "Accept": accept})
        assert response.status == 404
        if accept == XML_ONE:
            assert response.headers["Content-Type"] == "application/vnd.abiquo.errors+xml"
            root = ET.fromstring(await response.read())
            assert root.tag == "errors"
            codes = [e.findtext("code") for e in root.findall("error")]
        else:
            assert response.headers["Content-Type"] == "application/vnd.abiquo.errors+json"
            codes = [(await _error(response))["code"]]
        assert codes[0] in ("DC-0", "GEN-2")
    # A number that names no datacenter is the datacenter's own 404.
    response = await api.get("/api/admin/datacenters/999999", headers=ADMIN)
    assert await _error(response) == {
        "code": "DC-0",
        "message": "The requested datacenter does not exist",
    }


# -- liveness --------------------------------------------------------------------------


async def test_liveness_follows_the_clock(
    api: Client, engine: AsyncEngine, clock: FakeClock
) -> None:
    dc_id = await _register(engine)

    async def state() -> tuple[bool, set[int]]:
        response = await api.get(f"/api/admin/datacenters/{dc_id}", headers=ADMIN)
        body = await response.json(content_type=None)
        return body["available"], {rs["status"] for rs in body["remoteServices"]["collection"]}

    assert await state() == (False, {0})
    await _heartbeat(engine, at=clock.now)
    assert await state() == (True, {0, 1})
    clock.advance(15)  # settings.datacenters.liveness_timeout
    assert await state() == (True, {0, 1})
    clock.advance(0.5)
    assert await state() == (False, {0})
    await _heartbeat(engine, at=clock.now, sequence=2)
    assert await state() == (True, {0, 1})
    # A late heartbeat from before does not bring back an older picture.
    await _heartbeat(engine, at=clock.now - timedelta(seconds=60), sequence=1)
    assert (await state())[0] is True


# -- listing parameters ----------------------------------------------------------------


async def test_paging_sorting_filtering(api: Client, engine: AsyncEngine) -> None:
    for n in range(1, 6):
        await _register(engine, n)
    response = await api.get(
        "/api/admin/datacenters?limit=2&startwith=2&by=name&asc=false", headers=ADMIN
    )
    body = await response.json(content_type=None)
    assert body["totalSize"] == 5
    assert [dc["name"] for dc in body["collection"]] == ["dc 3", "dc 2"]
    rels = {link["rel"]: link["href"] for link in body["links"]}
    assert list(rels) == ["first", "previous", "next", "last"]
    assert (
        "startwith=4" in rels["next"] and "by=name" in rels["next"] and "asc=false" in rels["next"]
    )
    assert rels["next"].startswith(str(api.make_url("/api/admin/datacenters")))

    response = await api.get("/api/admin/datacenters?has=c 4", headers=ADMIN)
    body = await response.json(content_type=None)
    assert [dc["name"] for dc in body["collection"]] == ["dc 4"]
    assert body["totalSize"] == 1


@pytest.mark.parametrize(
    "query", ["limit=0", "startwith=-5", "limit=ten", "asc=maybe", "by=password_hash"]
)
async def test_bad_listing_parameters_are_400(api: Client, query: str) -> None:
    response = await api.get(f"/api/admin/datacenters?{query}", headers=ADMIN)
    assert response.status == 400
    assert (await _error(response))["code"] == "GEN-1"
