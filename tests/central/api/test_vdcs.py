"""/api/cloud/virtualdatacenters: CRUD in JSON and XML, the default network made with a
VDC, placement rules, tag uniqueness under concurrency, isolation and restrictions."""

from __future__ import annotations

import asyncio
import re
from xml.etree import ElementTree as ET

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tenants import privileges
from abiquo_central.tenants.passwords import Passwords
from tests.central.cloud.helpers import (
    VDC_JSON,
    VDC_XML,
    Client,
    actions,
    add_enterprise,
    add_user,
    api_path,
    infrastructure,
    json_of,
    link_of,
    post_vdc,
    vdc_body,
)
from tests.central.conftest import ADMIN, USER, Seeded

VDCS = "/api/cloud/virtualdatacenters"


async def _ips(engine: AsyncEngine, vdc_id: int) -> list[tuple[str, str]]:
    ip, vlan = tables.ip, tables.vlan
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ip.c.ip, ip.c.mac)
            .join(vlan, vlan.c.id == ip.c.vlan_id)
            .where(vlan.c.vdc_id == vdc_id)
        )
        return [(r[0], r[1]) for r in rows]


async def test_crud_in_json(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    infra = await infrastructure(engine, seeded.enterprise_id)
    created = await post_vdc(api, ADMIN, vdc_body(infra.dc_id, "web"))
    vdc = await json_of(created, 201)
    assert created.headers["Location"] == link_of(vdc, "edit")
    assert vdc["name"] == "web" and vdc["hypervisorType"] == "KVM"
    assert vdc["network"] == {
        "name": "default_private_network",
        "address": "192.168.0.0",
        "mask": 24,
        "gateway": "192.168.0.1",
        "primaryDNS": "",
        "secondaryDNS": "",
        "sufixDNS": "",
        "type": "INTERNAL",
    }
    rels = {link["rel"] for link in vdc["links"]}
    assert {
        "edit",
        "location",
        "enterprise",
        "virtualappliances",
        "privatenetworks",
        "defaultnetwork",
        "ips",
    } <= rels
    assert link_of(vdc, "location").endswith(f"/cloud/locations/{infra.dc_id}")
    assert link_of(vdc, "enterprise").endswith(f"/admin/enterprises/{seeded.enterprise_id}")
    ips = await _ips(engine, vdc["id"])
    assert len(ips) == 253 and "192.168.0.1" not in {i for i, _ in ips}
    assert all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) for _, m in ips)
    assert len({m for _, m in ips}) == 253

    here = api_path(link_of(vdc, "edit"))
    got = await json_of(await api.get(here, headers=ADMIN), 200)
    assert got == vdc
    listed = await json_of(await api.get(VDCS, headers=ADMIN), 200)
    assert [v["id"] for v in listed["collection"]] == [vdc["id"]] and listed["totalSize"] == 1

    changed = await api.put(
        here,
        json={**vdc, "name": "web2", "cpuSoft": 2, "cpuHard": 4},
        headers={**ADMIN, "Content-Type": VDC_JSON},
    )
    body = await json_of(changed, 200)
    assert (body["name"], body["cpuSoft"], body["cpuHard"]) == ("web2", 2, 4)
    assert body["network"] == vdc["network"]

    assert (await api.delete(here, headers=ADMIN)).status == 204
    assert (await api.get(here, headers=ADMIN)).status == 404
    assert await _ips(engine, vdc["id"]) == []
    assert await actions(engine) == ["VDC_CREATE", "VDC_MODIFY", "VDC_DELETE"]


