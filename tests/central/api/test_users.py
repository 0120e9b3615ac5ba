"""/api/admin/enterprises/{ent}/users over HTTP, in JSON and XML, on SQLite and MariaDB."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tenants import privileges
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.seed import ensure_enterprise
from abiquo_central.tenants.users import create_user
from tests.central.api.test_roles import make_role, role_id_of
from tests.central.conftest import ADMIN, T0, USER, USER_PASSWORD, Seeded, basic

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.user+json"
XML_ONE = "application/vnd.abiquo.user+xml"
JSON_MANY = "application/vnd.abiquo.users+json"
PASSWORD = "users-secret"
ENT_ADMIN = basic("entadmin", PASSWORD)
VIEWER = basic("viewer", PASSWORD)
OUTSIDER = basic("outsider", PASSWORD)


async def _json(response: object) -> dict:  # type: ignore[type-arg]
    return await response.json(content_type=None)  # type: ignore[attr-defined,no-any-return]


def role_link(role_id: int) -> dict[str, str]:
    return {"rel": "role", "href": f"http://x/api/admin/roles/{role_id}"}


async def _events(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    ev = tables.event
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ev.c.component, ev.c.action, ev.c.target)
            .where(ev.c.action.in_(["USER_CREATE", "USER_MODIFY", "USER_DELETE"]))
            .order_by(ev.c.id)
        )
        return [(r.component, r.action, r.target) for r in rows]


async def _user_id(engine: AsyncEngine, nick: str) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(select(tables.user.c.id).where(tables.user.c.nick == nick))
            ).scalar_one()
        )


@pytest.fixture
async def other(engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords) -> int:
    """Enterprise B with a user; in A an enterprise administrator and a viewer (a role
    with USERS_VIEW alone)."""
    b = await ensure_enterprise(engine, "Other", now=T0)
    await make_role(engine, "VIEWER", [privileges.USERS_VIEW])
    for nick, role, enterprise_id in [
        ("entadmin", privileges.ENTERPRISE_ADMIN, seeded.enterprise_id),
        ("viewer", "VIEWER", seeded.enterprise_id),
        ("outsider", privileges.USER, b),
    ]:
        await create_user(
            engine,
            passwords=fast_passwords,
            enterprise_id=enterprise_id,
            role=role,
            nick=nick,
            password=PASSWORD,
            name=nick.title(),
            now=T0,
        )
    return b


async def test_crud_in_json_records_events(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    ent = seeded.enterprise_id
    user_role = await role_id_of(engine, privileges.USER)
    created = await api.post(
        f"/api/admin/enterprises/{ent}/users",
        json={
            "name": "Bob",
            "surname": "Builder",
            "nick": " bob ",
            "password": "bob-secret",
            "email": "bob@example.com",
            "locale": "es_ES",
            "availableVirtualDatacenters": "3, 1,3",
            "links": [role_link(user_role)],
        },
        headers={**ADMIN, "Content-Type": JSON_ONE, "Accept": JSON_ONE},
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"] == JSON_ONE
    body = await _json(created)
    user_id = body["id"]
    assert "password" not in body
    assert {k: v for k, v in body.items() if k not in ("id", "links")} == {
        "name": "Bob",
        "surname": "Builder",
        "nick": "bob",
        "email": "bob@example.com",
        "locale": "es_ES",
        "active": True,
        "authType": "ABIQUO",
        "availableVirtualDatacenters": "1,3",
    }
    root = f"{api.make_url('')}/api"
    href = f"{root}/admin/enterprises/{ent}/users/{user_id}"
    assert created.headers["Location"] == href
    assert {link["rel"]: link["href"] for link in body["links"]} == {
        "self": href,
        "edit": href,
        "enterprise": f"{root}/admin/enterprises/{ent}",
        "role": f"{root}/admin/roles/{user_role}",
    }
    assert (
        await _json(await api.get(f"/api/admin/enterprises/{ent}/users/{user_id}", headers=ADMIN))
        == body
    )
    # The password works.
    assert (await api.get("/api/login", headers=basic("bob", "bob-secret"))).status == 200

    # A PUT without a password or a role link keeps them.
    body.update(name="Robert", availableVirtualDatacenters="")
    body["links"] = []
    put = await api.put(
        f"/api/admin/enterprises/{ent}/users/{user_id}",
        json=body,
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert put.status == 200, await put.text()
    changed = await _json(put)
    assert (changed["name"], changed["availableVirtualDatacenters"]) == ("Robert", "")
    assert {link["rel"]: link["href"] for link in changed["links"]}["role"].endswith(
        f"/admin/roles/{user_role}"
    )
    assert (await api.get("/api/login", headers=basic("bob", "bob-secret"))).status == 200

    listed = await api.get(
        f"/api/admin/enterprises/{ent}/users", params={"has": "builder"}, headers=ADMIN
    )
    assert listed.headers["Content-Type"] == JSON_MANY
    page = await _json(listed)
    assert page["totalSize"] == 1 and page["collection"][0]["id"] == user_id
    for has in ("rob", "bob", "example.com"):
        found = await _json(
            await api.get(f"/api/admin/enterprises/{ent}/users", params={"has": has}, headers=ADMIN)
        )
        assert [u["id"] for u in found["collection"]] == [user_id], has

    deleted = await api.delete(f"/api/admin/enterprises/{ent}/users/{user_id}", headers=ADMIN)
    assert deleted.status == 204
    gone = await api.get(f"/api/admin/enterprises/{ent}/users/{user_id}", headers=ADMIN)
    assert gone.status == 404
    target = f"/admin/enterprises/{ent}/users/{user_id}"
    assert await _events(engine) == [
        ("USER", "USER_CREATE", target),
        ("USER", "USER_MODIFY", target),
        ("USER", "USER_DELETE", target),
    ]


async def test_create_and_read_in_xml(api: Client, engine: AsyncEngine, seeded: Seeded) -> None:
    user_role = await role_id_of(engine, privileges.USER)
    xml = (
        "<user><name>Xena</name><nick>xena</nick><password>x-secret</password>"
        "<authType>LDAP</authType><availableVirtualDatacenters>7</availableVirtualDatacenters>"
        f'<link rel="role" href="http://x/api/admin/roles/{user_role}"/></user>'
    ).encode()
    url = f"/api/admin/enterprises/{seeded.enterprise_id}/users"
    created = await api.post(
        url, data=xml, headers={**ADMIN, "Content-Type": XML_ONE, "Accept": XML_ONE}
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"] == XML_ONE
    root = ET.fromstring(await created.text())
    assert root.tag == "user"
    assert root.find("password") is None
    assert (root.findtext("nick"), root.findtext("authType")) == ("xena", "LDAP")
    assert root.findtext("availableVirtualDatacenters") == "7"
    assert {link.get("rel") for link in root.iter("link")} == {"self", "edit", "enterprise", "role"}
    listed = await api.get(url, headers={**ADMIN, "Accept": "application/vnd.abiquo.users+xml"})
    tree = ET.fromstring(await listed.text())
    assert tree.tag == "users"
    assert {u.findtext("nick") for u in tree.iter("user")} == {"admin", "jdoe", "xena"}


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"nick": "jdoe"}, 409, "USER-1"),
        ({"nick": "two words"}, 400, "USER-2"),
        ({"nick": "a:b"}, 400, "USER-2"),
        ({"name": " "}, 400, "USER-2"),
        ({"email": "nope"}, 400, "USER-2"),
        ({"locale": "not a locale"}, 400, "USER-2"),
        ({"authType": "KERBEROS"}, 400, "USER-2"),
        ({"availableVirtualDatacenters": "1,x"}, 400, "USER-2"),
        ({"availableVirtualDatacenters": "0"}, 400, "USER-2"),
        ({"availableVirtualDatacenters": "-1"}, 400, "USER-2"),
        ({"password": None}, 400, "USER-2"),
        ({"links": []}, 400, "USER-2"),
        ({"links": [{"rel": "role", "href": "http://x/api/admin/roles/zz"}]}, 400, "GEN-10"),
        ({"links": [{"rel": "role", "href": "http://x/api/admin/roles/999"}]}, 400, "USER-4"),
    ],
)
async def test_bad_bodies_and_duplicates(
    api: Client,
    engine: AsyncEngine,
    seeded: Seeded,
    change: dict[str, object],
    status: int,
    code: str,
) -> None:
    user_role = await role_id_of(engine, privileges.USER)
    body = {"name": "N", "nick": "new", "password": "p", "links": [role_link(user_role)]}
    body.update(change)
    response = await api.post(
        f"/api/admin/enterprises/{seeded.enterprise_id}/users",
        json=body,
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert response.status == status, await response.text()
    assert (await _json(response))["collection"][0]["code"] == code


async def test_another_enterprises_role_cannot_be_given(
    api: Client, engine: AsyncEngine, seeded: Seeded, other: int
) -> None:
    theirs = await make_role(engine, "theirs", [], other)
    response = await api.post(
        f"/api/admin/enterprises/{seeded.enterprise_id}/users",
        json={"name": "N", "nick": "new", "password": "p", "links": [role_link(theirs)]},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert response.status == 400
    assert (await _json(response))["collection"][0]["code"] == "USER-4"
    # In B it is fine.
    response = await api.post(
        f"/api/admin/enterprises/{other}/users",
        json={"name": "N", "nick": "new", "password": "p", "links": [role_link(theirs)]},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert response.status == 201


async def test_no_escalation_through_users(
    api: Client, engine: AsyncEngine, seeded: Seeded, other: int
) -> None:
    ent = seeded.enterprise_id
    headers = {**ENT_ADMIN, "Content-Type": JSON_ONE}
    cloud_admin = await role_id_of(engine, privileges.CLOUD_ADMIN)
    user_role = await role_id_of(engine, privileges.USER)
    made = await api.post(
        f"/api/admin/enterprises/{ent}/users",
        json={"name": "Up", "nick": "up", "password": "p", "links": [role_link(cloud_admin)]},
        headers=headers,
    )
    assert made.status == 403
    made = await api.post(
        f"/api/admin/enterprises/{ent}/users",
        json={"name": "Ok", "nick": "ok", "password": "p", "links": [role_link(user_role)]},
        headers=headers,
    )
    assert made.status == 201
    ok = (await _json(made))["id"]
    # Promoting a user, or changing a cloud administrator of its enterprise: no.
    put = await api.put(
        f"/api/admin/enterprises/{ent}/users/{ok}",
        json={"name": "Ok", "nick": "ok", "links": [role_link(cloud_admin)]},
        headers=headers,
    )
    assert put.status == 403
    admin_id = await _user_id(engine, "admin")
    put = await api.put(
        f"/api/admin/enterprises/{ent}/users/{admin_id}",
        json={"name": "Owned", "nick": "admin", "password": "mine now"},
        headers=headers,
    )
    assert put.status == 403
    deleted = await api.delete(f"/api/admin/enterprises/{ent}/users/{admin_id}", headers=ENT_ADMIN)
    assert deleted.status == 403
    assert (await api.get("/api/login", headers=ADMIN)).status == 200
    # A user without USERS_MANAGE_USERS manages nobody.
    assert (
        await api.post(f"/api/admin/enterprises/{ent}/users", json={}, headers=VIEWER)
    ).status == 403
    assert (
        await api.delete(f"/api/admin/enterprises/{ent}/users/{ok}", headers=VIEWER)
    ).status == 403
    put = await api.put(
        f"/api/admin/enterprises/{ent}/users/{ok}",
        json={"name": "Changed", "nick": "ok"},
        headers={**VIEWER, "Content-Type": JSON_ONE},
    )
    assert put.status == 403


async def test_other_enterprises_and_the_any_enterprise_listing(
    api: Client, engine: AsyncEngine, seeded: Seeded, other: int
) -> None:
    outsider = await _user_id(engine, "outsider")
    # The enterprise administrator of A does not see B's users.
    assert (await api.get(f"/api/admin/enterprises/{other}/users", headers=ENT_ADMIN)).status == 404
    assert (
        await api.get(f"/api/admin/enterprises/{other}/users/{outsider}", headers=ENT_ADMIN)
    ).status == 404
    put = await api.put(
        f"/api/admin/enterprises/{other}/users/{outsider}",
        json={"name": "x", "nick": "outsider"},
        headers={**ENT_ADMIN, "Content-Type": JSON_ONE},
    )
    assert put.status == 404
    assert (
        await api.delete(f"/api/admin/enterprises/{other}/users/{outsider}", headers=ENT_ADMIN)
    ).status == 404
    # Nor through the wrong enterprise in the path.
    assert (
        await api.get(
            f"/api/admin/enterprises/{seeded.enterprise_id}/users/{outsider}", headers=ADMIN
        )
    ).status == 404
    assert (await api.get("/api/admin/enterprises/999/users", headers=ADMIN)).status == 404

    mine = await _json(await api.get("/api/admin/enterprises/_/users", headers=ENT_ADMIN))
    assert {u["nick"] for u in mine["collection"]} == {"admin", "jdoe", "entadmin", "viewer"}
    every = await _json(
        await api.get("/api/admin/enterprises/_/users", params={"by": "id"}, headers=ADMIN)
    )
    assert {u["nick"] for u in every["collection"]} == {
        "admin",
        "jdoe",
        "entadmin",
        "viewer",
        "outsider",
    }
    page = await _json(
        await api.get(
            "/api/admin/enterprises/_/users",
            params={"by": "nick", "asc": "false", "limit": "2", "startwith": "1"},
            headers=ADMIN,
        )
    )
    assert page["totalSize"] == 5
    assert [u["nick"] for u in page["collection"]] == ["outsider", "jdoe"]
    assert {link["rel"] for link in page["links"]} == {"first", "previous", "next", "last"}
    got = await api.get(f"/api/admin/enterprises/{other}/users/{outsider}", headers=ADMIN)
    assert got.status == 200
    assert (await api.get("/api/admin/enterprises/_/users", headers=USER)).status == 403
    assert (
        await api.get("/api/admin/enterprises/_/users", params={"by": "password"}, headers=ADMIN)
    ).status == 400
    assert (await api.post("/api/admin/enterprises/_/users", json={}, headers=ADMIN)).status == 405


async def test_a_user_edits_itself_but_not_its_role_nor_its_restrictions(
    api: Client, engine: AsyncEngine, seeded: Seeded, other: int
) -> None:
    ent = seeded.enterprise_id
    viewer = await _user_id(engine, "viewer")
    url = f"/api/admin/enterprises/{ent}/users/{viewer}"
    headers = {**VIEWER, "Content-Type": JSON_ONE}
    me = await _json(await api.get(url, headers=VIEWER))
    me.update(name="Vera", email="vera@example.com", locale="fr_FR", password="new-secret")
    put = await api.put(url, json=me, headers=headers)
    assert put.status == 200, await put.text()
    assert (await _json(put))["name"] == "Vera"
    assert (await api.get("/api/login", headers=basic("viewer", "new-secret"))).status == 200
    new = basic("viewer", "new-secret")
    user_role = await role_id_of(engine, privileges.USER)
    del me["password"]
    for change in (
        {"links": [role_link(user_role)]},
        {"active": False},
        {"availableVirtualDatacenters": "4"},
        {"nick": "vera"},
    ):
        put = await api.put(url, json={**me, **change}, headers={**new, "Content-Type": JSON_ONE})
        assert put.status in (403, 409), change


async def test_a_user_without_privileges_reads_and_edits_itself(
    api: Client, seeded: Seeded
) -> None:
    url = f"/api/admin/enterprises/{seeded.enterprise_id}/users/{seeded.user_id}"
    me = await api.get(url, headers=USER)
    assert me.status == 200
    body = await _json(me)
    body["surname"] = "Doe"
    put = await api.put(url, json=body, headers={**USER, "Content-Type": JSON_ONE})
    assert put.status == 200


async def test_nobody_deletes_or_deactivates_itself(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    admin_id = await _user_id(engine, "admin")
    url = f"/api/admin/enterprises/{seeded.enterprise_id}/users/{admin_id}"
    deleted = await api.delete(url, headers=ADMIN)
    assert deleted.status == 409
    assert (await _json(deleted))["collection"][0]["code"] == "USER-3"
    me = await _json(await api.get(url, headers=ADMIN))
    put = await api.put(
        url, json={**me, "active": False}, headers={**ADMIN, "Content-Type": JSON_ONE}
    )
    assert put.status == 409
    assert (await api.get("/api/login", headers=ADMIN)).status == 200


async def _token(api: Client, headers: dict[str, str]) -> dict[str, str]:
    response = await api.get("/api/login", headers=headers)
    assert response.status == 200
    api.session.cookie_jar.clear()
    return {"Authorization": f"Token {response.headers['X-Abiquo-Token']}"}


async def test_a_new_password_deactivation_or_deletion_ends_the_sessions(
    api: Client, seeded: Seeded
) -> None:
    url = f"/api/admin/enterprises/{seeded.enterprise_id}/users/{seeded.user_id}"
    headers = {**ADMIN, "Content-Type": JSON_ONE}
    token = await _token(api, USER)
    body = await _json(await api.get(url, headers=ADMIN))
    # A change that is not the password leaves the session alone.
    put = await api.put(url, json={**body, "surname": "Doe"}, headers=headers)
    assert put.status == 200
    assert (await api.get("/api/login", headers=token)).status == 200
    put = await api.put(url, json={**body, "password": "changed"}, headers=headers)
    assert put.status == 200
    assert (await api.get("/api/login", headers=token)).status == 401
    assert (await api.get("/api/login", headers=USER)).status == 401
    fresh = basic("jdoe", "changed")
    token = await _token(api, fresh)
    put = await api.put(url, json={**body, "active": False}, headers=headers)
    assert put.status == 200
    put = await api.put(url, json={**body, "active": True}, headers=headers)
    assert (await api.get("/api/login", headers=token)).status == 401
    token = await _token(api, fresh)
    assert (await api.delete(url, headers=ADMIN)).status == 204
    assert (await api.get("/api/login", headers=token)).status == 401
    assert USER_PASSWORD != "changed"
