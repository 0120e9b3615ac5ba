"""Virtual machines before deploy: made from a template with a NIC, reconfigured and
deleted while NOT_ALLOCATED, addresses never shared, isolation between enterprises."""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tenants.passwords import Passwords
from tests.central.cloud.helpers import (
    VAPP_JSON,
    VM_JSON,
    Client,
    Infra,
    actions,
    add_enterprise,
    add_template,
    add_user,
    api_path,
    infrastructure,
    json_of,
    link_of,
    post_vdc,
    template_link,
    vdc_body,
)
from tests.central.conftest import ADMIN, USER, Seeded

VM_XML = "application/vnd.abiquo.virtualmachine+xml"


async def _setup(
    api: Client, engine: AsyncEngine, enterprise_id: int, network: dict[str, Any] | None = None
) -> tuple[Infra, Any, Any]:
    infra = await infrastructure(engine, enterprise_id)
    vdc = await json_of(
        await post_vdc(
            api, ADMIN, vdc_body(infra.dc_id, enterprise_id=enterprise_id, network=network)
        ),
        201,
    )
    vapp = await json_of(
        await api.post(
            api_path(link_of(vdc, "virtualappliances")),
            json={"name": "va"},
            headers={**ADMIN, "Content-Type": VAPP_JSON},
        ),
        201,
    )
    return infra, vdc, vapp


def _post(api: Client, vapp: Any, body: dict[str, Any], headers: dict[str, str] = ADMIN) -> Any:
    return api.post(
        api_path(link_of(vapp, "virtualmachines")),
        json=body,
        headers={**headers, "Content-Type": VM_JSON},
    )


async def _code(response: Any, status: int) -> str:
    return str((await json_of(response, status))["collection"][0]["code"])


