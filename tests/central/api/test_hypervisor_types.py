"""/api/config/hypervisortypes and /api/admin/datacenters/{id}/hypervisors over HTTP."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.rows import inserted_id
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from tests.central.conftest import ADMIN, T0, USER

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.hypervisortype+json"
JSON_MANY = "application/vnd.abiquo.hypervisortypes+json"
XML_ONE = "application/vnd.abiquo.hypervisortype+xml"
XML_MANY = "application/vnd.abiquo.hypervisortypes+xml"


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


async def test_any_user_reads_every_type(api: Client) -> None:
    listed = await api.get("/api/config/hypervisortypes", headers=USER)
    assert listed.status == 200
    assert listed.headers["Content-Type"] == JSON_MANY
    page = await _json(listed)
    assert page["totalSize"] == 6
    names = [h["name"] for h in page["collection"]]
    assert names == ["VBOX", "KVM", "XEN_3", "VMX_04", "HYPERV_301", "XENSERVER"]
    kvm = page["collection"][1]
    href = f"{api.make_url('')}/api/config/hypervisortypes/KVM"
    assert kvm == {
        "id": 2,
        "name": "KVM",
        "realName": "KVM",
        "baseFormat": "VMDK_FLAT",
        "compatibilityTable": ["RAW", "QCOW2_FLAT", "QCOW2_SPARSE", "VMDK_FLAT", "VMDK_SPARSE"],
        "defaultPort": 60084,
        "links": [{"rel": "edit", "href": href, "type": JSON_ONE, "title": "KVM"}],
    }
    for key in ("2", "KVM", "kvm"):
        one = await api.get(f"/api/config/hypervisortypes/{key}", headers=USER)
        assert one.headers["Content-Type"] == JSON_ONE
        assert await _json(one) == kvm


async def test_in_xml(api: Client) -> None:
    one = await api.get("/api/config/hypervisortypes/VMX_04", headers={**USER, "Accept": XML_ONE})
    root = ET.fromstring(await one.read())
    assert root.tag == "hypervisorType"
    assert (root.findtext("baseFormat"), root.findtext("defaultPort")) == ("VMDK_FLAT", "443")
    assert [e.text for e in root.findall("compatibilityTable")] == ["VMDK_FLAT", "VMDK_SPARSE"]
    listed = await api.get("/api/config/hypervisortypes", headers={**USER, "Accept": XML_MANY})
    page = ET.fromstring(await listed.read())
    assert (page.tag, len(page.findall("hypervisorType"))) == ("hypervisorTypes", 6)


async def test_unknown_type_is_404(api: Client) -> None:
    for key in ("0", "ESX", "999999999999999"):
        missing = await api.get(f"/api/config/hypervisortypes/{key}", headers=USER)
        assert missing.status == 404
        assert (await _json(missing))["collection"][0]["code"] == "HYPERVISOR-0"


async def test_a_datacenters_hypervisors(api: Client, engine: AsyncEngine) -> None:
    dc = await ensure_datacenter(engine, uuid="dc-1", name="Barcelona", location="ES", now=T0)
    async with engine.begin() as conn:
        rack = inserted_id(
            await conn.execute(
                tables.rack.insert().values(
                    datacenter_id=dc, name="r1", vlan_id_min=2, vlan_id_max=4094, created_at=T0
                )
            )
        )
        for n, kind in enumerate(("XENSERVER", "KVM", "KVM")):
            await conn.execute(
                tables.machine.insert().values(
                    datacenter_id=dc,
                    rack_id=rack,
                    name=f"m{n}",
                    ip=f"10.0.0.{n}",
                    type=kind,
                    state="MANAGED",
                    cpu=4,
                    ram=4096,
                    created_at=T0,
                )
            )
    url = f"/api/admin/datacenters/{dc}/hypervisors"
    listed = await api.get(url, headers=ADMIN)
    assert listed.status == 200
    assert listed.headers["Content-Type"] == JSON_MANY
    page = await _json(listed)
    assert [h["name"] for h in page["collection"]] == ["KVM", "XENSERVER"]
    xml = await api.get(url, headers={**ADMIN, "Accept": XML_MANY})
    types = ET.fromstring(await xml.read()).findall("hypervisorType")
    assert [e.findtext("name") for e in types] == ["KVM", "XENSERVER"]
    assert (await api.get(url, headers=USER)).status == 403
    missing = await api.get("/api/admin/datacenters/999999/hypervisors", headers=ADMIN)
    assert missing.status == 404
