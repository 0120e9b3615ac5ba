"""Enterprise A's users against enterprise B: every route, every method, nothing of B.

B gets one of everything a tenant owns (its enterprise, a role of its own, a user, limits
in a datacenter only B may use, a machine reserved for it, events), each named with a
marker. Then every operation of the OpenAPI document — which lists every route the API
serves — is called as users of A: a tenant administrator holding every privilege that
does not reach beyond its own enterprise, and a plain USER. Path parameters name B's
objects; request bodies are B's own representations (as the cloud administrator reads
them). Every call that names something of B answers 403 or 404; no answer, whatever its
status, holds B's marker or a link to B; and B is the same afterwards.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.rows import inserted_id
from abiquo_central.tenants import privileges
from tests.central.conftest import ADMIN, T0, basic

Client = TestClient[web.Request, web.Application]

MARK = "zq9bravo"
PASSWORD = "tenant-secret"
ALICE = basic("alice", PASSWORD)
ANN = basic("ann", PASSWORD)

# What reaches beyond one's own enterprise, or is the platform's rather than a tenant's.
WIDENING = {
    privileges.ENTERPRISE_ADMINISTER_ALL,
    privileges.USERS_MANAGE_OTHER_ENTERPRISES,
    privileges.USERS_MANAGE_ROLES_OTHER_ENTERPRISES,
    privileges.USERS_MANAGE_SYSTEM_ROLES,
    privileges.EVENTLOG_VIEW_ALL,
    privileges.SYSCONFIG_ALLOW_MODIFY,
    *(p for p in privileges.ALL if p.startswith("PHYS_DC_")),
}


def vendor(name: str) -> dict[str, str]:
    media = f"application/vnd.abiquo.{name}+json"
    return {"Accept": media, "Content-Type": media}


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


async def _post(api: Client, path: str, media: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(path, json=body, headers={**ADMIN, **vendor(media)})
    assert response.status == 201, (path, await response.text())
    return dict(await _json(response))


def _href(api: Client, path: str) -> str:
    return f"{api.make_url('')}/api{path}"


class World:
    """The ids of what A and B hold."""

    a: int
    b: int
    b_role: int
    b_user: int
    b_limit: int
    b_event: int
    dc: int
    rack: int
    machine: int
    datastore: int
    template: int
    vdc: int
    network: int
    ip: int
    vapp: int
    vm: int


@pytest.fixture
async def world(api: Client, engine: AsyncEngine) -> World:
    w = World()
    ids = {p["name"]: p["id"] for p in (await _privileges(api))}

    def privilege_links(names: list[str]) -> list[dict[str, str]]:
        return [
            {"rel": "privilege", "href": _href(api, f"/config/privileges/{ids[n]}")} for n in names
        ]

    w.a = (await _post(api, "/api/admin/enterprises", "enterprise", {"name": "Alpha"}))["id"]
    w.b = (await _post(api, "/api/admin/enterprises", "enterprise", {"name": f"Bravo {MARK}"}))[
        "id"
    ]
    tenant = sorted(set(privileges.ALL) - WIDENING)
    a_role = await _post(
        api,
        "/api/admin/roles",
        "role",
        {
            "name": "alpha-tenant-admin",
            "links": [
                {"rel": "enterprise", "href": _href(api, f"/admin/enterprises/{w.a}")},
                *privilege_links(tenant),
            ],
        },
    )
    w.b_role = (
        await _post(
            api,
            "/api/admin/roles",
            "role",
            {
                "name": f"role-{MARK}",
                "links": [
                    {"rel": "enterprise", "href": _href(api, f"/admin/enterprises/{w.b}")},
                    *privilege_links(list(privileges.ENTERPRISE_ADMIN_PRIVILEGES)),
                ],
            },
        )
    )["id"]
    roles = {
        r["name"]: r["id"]
        for r in (
            await _json(await api.get("/api/admin/roles", params={"limit": "100"}, headers=ADMIN))
        )["collection"]
    }

    async def user(ent: int, nick: str, role: int, **fields: str) -> int:
        body = {
            "nick": nick,
            "name": fields.get("name", nick),
            "password": PASSWORD,
            "email": fields.get("email", ""),
            "links": [{"rel": "role", "href": _href(api, f"/admin/roles/{role}")}],
        }
        made = await _post(api, f"/api/admin/enterprises/{ent}/users", "user", body)
        return int(made["id"])

    await user(w.a, "alice", a_role["id"])
    await user(w.a, "ann", roles[privileges.USER])
    w.b_user = await user(
        w.b, f"bob-{MARK}", roles[privileges.ENTERPRISE_ADMIN], email=f"bob@{MARK}.example"
    )
    # Something B's own administrator did: an event of B's.
    bob = basic(f"bob-{MARK}", PASSWORD)
    made = await api.post(
        f"/api/admin/enterprises/{w.b}/users",
        json={
            "nick": f"carol-{MARK}",
            "name": "Carol",
            "password": PASSWORD,
            "links": [
                {"rel": "role", "href": _href(api, f"/admin/roles/{roles[privileges.USER]}")}
            ],
        },
        headers={**bob, **vendor("user")},
    )
    assert made.status == 201, await made.text()
    events = await _json(
        await api.get("/api/events", params={"enterprise": str(w.b)}, headers=ADMIN)
    )
    w.b_event = events["collection"][0]["id"]

    # Infrastructure: a datacenter only B may use, a rack, a machine reserved for B.
    w.dc = (
        await _post(
            api, "/api/admin/datacenters", "datacenter", {"name": f"dc-{MARK}", "location": MARK}
        )
    )["id"]
    w.rack = (
        await _post(api, f"/api/admin/datacenters/{w.dc}/racks", "rack", {"name": f"r-{MARK}"})
    )["id"]
    async with engine.begin() as conn:
        w.machine = inserted_id(
            await conn.execute(
                tables.machine.insert().values(
                    datacenter_id=w.dc,
                    rack_id=w.rack,
                    name=f"m-{MARK}",
                    ip="10.9.9.9",
                    type="KVM",
                    state="MANAGED",
                    cpu=8,
                    ram=8192,
                    created_at=T0,
                )
            )
        )
        w.datastore = inserted_id(
            await conn.execute(
                tables.datastore.insert().values(
                    machine_id=w.machine, name=f"ds-{MARK}", root_path="/v", size=1, enabled=True
                )
            )
        )
    machine_href = _href(api, f"/admin/datacenters/{w.dc}/racks/{w.rack}/machines/{w.machine}")
    await _post(
        api,
        f"/api/admin/enterprises/{w.b}/reservedmachines",
        "machine",
        {"links": [{"rel": "machine", "href": machine_href}]},
    )
    w.b_limit = (
        await _post(
            api,
            f"/api/admin/enterprises/{w.b}/limits",
            "limit",
            {
                "cpuHard": 7,
                "links": [{"rel": "location", "href": _href(api, f"/admin/datacenters/{w.dc}")}],
            },
        )
    )["id"]
    # B's cloud: a template, a VDC with its network and addresses, an appliance, a VM.
    async with engine.begin() as conn:
        w.template = inserted_id(
            await conn.execute(
                tables.virtual_machine_template.insert().values(
                    enterprise_id=w.b,
                    datacenter_id=w.dc,
                    ovf_id=f"http://repo/{MARK}.ovf",
                    ovf_key=MARK,
                    name=f"t-{MARK}",
                    state="DOWNLOAD",
                    created_at=T0,
                )
            )
        )
    vdc = await _post(
        api,
        "/api/cloud/virtualdatacenters",
        "virtualdatacenter",
        {
            "name": f"vdc-{MARK}",
            "hypervisorType": "KVM",
            "network": {
                "name": f"net-{MARK}",
                "address": "10.77.0.0",
                "mask": 29,
                "gateway": "10.77.0.1",
            },
            "links": [
                {"rel": "location", "href": _href(api, f"/admin/datacenters/{w.dc}")},
                {"rel": "enterprise", "href": _href(api, f"/admin/enterprises/{w.b}")},
            ],
        },
    )
    w.vdc = vdc["id"]
    async with engine.connect() as conn:
        w.network, w.ip = (
            await conn.execute(
                select(tables.vlan.c.id, tables.ip.c.id)
                .join(tables.ip, tables.ip.c.vlan_id == tables.vlan.c.id)
                .where(tables.vlan.c.vdc_id == w.vdc)
                .limit(1)
            )
        ).one()
    w.vapp = (
        await _post(
            api,
            f"/api/cloud/virtualdatacenters/{w.vdc}/virtualappliances",
            "virtualappliance",
            {"name": f"va-{MARK}"},
        )
    )["id"]
    template_href = _href(
        api,
        f"/admin/enterprises/{w.b}/datacenterrepositories/{w.dc}"
        f"/virtualmachinetemplates/{w.template}",
    )
    w.vm = (
        await _post(
            api,
            f"/api/cloud/virtualdatacenters/{w.vdc}/virtualappliances/{w.vapp}/virtualmachines",
            "virtualmachine",
            {
                "label": f"vm-{MARK}",
                "links": [{"rel": "virtualmachinetemplate", "href": template_href}],
            },
        )
    )["id"]
    return w


async def _privileges(api: Client) -> list[dict[str, Any]]:
    body = await _json(
        await api.get("/api/config/privileges", params={"limit": "100"}, headers=ADMIN)
    )
    return list(body["collection"])


def _fill(path: str, w: World) -> tuple[str, bool]:
    """The path with B's objects in it, and whether it names anything of B."""
    owned = False
    values = {
        "enterprises": w.b,
        "users": w.b_user,
        "roles": w.b_role,
        "limits": w.b_limit,
        "events": w.b_event,
        "reservedmachines": w.machine,
        "datacenters": w.dc,
        "racks": w.rack,
        "machines": w.machine,
        "datastores": w.datastore,
        "locations": w.dc,
        "remoteservices": "VIRTUAL_FACTORY",
        "categories": 1,
        "properties": "client.main.billingUrl",
        "privileges": 1,
        "hypervisortypes": 1,
        "diskformattypes": 1,
        "virtualdatacenters": w.vdc,
        "privatenetworks": w.network,
        "ips": w.ip,
        "virtualappliances": w.vapp,
        "virtualmachines": w.vm,
        "tasks": "00000000-0000-4000-8000-000000000000",
        "datacenterrepositories": w.dc,
        "virtualmachinetemplates": w.template,
        "conversions": "RAW",
    }
    # Infrastructure is B's too here: its datacenter is one only B may use.
    b_owned = {
        "enterprises",
        "users",
        "roles",
        "limits",
        "events",
        "reservedmachines",
        "datacenters",
        "racks",
        "machines",
        "datastores",
        "locations",
        "remoteservices",
        "virtualdatacenters",
        "privatenetworks",
        "ips",
        "virtualappliances",
        "virtualmachines",
        "tasks",
        "datacenterrepositories",
        "virtualmachinetemplates",
        "conversions",
    }
    segments = path.strip("/").split("/")
    for i, segment in enumerate(segments):
        if segment.startswith("{"):
            collection = segments[i - 1]
            segments[i] = str(values[collection])
            owned = owned or collection in b_owned
    return "/" + "/".join(segments), owned


