"""/api/admin/datacenters/{dc}/racks/{rack}/machines over HTTP, with a fake datacenter
behind the link, in JSON and XML, on SQLite and MariaDB."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.link import DatacenterRequests
from abiquo_runtime.secrets import SecretBox
from tests.central.conftest import ADMIN, T0, USER, FakeClock
from tests.central.infrastructure.test_discovery import (
    FakeDatacenter,
    beat,
    fake_dc,
    live_dc,
)

__all__ = ["fake_dc", "live_dc"]

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.machine+json"
XML_ONE = "application/vnd.abiquo.machine+xml"
JSON_MANY = "application/vnd.abiquo.machines+json"


@pytest.fixture
def link(fake_dc: FakeDatacenter) -> DatacenterRequests:
    return fake_dc


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


async def _code(response: Any) -> str:
    return str((await _json(response))["collection"][0]["code"])


@pytest.fixture
async def rack(api: Client, live_dc: int) -> str:
    """The path of a rack of the live datacenter."""
    created = await api.post(
        f"/api/admin/datacenters/{live_dc}/racks",
        json={"name": "r1"},
        headers={**ADMIN, "Content-Type": "application/vnd.abiquo.rack+json"},
    )
    assert created.status == 201
    return f"/api/admin/datacenters/{live_dc}/racks/{(await _json(created))['id']}"


async def discovered(api: Client, dc: int, ip: str = "10.0.0.2", **params: str) -> dict[str, Any]:
    query = {"ip": ip, "hypervisor": "KVM", "user": "root", "password": "s3cret", **params}
    response = await api.get(
        f"/api/admin/datacenters/{dc}/action/discoversingle",
        params=query,
        headers={**ADMIN, "Accept": JSON_ONE},
    )
    assert response.status == 200, await response.text()
    found: dict[str, Any] = await _json(response)
    return found


def ready(found: dict[str, Any], password: str | None = "s3cret") -> dict[str, Any]:
    """What an administrator posts: one switch, the first datastore enabled."""
    body = dict(found)
    body["virtualSwitch"] = body["virtualSwitch"].split(",")[0]
    body["datastores"]["collection"][0]["enabled"] = True
    if password is not None:
        body["password"] = password
    return body


async def post(api: Client, rack: str, body: dict[str, Any]) -> Any:
    return await api.post(
        f"{rack}/machines", json=body, headers={**ADMIN, "Content-Type": JSON_ONE}
    )


async def test_discover_then_post_in_json(
    api: Client,
    live_dc: int,
    rack: str,
    fake_dc: FakeDatacenter,
    engine: AsyncEngine,
    secrets: SecretBox,
) -> None:
    found = await discovered(api, live_dc)
    assert found["id"] is None and "password" not in found
    assert (found["ip"], found["ipService"], found["type"], found["cpu"], found["ram"]) == (
        "10.0.0.2",
        "10.0.0.2",
        "KVM",
        8,
        16384,
    )
    assert (found["virtualSwitch"], found["state"], found["cpuUsed"]) == ("eth0,eth1", "MANAGED", 0)
    assert found["initiatorIQN"] == "iqn.2025-03.test:host"
    assert found["datastores"]["collection"][0] == {
        "id": None,
        "name": "ds0",
        "rootPath": "/var/lib/virt0",
        "directory": "",
        "size": 100 * 1024**3,
        "usedSize": 40 * 1024**3,
        "enabled": False,
        "datastoreUUID": "uuid-0",
        "links": [],
    }

    created = await post(api, rack, ready(found))
    assert created.status == 201, await created.text()
    machine = await _json(created)
    href = f"{api.make_url('')}{rack}/machines/{machine['id']}"
    assert created.headers["Location"] == href
    assert "password" not in machine
    assert machine["available"] is True and machine["virtualSwitch"] == "eth0"
    assert [d["enabled"] for d in machine["datastores"]["collection"]] == [True]
    links = {link["rel"]: link["href"] for link in machine["links"]}
    assert links == {
        "edit": href,
        "rack": f"{api.make_url('')}{rack}",
        "datacenter": f"{api.make_url('')}/api/admin/datacenters/{live_dc}",
        "datastores": f"{href}/datastores",
        "checkstate": f"{href}/action/checkstate",
    }
    assert fake_dc.monitored["10.0.0.2"].credentials.password == "s3cret"
    async with engine.connect() as conn:
        secret = (await conn.execute(select(tables.machine.c.password_secret))).scalar_one()
    assert secret != "s3cret" and secrets.decrypt(secret) == "s3cret"

    got = await api.get(f"{rack}/machines/{machine['id']}", headers=ADMIN)
    assert await _json(got) == machine

    machine.update(name="renamed", description="big one")
    put = await api.put(
        f"{rack}/machines/{machine['id']}",
        json=machine,
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert put.status == 200, await put.text()
    assert (await _json(put))["name"] == "renamed"
    # No password in the body: the stored one stays.
    async with engine.connect() as conn:
        kept = (await conn.execute(select(tables.machine.c.password_secret))).scalar_one()
    assert secrets.decrypt(kept) == "s3cret"

    listed = await api.get(f"{rack}/machines", headers={**ADMIN, "Accept": JSON_MANY})
    page = await _json(listed)
    assert page["totalSize"] == 1 and page["collection"][0]["name"] == "renamed"

    assert (await api.delete(f"{rack}/machines/{machine['id']}", headers=ADMIN)).status == 204
    assert "10.0.0.2" not in fake_dc.monitored
    assert (await api.get(f"{rack}/machines/{machine['id']}", headers=ADMIN)).status == 404
    ev = tables.event
    async with engine.connect() as conn:
        actions = (
            (
                await conn.execute(
                    select(ev.c.action).where(ev.c.component == "MACHINE").order_by(ev.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["MACHINE_CREATE", "MACHINE_MODIFY", "MACHINE_DELETE"]


async def test_a_machine_in_xml_nests_its_datastores(api: Client, live_dc: int, rack: str) -> None:
    found = await discovered(api, live_dc, "10.0.0.1", user="", password="")
    xml = (
        "<machine><name>xml-host</name><ip>10.0.0.1</ip><type>KVM</type><port>0</port>"
        "<user>root</user><password>pw</password><cpu>8</cpu><ram>2048</ram>"
        "<virtualSwitch>eth1</virtualSwitch><datastores>"
        "<datastore><name>ds0</name><rootPath>/var/lib/virt0</rootPath>"
        f"<size>{found['datastores']['collection'][0]['size']}</size><enabled>true</enabled>"
        "<datastoreUUID>uuid-0</datastoreUUID></datastore>"
        "<datastore><name>ds1</name><rootPath>/var/lib/virt1</rootPath><size>10</size>"
        "</datastore></datastores></machine>"
    )
    created = await api.post(
        f"{rack}/machines",
        data=xml.encode(),
        headers={**ADMIN, "Content-Type": XML_ONE, "Accept": XML_ONE},
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"] == XML_ONE
    root = ET.fromstring(await created.read())
    assert root.tag == "machine" and root.find("password") is None
    assert (root.findtext("name"), root.findtext("ipService"), root.findtext("available")) == (
        "xml-host",
        "10.0.0.1",
        "true",
    )
    stores = root.findall("datastores/datastore")
    assert [(d.findtext("name"), d.findtext("enabled")) for d in stores] == [
        ("ds0", "true"),
        ("ds1", "false"),
    ]
    assert stores[0].findtext("datastoreUUID") == "uuid-0"
    listed = await api.get(
        f"{rack}/machines", headers={**ADMIN, "Accept": "application/vnd.abiquo.machines+xml"}
    )
    machines = ET.fromstring(await listed.read())
    assert machines.tag == "machines" and machines.findtext("totalSize") == "1"
    assert len(machines.findall("machine/datastores/datastore")) == 2


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"virtualSwitch": "eth0,eth1"}, "MACHINE-2"),
        ({"type": "VMWARE"}, "DISCOVERY-3"),
        ({"type": ""}, "MACHINE-2"),
        ({"ip": "10.0.0.300"}, "MACHINE-2"),
        ({"cpu": 0}, "MACHINE-2"),
        ({"port": 70000}, "MACHINE-2"),
        ({"name": " "}, "MACHINE-2"),
        ({"cpu": "many"}, "GEN-1"),
    ],
)
async def test_invalid_machines_are_400(
    api: Client, live_dc: int, rack: str, change: dict[str, Any], code: str
) -> None:
    body = {**ready(await discovered(api, live_dc)), **change}
    response = await post(api, rack, body)
    assert response.status == 400, await response.text()
    assert await _code(response) == code


async def test_duplicate_address_is_409(api: Client, live_dc: int, rack: str) -> None:
    body = ready(await discovered(api, live_dc))
    assert (await post(api, rack, body)).status == 201
    again = await post(api, rack, {**body, "name": "other"})
    assert again.status == 409
    assert await _code(again) == "MACHINE-1"


async def test_a_silent_datacenter_is_503_and_comes_back(
    api: Client,
    live_dc: int,
    rack: str,
    clock: FakeClock,
    engine: AsyncEngine,
    fake_dc: FakeDatacenter,
) -> None:
    body = ready(await discovered(api, live_dc))
    created = await _json(await post(api, rack, body))
    clock.advance(16)
    refused = await post(api, rack, {**body, "ip": "10.0.0.1"})
    assert refused.status == 503
    assert await _code(refused) == "DC-1"
    listed = await _json(await api.get(f"{rack}/machines", headers=ADMIN))
    assert [m["available"] for m in listed["collection"]] == [False]
    check = await api.get(f"{rack}/machines/{created['id']}/action/checkstate", headers=ADMIN)
    assert check.status == 503
    one = f"{rack}/machines/{created['id']}"
    assert (await api.delete(one, headers=ADMIN)).status == 503
    assert (await api.delete(f"{one}?force=maybe", headers=ADMIN)).status == 400
    await beat(engine, clock, sequence=2)
    listed = await _json(await api.get(f"{rack}/machines", headers=ADMIN))
    assert [m["available"] for m in listed["collection"]] == [True]
    clock.advance(16)
    assert (await api.delete(f"{one}?force=true", headers=ADMIN)).status == 204
    # The datacenter was not told: it still watches the host until it forgets it.
    assert "10.0.0.2" in fake_dc.monitored


async def test_a_datacenter_without_uuid_is_409(
    api: Client, live_dc: int, rack: str, engine: AsyncEngine
) -> None:
    body = ready(await discovered(api, live_dc))
    async with engine.begin() as conn:
        await conn.execute(tables.datacenter.update().values(uuid=None))
    response = await post(api, rack, body)
    assert response.status == 409
    assert await _code(response) == "DC-2"


async def test_check_state(
    api: Client, live_dc: int, rack: str, fake_dc: FakeDatacenter, engine: AsyncEngine
) -> None:
    created = await _json(await post(api, rack, ready(await discovered(api, live_dc))))
    url = f"{rack}/machines/{created['id']}/action/checkstate"
    media = "application/vnd.abiquo.machinestate+json"
    checked = await api.get(url, headers={**ADMIN, "Accept": media})
    assert checked.status == 200, await checked.text()
    assert checked.headers["Content-Type"] == media
    body = await _json(checked)
    assert body["state"] == "MANAGED"
    assert body["links"][0]["rel"] == "machine"
    fake_dc.hosts.pop("10.0.0.2")
    xml = await api.get(url, headers={**ADMIN, "Accept": "application/vnd.abiquo.machinestate+xml"})
    root = ET.fromstring(await xml.read())
    assert root.tag == "machinestate" and root.findtext("state") == "STOPPED"
    got = await _json(await api.get(f"{rack}/machines/{created['id']}", headers=ADMIN))
    assert got["state"] == "STOPPED"
    ev = tables.event
    async with engine.connect() as conn:
        checks = (
            (await conn.execute(select(ev.c.action).where(ev.c.action == "MACHINE_CHECK")))
            .scalars()
            .all()
        )
    assert len(checks) == 2


async def test_machines_in_use_are_not_removed(
    api: Client, live_dc: int, rack: str, engine: AsyncEngine
) -> None:
    created = await _json(await post(api, rack, ready(await discovered(api, live_dc))))
    async with engine.begin() as conn:
        await conn.execute(tables.machine.update().values(cpu_used=2, ram_used=512))
    one = f"{rack}/machines/{created['id']}"
    refused = await api.delete(one, headers=ADMIN)
    assert refused.status == 409 and await _code(refused) == "MACHINE-3"
    # A PUT keeps what the allocator owns, whatever the body says.
    created.update(cpuUsed=0, ramUsed=0, name="kept")
    put = await _json(await api.put(one, json=created, headers={**ADMIN, "Content-Type": JSON_ONE}))
    assert (put["name"], put["cpuUsed"], put["ramUsed"]) == ("kept", 2, 512)


async def test_a_user_may_not(api: Client, live_dc: int, rack: str) -> None:
    body = ready(await discovered(api, live_dc))
    created = await _json(await post(api, rack, body))
    assert (await api.get(f"{rack}/machines", headers=USER)).status == 403
    assert (
        await api.post(f"{rack}/machines", json=body, headers={**USER, "Content-Type": JSON_ONE})
    ).status == 403
    assert (await api.delete(f"{rack}/machines/{created['id']}", headers=USER)).status == 403
    assert (
        await api.get(f"{rack}/machines/{created['id']}/action/checkstate", headers=USER)
    ).status == 403
    discover = await api.get(
        f"/api/admin/datacenters/{live_dc}/action/hypervisor?ip=10.0.0.1", headers=USER
    )
    assert discover.status == 403


async def test_unknown_places_are_404(
    api: Client, live_dc: int, rack: str, engine: AsyncEngine
) -> None:
    created = await _json(await post(api, rack, ready(await discovered(api, live_dc))))
    assert (await api.get(f"{rack}/machines/999", headers=ADMIN)).status == 404
    other = await ensure_datacenter(engine, uuid="other", name="Other", location="", now=T0)
    elsewhere = rack.replace(f"/datacenters/{live_dc}/", f"/datacenters/{other}/")
    listed = await api.get(f"{elsewhere}/machines", headers=ADMIN)
    assert listed.status == 404 and await _code(listed) == "RACK-0"
    one = await api.get(f"{elsewhere}/machines/{created['id']}", headers=ADMIN)
    assert one.status == 404 and await _code(one) == "RACK-0"
    empty = await api.get(f"{rack}/machines?startwith=100", headers=ADMIN)
    assert empty.status == 200 and (await _json(empty))["totalSize"] == 1
    other = await api.get(f"/api/admin/datacenters/{live_dc}/racks/999/machines", headers=ADMIN)
    assert other.status == 404 and await _code(other) == "RACK-0"


async def test_listing_sorts_and_filters(api: Client, live_dc: int, rack: str) -> None:
    for ip, name in (("10.0.0.1", "beta"), ("10.0.0.2", "alpha")):
        body = ready(await discovered(api, live_dc, ip))
        assert (await post(api, rack, {**body, "name": name})).status == 201
    url = f"{rack}/machines"
    by_name = await _json(await api.get(f"{url}?by=name", headers=ADMIN))
    assert [m["name"] for m in by_name["collection"]] == ["alpha", "beta"]
    desc = await _json(await api.get(f"{url}?by=ip&asc=false&limit=1", headers=ADMIN))
    assert [m["ip"] for m in desc["collection"]] == ["10.0.0.2"] and desc["totalSize"] == 2
    assert {link["rel"] for link in desc["links"]} == {"first", "next", "last"}
    found = await _json(await api.get(f"{url}?has=et", headers=ADMIN))
    assert [m["name"] for m in found["collection"]] == ["beta"]
    bad = await api.get(f"{url}?by=password", headers=ADMIN)
    assert bad.status == 400
