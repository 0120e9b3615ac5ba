"""/api/admin/enterprises over HTTP, in JSON and XML, on SQLite and on MariaDB."""

from __future__ import annotations

import uuid
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.rows import inserted_id
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.tenants import privileges
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.seed import ensure_enterprise
from abiquo_central.tenants.users import create_user
from tests.central.conftest import ADMIN, T0, USER, Seeded, basic

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.enterprise+json"
XML_ONE = "application/vnd.abiquo.enterprise+xml"
JSON_MANY = "application/vnd.abiquo.enterprises+json"
PASSWORD = "ent-secret"
VIEWER_A = basic("aviewer", PASSWORD)


async def _json(response: object) -> dict:  # type: ignore[type-arg]
    return await response.json(content_type=None)  # type: ignore[attr-defined,no-any-return]


async def _events(engine: AsyncEngine) -> list[tuple[str, str]]:
    ev = tables.event
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ev.c.action, ev.c.target).where(ev.c.component == "ENTERPRISE").order_by(ev.c.id)
        )
        return [(r.action, r.target) for r in rows]


@pytest.fixture
async def other(engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords) -> int:
    """Enterprise B, and in A an enterprise administrator (the seeded role)."""
    b = await ensure_enterprise(engine, "Other", now=T0)
    await create_user(
        engine,
        passwords=fast_passwords,
        enterprise_id=seeded.enterprise_id,
        role=privileges.ENTERPRISE_ADMIN,
        nick="aviewer",
        password=PASSWORD,
        name="Ann",
        now=T0,
    )
    return b


async def test_crud_in_json_records_events(api: Client, engine: AsyncEngine) -> None:
    created = await api.post(
        "/api/admin/enterprises",
        json={"name": " Acme ", "cpuSoft": 4, "cpuHard": 8, "ramSoft": 1024},
        headers={**ADMIN, "Content-Type": JSON_ONE, "Accept": JSON_ONE},
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"] == JSON_ONE
    body = await _json(created)
    ent_id = body["id"]
    assert (body["name"], body["cpuSoft"], body["cpuHard"], body["ramSoft"]) == ("Acme", 4, 8, 1024)
    assert body["isReservationRestricted"] is False and body["publicIpsHard"] == 0
    href = f"{api.make_url('')}/api/admin/enterprises/{ent_id}"
    assert created.headers["Location"] == href
    links = {link["rel"]: link["href"] for link in body["links"]}
    assert links == {"self": href, "edit": href, "users": f"{href}/users"}

    got = await _json(await api.get(f"/api/admin/enterprises/{ent_id}", headers=ADMIN))
    assert got == body

    body.update(name="Acme 2", hdSoft=2**40, hdHard=2**41, isReservationRestricted=True)
    put = await api.put(
        f"/api/admin/enterprises/{ent_id}",
        json=body,
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert put.status == 200
    changed = await _json(put)
    assert (changed["name"], changed["hdHard"], changed["isReservationRestricted"]) == (
        "Acme 2",
        2**41,
        True,
    )

    listed = await api.get("/api/admin/enterprises", params={"has": "cme"}, headers=ADMIN)
    assert listed.headers["Content-Type"] == JSON_MANY
    page = await _json(listed)
    assert page["totalSize"] == 1 and page["collection"][0]["id"] == ent_id

    deleted = await api.delete(f"/api/admin/enterprises/{ent_id}", headers=ADMIN)
    assert deleted.status == 204
    gone = await api.get(f"/api/admin/enterprises/{ent_id}", headers=ADMIN)
    assert gone.status == 404
    target = f"/admin/enterprises/{ent_id}"
    assert await _events(engine) == [
        ("ENTERPRISE_CREATE", target),
        ("ENTERPRISE_MODIFY", target),
        ("ENTERPRISE_DELETE", target),
    ]


async def test_create_and_read_in_xml(api: Client) -> None:
    xml = (
        b"<enterprise><name>Xml Co</name><isReservationRestricted>true</isReservationRestricted>"
        b"<vlansSoft>2</vlansSoft><vlansHard>5</vlansHard></enterprise>"
    )
    created = await api.post(
        "/api/admin/enterprises",
        data=xml,
        headers={**ADMIN, "Content-Type": XML_ONE, "Accept": XML_ONE},
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"] == XML_ONE
    root = ET.fromstring(await created.read())
    assert root.tag == "enterprise"
    assert root.findtext("name") == "Xml Co"
    assert root.findtext("vlansHard") == "5"
    assert root.findtext("isReservationRestricted") == "true"
    ent_id = root.findtext("id")
    got = await api.get(f"/api/admin/enterprises/{ent_id}", headers={**ADMIN, "Accept": XML_ONE})
    assert ET.fromstring(await got.read()).findtext("vlansSoft") == "2"


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 129},
        {"name": "Bad", "cpuSoft": 9, "cpuHard": 8},
        {"name": "Bad", "ramSoft": -1},
        {"name": "Bad", "publicIpsHard": 2**31},
    ],
)
async def test_invalid_bodies_are_400(api: Client, body: dict[str, object]) -> None:
    response = await api.post(
        "/api/admin/enterprises", json=body, headers={**ADMIN, "Content-Type": JSON_ONE}
    )
    assert response.status == 400