async def test_crud_in_xml(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    infra = await infrastructure(engine, seeded.enterprise_id, hypervisor="VMX_04")
    xml = (
        "<virtualDatacenter><name>x</name><hypervisorType>VMX_04</hypervisorType>"
        "<network><name>n</name><address>10.10.0.0</address><mask>28</mask>"
        "<gateway>10.10.0.14</gateway><primaryDNS>8.8.8.8</primaryDNS></network>"
        "<cpuHard>3</cpuHard>"
        f'<link rel="location" href="http://h/api/admin/datacenters/{infra.dc_id}"/>'
        "</virtualDatacenter>"
    )
    created = await api.post(
        VDCS, data=xml, headers={**ADMIN, "Content-Type": VDC_XML, "Accept": VDC_XML}
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"].startswith(VDC_XML)
    root = ET.fromstring(await created.read())
    assert root.tag == "virtualDatacenter"
    assert root.findtext("name") == "x" and root.findtext("cpuHard") == "3"
    network = root.find("network")
    assert network is not None
    assert network.findtext("mask") == "28" and network.findtext("primaryDNS") == "8.8.8.8"
    vdc_id = int(root.findtext("id") or "0")
    ips = await _ips(engine, vdc_id)
    # A /28 holds 14 hosts, the gateway among them.
    assert len(ips) == 13
    assert all(m.startswith("00:50:56:") for _, m in ips)
    listed = await api.get(
        VDCS, headers={**ADMIN, "Accept": "application/vnd.abiquo.virtualdatacenters+xml"}
    )
    assert listed.status == 200
    listing = ET.fromstring(await listed.read())
    assert listing.tag == "virtualDatacenters" and listing.findtext("totalSize") == "1"
    edit = created.headers["Location"]
    updated = await api.put(
        api_path(edit),
        data="<virtualDatacenter><name>y</name><hypervisorType>VMX_04</hypervisorType>"
        "</virtualDatacenter>",
        headers={**ADMIN, "Content-Type": VDC_XML, "Accept": VDC_XML},
    )
    assert updated.status == 200, await updated.text()
    assert ET.fromstring(await updated.read()).findtext("name") == "y"


async def test_placement_rules(
    api: Client, engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords
) -> None:
    infra = await infrastructure(engine, seeded.enterprise_id)
    # No machine of the type there.
    wrong = await post_vdc(api, ADMIN, vdc_body(infra.dc_id, hypervisor="XEN_3"))
    assert (await json_of(wrong, 409))["collection"][0]["code"] == "VDC-3"
    unknown = await post_vdc(api, ADMIN, vdc_body(infra.dc_id, hypervisor="NOPE"))
    assert (await json_of(unknown, 400))["collection"][0]["code"] == "VDC-2"
    nowhere = await post_vdc(api, ADMIN, {"name": "x", "hypervisorType": "KVM"})
    assert (await json_of(nowhere, 400))["collection"][0]["code"] == "VDC-5"
    bad_link = await post_vdc(
        api,
        ADMIN,
        {
            "name": "x",
            "hypervisorType": "KVM",
            "links": [{"rel": "location", "href": "http://h/api/cloud/nothing"}],
        },
    )
    assert bad_link.status == 400
    missing = await post_vdc(api, ADMIN, vdc_body(999_999))
    assert missing.status == 404
    # A datacenter the enterprise has no limits in: 409 for whoever sees the
    # infrastructure, 404 for a tenant, who learns nothing of it.
    closed = await infrastructure(engine, seeded.enterprise_id, limit=False)
    refused = await post_vdc(api, ADMIN, vdc_body(closed.dc_id))
    assert (await json_of(refused, 409))["collection"][0]["code"] == "VDC-6"
    tenant = await add_user(engine, fast_passwords, seeded.enterprise_id, nick="boss")
    assert (await post_vdc(api, tenant, vdc_body(closed.dc_id))).status == 404
    assert (await post_vdc(api, tenant, vdc_body(infra.dc_id, "ok"))).status == 201
    # A plain user may not create one.
    assert (await post_vdc(api, USER, vdc_body(infra.dc_id, "no"))).status == 403
    duplicate = await post_vdc(api, tenant, vdc_body(infra.dc_id, "ok"))
    assert (await json_of(duplicate, 409))["collection"][0]["code"] == "VDC-1"
    assert await actions(engine) == ["VDC_CREATE"]


async def test_network_size_limits(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    infra = await infrastructure(engine, seeded.enterprise_id)
    net = {"name": "big", "address": "10.0.0.0", "mask": 21, "gateway": "10.0.0.1"}
    too_big = await post_vdc(api, ADMIN, vdc_body(infra.dc_id, "a", network=net))
    assert (await json_of(too_big, 400))["collection"][0]["code"] == "VLAN-3"
    largest = await post_vdc(api, ADMIN, vdc_body(infra.dc_id, "b", network={**net, "mask": 22}))
    vdc = await json_of(largest, 201)
    assert len(await _ips(engine, vdc["id"])) == 1021
    bad = await post_vdc(
        api, ADMIN, vdc_body(infra.dc_id, "c", network={**net, "mask": 22, "gateway": "10.9.0.1"})
    )
    assert (await json_of(bad, 400))["collection"][0]["code"] == "VLAN-2"
    # Nothing was left behind by the refused ones.
    async with engine.connect() as conn:
        count = (
            await conn.execute(select(func.count()).select_from(tables.virtual_datacenter))
        ).scalar_one()
    assert count == 1


async def test_tags_run_out(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    infra = await infrastructure(
        engine, seeded.enterprise_id, vlan_id_min=2, vlan_id_max=5, avoided="3-4"
    )
    first = await json_of(await post_vdc(api, ADMIN, vdc_body(infra.dc_id, "a")), 201)
    second = await json_of(await post_vdc(api, ADMIN, vdc_body(infra.dc_id, "b")), 201)
    tags = []
    for vdc in (first, second):
        net = await json_of(
            await api.get(api_path(link_of(vdc, "defaultnetwork")), headers=ADMIN), 200
        )
        tags.append(net["tag"])
    assert tags == [2, 5]
    third = await post_vdc(api, ADMIN, vdc_body(infra.dc_id, "c"))
    assert (await json_of(third, 409))["collection"][0]["code"] == "VLAN-4"


async def test_concurrent_creations_take_distinct_tags(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    infra = await infrastructure(engine, seeded.enterprise_id)
    responses = await asyncio.gather(
        *(post_vdc(api, ADMIN, vdc_body(infra.dc_id, f"c{i}")) for i in range(6))
    )
    for response in responses:
        assert response.status == 201, await response.text()
    async with engine.connect() as conn:
        tags = (
            (
                await conn.execute(
                    select(tables.vlan.c.tag).where(tables.vlan.c.datacenter_id == infra.dc_id)
                )
            )
            .scalars()
            .all()
        )
        macs = (await conn.execute(select(tables.ip.c.mac))).scalars().all()
    assert len(tags) == 6 and len(set(tags)) == 6
    assert len(macs) == 6 * 253 and len(set(macs)) == len(macs)


async def test_another_enterprises_vdc_is_404(
    api: Client, engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords
) -> None:
    other = await add_enterprise(engine, "Other")
    infra = await infrastructure(engine, other)
    theirs = await json_of(
        await post_vdc(api, ADMIN, vdc_body(infra.dc_id, "theirs", enterprise_id=other)), 201
    )
    assert link_of(theirs, "enterprise").endswith(f"/admin/enterprises/{other}")
    tenant = await add_user(engine, fast_passwords, seeded.enterprise_id, nick="boss")
    here = api_path(link_of(theirs, "edit"))
    assert (await api.get(here, headers=tenant)).status == 404
    assert (await api.delete(here, headers=tenant)).status == 404
    assert (await json_of(await api.get(VDCS, headers=tenant), 200))["totalSize"] == 0
    # Nor may a tenant create one for another enterprise.
    other_infra = await infrastructure(engine, seeded.enterprise_id)
    forged = await post_vdc(api, tenant, vdc_body(other_infra.dc_id, "f", enterprise_id=other))
    assert forged.status == 404
    # The cloud administrator sees every enterprise's, and filters by one.
    listed = await json_of(await api.get(f"{VDCS}?enterprise={other}", headers=ADMIN), 200)
    assert [v["id"] for v in listed["collection"]] == [theirs["id"]]
    assert (await api.get(f"{VDCS}?enterprise=abc", headers=ADMIN)).status == 400


async def test_available_vdcs_restrict_a_user(
    api: Client, engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords
) -> None:
    infra = await infrastructure(engine, seeded.enterprise_id)
    one = await json_of(await post_vdc(api, ADMIN, vdc_body(infra.dc_id, "one")), 201)
    two = await json_of(await post_vdc(api, ADMIN, vdc_body(infra.dc_id, "two")), 201)
    restricted = await add_user(
        engine,
        fast_passwords,
        seeded.enterprise_id,
        nick="restricted",
        role=privileges.USER,
        available_vdcs=str(one["id"]),
    )
    listed = await json_of(await api.get(VDCS, headers=restricted), 200)
    assert [v["id"] for v in listed["collection"]] == [one["id"]]
    assert (await api.get(api_path(link_of(two, "edit")), headers=restricted)).status == 404
    assert (await api.get(api_path(link_of(one, "edit")), headers=restricted)).status == 200
    # The unrestricted user sees both; so does one restricted but holding
    # USERS_PROHIBIT_VDC_RESTRICTION (the enterprise administrator).
    assert (await json_of(await api.get(VDCS, headers=USER), 200))["totalSize"] == 2
    boss = await add_user(
        engine, fast_passwords, seeded.enterprise_id, nick="boss", available_vdcs=str(one["id"])
    )
    assert (await json_of(await api.get(VDCS, headers=boss), 200))["totalSize"] == 2


async def test_delete_refused_while_it_holds_appliances(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    infra = await infrastructure(engine, seeded.enterprise_id)
    vdc = await json_of(await post_vdc(api, ADMIN, vdc_body(infra.dc_id)), 201)
    vapp = await api.post(
        api_path(link_of(vdc, "virtualappliances")),
        json={"name": "va"},
        headers={**ADMIN, "Content-Type": "application/vnd.abiquo.virtualappliance+json"},
    )
    assert vapp.status == 201, await vapp.text()
    refused = await api.delete(api_path(link_of(vdc, "edit")), headers=ADMIN)
    assert (await json_of(refused, 409))["collection"][0]["code"] == "VDC-4"
