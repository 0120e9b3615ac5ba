"""/api/admin/roles over HTTP, in JSON and XML, on SQLite and on MariaDB."""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.rows import inserted_id
from abiquo_central.tenants import privileges
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.seed import ensure_enterprise
from abiquo_central.tenants.users import create_user
from tests.central.conftest import ADMIN, T0, USER, Seeded, basic

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.role+json"
XML_ONE = "application/vnd.abiquo.role+xml"
JSON_MANY = "application/vnd.abiquo.roles+json"
PRIVILEGES_JSON = "application/vnd.abiquo.privileges+json"
PASSWORD = "role-secret"
MANAGER = basic("rmanager", PASSWORD)
MANAGER_PRIVILEGES = (
    privileges.USERS_VIEW,
    privileges.USERS_MANAGE_ROLES,
    privileges.VDC_ENUMERATE,
    privileges.VDC_MANAGE,
)


async def _json(response: object) -> dict:  # type: ignore[type-arg]
    return await response.json(content_type=None)  # type: ignore[attr-defined,no-any-return]


def pid(name: str) -> int:
    return privileges.privilege_id(name)


def privilege_links(names: Iterable[str]) -> list[dict[str, str]]:
    return [{"rel": "privilege", "href": f"http://x/api/config/privileges/{pid(n)}"} for n in names]


def enterprise_link(enterprise_id: int) -> dict[str, str]:
    return {"rel": "enterprise", "href": f"http://x/api/admin/enterprises/{enterprise_id}"}


async def make_role(
    engine: AsyncEngine, name: str, granted: Iterable[str], enterprise_id: int | None = None
) -> int:
    """A role straight into the database, for the tests' callers."""
    async with engine.begin() as conn:
        role_id = inserted_id(
            await conn.execute(tables.role.insert().values(name=name, enterprise_id=enterprise_id))
        )
        rows = [{"role_id": role_id, "privilege": p} for p in granted]
        if rows:
            await conn.execute(tables.role_privilege.insert(), rows)
    return role_id


async def role_id_of(engine: AsyncEngine, name: str) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(select(tables.role.c.id).where(tables.role.c.name == name))
            ).scalar_one()
        )


async def _events(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    ev = tables.event
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ev.c.component, ev.c.action, ev.c.target)
            .where(ev.c.action.like("ROLE_%"))
            .order_by(ev.c.id)
        )
        return [(r.component, r.action, r.target) for r in rows]


@pytest.fixture
async def other(engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords) -> int:
    """Enterprise B, and in A a role manager that may not grant everything."""
    b = await ensure_enterprise(engine, "Other", now=T0)
    await make_role(engine, "MANAGER", MANAGER_PRIVILEGES, seeded.enterprise_id)
    await create_user(
        engine,
        passwords=fast_passwords,
        enterprise_id=seeded.enterprise_id,
        role="MANAGER",
        nick="rmanager",
        password=PASSWORD,
        name="Rose",
        now=T0,
    )
    return b


