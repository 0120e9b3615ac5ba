"""/api/admin/enterprises/{ent}/reservedmachines over HTTP."""

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
from abiquo_central.tenants import privileges
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.seed import ensure_enterprise
from abiquo_central.tenants.users import create_user
from tests.central.api.test_machines import discovered, post, ready
from tests.central.conftest import ADMIN, T0, USER, Seeded, basic
from tests.central.infrastructure.test_discovery import FakeDatacenter, fake_dc, live_dc

__all__ = ["fake_dc", "live_dc"]

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.machine+json"
XML_ONE = "application/vnd.abiquo.machine+xml"


@pytest.fixture
def link(fake_dc: FakeDatacenter) -> DatacenterRequests:
    return fake_dc


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


@pytest.fixture
async def machine(api: Client, live_dc: int) -> dict[str, Any]:
    created = await api.post(
        f"/api/admin/datacenters/{live_dc}/racks",
        json={"name": "r1"},
        headers={**ADMIN, "Content-Type": "application/vnd.abiquo.rack+json"},
    )
    rack = f"/api/admin/datacenters/{live_dc}/racks/{(await _json(created))['id']}"
    response = await post(api, rack, ready(await discovered(api, live_dc)))
    body: dict[str, Any] = await _json(response)
    return body


def _edit(entity: dict[str, Any]) -> str:
    return str(next(lk["href"] for lk in entity["links"] if lk["rel"] == "edit"))


async def test_reserve_list_release(
    api: Client, machine: dict[str, Any], seeded: Seeded, engine: AsyncEngine
) -> None:
    other = await ensure_enterprise(engine, "Other", now=T0)
    base = f"/api/admin/enterprises/{seeded.enterprise_id}/reservedmachines"
    reserved = await api.post(
        base,
        json={"links": [{"rel": "machine", "href": _edit(machine)}]},
        headers={**ADMIN, "Content-Type": JSON_ONE, "Accept": JSON_ONE},
    )
    assert reserved.status == 201, await reserved.text()
    assert reserved.headers["Location"].endswith(f"{base}/{machine['id']}")
    body = await _json(reserved)
    enterprise = next(lk["href"] for lk in body["links"] if lk["rel"] == "enterprise")
    assert enterprise.endswith(f"/api/admin/enterprises/{seeded.enterprise_id}")
    listed = await _json(await api.get(base, headers=ADMIN))
    assert [m["id"] for m in listed["collection"]] == [machine["id"]]
    assert (await api.get(f"{base}/{machine['id']}", headers=ADMIN)).status == 200

    # Another enterprise cannot take it; posting the whole machine (edit link) works too.
    taken = await api.post(
        f"/api/admin/enterprises/{other}/reservedmachines",
        json=machine,
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert taken.status == 409
    assert (await _json(taken))["collection"][0]["code"] == "MACHINE-5"

    assert (await api.delete(f"{base}/{machine['id']}", headers=ADMIN)).status == 204
    assert (await api.delete(f"{base}/{machine['id']}", headers=ADMIN)).status == 404
    assert (await _json(await api.get(base, headers=ADMIN)))["totalSize"] == 0

    in_xml = await api.post(
        f"/api/admin/enterprises/{other}/reservedmachines",
        data=f'<machine><link rel="machine" href="{_edit(machine)}"/></machine>'.encode(),
        headers={**ADMIN, "Content-Type": XML_ONE, "Accept": XML_ONE},
    )
    assert in_xml.status == 201, await in_xml.text()
    assert ET.fromstring(await in_xml.read()).tag == "machine"
    ev = tables.event
    async with engine.connect() as conn:
        actions = (
            (
                await conn.execute(
                    select(ev.c.action).where(ev.c.action.like("MACHINE_RE%")).order_by(ev.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["MACHINE_RESERVED", "MACHINE_RELEASED", "MACHINE_RESERVED"]


@pytest.mark.parametrize(
    ("links", "status"),
    [
        ([], 400),
        ([{"rel": "machine", "href": "http://x/api/admin/racks/1"}], 400),
        (
            [{"rel": "machine", "href": "http://x/api/admin/datacenters/1/racks/1/machines/999"}],
            404,
        ),
        ([{"rel": "machine", "href": "http://x/api/admin/datacenters/9/racks/1/machines/1"}], 404),
    ],
)
async def test_bad_references(
    api: Client, machine: dict[str, Any], seeded: Seeded, links: list[Any], status: int
) -> None:
    response = await api.post(
        f"/api/admin/enterprises/{seeded.enterprise_id}/reservedmachines",
        json={"links": links},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert response.status == status, await response.text()


async def test_tenants(
    api: Client,
    machine: dict[str, Any],
    seeded: Seeded,
    engine: AsyncEngine,
    fast_passwords: Passwords,
) -> None:
    other = await ensure_enterprise(engine, "Other", now=T0)
    base = f"/api/admin/enterprises/{seeded.enterprise_id}/reservedmachines"
    assert (await api.get(base, headers=USER)).status == 403
    response = await api.post(
        base,
        json={"links": [{"rel": "machine", "href": _edit(machine)}]},
        headers={**USER, "Content-Type": JSON_ONE},
    )
    assert response.status == 403
    # An enterprise's own viewer (PHYS_DC_ENUMERATE without ENTERPRISE_ADMINISTER_ALL)
    # sees its own reservations, and another enterprise's are 404.
    async with engine.begin() as conn:
        role_id = (
            await conn.execute(
                tables.role.insert().values(name="VIEWER", enterprise_id=seeded.enterprise_id)
            )
        ).inserted_primary_key[0]
        await conn.execute(
            tables.role_privilege.insert().values(
                role_id=role_id, privilege=privileges.PHYS_DC_ENUMERATE
            )
        )
    await create_user(
        engine,
        passwords=fast_passwords,
        enterprise_id=seeded.enterprise_id,
        role="VIEWER",
        nick="viewer",
        password="viewer-pw",
        name="V",
        now=T0,
    )
    viewer = basic("viewer", "viewer-pw")
    assert (await api.get(base, headers=viewer)).status == 200
    elsewhere = await api.get(f"/api/admin/enterprises/{other}/reservedmachines", headers=viewer)
    assert elsewhere.status == 404