def _b_links(api: Client, w: World) -> re.Pattern[str]:
    """Hrefs that point at B's enterprise, user, role or limit."""
    return re.compile(
        "|".join(
            re.escape(_href(api, p)) + r"(?![0-9])"
            for p in (
                f"/admin/enterprises/{w.b}",
                f"/admin/roles/{w.b_role}",
            )
        )
    )


async def _snapshot(api: Client, w: World) -> dict[str, Any]:
    """B as the cloud administrator reads it."""
    paths = [
        f"/api/admin/enterprises/{w.b}",
        f"/api/admin/enterprises/{w.b}/users",
        f"/api/admin/roles/{w.b_role}",
        f"/api/admin/roles/{w.b_role}/action/privileges",
        f"/api/admin/enterprises/{w.b}/limits",
        f"/api/admin/enterprises/{w.b}/reservedmachines",
        f"/api/admin/datacenters/{w.dc}",
        f"/api/admin/datacenters/{w.dc}/racks/{w.rack}/machines/{w.machine}",
    ]
    found = {}
    for path in paths:
        response = await api.get(path, headers=ADMIN)
        assert response.status == 200, path
        found[path] = await _json(response)
    return found


async def _bodies(api: Client, path: str, method: str) -> Any:
    """B's own representation of what `path` names (or of an item of the collection it
    names), as the request body of a mutating call."""
    if method not in ("POST", "PUT"):
        return None
    response = await api.get(path, headers=ADMIN)
    if response.status != 200:
        return {}
    body = await _json(response)
    if isinstance(body, dict) and "collection" in body:
        items = body["collection"]
        of_b = [item for item in items if MARK in str(item)]
        return (of_b or items or [{}])[0]
    return body


