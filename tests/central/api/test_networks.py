"""A VDC's private networks and their addresses: list, create, change, delete, the
default network's rules and the addresses' listings."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from tests.central.cloud.helpers import (
    VLAN_JSON,
    Client,
    actions,
    api_path,
    infrastructure,
    json_of,
    link_of,
    post_vdc,
    vdc_body,
)
from tests.central.conftest import ADMIN, USER, Seeded

VLAN_XML = "application/vnd.abiquo.vlan+xml"
NET = {"name": "back", "address": "10.1.0.0", "mask": 29, "gateway": "10.1.0.1"}


async def _vdc(api: Client, engine: AsyncEngine, seeded: Seeded) -> dict[str, Any]:
    infra = await infrastructure(engine, seeded.enterprise_id)
    return dict(await json_of(await post_vdc(api, ADMIN, vdc_body(infra.dc_id)), 201))


async def test_crud_in_json(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    vdc = await _vdc(api, engine, seeded)
    nets = api_path(link_of(vdc, "privatenetworks"))
    listed = await json_of(await api.get(nets, headers=ADMIN), 200)
    assert listed["totalSize"] == 1
    default = listed["collection"][0]
    assert default["defaultNetwork"] is True and default["tag"] == 2
    created = await api.post(
        nets, json={**NET, "primaryDNS": "1.1.1.1"}, headers={**ADMIN, "Content-Type": VLAN_JSON}
    )
    net = await json_of(created, 201)
    assert created.headers["Location"] == link_of(net, "edit")
    assert (net["tag"], net["defaultNetwork"], net["primaryDNS"]) == (3, False, "1.1.1.1")
    ips = await json_of(await api.get(api_path(link_of(net, "ips")), headers=ADMIN), 200)
    # A /29: six hosts, the gateway left out.
    assert ips["totalSize"] == 5
    first = ips["collection"][0]
    assert (first["ip"], first["available"], first["quarantine"]) == ("10.1.0.2", True, False)
    assert first["mac"].startswith("52:54:00:")
    one = await json_of(await api.get(api_path(link_of(first, "self")), headers=ADMIN), 200)
    assert one["ip"] == "10.1.0.2"
    every = await json_of(await api.get(api_path(link_of(vdc, "ips")), headers=ADMIN), 200)
    assert every["totalSize"] == 253 + 5
    page = await json_of(
        await api.get(api_path(link_of(vdc, "ips")) + "?startwith=250&limit=5", headers=ADMIN),
        200,
    )
    assert len(page["collection"]) == 5

    here = api_path(link_of(net, "edit"))
    changed = await api.put(
        here,
        json={**net, "name": "back2", "secondaryDNS": "9.9.9.9"},
        headers={**ADMIN, "Content-Type": VLAN_JSON},
    )
    body = await json_of(changed, 200)
    assert (body["name"], body["secondaryDNS"], body["tag"]) == ("back2", "9.9.9.9", 3)
    moved = await api.put(
        here,
        json={**net, "address": "10.2.0.0", "gateway": "10.2.0.1"},
        headers={**ADMIN, "Content-Type": VLAN_JSON},
    )
    assert (await json_of(moved, 409))["collection"][0]["code"] == "VLAN-2"
    assert (await api.delete(here, headers=ADMIN)).status == 204
    assert (await api.get(here, headers=ADMIN)).status == 404
    assert await actions(engine) == ["VDC_CREATE", "VLAN_CREATED", "VLAN_EDITED", "VLAN_DELETED"]


async def test_xml(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    vdc = await _vdc(api, engine, seeded)
    nets = api_path(link_of(vdc, "privatenetworks"))
    xml = (
        "<vlan><name>x</name><address>172.16.0.0</address><mask>30</mask>"
        "<gateway>172.16.0.1</gateway><sufixDNS>corp</sufixDNS></vlan>"
    )
    created = await api.post(
        nets, data=xml, headers={**ADMIN, "Content-Type": VLAN_XML, "Accept": VLAN_XML}
    )
    assert created.status == 201, await created.text()
    root = ET.fromstring(await created.read())
    assert root.tag == "vlan" and root.findtext("sufixDNS") == "corp"
    listed = await api.get(nets, headers={**ADMIN, "Accept": "application/vnd.abiquo.vlans+xml"})
    assert ET.fromstring(await listed.read()).tag == "vlans"
    ips = await api.get(
        nets + f"/{root.findtext('id')}/ips",
        headers={**ADMIN, "Accept": "application/vnd.abiquo.ips+xml"},
    )
    tree = ET.fromstring(await ips.read())
    assert tree.tag == "ips" and [e.findtext("ip") for e in tree.findall("ip")] == ["172.16.0.2"]


async def test_exactly_one_default(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    vdc = await _vdc(api, engine, seeded)
    nets = api_path(link_of(vdc, "privatenetworks"))
    old = await json_of(await api.get(api_path(link_of(vdc, "defaultnetwork")), headers=ADMIN), 200)
    # The default's flag cannot be cleared, nor the default deleted.
    cleared = await api.put(
        api_path(link_of(old, "edit")),
        json={**old, "defaultNetwork": False},
        headers={**ADMIN, "Content-Type": VLAN_JSON},
    )
    assert (await json_of(cleared, 409))["collection"][0]["code"] == "VLAN-5"
    refused = await api.delete(api_path(link_of(old, "edit")), headers=ADMIN)
    assert (await json_of(refused, 409))["collection"][0]["code"] == "VLAN-5"
    new = await json_of(
        await api.post(
            nets,
            json={**NET, "defaultNetwork": True},
            headers={**ADMIN, "Content-Type": VLAN_JSON},
        ),
        201,
    )
    listed = await json_of(await api.get(nets, headers=ADMIN), 200)
    assert {n["id"]: n["defaultNetwork"] for n in listed["collection"]} == {
        old["id"]: False,
        new["id"]: True,
    }
    vdc_now = await json_of(await api.get(api_path(link_of(vdc, "edit")), headers=ADMIN), 200)
    assert vdc_now["network"]["address"] == "10.1.0.0"
    # Making the old one the default again takes the flag back.
    back = await api.put(
        api_path(link_of(old, "edit")),
        json={**old, "defaultNetwork": True},
        headers={**ADMIN, "Content-Type": VLAN_JSON},
    )
    assert back.status == 200
    listed = await json_of(await api.get(nets, headers=ADMIN), 200)
    assert [n["id"] for n in listed["collection"] if n["defaultNetwork"]] == [old["id"]]


async def test_validation_and_privileges(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    vdc = await _vdc(api, engine, seeded)
    nets = api_path(link_of(vdc, "privatenetworks"))
    write = {**ADMIN, "Content-Type": VLAN_JSON}
    too_big = await api.post(nets, json={**NET, "mask": 20}, headers=write)
    assert (await json_of(too_big, 400))["collection"][0]["code"] == "VLAN-3"
    public = await api.post(
        nets, json={**NET, "address": "8.8.8.0", "gateway": "8.8.8.1"}, headers=write
    )
    assert (await json_of(public, 400))["collection"][0]["code"] == "VLAN-2"
    assert (await api.post(nets, json={"name": "x"}, headers=write)).status == 400
    await json_of(await api.post(nets, json=NET, headers=write), 201)
    duplicate = await api.post(
        nets, json={**NET, "address": "10.3.0.0", "gateway": "10.3.0.1"}, headers=write
    )
    assert (await json_of(duplicate, 409))["collection"][0]["code"] == "VLAN-1"
    # A plain user reads but may not change networks.
    assert (await api.get(nets, headers=USER)).status == 200
    denied = await api.post(
        nets, json={**NET, "name": "u"}, headers={**USER, "Content-Type": VLAN_JSON}
    )
    assert denied.status == 403
    assert (await api.get(nets + "/999999", headers=ADMIN)).status == 404
    assert (
        await api.get("/api/cloud/virtualdatacenters/999999/privatenetworks", headers=ADMIN)
    ).status == 404


async def _set_limits(engine: AsyncEngine, table: Any, row_id: int, **values: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(table.update().where(table.c.id == row_id).values(**values))


async def test_networks_stay_within_the_vlan_limits(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    vdc = await _vdc(api, engine, seeded)
    nets = api_path(link_of(vdc, "privatenetworks"))
    headers = {**ADMIN, "Content-Type": VLAN_JSON}

    async def post(name: str, address: str) -> Any:
        return await api.post(
            nets,
            json={**NET, "name": name, "address": address, "gateway": address[:-1] + "1"},
            headers=headers,
        )

    # The VDC's own: a hard limit of 2 VLANs, its default network being one.
    await _set_limits(engine, tables.virtual_datacenter, vdc["id"], vlans_soft=0, vlans_hard=2)
    await json_of(await post("b", "10.1.0.0"), 201)
    refused = await json_of(await post("c", "10.2.0.0"), 409)
    assert refused["collection"][0]["code"] == "LIMIT-7"
    assert "virtual datacenter's hard limit of 2 VLANs" in refused["collection"][0]["message"]

    # The enterprise's: past its soft limit the network is made, and a warning recorded.
    await _set_limits(engine, tables.virtual_datacenter, vdc["id"], vlans_hard=0)
    await _set_limits(engine, tables.enterprise, seeded.enterprise_id, vlans_soft=2, vlans_hard=3)
    await json_of(await post("c", "10.2.0.0"), 201)
    assert (await actions(engine))[-2:] == ["SOFT_LIMIT_EXCEEDED", "VLAN_CREATED"]
    refused = await json_of(await post("d", "10.3.0.0"), 409)
    assert "enterprise's hard limit of 3 VLANs" in refused["collection"][0]["message"]

    # A new VDC's default network counts too.
    infra = await infrastructure(engine, seeded.enterprise_id)
    another = await post_vdc(api, ADMIN, vdc_body(infra.dc_id, "another"))
    assert (await json_of(another, 409))["collection"][0]["code"] == "LIMIT-7"
    listed = await json_of(await api.get(nets, headers=ADMIN), 200)
    assert listed["totalSize"] == 3
