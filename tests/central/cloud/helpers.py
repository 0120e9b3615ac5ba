"""What the tests of virtual datacenters, networks, appliances and VMs set up: a
datacenter with a rack, a machine of a hypervisor type, an enterprise's limits there and
a template, inserted directly."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.rows import inserted_id
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.tenants import privileges
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.users import create_user
from tests.central.conftest import T0, basic

Client = TestClient[web.Request, web.Application]

VDC_JSON = "application/vnd.abiquo.virtualdatacenter+json"
VDC_XML = "application/vnd.abiquo.virtualdatacenter+xml"
VLAN_JSON = "application/vnd.abiquo.vlan+json"
VAPP_JSON = "application/vnd.abiquo.virtualappliance+json"
VM_JSON = "application/vnd.abiquo.virtualmachine+json"


@dataclass(frozen=True)
class Infra:
    dc_id: int
    rack_id: int
    template_id: int
    template_enterprise_id: int


async def infrastructure(
    engine: AsyncEngine,
    enterprise_id: int,
    *,
    hypervisor: str = "KVM",
    vlan_id_min: int = 2,
    vlan_id_max: int = 4094,
    avoided: str = "",
    limit: bool = True,
    template_state: str = "DOWNLOAD",
    name: str | None = None,
) -> Infra:
    dc_id = await ensure_datacenter(
        engine, uuid=str(uuid.uuid4()), name=name or f"dc-{uuid.uuid4().hex[:8]}", location=""
    )
    async with engine.begin() as conn:
        rack_id = inserted_id(
            await conn.execute(
                tables.rack.insert().values(
                    datacenter_id=dc_id,
                    name="r",
                    vlan_id_min=vlan_id_min,
                    vlan_id_max=vlan_id_max,
                    vlans_id_avoided=avoided,
                    created_at=T0,
                )
            )
        )
        await conn.execute(
            tables.machine.insert().values(
                datacenter_id=dc_id,
                rack_id=rack_id,
                name="m",
                ip=f"10.0.{dc_id % 250}.1",
                type=hypervisor,
                state="MANAGED",
                cpu=8,
                ram=8192,
                created_at=T0,
            )
        )
        if limit:
            await conn.execute(
                tables.enterprise_limit.insert().values(
                    enterprise_id=enterprise_id, datacenter_id=dc_id
                )
            )
        template_id = inserted_id(
            await conn.execute(
                tables.virtual_machine_template.insert().values(
                    enterprise_id=enterprise_id,
                    datacenter_id=dc_id,
                    ovf_id="http://repo/tiny.ovf",
                    ovf_key=uuid.uuid4().hex,
                    name="tiny",
                    state=template_state,
                    hd_required=1 << 30,
                    cpu_required=2,
                    ram_required=512,
                    created_at=T0,
                )
            )
        )
    return Infra(dc_id, rack_id, template_id, enterprise_id)


async def add_template(
    engine: AsyncEngine,
    enterprise_id: int,
    dc_id: int,
    *,
    state: str = "DOWNLOAD",
    shared: bool = False,
) -> int:
    async with engine.begin() as conn:
        return inserted_id(
            await conn.execute(
                tables.virtual_machine_template.insert().values(
                    enterprise_id=enterprise_id,
                    datacenter_id=dc_id,
                    ovf_id="http://repo/other.ovf",
                    ovf_key=uuid.uuid4().hex,
                    name="other",
                    state=state,
                    shared=shared,
                    created_at=T0,
                )
            )
        )


def vdc_body(
    dc_id: int,
    name: str = "vdc",
    *,
    hypervisor: str = "KVM",
    enterprise_id: int | None = None,
    network: dict[str, Any] | None = None,
) -> dict[str, Any]:
    links = [{"rel": "location", "href": f"http://h/api/cloud/locations/{dc_id}"}]
    if enterprise_id is not None:
        links.append(
            {"rel": "enterprise", "href": f"http://h/api/admin/enterprises/{enterprise_id}"}
        )
    body: dict[str, Any] = {"name": name, "hypervisorType": hypervisor, "links": links}
    if network is not None:
        body["network"] = network
    return body


def template_link(infra: Infra, template_id: int | None = None) -> dict[str, str]:
    return {
        "rel": "virtualmachinetemplate",
        "href": f"http://h/api/admin/enterprises/{infra.template_enterprise_id}"
        f"/datacenterrepositories/{infra.dc_id}/virtualmachinetemplates/"
        f"{template_id if template_id is not None else infra.template_id}",
    }


async def json_of(response: Any, status: int) -> Any:
    assert response.status == status, await response.text()
    return await response.json(content_type=None)


async def post_vdc(api: Client, headers: dict[str, str], body: dict[str, Any]) -> Any:
    return await api.post(
        "/api/cloud/virtualdatacenters",
        json=body,
        headers={**headers, "Content-Type": VDC_JSON, "Accept": VDC_JSON},
    )


def link_of(entity: dict[str, Any], rel: str) -> str:
    return next(str(link["href"]) for link in entity["links"] if link["rel"] == rel)


def api_path(href: str) -> str:
    """The path of an absolute href, for the test client."""
    return "/api" + href.split("/api", 1)[1]


async def add_enterprise(engine: AsyncEngine, name: str) -> int:
    async with engine.begin() as conn:
        return inserted_id(
            await conn.execute(tables.enterprise.insert().values(name=name, created_at=T0))
        )


async def add_user(
    engine: AsyncEngine,
    passwords: Passwords,
    enterprise_id: int,
    *,
    nick: str,
    role: str = privileges.ENTERPRISE_ADMIN,
    available_vdcs: str = "",
) -> dict[str, str]:
    """A user of `role` in the enterprise; its Basic header."""
    user_id = await create_user(
        engine,
        passwords=passwords,
        enterprise_id=enterprise_id,
        role=role,
        nick=nick,
        password="pw",
        name=nick,
        now=T0,
    )
    if available_vdcs:
        async with engine.begin() as conn:
            await conn.execute(
                tables.user.update()
                .where(tables.user.c.id == user_id)
                .values(available_vdcs=available_vdcs)
            )
    return basic(nick, "pw")


async def actions(engine: AsyncEngine) -> list[str]:
    """The actions recorded, oldest first."""
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(select(tables.event.c.action).order_by(tables.event.c.id))
            ).scalars()
        )
