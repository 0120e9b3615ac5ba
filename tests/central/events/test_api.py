"""/api/events over HTTP, in JSON and XML, on SQLite and on MariaDB."""

from __future__ import annotations

from datetime import datetime, timedelta
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.central.conftest import ADMIN, T0, USER, USER_NICK, Seeded, basic
from tests.central.events.conftest import (
    ENT_ADMIN_A,
    ENT_ADMIN_B,
    NO_EVENTLOG,
    Recorded,
    Tenants,
)

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.event+json"
XML_ONE = "application/vnd.abiquo.event+xml"
JSON_MANY = "application/vnd.abiquo.events+json"
XML_MANY = "application/vnd.abiquo.events+xml"

# Leaves out the failed logins the tests' requests record (stamped with the real time).
UNTIL_T1 = {"dateto": (T0 + timedelta(hours=1)).isoformat()}


async def _json(response: object) -> dict:  # type: ignore[type-arg]
    return await response.json(content_type=None)  # type: ignore[attr-defined,no-any-return]


async def test_list_as_json(api: Client, history: Recorded, tenants: Tenants) -> None:
    response = await api.get("/api/events", params=UNTIL_T1, headers=ADMIN)
    assert response.status == 200
    assert response.headers["Content-Type"] == JSON_MANY
    body = await _json(response)
    assert body["totalSize"] == 6
    assert [link["rel"] for link in body["links"]] == ["first", "last"]
    newest = body["collection"][0]
    base = str(api.make_url(""))
    assert newest["id"] == history.a[-1]
    assert {
        k: newest[k]
        for k in (
            "severity",
            "component",
            "actionPerformed",
            "performedBy",
            "enterprise",
            "idEnterprise",
            "idVirtualMachine",
            "target",
        )
    } == {
        "severity": "INFO",
        "component": "VIRTUAL_MACHINE",
        "actionPerformed": "VM_POWEROFF",
        "performedBy": USER_NICK,
        "enterprise": "Abiquo",
        "idEnterprise": tenants.a,
        "idVirtualMachine": 7,
        "target": "/api/things/5",
    }
    assert datetime.fromisoformat(newest["timestamp"]) == T0 + timedelta(minutes=5)
    assert newest["links"][0] == {
        "rel": "self",
        "href": f"{base}/api/events/{history.a[-1]}",
        "type": JSON_ONE,
    }
    assert newest["links"][1]["href"] == f"{base}/api/admin/enterprises/{tenants.a}"
    # Newest first by default; `asc=true` turns it round.
    ids = [e["id"] for e in body["collection"]]
    assert ids == sorted(ids, reverse=True)
    response = await api.get("/api/events", params={**UNTIL_T1, "asc": "true"}, headers=ADMIN)
    assert [e["id"] for e in (await _json(response))["collection"]] == sorted(ids)


async def test_list_as_xml(api: Client, history: Recorded) -> None:
    response = await api.get(
        "/api/events",
        params=UNTIL_T1,
        headers={**ADMIN, "Accept": f"{XML_MANY}; version=4.0"},
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == f"{XML_MANY}; version=4.0"
    root = ET.fromstring(await response.read())
    assert root.tag == "events"
    assert root.findtext("totalSize") == "6"
    assert root.find("link").get("type") == XML_MANY  # type: ignore[union-attr]
    events = root.findall("event")
    assert len(events) == 6
    assert events[0].findtext("actionPerformed") == "VM_POWEROFF"
    assert events[0].findtext("id") == str(history.a[-1])
    # The DC_MODIFY event has no user: the element is left out.
    [dc_event] = [e for e in events if e.findtext("component") == "DATACENTER"]
    assert dc_event.find("performedBy") is None
    assert dc_event.findtext("idDatacenter") == "3"


@pytest.mark.parametrize(("accept", "content_type"), [(None, JSON_ONE), (XML_ONE, XML_ONE)])
async def test_get_one(
    api: Client, history: Recorded, accept: str | None, content_type: str
) -> None:
    headers = {**ADMIN, **({"Accept": accept} if accept else {})}
    response = await api.get(f"/api/events/{history.b[0]}", headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    if content_type == XML_ONE:
        root = ET.fromstring(await response.read())
        assert (root.tag, root.findtext("id"), root.findtext("performedBy")) == (
            "event",
            str(history.b[0]),
            "badmin",
        )
    else:
        body = await _json(response)
        assert (body["id"], body["actionPerformed"], body["severity"]) == (
            history.b[0],
            "VM_DEPLOY",
            "INFO",
        )


async def test_paging(api: Client, history: Recorded) -> None:
    everything = sorted(history.a + history.b, reverse=True)
    response = await api.get(
        "/api/events", params={**UNTIL_T1, "startwith": 2, "limit": 2}, headers=ADMIN
    )
    body = await _json(response)
    assert body["totalSize"] == 6
    assert [e["id"] for e in body["collection"]] == everything[2:4]
    rels = {link["rel"]: link["href"] for link in body["links"]}
    assert list(rels) == ["first", "previous", "next", "last"]
    assert "startwith=4" in rels["next"] and "startwith=0" in rels["previous"]
    assert "dateto=" in rels["next"]  # the filters travel with the page links
    response = await api.get(rels["next"].replace(str(api.make_url("")), ""), headers=ADMIN)
    assert [e["id"] for e in (await _json(response))["collection"]] == everything[4:6]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"severity": "info"}, [5, 1, 0]),
        ({"severity": "CRITICAL"}, [4]),
        ({"component": "DATACENTER"}, [3]),
        ({"action": "VM_DEPLOY"}, [1, 0]),
        ({"user": USER_NICK}, [5, 2, 0]),
        ({"enterprise": "Other"}, [4, 1]),
        ({"datacenter": "3"}, [3]),
        ({"datefrom": (T0 + timedelta(minutes=4)).isoformat()}, [5, 4]),
        ({"datefrom": str(int((T0 + timedelta(minutes=4)).timestamp() * 1000))}, [5, 4]),
        ({"dateto": str(int((T0 + timedelta(minutes=1)).timestamp() * 1000))}, [1, 0]),
        ({"dateto": "2025-03-01T12:01:00.250000Z"}, [1, 0]),
    ],
)
async def test_each_filter(
    api: Client, history: Recorded, params: dict[str, str], expected: list[int]
) -> None:
    everything = sorted(history.a + history.b)
    query = {**UNTIL_T1, **params} if "dateto" not in params else params
    response = await api.get("/api/events", params=query, headers=ADMIN)
    assert response.status == 200
    body = await _json(response)
    assert [e["id"] for e in body["collection"]] == [everything[i] for i in expected]
    assert body["totalSize"] == len(expected)


