"""/api/admin/enterprises/{ent}/limits over HTTP, in JSON and XML, on SQLite and MariaDB."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from abiquo_central.db import tables
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.tenants import privileges
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.seed import ensure_enterprise
from abiquo_central.tenants.users import create_user
from tests.central.conftest import ADMIN, T0, USER, Seeded, basic

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.limit+json"
XML_ONE = "application/vnd.abiquo.limit+xml"
JSON_MANY = "application/vnd.abiquo.limits+json"
PASSWORD = "ent-secret"
# An enterprise administrator of the seeded enterprise: reads its own limits only.
VIEWER = basic("aviewer", PASSWORD)


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


def _path(href: str) -> str:
    """The path of an absolute href, which is what the test client requests."""
    return URL(href).path


async def _code(response: Any) -> str:
    return str((await _json(response))["collection"][0]["code"])


@pytest.fixture
async def dcs(engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords) -> tuple[int, int]:
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
    one = await ensure_datacenter(engine, uuid="dc-1", name="Barcelona", location="ES", now=T0)
    two = await ensure_datacenter(engine, uuid="dc-2", name="Madrid", location="ES", now=T0)
    return one, two


def _location(api: Client, dc: int) -> dict[str, str]:
    return {"rel": "location", "href": f"{api.make_url('')}/api/admin/datacenters/{dc}"}


async def _post(api: Client, ent: int, body: dict[str, Any], headers: Any = ADMIN) -> Any:
    return await api.post(
        f"/api/admin/enterprises/{ent}/limits",
        json=body,
        headers={**headers, "Content-Type": JSON_ONE, "Accept": JSON_ONE},
    )


async def _events(engine: AsyncEngine) -> list[tuple[str, str]]:
    ev = tables.event
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ev.c.action, ev.c.target)
            .where(ev.c.action.like("ENTERPRISE_LIMIT_%"))
            .order_by(ev.c.id)
        )
        return [(r.action, r.target) for r in rows]


async def test_crud_in_json_records_events(
    api: Client, engine: AsyncEngine, seeded: Seeded, dcs: tuple[int, int]
) -> None:
    ent, (bcn, mad) = seeded.enterprise_id, dcs
    created = await _post(
        api, ent, {"cpuSoft": 4, "cpuHard": 8, "hdHard": 2**40, "links": [_location(api, bcn)]}
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"] == JSON_ONE
    body = await _json(created)
    limit_id = body["id"]
    assert (body["cpuSoft"], body["cpuHard"], body["hdHard"], body["publicIpsHard"]) == (
        4,
        8,
        2**40,
        0,
    )
    base = f"{api.make_url('')}/api"
    href = f"{base}/admin/enterprises/{ent}/limits/{limit_id}"
    assert created.headers["Location"] == href
    links = {link["rel"]: link["href"] for link in body["links"]}
    assert links == {
        "edit": href,
        "enterprise": f"{base}/admin/enterprises/{ent}",
        "location": f"{base}/admin/datacenters/{bcn}",
    }
    assert await _json(await api.get(_path(href), headers=ADMIN)) == body

    # Another datacenter, to filter on.
    assert (await _post(api, ent, {"links": [_location(api, mad)]})).status == 201

    body.update(cpuSoft=2, ramHard=2048)
    put = await api.put(_path(href), json=body, headers={**ADMIN, "Content-Type": JSON_ONE})
    assert put.status == 200, await put.text()
    assert ((await _json(put))["cpuSoft"], (await _json(put))["ramHard"]) == (2, 2048)
    # Without a location link the limit keeps its datacenter.
    body.pop("links")
    kept = await api.put(_path(href), json=body, headers={**ADMIN, "Content-Type": JSON_ONE})
    assert kept.status == 200
    assert {lk["rel"]: lk["href"] for lk in (await _json(kept))["links"]}["location"] == (
        f"{base}/admin/datacenters/{bcn}"
    )

    listed = await api.get(
        f"/api/admin/enterprises/{ent}/limits", params={"datacenter": str(bcn)}, headers=ADMIN
    )
    assert listed.headers["Content-Type"] == JSON_MANY
    page = await _json(listed)
    assert (page["totalSize"], page["collection"][0]["id"]) == (1, limit_id)
    every = await _json(await api.get(f"/api/admin/enterprises/{ent}/limits", headers=ADMIN))
    assert every["totalSize"] == 2

    assert (await api.delete(_path(href), headers=ADMIN)).status == 204
    assert (await api.get(_path(href), headers=ADMIN)).status == 404
    target = f"/admin/enterprises/{ent}/limits/{limit_id}"
    events = await _events(engine)
    assert [e for e in events if e[1] == target] == [
        ("ENTERPRISE_LIMIT_CREATE", target),
        ("ENTERPRISE_LIMIT_MODIFY", target),
        ("ENTERPRISE_LIMIT_MODIFY", target),
        ("ENTERPRISE_LIMIT_DELETE", target),
    ]


async def test_create_and_read_in_xml(api: Client, seeded: Seeded, dcs: tuple[int, int]) -> None:
    ent, (bcn, _) = seeded.enterprise_id, dcs
    href = f"{api.make_url('')}/api/admin/datacenters/{bcn}"
    xml = (
        "<limit><vlansSoft>2</vlansSoft><vlansHard>5</vlansHard>"
        f'<link rel="location" href="{href}"/></limit>'
    ).encode()
    created = await api.post(
        f"/api/admin/enterprises/{ent}/limits",
        data=xml,
        headers={**ADMIN, "Content-Type": XML_ONE, "Accept": XML_ONE},
    )
    assert created.status == 201, await created.text()
    assert created.headers["Content-Type"] == XML_ONE
    root = ET.fromstring(await created.read())
    assert (root.tag, root.findtext("vlansHard"), root.findtext("cpuSoft")) == ("limit", "5", "0")
    location = root.find("link[@rel='location']")
    assert location is not None and location.get("href") == href
    got = await api.get(_path(created.headers["Location"]), headers={**ADMIN, "Accept": XML_ONE})
    assert ET.fromstring(await got.read()).findtext("vlansSoft") == "2"
    listed = await api.get(
        f"/api/admin/enterprises/{ent}/limits",
        headers={**ADMIN, "Accept": "application/vnd.abiquo.limits+xml"},
    )
    page = ET.fromstring(await listed.read())
    assert (page.tag, page.findtext("totalSize"), len(page.findall("limit"))) == ("limits", "1", 1)


@pytest.mark.parametrize(
    ("links", "status", "code"),
    [
        ([], 400, "LIMIT-4"),
        ([{"rel": "enterprise", "href": "http://x/api/admin/datacenters/1"}], 400, "LIMIT-4"),
        ([{"rel": "location", "href": "http://x/api/admin/racks/1"}], 400, "LIMIT-4"),
        ([{"rel": "location", "href": "http://x/api/admin/datacenters/abc"}], 400, "LIMIT-4"),
        ([{"rel": "location", "href": "::not a url::"}], 400, "LIMIT-4"),
        ([{"rel": "location", "href": "http://x/api/admin/datacenters/999999"}], 404, "DC-0"),
        ([{"rel": "location", "href": "http://x/api/admin/datacenters/99999999999"}], 404, "DC-0"),
    ],
)
async def test_the_location_is_required_and_checked(
    api: Client,
    engine: AsyncEngine,
    seeded: Seeded,
    dcs: tuple[int, int],
    links: list[dict[str, str]],
    status: int,
    code: str,
) -> None:
    response = await _post(api, seeded.enterprise_id, {"cpuSoft": 1, "links": links})
    assert response.status == status
    assert await _code(response) == code
    assert await _events(engine) == []


async def test_tenant_view_of_a_datacenter_is_a_location_too(
    api: Client, seeded: Seeded, dcs: tuple[int, int]
) -> None:
    link = {"rel": "location", "href": f"http://x/api/cloud/locations/{dcs[0]}"}
    assert (await _post(api, seeded.enterprise_id, {"links": [link]})).status == 201


@pytest.mark.parametrize(
    "values",
    [{"cpuSoft": 9, "cpuHard": 8}, {"ramSoft": -1}, {"publicIpsHard": 2**31}],
)
async def test_invalid_limits_are_400(
    api: Client, seeded: Seeded, dcs: tuple[int, int], values: dict[str, int]
) -> None:
    response = await _post(api, seeded.enterprise_id, {**values, "links": [_location(api, dcs[0])]})
    assert response.status == 400
    assert await _code(response) == "EN-2"


async def test_conflicts_and_immutable_location(
    api: Client, seeded: Seeded, dcs: tuple[int, int]
) -> None:
    ent, (bcn, mad) = seeded.enterprise_id, dcs
    created = await _post(api, ent, {"links": [_location(api, bcn)]})
    dup = await _post(api, ent, {"cpuHard": 3, "links": [_location(api, bcn)]})
    assert (dup.status, await _code(dup)) == (409, "LIMIT-3")
    moved = await api.put(
        _path(created.headers["Location"]),
        json={"links": [_location(api, mad)]},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert (moved.status, await _code(moved)) == (400, "LIMIT-5")
    missing = await api.put(
        f"/api/admin/enterprises/{ent}/limits/999999",
        json={},
        headers={**ADMIN, "Content-Type": JSON_ONE},
    )
    assert (missing.status, await _code(missing)) == (404, "LIMIT-2")
    bad_filter = await api.get(
        f"/api/admin/enterprises/{ent}/limits", params={"datacenter": "x"}, headers=ADMIN
    )
    assert bad_filter.status == 400


async def test_privileges(
    api: Client, engine: AsyncEngine, seeded: Seeded, dcs: tuple[int, int]
) -> None:
    ent, (bcn, mad) = seeded.enterprise_id, dcs
    other = await ensure_enterprise(engine, "Other", now=T0)
    mine = await _post(api, ent, {"links": [_location(api, bcn)]})
    theirs = await _post(api, other, {"links": [_location(api, bcn)]})
    mine_href, theirs_href = mine.headers["Location"], theirs.headers["Location"]

    # A plain user can neither read (no ENTERPRISE_ENUMERATE) nor write.
    assert (await api.get(_path(mine_href), headers=USER)).status == 403
    assert (await _post(api, ent, {"links": [_location(api, mad)]}, headers=USER)).status == 403
    assert (await api.delete(_path(mine_href), headers=USER)).status == 403
    assert (
        await api.put(_path(mine_href), json={}, headers={**USER, "Content-Type": JSON_ONE})
    ).status == 403

    # An enterprise administrator reads its own, not another's, and changes none.
    assert (await api.get(_path(mine_href), headers=VIEWER)).status == 200
    own = await _json(await api.get(f"/api/admin/enterprises/{ent}/limits", headers=VIEWER))
    assert own["totalSize"] == 1
    assert (await api.get(_path(theirs_href), headers=VIEWER)).status == 404
    hidden = await api.get(f"/api/admin/enterprises/{other}/limits", headers=VIEWER)
    assert hidden.status == 404
    # Another enterprise's limit under one's own enterprise is not there either.
    theirs_id = theirs_href.rsplit("/", 1)[1]
    under_mine = await api.get(f"/api/admin/enterprises/{ent}/limits/{theirs_id}", headers=VIEWER)
    assert under_mine.status == 404
    assert (await api.delete(_path(mine_href), headers=VIEWER)).status == 403
    assert (await _post(api, ent, {"links": [_location(api, mad)]}, headers=VIEWER)).status == 403
