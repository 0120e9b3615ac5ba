"""/api/cloud/virtualdatacenters/{vdc}/virtualappliances: CRUD in JSON and XML, the state
derived from the VMs', and the rule that only undeployed appliances are deleted."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from tests.central.cloud.helpers import (
    VAPP_JSON,
    VM_JSON,
    Client,
    Infra,
    actions,
    api_path,
    infrastructure,
    json_of,
    link_of,
    post_vdc,
    template_link,
    vdc_body,
)
from tests.central.conftest import ADMIN, USER, Seeded

VAPP_XML = "application/vnd.abiquo.virtualappliance+xml"


async def _setup(api: Client, engine: AsyncEngine, seeded: Seeded) -> tuple[Infra, Any]:
    infra = await infrastructure(engine, seeded.enterprise_id)
    vdc = await json_of(await post_vdc(api, ADMIN, vdc_body(infra.dc_id)), 201)
    return infra, vdc


async def _vapp(api: Client, vdc: Any, name: str = "va") -> Any:
    return await json_of(
        await api.post(
            api_path(link_of(vdc, "virtualappliances")),
            json={"name": name},
            headers={**ADMIN, "Content-Type": VAPP_JSON},
        ),
        201,
    )


async def _vm(api: Client, vapp: Any, infra: Infra) -> Any:
    return await json_of(
        await api.post(
            api_path(link_of(vapp, "virtualmachines")),
            json={"links": [template_link(infra)]},
            headers={**ADMIN, "Content-Type": VM_JSON},
        ),
        201,
    )


async def _set_state(engine: AsyncEngine, vm_id: int, state: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            tables.virtual_machine.update()
            .where(tables.virtual_machine.c.id == vm_id)
            .values(state=state)
        )


async def test_crud_in_json(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    _, vdc = await _setup(api, engine, seeded)
    vapps = api_path(link_of(vdc, "virtualappliances"))
    created = await api.post(
        vapps,
        json={"name": "web", "highDisponibility": True, "nodeconnections": "<x/>"},
        headers={**ADMIN, "Content-Type": VAPP_JSON},
    )
    va = await json_of(created, 201)
    assert created.headers["Location"] == link_of(va, "edit")
    assert (va["name"], va["state"], va["highDisponibility"], va["nodeconnections"]) == (
        "web",
        "NOT_DEPLOYED",
        True,
        "<x/>",
    )
    here = api_path(link_of(va, "edit"))
    assert await json_of(await api.get(here, headers=ADMIN), 200) == va
    listed = await json_of(await api.get(vapps, headers=ADMIN), 200)
    assert [v["id"] for v in listed["collection"]] == [va["id"]]
    changed = await api.put(
        here,
        json={**va, "name": "web2", "publicApp": True},
        headers={**ADMIN, "Content-Type": VAPP_JSON},
    )
    body = await json_of(changed, 200)
    assert (body["name"], body["publicApp"]) == ("web2", True)
    state = await json_of(await api.get(api_path(link_of(va, "state")), headers=ADMIN), 200)
    assert state["state"] == "NOT_DEPLOYED"
    assert (await api.delete(here, headers=ADMIN)).status == 204
    assert (await api.get(here, headers=ADMIN)).status == 404
    assert await actions(engine) == ["VDC_CREATE", "VAPP_CREATE", "VAPP_MODIFY", "VAPP_DELETE"]


async def test_xml(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    _, vdc = await _setup(api, engine, seeded)
    vapps = api_path(link_of(vdc, "virtualappliances"))
    created = await api.post(
        vapps,
        data="<virtualAppliance><name>x</name></virtualAppliance>",
        headers={**ADMIN, "Content-Type": VAPP_XML, "Accept": VAPP_XML},
    )
    assert created.status == 201, await created.text()
    root = ET.fromstring(await created.read())
    assert root.tag == "virtualAppliance" and root.findtext("state") == "NOT_DEPLOYED"
    state = await api.get(
        api_path(created.headers["Location"]) + "/state",
        headers={**ADMIN, "Accept": "application/vnd.abiquo.virtualappliancestate+xml"},
    )
    assert ET.fromstring(await state.read()).findtext("state") == "NOT_DEPLOYED"
    listed = await api.get(
        vapps, headers={**ADMIN, "Accept": "application/vnd.abiquo.virtualappliances+xml"}
    )
    assert ET.fromstring(await listed.read()).tag == "virtualAppliances"


async def test_state_follows_the_vms(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    infra, vdc = await _setup(api, engine, seeded)
    va = await _vapp(api, vdc)
    a = await _vm(api, va, infra)
    b = await _vm(api, va, infra)
    here = api_path(link_of(va, "edit"))
    cases = [
        (("NOT_ALLOCATED", "ALLOCATED"), "NOT_DEPLOYED"),
        (("ON", "OFF"), "DEPLOYED"),
        (("ON", "NOT_ALLOCATED"), "NEEDS_SYNC"),
        (("ON", "LOCKED"), "LOCKED"),
        (("UNKNOWN", "LOCKED"), "UNKNOWN"),
    ]
    for (first, second), expected in cases:
        await _set_state(engine, a["id"], first)
        await _set_state(engine, b["id"], second)
        assert (await json_of(await api.get(here, headers=ADMIN), 200))["state"] == expected
        state = await json_of(await api.get(here + "/state", headers=ADMIN), 200)
        assert state["state"] == expected
        listed = await json_of(
            await api.get(api_path(link_of(vdc, "virtualappliances")), headers=ADMIN), 200
        )
        assert listed["collection"][0]["state"] == expected


async def test_delete_only_while_undeployed(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    infra, vdc = await _setup(api, engine, seeded)
    va = await _vapp(api, vdc)
    vm = await _vm(api, va, infra)
    here = api_path(link_of(va, "edit"))
    await _set_state(engine, vm["id"], "ALLOCATED")
    refused = await api.delete(here, headers=ADMIN)
    assert (await json_of(refused, 409))["collection"][0]["code"] == "VAPP-2"
    await _set_state(engine, vm["id"], "NOT_ALLOCATED")
    assert (await api.delete(here, headers=ADMIN)).status == 204
    # The VM went with it and gave its address back.
    ips = await json_of(
        await api.get(api_path(link_of(vdc, "ips")) + "?limit=300", headers=ADMIN), 200
    )
    assert all(ip["available"] for ip in ips["collection"])
    # With no appliance left, the VDC goes.
    assert (await api.delete(api_path(link_of(vdc, "edit")), headers=ADMIN)).status == 204


async def test_validation_and_privileges(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    _, vdc = await _setup(api, engine, seeded)
    vapps = api_path(link_of(vdc, "virtualappliances"))
    blank = await api.post(vapps, json={"name": " "}, headers={**ADMIN, "Content-Type": VAPP_JSON})
    assert (await json_of(blank, 400))["collection"][0]["code"] == "VAPP-1"
    assert (
        await api.post(vapps, json={}, headers={**ADMIN, "Content-Type": VAPP_JSON})
    ).status == 400
    # A plain user manages appliances (VDC_MANAGE_VAPP)...
    mine = await api.post(vapps, json={"name": "u"}, headers={**USER, "Content-Type": VAPP_JSON})
    assert mine.status == 201
    assert (await api.get(vapps + "/999999", headers=ADMIN)).status == 404