async def test_crud_in_json(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    infra, vdc, vapp = await _setup(api, engine, seeded.enterprise_id)
    created = await _post(api, vapp, {"label": "web", "links": [template_link(infra)]})
    vm = await json_of(created, 201)
    assert created.headers["Location"] == link_of(vm, "edit")
    assert vm["name"] == f"ABQ_{vm['uuid']}"
    assert (vm["label"], vm["state"], vm["cpu"], vm["ram"], vm["hdInBytes"]) == (
        "web",
        "NOT_ALLOCATED",
        2,
        512,
        1 << 30,
    )
    rels = {link["rel"] for link in vm["links"]}
    assert {
        "edit",
        "virtualmachinetemplate",
        "virtualappliance",
        "virtualdatacenter",
        "enterprise",
        "deploy",
        "undeploy",
        "reset",
        "state",
        "tasks",
        "nics",
    } <= rels
    # Not deployed: no machine.
    assert "machine" not in rels
    assert link_of(vm, "virtualmachinetemplate").endswith(
        f"/virtualmachinetemplates/{infra.template_id}"
    )
    here = api_path(link_of(vm, "edit"))
    assert await json_of(await api.get(here, headers=ADMIN), 200) == vm
    listed = await json_of(
        await api.get(api_path(link_of(vapp, "virtualmachines")), headers=ADMIN), 200
    )
    assert [v["id"] for v in listed["collection"]] == [vm["id"]]

    nics = await json_of(await api.get(api_path(link_of(vm, "nics")), headers=ADMIN), 200)
    assert len(nics["collection"]) == 1
    nic = nics["collection"][0]
    assert (nic["ip"], nic["order"]) == ("192.168.0.2", 0) and nic["mac"].startswith("52:54:00:")
    assert link_of(nic, "privatenetwork") == link_of(vdc, "defaultnetwork")
    state = await json_of(await api.get(api_path(link_of(vm, "state")), headers=ADMIN), 200)
    assert state["state"] == "NOT_ALLOCATED"

    changed = await api.put(
        here,
        json={**vm, "cpu": 4, "ram": 1024, "description": "d"},
        headers={**ADMIN, "Content-Type": VM_JSON},
    )
    body = await json_of(changed, 200)
    assert (body["cpu"], body["ram"], body["description"], body["label"]) == (4, 1024, "d", "web")
    # A client that takes only an acceptedrequest (Abiquo's do) is told it is done.
    quiet = await api.put(
        here,
        json={**body, "cpu": 3},
        headers={
            **ADMIN,
            "Content-Type": VM_JSON,
            "Accept": "application/vnd.abiquo.acceptedrequest+json",
        },
    )
    assert (quiet.status, await quiet.read()) == (204, b"")
    assert (await json_of(await api.get(here, headers=ADMIN), 200))["cpu"] == 3
    refused = await api.put(
        here, json=body, headers={**ADMIN, "Content-Type": VM_JSON, "Accept": "text/csv"}
    )
    assert refused.status == 406
    assert (await api.delete(here, headers=ADMIN)).status == 204
    assert (await api.get(here, headers=ADMIN)).status == 404
    ips = await json_of(
        await api.get(api_path(link_of(vdc, "ips")) + "?limit=1", headers=ADMIN), 200
    )
    assert ips["collection"][0]["available"] is True
    assert await actions(engine) == [
        "VDC_CREATE",
        "VAPP_CREATE",
        "VM_CREATE",
        "VM_RECONFIGURE",
        "VM_RECONFIGURE",
        "VM_DELETE",
    ]


async def test_xml(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    href = template_link(infra)["href"]
    created = await api.post(
        api_path(link_of(vapp, "virtualmachines")),
        data=f'<virtualMachine><cpu>3</cpu><link rel="virtualmachinetemplate" href="{href}"/>'
        "</virtualMachine>",
        headers={**ADMIN, "Content-Type": VM_XML, "Accept": VM_XML},
    )
    assert created.status == 201, await created.text()
    root = ET.fromstring(await created.read())
    assert root.tag == "virtualMachine"
    assert (root.findtext("cpu"), root.findtext("ram"), root.findtext("label")) == (
        "3",
        "512",
        "tiny",
    )
    here = api_path(created.headers["Location"])
    updated = await api.put(
        here,
        data="<virtualMachine><label>new</label></virtualMachine>",
        headers={**ADMIN, "Content-Type": VM_XML, "Accept": VM_XML},
    )
    assert updated.status == 200, await updated.text()
    assert ET.fromstring(await updated.read()).findtext("label") == "new"
    nics = await api.get(
        here + "/network/nics", headers={**ADMIN, "Accept": "application/vnd.abiquo.nics+xml"}
    )
    tree = ET.fromstring(await nics.read())
    assert tree.tag == "nics" and len(tree.findall("nic")) == 1


async def test_templates_it_may_use(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    assert await _code(await _post(api, vapp, {"label": "x"}), 400) == "VM-2"
    malformed = {"links": [{"rel": "virtualmachinetemplate", "href": "http://h/api/x/3"}]}
    assert await _code(await _post(api, vapp, malformed), 400) == "VM-2"
    missing = template_link(infra, 999_999)
    assert await _code(await _post(api, vapp, {"links": [missing]}), 404) == "VM-3"
    # Another enterprise's template: usable only when shared.
    other = await add_enterprise(engine, "Other")
    private = await add_template(engine, other, infra.dc_id)
    shared = await add_template(engine, other, infra.dc_id, shared=True)
    theirs = Infra(infra.dc_id, infra.rack_id, private, other)
    assert await _code(await _post(api, vapp, {"links": [template_link(theirs)]}), 404) == "VM-3"
    ok = Infra(infra.dc_id, infra.rack_id, shared, other)
    assert (await _post(api, vapp, {"links": [template_link(ok)]})).status == 201
    # One in another datacenter, and one still downloading.
    elsewhere = await infrastructure(engine, seeded.enterprise_id)
    assert await _code(await _post(api, vapp, {"links": [template_link(elsewhere)]}), 409) == "VM-6"
    busy = await add_template(engine, seeded.enterprise_id, infra.dc_id, state="DOWNLOADING")
    pending = Infra(infra.dc_id, infra.rack_id, busy, seeded.enterprise_id)
    assert await _code(await _post(api, vapp, {"links": [template_link(pending)]}), 409) == "VM-7"
    bad = await _post(api, vapp, {"cpu": 0, "links": [template_link(infra)]})
    assert await _code(bad, 400) == "VM-1"


async def test_only_not_allocated_is_changed(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    vm = await json_of(await _post(api, vapp, {"links": [template_link(infra)]}), 201)
    async with engine.begin() as conn:
        await conn.execute(
            tables.virtual_machine.update()
            .where(tables.virtual_machine.c.id == vm["id"])
            .values(state="ON")
        )
    here = api_path(link_of(vm, "edit"))
    changed = await api.put(here, json={"cpu": 8}, headers={**ADMIN, "Content-Type": VM_JSON})
    assert await _code(changed, 409) == "VM-4"
    assert await _code(await api.delete(here, headers=ADMIN), 409) == "VM-4"
    assert (await json_of(await api.get(here, headers=ADMIN), 200))["cpu"] == 2


async def test_concurrent_creations_get_distinct_addresses(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    responses = await asyncio.gather(
        *(_post(api, vapp, {"label": f"vm{i}", "links": [template_link(infra)]}) for i in range(20))
    )
    for response in responses:
        assert response.status == 201, await response.text()
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(tables.ip.c.ip, tables.ip.c.virtual_machine_id).where(
                    tables.ip.c.virtual_machine_id.is_not(None)
                )
            )
        ).all()
    assert len(rows) == 20
    assert len({r[0] for r in rows}) == 20 and len({r[1] for r in rows}) == 20


async def test_a_steady_stream_of_creations_never_runs_short_of_addresses(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    # Clients each creating VMs one after another: a creation that lost the lowest free
    # address must not go on chasing the next lowest, which the newer creations take
    # first each time, until it gives up with VM-5 in a network that is mostly free.
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id)
    created: list[int] = []

    async def client(n: int) -> None:
        for i in range(20):
            response = await _post(
                api, vapp, {"label": f"vm{n}-{i}", "links": [template_link(infra)]}
            )
            assert response.status == 201, await response.text()
            created.append((await response.json())["id"])

    await asyncio.gather(*(client(n) for n in range(10)))
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(tables.ip.c.ip).where(tables.ip.c.virtual_machine_id.in_(created))
            )
        ).all()
    assert len(rows) == len(set(rows)) == 200


async def test_addresses_run_out(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    # A /30 holds two hosts: the gateway and one address for a VM.
    net = {"name": "tiny", "address": "10.0.0.0", "mask": 30, "gateway": "10.0.0.1"}
    infra, _, vapp = await _setup(api, engine, seeded.enterprise_id, network=net)
    assert (await _post(api, vapp, {"links": [template_link(infra)]})).status == 201
    full = await _post(api, vapp, {"links": [template_link(infra)]})
    assert await _code(full, 409) == "VM-5"
    # Nothing of the refused one was kept.
    listed = await json_of(
        await api.get(api_path(link_of(vapp, "virtualmachines")), headers=ADMIN), 200
    )
    assert listed["totalSize"] == 1


async def test_network_in_use_is_not_deleted(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    infra, vdc, vapp = await _setup(api, engine, seeded.enterprise_id)
    nets = api_path(link_of(vdc, "privatenetworks"))
    second = await json_of(
        await api.post(
            nets,
            json={
                "name": "n2",
                "address": "10.5.0.0",
                "mask": 29,
                "gateway": "10.5.0.1",
                "defaultNetwork": True,
            },
            headers={**ADMIN, "Content-Type": "application/vnd.abiquo.vlan+json"},
        ),
        201,
    )
    vm = await json_of(await _post(api, vapp, {"links": [template_link(infra)]}), 201)
    nics = await json_of(await api.get(api_path(link_of(vm, "nics")), headers=ADMIN), 200)
    assert nics["collection"][0]["ip"] == "10.5.0.2"
    # Make the first network the default again so that the second may be deleted...
    first = next(
        n
        for n in (await json_of(await api.get(nets, headers=ADMIN), 200))["collection"]
        if n["id"] != second["id"]
    )
    await api.put(
        api_path(link_of(first, "edit")),
        json={**first, "defaultNetwork": True},
        headers={**ADMIN, "Content-Type": "application/vnd.abiquo.vlan+json"},
    )
    # ...but a VM's NIC is in it.
    refused = await api.delete(api_path(link_of(second, "edit")), headers=ADMIN)
    assert await _code(refused, 409) == "VLAN-6"
    assert (await api.delete(api_path(link_of(vm, "edit")), headers=ADMIN)).status == 204
    assert (await api.delete(api_path(link_of(second, "edit")), headers=ADMIN)).status == 204


async def test_another_enterprises_vm_is_404(
    api: Client, engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords
) -> None:
    other = await add_enterprise(engine, "Other")
    infra, _, vapp = await _setup(api, engine, other)
    vm = await json_of(await _post(api, vapp, {"links": [template_link(infra)]}), 201)
    here = api_path(link_of(vm, "edit"))
    for headers in (
        USER,
        await add_user(engine, fast_passwords, seeded.enterprise_id, nick="boss"),
    ):
        assert (await api.get(here, headers=headers)).status == 404
        assert (await api.get(here + "/state", headers=headers)).status == 404
        assert (await api.get(here + "/network/nics", headers=headers)).status == 404
        assert (await api.delete(here, headers=headers)).status == 404
        assert (await _post(api, vapp, {"links": [template_link(infra)]}, headers)).status == 404
    # Their own user sees it; a plain user manages VMs.
    theirs = await add_user(engine, fast_passwords, other, nick="them", role="USER")
    assert (await api.get(here, headers=theirs)).status == 200
    assert (await _post(api, vapp, {"links": [template_link(infra)]}, theirs)).status == 201
