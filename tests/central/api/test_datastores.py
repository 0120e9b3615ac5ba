"""/api/admin/datacenters/{dc}/racks/{rack}/machines/{m}/datastores over HTTP."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.link import DatacenterRequests
from tests.central.api.test_machines import discovered, post, ready
from tests.central.conftest import ADMIN, USER
from tests.central.infrastructure.test_discovery import FakeDatacenter, fake_dc, live_dc

__all__ = ["fake_dc", "live_dc"]

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.datastore+json"
XML_ONE = "application/vnd.abiquo.datastore+xml"


@pytest.fixture
def link(fake_dc: FakeDatacenter) -> DatacenterRequests:
    return fake_dc


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


@pytest.fixture
async def machine(api: Client, live_dc: int) -> str:
    """The path of a machine (with one discovered datastore, ds0, enabled)."""
    created = await api.post(
        f"/api/admin/datacenters/{live_dc}/racks",
        json={"name": "r1"},
        headers={**ADMIN, "Content-Type": "application/vnd.abiquo.rack+json"},
    )
    rack = f"/api/admin/datacenters/{live_dc}/racks/{(await _json(created))['id']}"
    response = await post(api, rack, ready(await discovered(api, live_dc)))
    assert response.status == 201
    return f"{rack}/machines/{(await _json(response))['id']}"


async def test_crud_in_json(api: Client, machine: str, engine: AsyncEngine) -> None:
    base = f"{machine}/datastores"
    listed = await _json(
        await api.get(base, headers={**ADMIN, "Accept": "application/vnd.abiquo.datastores+json"})
    )
    assert [d["name"] for d in listed["collection"]] == ["ds0"]
    created = await api.post(
        base,
        json={"name": "nfs", "rootPath": "/mnt/nfs", "size": 1000, "datastoreUUID": "shared-1"},
        headers={**ADMIN, "Content-Type": JSON_ONE, "Accept": JSON_ONE},
    )
    assert created.status == 201, await created.text()
    body = await _json(created)
    href = f"{api.make_url('')}{base}/{body['id']}"
    assert created.headers["Location"] == href
    assert (body["enabled"], body["datastoreUUID"], body["usedSize"]) == (False, "shared-1", 0)
    assert {link["rel"]: link["href"] for link in body["links"]} == {
        "edit": href,
        "machine": f"{api.make_url('')}{machine}",
    }
    assert await _json(await api.get(f"{base}/{body['id']}", headers=ADMIN)) == body

    body.update(enabled=True, directory="vms", name="nfs-1", size=1)
    put = await _json(
        await api.put(
            f"{base}/{body['id']}", json=body, headers={**ADMIN, "Content-Type": JSON_ONE}
        )
    )
    # The size is the host's: it stays.
    assert (put["enabled"], put["directory"], put["name"], put["size"]) == (
        True,
        "vms",
        "nfs-1",
        1000,
    )
    got = await _json(await api.get(machine, headers=ADMIN))
    assert [d["name"] for d in got["datastores"]["collection"]] == ["ds0", "nfs-1"]

    assert (await api.delete(f"{base}/{body['id']}", headers=ADMIN)).status == 204
    assert (await api.get(f"{base}/{body['id']}", headers=ADMIN)).status == 404
    ev = tables.event
    async with engine.connect() as conn:
        actions = (
            (
                await conn.execute(
                    select(ev.c.action).where(ev.c.action.like("DATASTORE%")).order_by(ev.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["DATASTORE_CREATE", "DATASTORE_MODIFY", "DATASTORE_DELETE"]


async def test_xml(api: Client, machine: str) -> None:
    created = await api.post(
        f"{machine}/datastores",
        data=b"<datastore><name>x</name><rootPath>/x</rootPath><enabled>true</enabled>"
        b"<datastoreUUID>u</datastoreUUID></datastore>",
        headers={**ADMIN, "Content-Type": XML_ONE, "Accept": XML_ONE},
    )
    assert created.status == 201, await created.text()
    root = ET.fromstring(await created.read())
    assert root.tag == "datastore"
    assert (root.findtext("name"), root.findtext("enabled"), root.findtext("datastoreUUID")) == (
        "x",
        "true",
        "u",
    )


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "", "rootPath": "/a"}, 400, "DATASTORE-2"),
        ({"name": "a"}, 400, "DATASTORE-2"),
        ({"name": "a", "rootPath": "/a", "size": 1, "usedSize": 5}, 400, "DATASTORE-2"),
        ({"name": "ds0", "rootPath": "/a"}, 409, "DATASTORE-1"),
    ],
)
async def test_refused(
    api: Client, machine: str, body: dict[str, Any], status: int, code: str
) -> None:
    response = await api.post(
        f"{machine}/datastores", json=body, headers={**ADMIN, "Content-Type": JSON_ONE}
    )
    assert response.status == status, await response.text()
    assert (await _json(response))["collection"][0]["code"] == code


async def test_a_user_may_not(api: Client, machine: str) -> None:
    assert (await api.get(f"{machine}/datastores", headers=USER)).status == 403
    response = await api.post(
        f"{machine}/datastores",
        json={"name": "a", "rootPath": "/a"},
        headers={**USER, "Content-Type": JSON_ONE},
    )
    assert response.status == 403
