"""/api/admin/datacenters/{dc}/action/{discoversingle, discovermultiple, hypervisor}."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.link import DatacenterRequests
from tests.central.conftest import ADMIN, FakeClock
from tests.central.infrastructure.test_discovery import FakeDatacenter, fake_dc, live_dc

__all__ = ["fake_dc", "live_dc"]

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def link(fake_dc: FakeDatacenter) -> DatacenterRequests:
    return fake_dc


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


async def _code(response: Any) -> str:
    return str((await _json(response))["collection"][0]["code"])


async def test_discover_single_in_xml(api: Client, live_dc: int) -> None:
    response = await api.get(
        f"/api/admin/datacenters/{live_dc}/action/discoversingle",
        params={"ip": "10.0.0.1", "hypervisor": "KVM", "port": "16509"},
        headers={**ADMIN, "Accept": "application/vnd.abiquo.machine+xml"},
    )
    assert response.status == 200, await response.text()
    root = ET.fromstring(await response.read())
    assert root.tag == "machine"
    assert (root.findtext("ip"), root.findtext("port"), root.findtext("virtualSwitch")) == (
        "10.0.0.1",
        "16509",
        "eth0,eth1",
    )
    assert [d.findtext("name") for d in root.findall("datastores/datastore")] == ["ds0", "ds1"]


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"ip": "10.0.0.7", "hypervisor": "KVM"}, 404, "HV-UNREACHABLE"),
        ({"ip": "10.0.0.2", "hypervisor": "KVM", "user": "root"}, 400, "HV-AUTH"),
        ({"ip": "nope", "hypervisor": "KVM"}, 400, "DISCOVERY-3"),
        ({"hypervisor": "KVM"}, 400, "DISCOVERY-3"),
        ({"ip": "10.0.0.1", "hypervisor": "HAL"}, 400, "DISCOVERY-3"),
        ({"ip": "10.0.0.1"}, 400, "DISCOVERY-3"),
        ({"ip": "10.0.0.1", "hypervisor": "KVM", "port": "99999"}, 400, "DISCOVERY-3"),
    ],
)
async def test_discover_single_refusals(
    api: Client, live_dc: int, params: dict[str, str], status: int, code: str
) -> None:
    response = await api.get(
        f"/api/admin/datacenters/{live_dc}/action/discoversingle", params=params, headers=ADMIN
    )
    assert response.status == status, await response.text()
    assert await _code(response) == code


async def test_discover_multiple(api: Client, live_dc: int, fake_dc: FakeDatacenter) -> None:
    url = f"/api/admin/datacenters/{live_dc}/action/discovermultiple"
    found = await api.get(
        url,
        params={
            "ipFrom": "10.0.0.1",
            "ipTo": "10.0.0.3",
            "hypervisor": "KVM",
            "user": "root",
            "password": "s3cret",
        },
        headers={**ADMIN, "Accept": "application/vnd.abiquo.machines+json"},
    )
    assert found.status == 200, await found.text()
    body = await _json(found)
    assert [m["ip"] for m in body["collection"]] == ["10.0.0.1", "10.0.0.2"]
    none = await api.get(
        url, params={"ipFrom": "10.0.0.3", "ipTo": "10.0.0.8", "hypervisor": "KVM"}, headers=ADMIN
    )
    assert none.status == 404
    assert await _code(none) == "DISCOVERY-1"
    sent = len(fake_dc.requests)
    too_many = await api.get(
        url, params={"ipFrom": "10.0.0.0", "ipTo": "10.0.4.0", "hypervisor": "KVM"}, headers=ADMIN
    )
    assert too_many.status == 400 and await _code(too_many) == "DISCOVERY-3"
    reversed_range = await api.get(
        url, params={"ipFrom": "10.0.0.9", "ipTo": "10.0.0.1", "hypervisor": "KVM"}, headers=ADMIN
    )
    assert reversed_range.status == 400
    assert len(fake_dc.requests) == sent


async def test_detect_hypervisor(api: Client, live_dc: int) -> None:
    url = f"/api/admin/datacenters/{live_dc}/action/hypervisor"
    found = await api.get(url, params={"ip": "10.0.0.9"}, headers=ADMIN)
    assert found.status == 200
    assert found.headers["Content-Type"].startswith("text/plain")
    assert await found.text() == "VMX_04"
    absent = await api.get(url, params={"ip": "10.0.0.8"}, headers=ADMIN)
    assert absent.status == 404 and await _code(absent) == "DISCOVERY-2"
    assert (await api.get(url, params={"ip": "x"}, headers=ADMIN)).status == 400


async def test_the_datacenter_must_be_reachable(
    api: Client, live_dc: int, clock: FakeClock, fake_dc: FakeDatacenter, engine: AsyncEngine
) -> None:
    url = f"/api/admin/datacenters/{live_dc}/action/hypervisor?ip=10.0.0.9"
    clock.advance(16)
    stale = await api.get(url, headers=ADMIN)
    assert stale.status == 503 and await _code(stale) == "DC-1"
    clock.advance(-16)
    fake_dc.down = True
    silent = await api.get(url, headers=ADMIN)
    assert silent.status == 503 and await _code(silent) == "DC-1"
    async with engine.begin() as conn:
        await conn.execute(tables.datacenter.update().values(uuid=None))
    unlinked = await api.get(url, headers=ADMIN)
    assert unlinked.status == 409 and await _code(unlinked) == "DC-2"
    missing = await api.get(
        "/api/admin/datacenters/999/action/hypervisor?ip=10.0.0.9", headers=ADMIN
    )
    assert missing.status == 404 and await _code(missing) == "DC-0"
