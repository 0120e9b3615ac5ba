"""Datacenters created with their remote services, and the services' own resource, over
HTTP against a small datacenter that answers /check; on SQLite and on MariaDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.infrastructure import datacenters
from tests.central.conftest import ADMIN, USER, FakeClock
from tests.central.infrastructure.test_checks import DC_UUID, FakeDc, serve

Client = TestClient[web.Request, web.Application]

DC_JSON = "application/vnd.abiquo.datacenter+json"
DC_XML = "application/vnd.abiquo.datacenter+xml"
RS_JSON = "application/vnd.abiquo.remoteservice+json"
RS_XML = "application/vnd.abiquo.remoteservice+xml"
RS_MANY_JSON = "application/vnd.abiquo.remoteservices+json"
OTHER_UUID = "0a0b0c0d-1111-2222-3333-444455556666"

PATHS = ("virtualfactory", "vsm", "nodecollector", "ssm", "am", "bpm-async")
RUNNING = dict.fromkeys(PATHS, "RUNNING")


@pytest.fixture
async def fake_dc() -> AsyncIterator[FakeDc]:
    async for dc in serve(FakeDc()):
        yield dc


def _json(media: str) -> dict[str, str]:
    return {**ADMIN, "Accept": media, "Content-Type": media}


async def _body(response: Any) -> Any:
    return await response.json(content_type=None)


async def _error(response: Any) -> tuple[int, str]:
    body = await _body(response)
    return response.status, body["collection"][0]["code"]


async def _heartbeat(engine: AsyncEngine, clock: FakeClock, sequence: int, **states: str) -> None:
    await datacenters.record_heartbeat(
        engine,
        dc_uuid=DC_UUID,
        name="bcn",
        sequence=sequence,
        started_at=clock.now.replace(year=2020),
        sent_at=clock.now,
        http_url="http://unused",
        services={**RUNNING, **states},
    )


async def _create(api: Client, fake_dc: FakeDc, *services: str, name: str = "bcn") -> Any:
    kinds = {
        "virtualfactory": "VIRTUAL_FACTORY",
        "am": "APPLIANCE_MANAGER",
        "bpm-async": "BPM_SERVICE",
        "ssm": "STORAGE_SYSTEM_MONITOR",
        "vsm": "VIRTUAL_SYSTEM_MONITOR",
    }
    body = {
        "name": name,
        "location": "Barcelona",
        "remoteServices": {
            "collection": [{"type": kinds[s], "uri": fake_dc.uri(s)} for s in services]
        },
    }
    return await api.post("/api/admin/datacenters", json=body, headers=_json(DC_JSON))


def _statuses(dc: dict[str, Any]) -> dict[str, int]:
    return {rs["type"]: rs["status"] for rs in dc["remoteServices"]["collection"]}


async def _actions(engine: AsyncEngine) -> list[str]:
    ev = tables.event
    async with engine.connect() as conn:
        return list((await conn.execute(select(ev.c.action).order_by(ev.c.id))).scalars())


# -- datacenters with their services -----------------------------------------------------


async def test_create_learns_the_uuid_and_status_follows_heartbeats(
    api: Client, engine: AsyncEngine, fake_dc: FakeDc, clock: FakeClock
) -> None:
    response = await _create(api, fake_dc, "virtualfactory", "am", "bpm-async", "ssm")
    assert response.status == 201
    dc = await _body(response)
    assert response.headers["Location"] == dc["links"][0]["href"]
    assert dc["links"][0]["rel"] == "edit"
    assert (dc["name"], dc["location"], dc["uuid"], dc["available"]) == (
        "bcn",
        "Barcelona",
        DC_UUID,
        False,
    )
    # Registered and checked, but the datacenter has not been heard from yet.
    assert _statuses(dc) == {
        "VIRTUAL_FACTORY": 0,
        "STORAGE_SYSTEM_MONITOR": 0,
        "APPLIANCE_MANAGER": 0,
        "BPM_SERVICE": 0,
    }
    vf = dc["remoteServices"]["collection"][0]
    assert vf["uri"] == fake_dc.uri("virtualfactory") and isinstance(vf["id"], int)
    assert [link["rel"] for link in vf["links"]] == ["edit", "check", "datacenter"]
    assert vf["links"][0]["href"].endswith(f"/datacenters/{dc['id']}/remoteservices/virtualfactory")

    async def shown() -> tuple[bool, dict[str, int]]:
        got = await _body(await api.get(f"/api/admin/datacenters/{dc['id']}", headers=ADMIN))
        return got["available"], _statuses(got)

    await _heartbeat(engine, clock, 1)
    up = {
        "VIRTUAL_FACTORY": 1,
        "STORAGE_SYSTEM_MONITOR": 0,
        "APPLIANCE_MANAGER": 1,
        "BPM_SERVICE": 1,
    }
    assert await shown() == (True, up)
    clock.advance(16)  # past settings.datacenters.liveness_timeout
    assert await shown() == (False, dict.fromkeys(up, 0))
    listed = await _body(
        await api.get(f"/api/admin/datacenters/{dc['id']}/remoteservices", headers=ADMIN)
    )
    assert {rs["status"] for rs in listed["collection"]} == {0}
    await _heartbeat(engine, clock, 2, am="RETRYING")
    assert await shown() == (True, {**up, "APPLIANCE_MANAGER": 0})
    await _heartbeat(engine, clock, 3)
    assert await shown() == (True, up)
    assert await _actions(engine) == ["DC_CREATE"] + ["REMOTE_SERVICES_CREATE"] * 4


async def test_create_conflicts(api: Client, engine: AsyncEngine, fake_dc: FakeDc) -> None:
    assert (await _create(api, fake_dc, "am")).status == 201
    # Its name is taken, and so is the URI.
    assert await _error(await _create(api, fake_dc, name=" bcn ")) == (409, "DC-3")
    assert await _error(await _create(api, fake_dc, "am", name="mad")) == (409, "RS-4")
    # The factory answers as a datacenter another one is already.
    await datacenters.ensure_datacenter(engine, uuid=DC_UUID, name="first", location="")
    assert await _error(await _create(api, fake_dc, "virtualfactory", name="mad")) == (409, "RS-6")
    listed = await _body(await api.get("/api/admin/datacenters", headers=ADMIN))
    assert sorted(dc["name"] for dc in listed["collection"]) == ["bcn", "first"]


async def test_a_bpm_answering_another_uuid(api: Client, fake_dc: FakeDc) -> None:
    fake_dc.answers["bpm-async"] = (200, OTHER_UUID)
    response = await _create(api, fake_dc, "virtualfactory", "bpm-async")
    assert await _error(response) == (409, "RS-5")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"location": "x"}, "GEN-1"),
        ({"name": "  "}, "GEN-1"),
        ({"name": "x" * 300}, "GEN-1"),
        (
            {"name": "x", "remoteServices": {"collection": [{"type": "NOPE", "uri": "http://a"}]}},
            "RS-1",
        ),
        (
            {"name": "x", "remoteServices": {"collection": [{"type": "AM", "uri": "ftp://a"}]}},
            "RS-2",
        ),
        (
            {
                "name": "x",
                "remoteServices": {"collection": [{"type": "DHCP_SERVICE", "uri": "http://a"}]},
            },
            "RS-2",
        ),
        ({"name": "x", "remoteServices": {"collection": [{"uri": "http://a/am"}]}}, "RS-1"),
    ],
)
async def test_invalid_datacenters_are_400(api: Client, body: dict[str, Any], code: str) -> None:
    response = await api.post("/api/admin/datacenters", json=body, headers=_json(DC_JSON))
    assert await _error(response) == (400, code)


async def test_crud_in_xml(api: Client, engine: AsyncEngine, fake_dc: FakeDc) -> None:
    xml = {**ADMIN, "Accept": DC_XML, "Content-Type": DC_XML}
    body = (
        "<datacenter><name>xml dc</name><location>Girona</location><remoteServices>"
        f"<remoteService><type>VIRTUAL_FACTORY</type><uri>{fake_dc.uri('virtualfactory')}</uri></remoteService>"
        f"<remoteService><type>APPLIANCE_MANAGER</type><uri>{fake_dc.uri('am')}</uri></remoteService>"
        "</remoteServices></datacenter>"
    )
    response = await api.post("/api/admin/datacenters", data=body, headers=xml)
    assert response.status == 201
    assert response.headers["Content-Type"] == DC_XML
    root = ET.fromstring(await response.read())
    assert (root.tag, root.findtext("name"), root.findtext("uuid")) == (
        "datacenter",
        "xml dc",
        DC_UUID,
    )
    services = root.findall("remoteServices/remoteService")
    assert [s.findtext("type") for s in services] == ["VIRTUAL_FACTORY", "APPLIANCE_MANAGER"]
    location = response.headers["Location"].removeprefix(str(api.make_url("")))
    update = "<datacenter><name>renamed</name><location>Lleida</location></datacenter>"
    response = await api.put(location, data=update, headers=xml)
    assert response.status == 200
    root = ET.fromstring(await response.read())
    assert (root.findtext("name"), root.findtext("location")) == ("renamed", "Lleida")
    # Its services are still there: a PUT changes the name and location alone.
    assert len(root.findall("remoteServices/remoteService")) == 2
    got = ET.fromstring(await (await api.get(location, headers=xml)).read())
    assert got.findtext("name") == "renamed"
    assert (await api.delete(location, headers=ADMIN)).status == 204
    assert (await api.get(location, headers=ADMIN)).status == 404
    assert await _actions(engine) == [
        "DC_CREATE",
        "REMOTE_SERVICES_CREATE",
        "REMOTE_SERVICES_CREATE",
        "DC_MODIFY",
        "DC_DELETE",
    ]
    async with engine.connect() as conn:
        assert (await conn.execute(select(tables.remote_service.c.id))).all() == []


async def test_update_and_delete_in_json(api: Client, fake_dc: FakeDc) -> None:
    one = await _body(await _create(api, fake_dc, name="one"))
    two = await _body(await _create(api, fake_dc, name="two"))
    path = f"/api/admin/datacenters/{one['id']}"
    response = await api.put(path, json={"name": " uno ", "location": "x"}, headers=_json(DC_JSON))
    assert response.status == 200
    assert (await _body(response))["name"] == "uno"
    response = await api.put(path, json={"name": "two"}, headers=_json(DC_JSON))
    assert await _error(response) == (409, "DC-3")
    response = await api.put(
        "/api/admin/datacenters/9999", json={"name": "z"}, headers=_json(DC_JSON)
    )
    assert await _error(response) == (404, "DC-0")
    assert (await api.delete(f"/api/admin/datacenters/{two['id']}", headers=ADMIN)).status == 204


async def test_delete_refused_while_racks_exist(
    api: Client, engine: AsyncEngine, fake_dc: FakeDc
) -> None:
    dc = await _body(await _create(api, fake_dc, "am"))
    async with engine.begin() as conn:
        await conn.execute(
            tables.rack.insert().values(
                datacenter_id=dc["id"],
                name="rack 1",
                vlan_id_min=2,
                vlan_id_max=4094,
                created_at=datacenters.datetime.now(datacenters.UTC),
            )
        )
    response = await api.delete(f"/api/admin/datacenters/{dc['id']}", headers=ADMIN)
    assert await _error(response) == (409, "DC-4")
    assert (await api.get(f"/api/admin/datacenters/{dc['id']}", headers=ADMIN)).status == 200


async def test_a_user_may_not(api: Client, fake_dc: FakeDc) -> None:
    dc = await _body(await _create(api, fake_dc, "am"))
    path = f"/api/admin/datacenters/{dc['id']}"
    user = {**USER, "Content-Type": DC_JSON}
    assert (
        await api.post("/api/admin/datacenters", json={"name": "u"}, headers=user)
    ).status == 403
    assert (await api.put(path, json={"name": "u"}, headers=user)).status == 403
    assert (await api.delete(path, headers=USER)).status == 403
    assert (await api.get(f"{path}/remoteservices", headers=USER)).status == 403
    response = await api.post(
        f"{path}/remoteservices",
        json={"type": "VSM", "uri": "http://x/vsm"},
        headers={**USER, "Content-Type": RS_JSON},
    )
    assert response.status == 403
    assert (await api.get(f"{path}/remoteservices/am/action/check", headers=USER)).status == 403
    assert (await api.delete(f"{path}/remoteservices/am", headers=USER)).status == 403


# -- the remote services' own resource --------------------------------------------------------


async def test_remote_service_crud_and_check(
    api: Client, engine: AsyncEngine, fake_dc: FakeDc, clock: FakeClock
) -> None:
    dc = await _body(await _create(api, fake_dc))
    services = f"/api/admin/datacenters/{dc['id']}/remoteservices"
    response = await api.post(
        services,
        json={"type": "VIRTUAL_FACTORY", "uri": fake_dc.uri("virtualfactory")},
        headers=_json(RS_JSON),
    )
    assert response.status == 201
    assert response.headers["Location"].endswith(f"{services}/virtualfactory")
    response = await api.post(
        services,
        json={"type": "appliance_manager", "uri": fake_dc.uri("am")},
        headers=_json(RS_JSON),
    )
    assert response.status == 201
    am = await _body(response)
    assert (am["type"], am["uri"], am["status"]) == ("APPLIANCE_MANAGER", fake_dc.uri("am"), 0)
    await _heartbeat(engine, clock, 1)
    for spelling in ("APPLIANCE_MANAGER", "appliancemanager", "am"):
        response = await api.get(f"{services}/{spelling}", headers=ADMIN)
        assert response.headers["Content-Type"] == RS_JSON
        assert (await _body(response))["status"] == 1
    listed = await api.get(f"{services}?by=type", headers=ADMIN)
    assert listed.headers["Content-Type"] == RS_MANY_JSON
    body = await _body(listed)
    assert body["totalSize"] == 2
    assert [rs["type"] for rs in body["collection"]] == ["APPLIANCE_MANAGER", "VIRTUAL_FACTORY"]

    assert (await api.get(f"{services}/am/action/check", headers=ADMIN)).status == 204
    fake_dc.answers["am"] = (503, "am is RETRYING")
    assert await _error(await api.get(f"{services}/am/action/check", headers=ADMIN)) == (
        503,
        "RS-7",
    )
    assert (await _body(await api.get(f"{services}/am", headers=ADMIN)))["status"] == 0
    # Moved to a URI that answers: checked there, up again.
    response = await api.put(
        f"{services}/am",
        json={"type": "APPLIANCE_MANAGER", "uri": fake_dc.uri("vsm")},
        headers=_json(RS_JSON),
    )
    assert response.status == 200
    assert ((await _body(response))["uri"], (await _body(response))["status"]) == (
        fake_dc.uri("vsm"),
        1,
    )
    response = await api.put(
        f"{services}/am", json={"type": "VSM", "uri": fake_dc.uri("vsm")}, headers=_json(RS_JSON)
    )
    assert await _error(response) == (400, "RS-1")
    response = await api.put(f"{services}/am", json={"uri": "nope"}, headers=_json(RS_JSON))
    assert await _error(response) == (400, "RS-2")

    assert (await api.delete(f"{services}/am", headers=ADMIN)).status == 204
    assert await _error(await api.get(f"{services}/am", headers=ADMIN)) == (404, "RS-0")
    assert await _error(await api.get(f"{services}/flux", headers=ADMIN)) == (404, "RS-0")
    assert await _error(
        await api.get("/api/admin/datacenters/999/remoteservices", headers=ADMIN)
    ) == (
        404,
        "DC-0",
    )
    assert (await _actions(engine))[1:] == [
        "REMOTE_SERVICES_CREATE",
        "REMOTE_SERVICES_CREATE",
        "REMOTE_SERVICES_CHECK",
        "REMOTE_SERVICES_CHECK",
        "REMOTE_SERVICE_UPDATE",
        "REMOTE_SERVICES_DELETE",
    ]


async def test_remote_service_conflicts(api: Client, engine: AsyncEngine, fake_dc: FakeDc) -> None:
    dc = await _body(await _create(api, fake_dc, "am"))
    services = f"/api/admin/datacenters/{dc['id']}/remoteservices"
    response = await api.post(
        services, json={"type": "AM", "uri": "http://elsewhere/am"}, headers=_json(RS_JSON)
    )
    assert await _error(response) == (409, "RS-3")
    response = await api.post(
        services, json={"type": "VSM", "uri": fake_dc.uri("am")}, headers=_json(RS_JSON)
    )
    assert await _error(response) == (409, "RS-4")
    other = await datacenters.ensure_datacenter(engine, uuid=OTHER_UUID, name="other", location="")
    response = await api.post(
        f"/api/admin/datacenters/{other}/remoteservices",
        json={"type": "BPM_SERVICE", "uri": fake_dc.uri("bpm-async")},
        headers=_json(RS_JSON),
    )
    assert await _error(response) == (409, "RS-5")


async def test_remote_service_in_xml(api: Client, fake_dc: FakeDc) -> None:
    dc = await _body(await _create(api, fake_dc))
    services = f"/api/admin/datacenters/{dc['id']}/remoteservices"
    xml = {**ADMIN, "Accept": RS_XML, "Content-Type": RS_XML}
    uri = fake_dc.uri("nodecollector")
    body = f"<remoteService><type>NODE_COLLECTOR</type><uri>{uri}</uri></remoteService>"
    response = await api.post(services, data=body, headers=xml)
    assert response.status == 201
    root = ET.fromstring(await response.read())
    assert (root.tag, root.findtext("type"), root.findtext("status")) == (
        "remoteService",
        "NODE_COLLECTOR",
        "0",
    )
    assert [link.get("rel") for link in root.findall("link")] == ["edit", "check", "datacenter"]
    body = f"<remoteService><uri>{fake_dc.uri('vsm')}</uri></remoteService>"
    response = await api.put(f"{services}/nodecollector", data=body, headers=xml)
    assert ET.fromstring(await response.read()).findtext("uri") == fake_dc.uri("vsm")
    listed = await api.get(
        services, headers={**ADMIN, "Accept": "application/vnd.abiquo.remoteservices+xml"}
    )
    root = ET.fromstring(await listed.read())
    assert root.tag == "remoteServices" and root.findtext("totalSize") == "1"
    assert (await api.delete(f"{services}/NODE_COLLECTOR", headers=ADMIN)).status == 204


async def test_dhcp_is_checked_by_connecting(api: Client, fake_dc: FakeDc) -> None:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dc = await _body(await _create(api, fake_dc))
    services = f"/api/admin/datacenters/{dc['id']}/remoteservices"
    try:
        response = await api.post(
            services,
            json={"type": "DHCP_SERVICE", "uri": f"omapi://127.0.0.1:{port}"},
            headers=_json(RS_JSON),
        )
        assert response.status == 201
        assert (await api.get(f"{services}/dhcp/action/check", headers=ADMIN)).status == 204
    finally:
        server.close()
        await server.wait_closed()
    assert await _error(await api.get(f"{services}/dhcpservice/action/check", headers=ADMIN)) == (
        503,
        "RS-7",
    )