async def test_filter_by_user_and_enterprise_ids(
    api: Client, history: Recorded, tenants: Tenants, seeded: Seeded
) -> None:
    response = await api.get(
        "/api/events", params={**UNTIL_T1, "user": str(seeded.user_id)}, headers=ADMIN
    )
    assert {e["id"] for e in (await _json(response))["collection"]} == {
        history.a[0],
        history.a[1],
        history.a[3],
    }
    response = await api.get(
        "/api/events", params={**UNTIL_T1, "enterprise": str(tenants.b)}, headers=ADMIN
    )
    assert {e["id"] for e in (await _json(response))["collection"]} == set(history.b)


@pytest.mark.parametrize(
    "params",
    [
        {"severity": "LOUD"},
        {"component": "KITCHEN"},
        {"action": "VM_EXPLODE"},
        {"datefrom": "yesterday"},
        {"datacenter": "north"},
        {"by": "nonsense"},
        {"limit": "0"},
    ],
)
async def test_bad_filters_are_400(api: Client, params: dict[str, str]) -> None:
    response = await api.get("/api/events", params=params, headers=ADMIN)
    assert response.status == 400
    [error] = (await _json(response))["collection"]
    assert error["code"]


# -- who sees what ---------------------------------------------------------------------


async def test_cloud_admin_sees_every_enterprise(api: Client, history: Recorded) -> None:
    response = await api.get("/api/events", params=UNTIL_T1, headers=ADMIN)
    assert {e["id"] for e in (await _json(response))["collection"]} == set(history.a + history.b)
    for event_id in (history.a[0], history.b[0]):
        assert (await api.get(f"/api/events/{event_id}", headers=ADMIN)).status == 200


@pytest.mark.parametrize("who", ["enterprise admin", "user"])
async def test_enterprise_viewers_see_only_their_own(
    api: Client, history: Recorded, tenants: Tenants, who: str
) -> None:
    headers = ENT_ADMIN_A if who == "enterprise admin" else USER
    response = await api.get("/api/events", params=UNTIL_T1, headers=headers)
    assert response.status == 200
    body = await _json(response)
    assert {e["id"] for e in body["collection"]} == set(history.a)
    assert body["totalSize"] == 4
    # A filter on another enterprise finds nothing rather than widening the view.
    response = await api.get(
        "/api/events", params={**UNTIL_T1, "enterprise": "Other"}, headers=headers
    )
    assert (await _json(response))["totalSize"] == 0
    assert (await api.get(f"/api/events/{history.a[0]}", headers=headers)).status == 200
    response = await api.get(f"/api/events/{history.b[0]}", headers=headers)
    assert response.status == 404


async def test_enterprise_b_sees_its_own(api: Client, history: Recorded) -> None:
    response = await api.get("/api/events", params=UNTIL_T1, headers=ENT_ADMIN_B)
    assert {e["id"] for e in (await _json(response))["collection"]} == set(history.b)


async def test_without_either_privilege_is_403(api: Client, history: Recorded) -> None:
    for path in ("/api/events", f"/api/events/{history.a[0]}"):
        response = await api.get(path, headers=NO_EVENTLOG)
        assert response.status == 403
        [error] = (await _json(response))["collection"]
        assert error["code"] == "AUTH-2"
        assert "EVENTLOG_VIEW_ENTERPRISE" in error["message"]


async def test_no_credentials_is_401(api: Client) -> None:
    assert (await api.get("/api/events")).status == 401


async def test_unknown_id_is_404(api: Client) -> None:
    for path in ("/api/events/999999", "/api/events/99999999999999999999"):
        assert (await api.get(path, headers=ADMIN)).status == 404


# -- what requests record --------------------------------------------------------------


async def test_logins_show_in_the_log(api: Client, tenants: Tenants) -> None:
    assert (await api.get("/api/events", headers=basic(USER_NICK, "wrong"))).status == 401
    assert (await api.get("/api/events", headers=basic("ghost", "x"))).status == 401
    assert (await api.get("/api/events", headers=USER)).status == 200
    response = await api.get(
        "/api/events", params={"action": "USER_LOGIN", "by": "id", "asc": "true"}, headers=ADMIN
    )
    logins = [
        (e["performedBy"], e["severity"], e.get("idEnterprise"))
        for e in (await _json(response))["collection"]
    ]
    # Failures only: HTTP Basic authenticates every request, and is no login of its own.
    assert logins == [
        (USER_NICK, "WARNING", tenants.a),
        ("ghost", "WARNING", None),
    ]
    # The user sees its enterprise's logins, not the attempt that named nobody.
    response = await api.get("/api/events", params={"action": "USER_LOGIN"}, headers=USER)
    assert "ghost" not in {e["performedBy"] for e in (await _json(response))["collection"]}