async def _operations(api: Client) -> list[tuple[str, str]]:
    document = await _json(await api.get("/api/openapi.json"))
    return [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "delete")
    ]


@pytest.mark.parametrize("caller", ["tenant-admin", "user"])
async def test_a_tenant_reaches_nothing_of_another(api: Client, world: World, caller: str) -> None:
    w = world
    headers = ALICE if caller == "tenant-admin" else ANN
    before = await _snapshot(api, w)
    b_links = _b_links(api, w)
    operations = await _operations(api)
    assert len(operations) > 60
    leaks: list[str] = []
    # Every enterprise's users, as `_` asks: only A's may come back.
    operations.append(("GET", "/admin/enterprises/_/users"))
    for method, template in operations:
        path, owned = _fill(template, w)
        url = f"/api{path}"
        body = await _bodies(api, url, method)
        names_b = owned or (body is not None and MARK in str(body))
        response = await api.request(
            method,
            url,
            json=body,
            headers={**headers, "Accept": "*/*", "Content-Type": "application/json"}
            if body is not None
            else {**headers, "Accept": "*/*"},
        )
        text = await response.text()
        if names_b and response.status not in (403, 404):
            leaks.append(f"{method} {template}: {response.status} {text[:200]}")
        if MARK in text.lower() or b_links.search(text):
            leaks.append(f"{method} {template}: B's data in a {response.status} answer")
        if response.status >= 500:
            leaks.append(f"{method} {template}: {response.status}")
    assert leaks == []
    assert await _snapshot(api, w) == before