async def test_soft_limit_under_unlimited_hard_is_fine(api: Client) -> None:
    response = await api.post(
        "/api/admin/enterprises",
        json={"name": "Soft", "cpuSoft": 100, "cpuHard": 0},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert response.status == 201


async def test_duplicate_name_is_409(api: Client, other: int, engine: AsyncEngine) -> None:
    dup = await api.post(
        "/api/admin/enterprises",
        json={"name": "Other"},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert dup.status == 409
    renamed = await api.put(
        f"/api/admin/enterprises/{other}",
        json={"name": "Abiquo"},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert renamed.status == 409
    assert await _events(engine) == []


async def test_delete_refuses_own_and_populated(
    api: Client, seeded: Seeded, other: int, engine: AsyncEngine, fast_passwords: Passwords
) -> None:
    own = await api.delete(f"/api/admin/enterprises/{seeded.enterprise_id}", headers=ADMIN)
    assert own.status == 409
    await create_user(
        engine,
        passwords=fast_passwords,
        enterprise_id=other,
        role=privileges.USER,
        nick="buser",
        password=PASSWORD,
        name="Bea",
        now=T0,
    )
    populated = await api.delete(f"/api/admin/enterprises/{other}", headers=ADMIN)
    assert populated.status == 409
    assert await _events(engine) == []


async def test_a_tenant_sees_only_its_own(api: Client, seeded: Seeded, other: int) -> None:
    listed = await _json(await api.get("/api/admin/enterprises", headers=VIEWER_A))
    assert [e["id"] for e in listed["collection"]] == [seeded.enterprise_id]
    assert listed["totalSize"] == 1
    own = await api.get(f"/api/admin/enterprises/{seeded.enterprise_id}", headers=VIEWER_A)
    assert own.status == 200
    theirs = await api.get(f"/api/admin/enterprises/{other}", headers=VIEWER_A)
    assert theirs.status == 404
    assert "Other" not in await theirs.text()
    missing = await api.get("/api/admin/enterprises/999999", headers=VIEWER_A)
    assert (await _json(missing))["collection"][0]["code"] == (await _json(theirs))["collection"][
        0
    ]["code"]
    admin_view = await _json(await api.get("/api/admin/enterprises", headers=ADMIN))
    assert {e["name"] for e in admin_view["collection"]} == {"Abiquo", "Other"}


async def test_changes_need_administer_all(api: Client, seeded: Seeded, other: int) -> None:
    ent = f"/api/admin/enterprises/{seeded.enterprise_id}"
    write = {**VIEWER_A, "Content-Type": JSON_ONE}
    assert (await api.put(ent, json={"name": "Mine", "cpuHard": 0}, headers=write)).status == 403
    assert (
        await api.post("/api/admin/enterprises", json={"name": "N"}, headers=write)
    ).status == 403
    assert (await api.delete(f"/api/admin/enterprises/{other}", headers=VIEWER_A)).status == 403
    # A plain user cannot even enumerate.
    assert (await api.get("/api/admin/enterprises", headers=USER)).status == 403


async def test_delete_takes_its_limits_and_releases_its_machines(
    api: Client, other: int, engine: AsyncEngine
) -> None:
    dc_id = await ensure_datacenter(engine, uuid=str(uuid.uuid4()), name="dc", location="")
    async with engine.begin() as conn:
        rack_id = inserted_id(
            await conn.execute(
                tables.rack.insert().values(
                    datacenter_id=dc_id, name="r", vlan_id_min=2, vlan_id_max=4094, created_at=T0
                )
            )
        )
        machine_id = inserted_id(
            await conn.execute(
                tables.machine.insert().values(
                    datacenter_id=dc_id,
                    rack_id=rack_id,
                    name="m",
                    ip="10.0.0.1",
                    type="KVM",
                    state="MANAGED",
                    cpu=8,
                    ram=8192,
                    reserved_enterprise_id=other,
                    created_at=T0,
                )
            )
        )
        await conn.execute(
            tables.enterprise_limit.insert().values(
                enterprise_id=other, datacenter_id=dc_id, cpu_hard=4
            )
        )
    deleted = await api.delete(f"/api/admin/enterprises/{other}", headers=ADMIN)
    assert deleted.status == 204, await deleted.text()
    async with engine.connect() as conn:
        limits = (await conn.execute(select(tables.enterprise_limit))).all()
        reserved = (
            await conn.execute(
                select(tables.machine.c.reserved_enterprise_id).where(
                    tables.machine.c.id == machine_id
                )
            )
        ).scalar_one()
    assert limits == [] and reserved is None