async def test_crud_in_json_records_events(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    created = await api.post(
        "/api/admin/roles",
        json={
            "name": " Operators ",
            "links": [
                *privilege_links([privileges.VDC_ENUMERATE, privileges.VDC_MANAGE]),
                enterprise_link(seeded.enterprise_id),
            ],
        },
        headers={**ADMIN, "Content-Type": JSON_ONE, "Accept": JSON_ONE},
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"] == JSON_ONE
    body = await _json(created)
    role_id = body["id"]
    assert (body["name"], body["blocked"]) == ("Operators", False)
    root = f"{api.make_url('')}/api"
    href = f"{root}/admin/roles/{role_id}"
    assert created.headers["Location"] == href
    links = {link["rel"]: link["href"] for link in body["links"]}
    assert links == {
        "self": href,
        "edit": href,
        "privileges": f"{href}/action/privileges",
        "enterprise": f"{root}/admin/enterprises/{seeded.enterprise_id}",
    }
    assert await _json(await api.get(f"/api/admin/roles/{role_id}", headers=ADMIN)) == body

    held = await api.get(f"/api/admin/roles/{role_id}/action/privileges", headers=ADMIN)
    assert held.headers["Content-Type"] == PRIVILEGES_JSON
    assert [p["name"] for p in (await _json(held))["collection"]] == [
        privileges.VDC_ENUMERATE,
        privileges.VDC_MANAGE,
    ]

    # PUT replaces the privileges and, without an enterprise link, makes the role global.
    put = await api.put(
        f"/api/admin/roles/{role_id}",
        json={"name": "Operators 2", "links": privilege_links([privileges.APPLIB_VIEW])},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert put.status == 200, await put.text()
    changed = await _json(put)
    assert changed["name"] == "Operators 2"
    assert "enterprise" not in {link["rel"] for link in changed["links"]}
    held = await api.get(f"/api/admin/roles/{role_id}/action/privileges", headers=ADMIN)
    assert [p["id"] for p in (await _json(held))["collection"]] == [pid(privileges.APPLIB_VIEW)]

    listed = await api.get("/api/admin/roles", params={"has": "rators"}, headers=ADMIN)
    assert listed.headers["Content-Type"] == JSON_MANY
    page = await _json(listed)
    assert page["totalSize"] == 1 and page["collection"][0]["id"] == role_id

    assert (await api.delete(f"/api/admin/roles/{role_id}", headers=ADMIN)).status == 204
    assert (await api.get(f"/api/admin/roles/{role_id}", headers=ADMIN)).status == 404
    target = f"/admin/roles/{role_id}"
    assert await _events(engine) == [
        ("USER", "ROLE_CREATED", target),
        ("USER", "ROLE_MODIFIED", target),
        ("USER", "ROLE_DELETED", target),
    ]


async def test_create_and_read_in_xml(api: Client, seeded: Seeded) -> None:
    xml = (
        "<role><name>Xml role</name>"
        f'<link rel="privilege" href="http://x/api/config/privileges/{pid(privileges.APPLIB_VIEW)}"/>'
        f'<link rel="enterprise" href="http://x/api/admin/enterprises/{seeded.enterprise_id}"/>'
        "</role>"
    ).encode()
    created = await api.post(
        "/api/admin/roles", data=xml, headers={**ADMIN, "Content-Type": XML_ONE, "Accept": XML_ONE}
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"] == XML_ONE
    root = ET.fromstring(await created.text())
    assert root.tag == "role"
    assert (root.findtext("name"), root.findtext("blocked")) == ("Xml role", "false")
    rels = {link.get("rel") for link in root.iter("link")}
    assert rels == {"self", "edit", "privileges", "enterprise"}
    role_id = root.findtext("id")
    held = await api.get(
        f"/api/admin/roles/{role_id}/action/privileges",
        headers={**ADMIN, "Accept": "application/vnd.abiquo.privileges+xml"},
    )
    tree = ET.fromstring(await held.text())
    assert tree.tag == "privileges"
    assert [p.findtext("name") for p in tree.iter("privilege")] == [privileges.APPLIB_VIEW]
    listed = await api.get(
        "/api/admin/roles", headers={**ADMIN, "Accept": "application/vnd.abiquo.roles+xml"}
    )
    names = {r.findtext("name") for r in ET.fromstring(await listed.text()).iter("role")}
    assert names == {"CLOUD_ADMIN", "ENTERPRISE_ADMIN", "USER", "Xml role"}


async def test_cloud_admin_is_blocked(api: Client, engine: AsyncEngine) -> None:
    role_id = await role_id_of(engine, privileges.CLOUD_ADMIN)
    body = await _json(await api.get(f"/api/admin/roles/{role_id}", headers=ADMIN))
    assert body["blocked"] is True
    put = await api.put(
        f"/api/admin/roles/{role_id}",
        json={"name": "CLOUD_ADMIN", "links": privilege_links(privileges.ALL)},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert put.status == 409
    assert (await _json(put))["collection"][0]["code"] == "ROLE-2"
    deleted = await api.delete(f"/api/admin/roles/{role_id}", headers=ADMIN)
    assert deleted.status == 409
    assert (await _json(deleted))["collection"][0]["code"] == "ROLE-2"


async def test_a_role_in_use_is_not_deleted(api: Client, engine: AsyncEngine) -> None:
    role_id = await role_id_of(engine, privileges.USER)  # jdoe holds it
    deleted = await api.delete(f"/api/admin/roles/{role_id}", headers=ADMIN)
    assert deleted.status == 409
    assert (await _json(deleted))["collection"][0]["code"] == "ROLE-3"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "USER"}, 409, "ROLE-1"),
        ({"name": "  "}, 400, "ROLE-4"),
        ({"name": "x" * 65}, 400, "ROLE-4"),
        ({"links": []}, 400, "GEN-1"),
        (
            {"name": "r", "links": [{"rel": "privilege", "href": "/api/config/privileges/99"}]},
            400,
            "GEN-10",
        ),
        (
            {"name": "r", "links": [{"rel": "privilege", "href": "/api/admin/roles/1"}]},
            400,
            "GEN-10",
        ),
        (
            {"name": "r", "links": [{"rel": "enterprise", "href": "/api/admin/enterprises/x"}]},
            400,
            "GEN-10",
        ),
        (
            {"name": "r", "links": [{"rel": "enterprise", "href": "/api/admin/enterprises/999"}]},
            400,
            "ROLE-4",
        ),
    ],
)
async def test_bad_bodies_and_duplicates(
    api: Client, body: dict[str, object], status: int, code: str
) -> None:
    response = await api.post(
        "/api/admin/roles", json=body, headers={**ADMIN, "Content-Type": JSON_ONE}
    )
    assert response.status == status, await response.text()
    assert (await _json(response))["collection"][0]["code"] == code


async def test_who_may_change_which_role(
    api: Client, engine: AsyncEngine, seeded: Seeded, other: int
) -> None:
    headers = {**MANAGER, "Content-Type": JSON_ONE}
    own = enterprise_link(seeded.enterprise_id)

    async def post(name: str, links: list[dict[str, str]]) -> int:
        response = await api.post(
            "/api/admin/roles", json={"name": name, "links": links}, headers=headers
        )
        return response.status

    # Its own enterprise's role, with privileges it holds: yes.
    assert await post("mine", [*privilege_links([privileges.VDC_ENUMERATE]), own]) == 201
    # A privilege it does not hold, a global role, another enterprise's role: no.
    assert await post("up", [*privilege_links([privileges.PHYS_DC_MANAGE]), own]) == 403
    assert await post("global", privilege_links([privileges.VDC_ENUMERATE])) == 403
    assert await post("theirs", [enterprise_link(other)]) == 403
    user_role = await role_id_of(engine, privileges.USER)
    put = await api.put(f"/api/admin/roles/{user_role}", json={"name": "USER"}, headers=headers)
    assert put.status == 403

    # Adding a privilege it lacks to its own role is granting it.
    mine = await role_id_of(engine, "mine")
    put = await api.put(
        f"/api/admin/roles/{mine}",
        json={"name": "mine", "links": [*privilege_links([privileges.PRICING_MANAGE]), own]},
        headers=headers,
    )
    assert put.status == 403
    put = await api.put(
        f"/api/admin/roles/{mine}",
        json={"name": "mine", "links": [*privilege_links([privileges.VDC_MANAGE]), own]},
        headers=headers,
    )
    assert put.status == 200

    # Another enterprise's role is not there for it.
    theirs = await make_role(engine, "theirs", [], other)
    assert (await api.get(f"/api/admin/roles/{theirs}", headers=MANAGER)).status == 404
    assert (
        await api.get(f"/api/admin/roles/{theirs}/action/privileges", headers=MANAGER)
    ).status == 404
    assert (await api.delete(f"/api/admin/roles/{theirs}", headers=MANAGER)).status == 404
    listed = await _json(await api.get("/api/admin/roles", headers=MANAGER))
    assert {r["name"] for r in listed["collection"]} == {
        "CLOUD_ADMIN",
        "ENTERPRISE_ADMIN",
        "USER",
        "MANAGER",
        "mine",
    }
    everything = await _json(await api.get("/api/admin/roles", headers=ADMIN))
    assert "theirs" in {r["name"] for r in everything["collection"]}
    only_b = await _json(
        await api.get("/api/admin/roles", params={"identerprise": str(other)}, headers=ADMIN)
    )
    assert {r["name"] for r in only_b["collection"]} == {
        "CLOUD_ADMIN",
        "ENTERPRISE_ADMIN",
        "USER",
        "theirs",
    }
    assert (await api.delete(f"/api/admin/roles/{mine}", headers=MANAGER)).status == 204


async def test_users_without_the_privileges_are_refused(api: Client) -> None:
    assert (await api.get("/api/admin/roles", headers=USER)).status == 403
    response = await api.post(
        "/api/admin/roles", json={"name": "x"}, headers={**USER, "Content-Type": JSON_ONE}
    )
    assert response.status == 403
    bad = await api.get("/api/admin/roles", params={"identerprise": "x"}, headers=ADMIN)
    assert bad.status == 400


async def test_a_role_of_one_enterprise_is_for_its_users_only(
    api: Client, engine: AsyncEngine, seeded: Seeded, other: int
) -> None:
    shared = await make_role(engine, "shared", [privileges.VDC_ENUMERATE])
    user = tables.user
    async with engine.begin() as conn:
        await conn.execute(user.update().where(user.c.id == seeded.user_id).values(role_id=shared))
    put = await api.put(
        f"/api/admin/roles/{shared}",
        json={"name": "shared", "links": [enterprise_link(other)]},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert put.status == 409
    assert (await _json(put))["collection"][0]["code"] == "ROLE-5"
