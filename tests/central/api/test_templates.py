"""/api/admin/enterprises/{ent}/datacenterrepositories and their virtualmachinetemplates
over HTTP, in JSON and XML, on SQLite and MariaDB; the Appliance Manager is a small HTTP
server that records what central asks it, the BPM a link that records what is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from abiquo_central.db import tables
from abiquo_central.infrastructure.datacenters import ensure_datacenter, record_heartbeat
from abiquo_central.link import DatacenterRequests
from abiquo_central.templates.reports import record_template_status
from abiquo_central.tenants import privileges
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.seed import ensure_enterprise
from abiquo_central.tenants.users import create_user
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.messages import Message
from abiquo_dc.protocol.templates import (
    ConvertTemplateDisk,
    TemplateDefinition,
    TemplateStatus,
    TemplateStatusChanged,
)
from tests.central.conftest import ADMIN, T0, USER, FakeClock, Seeded, basic

Client = TestClient[web.Request, web.Application]

DC_UUID = "5d2e1b1c-0000-4000-8000-0000000000b7"
JSON_ONE = "application/vnd.abiquo.virtualmachinetemplate+json"
XML_ONE = "application/vnd.abiquo.virtualmachinetemplate+xml"
REQUEST_JSON = "application/vnd.abiquo.virtualmachinetemplaterequest+json"
OTHER = basic("otheradmin", "other-secret")
UBUNTU = "http://catalogue.example/ubuntu/ubuntu.ovf"
WINDOWS = "http://catalogue.example/win/win.ovf"


@dataclass
class RecordingLink:
    """The link to the datacenters: records what is sent, answers no request."""

    sent: list[tuple[str, str, Message]] = field(default_factory=list)

    async def send(self, dc_uuid: str, service: str, message: Message) -> None:
        self.sent.append((dc_uuid, service, message))

    async def request(self, dc_uuid: str, message: Message, *, timeout: float) -> Message:
        raise NotImplementedError


@pytest.fixture
def link() -> DatacenterRequests:
    return RecordingLink()


@dataclass
class FakeAM:
    url: str
    received: list[tuple[str, str, str, bytes]]


@pytest.fixture
async def fake_am() -> AsyncIterator[FakeAM]:
    """An Appliance Manager answering downloads and deletes as abiquo_dc/am/http.py."""
    received: list[tuple[str, str, str, bytes]] = []

    async def add(request: web.Request) -> web.Response:
        body = await request.read()
        received.append(("POST", request.raw_path, request.content_type, body))
        if body == b"http://catalogue.example/broken.ovf":
            return web.json_response({"code": "AM-OVF", "message": "not an OVF"}, status=422)
        return web.json_response(
            {"ovf_id": body.decode(), "status": "DOWNLOADING", "progress": 0}, status=201
        )

    async def delete(request: web.Request) -> web.Response:
        # As the AM reads it: the ovf_id whole, its slashes included.
        received.append(("DELETE", request.match_info["ovf_id"], "", b""))
        return web.Response(status=204)

    async def rescan(request: web.Request) -> web.Response:
        received.append(("POST", request.raw_path, "", b""))
        # What the repository holds: one template, which central never heard of.
        return web.json_response(
            [
                {
                    "ovf_id": "found/by-hand.ovf",
                    "status": "DOWNLOAD",
                    "progress": 100,
                    "template": {
                        "ovf_id": "found/by-hand.ovf",
                        "name": "by hand",
                        "disk_format": "QCOW2_SPARSE",
                        "disk_path": "1/found/disk.qcow2",
                        "disk_file_size": 10,
                        "virtual_size": 100,
                    },
                }
            ]
        )

    app = web.Application()
    app.router.add_post("/am/erepos/{ent}", rescan)
    app.router.add_post("/am/erepos/{ent}/templates", add)
    app.router.add_delete("/am/erepos/{ent}/templates/{ovf_id:.+}", delete)
    server = TestServer(app)
    await server.start_server()
    try:
        yield FakeAM(url=str(server.make_url("/am")), received=received)
    finally:
        await server.close()


async def _beat(engine: AsyncEngine, clock: FakeClock, sequence: int = 1) -> None:
    await record_heartbeat(
        engine,
        dc_uuid=DC_UUID,
        name="repo dc",
        sequence=sequence,
        started_at=T0,
        sent_at=clock(),
        http_url="http://dc:8009",
        services={},
    )


@dataclass
class World:
    dc: int
    ent: int
    other: int
    base: str


async def _definition(name: str, ovf: str, fmt: DiskFormat, category: str) -> TemplateDefinition:
    return TemplateDefinition(
        ovf_id=ovf,
        name=name,
        disk_format=fmt,
        disk_path=f"x/{name}/disk",
        disk_file_size=100,
        virtual_size=1000,
        category=category,
    )


async def _downloaded(
    engine: AsyncEngine, ent: int, ovf: str, name: str, fmt: DiskFormat, category: str = ""
) -> int:
    await record_template_status(
        engine,
        TemplateStatusChanged(
            dc_uuid=DC_UUID,
            enterprise_id=str(ent),
            ovf_id=ovf,
            status=TemplateStatus.DOWNLOAD,
            template=await _definition(name, ovf, fmt, category),
            at=T0,
        ),
    )
    tpl = tables.virtual_machine_template
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(tpl.c.id).where(tpl.c.name == name, tpl.c.enterprise_id == ent)
                )
            ).scalar_one()
        )


@pytest.fixture
async def world(
    engine: AsyncEngine,
    seeded: Seeded,
    clock: FakeClock,
    fake_am: FakeAM,
    fast_passwords: Passwords,
) -> World:
    dc = await ensure_datacenter(engine, uuid=DC_UUID, name="Repo DC", location="ES", now=T0)
    await _beat(engine, clock)
    other = await ensure_enterprise(engine, "Other", now=T0)
    await create_user(
        engine,
        passwords=fast_passwords,
        enterprise_id=other,
        role=privileges.ENTERPRISE_ADMIN,
        nick="otheradmin",
        password="other-secret",
        name="Olga",
        now=T0,
    )
    async with engine.begin() as conn:
        await conn.execute(
            tables.remote_service.insert().values(
                datacenter_id=dc, type="APPLIANCE_MANAGER", uri=fake_am.url, status=1
            )
        )
        for ent in (seeded.enterprise_id, other):
            await conn.execute(
                tables.enterprise_limit.insert().values(enterprise_id=ent, datacenter_id=dc)
            )
    base = f"/api/admin/enterprises/{seeded.enterprise_id}/datacenterrepositories/{dc}"
    return World(dc=dc, ent=seeded.enterprise_id, other=other, base=base)


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


async def _code(response: Any) -> str:
    return str((await _json(response))["collection"][0]["code"])


def _rels(entity: dict[str, Any]) -> dict[str, str]:
    return {link["rel"]: link["href"] for link in entity["links"]}


# -- repositories ------------------------------------------------------------------------


async def test_repositories_in_json_and_xml(
    api: Client, world: World, fake_am: FakeAM, engine: AsyncEngine
) -> None:
    listed = await api.get(
        f"/api/admin/enterprises/{world.ent}/datacenterrepositories", headers=ADMIN
    )
    assert listed.status == 200, await listed.text()
    (repo,) = (await _json(listed))["collection"]
    assert (repo["id"], repo["name"], repo["repositoryLocation"]) == (
        world.dc,
        "Repo DC",
        fake_am.url,
    )
    assert (repo["repositoryCapacityMb"], repo["repositoryRemainingMb"]) == (0, 0)
    rels = _rels(repo)
    assert URL(rels["datacenter"]).path == f"/api/admin/datacenters/{world.dc}"
    assert URL(rels["enterprise"]).path == f"/api/admin/enterprises/{world.ent}"
    assert URL(rels["virtualmachinetemplates"]).path == f"{world.base}/virtualmachinetemplates"
    assert rels["upload"] == f"{fake_am.url}/erepos/{world.ent}/templates"

    one = await api.get(
        world.base,
        headers={**ADMIN, "Accept": "application/vnd.abiquo.datacenterrepository+xml"},
    )
    root = ET.fromstring(await one.read())
    assert (root.tag, root.findtext("name"), root.findtext("repositoryLocation")) == (
        "datacenterRepository",
        "Repo DC",
        fake_am.url,
    )
    # A template central holds but the AM no longer has, and one it has that central
    # never heard of: a refresh makes central's list the AM's.
    await _downloaded(engine, world.ent, "gone/old.ovf", "old", DiskFormat.RAW)
    refreshed = await api.put(f"{world.base}/actions/refresh", headers=ADMIN)
    assert refreshed.status == 204
    assert ("POST", f"/am/erepos/{world.ent}", "", b"") in fake_am.received
    listed = await api.get(f"{world.base}/virtualmachinetemplates", headers=ADMIN)
    names = [t["name"] for t in (await listed.json(content_type=None))["collection"]]
    assert names == ["by hand"]

    # Without APPLIB_VIEW: 403; another enterprise's: 404; a datacenter it has no
    # limits in is no repository of it.
    assert (await api.get(world.base, headers=USER)).status == 403
    assert (await api.get(world.base, headers=OTHER)).status == 404
    mine = await api.get(
        f"/api/admin/enterprises/{world.other}/datacenterrepositories", headers=OTHER
    )
    assert [r["id"] for r in (await _json(mine))["collection"]] == [world.dc]
    lone = await ensure_datacenter(engine, uuid="dc-lone", name="Lone", location="", now=T0)
    path = f"/api/admin/enterprises/{world.other}/datacenterrepositories/{lone}"
    assert (await api.get(path, headers=OTHER)).status == 404
    assert (await api.get(path, headers=ADMIN)).status == 200


# -- templates ---------------------------------------------------------------------------


async def test_listing_filters_and_sharing(api: Client, world: World, engine: AsyncEngine) -> None:
    await _downloaded(engine, world.ent, UBUNTU, "ubuntu", DiskFormat.QCOW2_SPARSE, "Linux")
    await _downloaded(engine, world.ent, WINDOWS, "windows", DiskFormat.VHD_SPARSE)
    theirs = await _downloaded(engine, world.other, UBUNTU, "theirs", DiskFormat.VMDK_FLAT)
    url = f"{world.base}/virtualmachinetemplates"

    async def names(query: str = "", who: dict[str, str] = ADMIN) -> list[str]:
        response = await api.get(url + query, headers=who)
        assert response.status == 200, await response.text()
        return [t["name"] for t in (await _json(response))["collection"]]

    assert await names() == ["ubuntu", "windows"]
    assert await names("?hypervisorTypeName=KVM") == ["ubuntu"]
    assert await names("?hypervisorTypeName=HYPERV_301") == ["windows"]
    assert await names("?categoryName=Linux") == ["ubuntu"]
    assert await names("?categoryName=Others") == ["windows"]
    assert await names("?limit=1&startwith=1") == ["windows"]
    bad = await api.get(url + "?hypervisorTypeName=PDP11", headers=ADMIN)
    assert (bad.status, await _code(bad)) == (400, "HYPERVISOR-0")

    # Shared: every enterprise sees it, only its owner changes it.
    async with engine.begin() as conn:
        tpl = tables.virtual_machine_template
        await conn.execute(tpl.update().where(tpl.c.id == theirs).values(shared=True))
    assert await names() == ["theirs", "ubuntu", "windows"]
    shared = await api.get(f"{url}/{theirs}", headers=ADMIN)
    assert shared.status == 200
    changed = await api.put(
        f"{url}/{theirs}", json={"name": "mine now"}, headers={**ADMIN, "Content-Type": JSON_ONE}
    )
    assert (changed.status, await _code(changed)) == (404, "AM-1")


async def test_read_and_change_in_json_and_xml(
    api: Client, world: World, engine: AsyncEngine, fake_am: FakeAM
) -> None:
    ubuntu = await _downloaded(
        engine, world.ent, UBUNTU, "ubuntu", DiskFormat.QCOW2_SPARSE, "Linux"
    )
    url = f"{world.base}/virtualmachinetemplates/{ubuntu}"
    got = await api.get(url, headers=ADMIN)
    assert got.status == 200
    assert got.headers["Content-Type"].startswith(JSON_ONE)
    body = await _json(got)
    assert {k: body[k] for k in ("name", "path", "diskFormatType", "diskFileSize", "state")} == {
        "name": "ubuntu",
        "path": "x/ubuntu/disk",
        "diskFormatType": "QCOW2_SPARSE",
        "diskFileSize": 100,
        "state": "DOWNLOAD",
    }
    assert (body["hdRequired"], body["shared"], body["creationDate"]) == (
        1000,
        False,
        "2025-03-01T12:00:00.250000Z",
    )
    rels = _rels(body)
    assert rels["diskfile"] == f"{fake_am.url}/files/x/ubuntu/disk"
    assert URL(rels["datacenterrepository"]).path == world.base
    assert URL(rels["conversions"]).path == f"{url}/conversions"
    assert URL(rels["category"]).path.startswith("/api/config/categories/")

    body.update(name="Ubuntu LTS", cpuRequired=4, ramRequired=2048, costCode=7, shared=True)
    body["links"] = [link for link in body["links"] if link["rel"] != "category"]
    changed = await api.put(url, json=body, headers={**ADMIN, "Content-Type": JSON_ONE})
    assert changed.status == 200, await changed.text()
    after = await _json(changed)
    assert (after["name"], after["cpuRequired"], after["ramRequired"], after["shared"]) == (
        "Ubuntu LTS",
        4,
        2048,
        True,
    )
    # No category link: the default one.
    assert next(k["title"] for k in after["links"] if k["rel"] == "category") == "Others"

    xml = (
        "<virtualMachineTemplate><name>Ubuntu XML</name><cpuRequired>2</cpuRequired>"
        "<ramRequired>512</ramRequired></virtualMachineTemplate>"
    )
    in_xml = await api.put(
        url, data=xml.encode(), headers={**ADMIN, "Content-Type": XML_ONE, "Accept": XML_ONE}
    )
    assert in_xml.status == 200, await in_xml.text()
    root = ET.fromstring(await in_xml.read())
    assert (root.tag, root.findtext("name"), root.findtext("ramRequired")) == (
        "virtualMachineTemplate",
        "Ubuntu XML",
        "512",
    )
    listed = await api.get(
        f"{world.base}/virtualmachinetemplates",
        headers={**ADMIN, "Accept": "application/vnd.abiquo.virtualmachinetemplates+xml"},
    )
    page = ET.fromstring(await listed.read())
    assert page.tag == "virtualMachineTemplates"
    assert [t.findtext("name") for t in page.findall("virtualMachineTemplate")] == ["Ubuntu XML"]

    for bad, code in (
        ({"name": " ", "cpuRequired": 0}, "AM-3"),
        ({"name": "x", "links": [{"rel": "category", "href": "/api/config/nope/1"}]}, "GEN-1"),
        (
            {"name": "x", "links": [{"rel": "category", "href": "/api/config/categories/999"}]},
            "AM-3",
        ),
    ):
        refused = await api.put(url, json=bad, headers={**ADMIN, "Content-Type": JSON_ONE})
        assert refused.status == 400, await refused.text()
        if code != "GEN-1":
            assert await _code(refused) == code

    # Another enterprise's is as absent as a missing one; a USER may not read templates.
    assert (await api.get(url, headers=OTHER)).status == 404
    theirs = (
        f"/api/admin/enterprises/{world.other}/datacenterrepositories/{world.dc}"
        f"/virtualmachinetemplates/{ubuntu}"
    )
    assert (await api.get(theirs, headers=OTHER)).status == 404
    assert (await api.get(url, headers=USER)).status == 403
    async with engine.connect() as conn:
        actions = (
            await conn.execute(
                select(tables.event.c.action).where(tables.event.c.action == "TEMPLATE_MODIFY")
            )
        ).all()
    assert len(actions) == 2


async def test_delete_asks_the_appliance_manager(
    api: Client, world: World, engine: AsyncEngine, fake_am: FakeAM, clock: FakeClock
) -> None:
    ubuntu = await _downloaded(engine, world.ent, UBUNTU, "ubuntu", DiskFormat.QCOW2_SPARSE)
    url = f"{world.base}/virtualmachinetemplates/{ubuntu}"
    assert (await api.delete(url, headers=OTHER)).status == 404
    # The datacenter away: nothing is asked, nothing removed.
    clock.advance(60)
    away = await api.delete(url, headers=ADMIN)
    assert (away.status, await _code(away)) == (503, "DC-1")
    assert fake_am.received == []
    await _beat(engine, clock, sequence=2)
    deleted = await api.delete(url, headers=ADMIN)
    assert deleted.status == 204, await deleted.text()
    assert fake_am.received == [("DELETE", UBUNTU, "", b"")]
    assert (await api.get(url, headers=ADMIN)).status == 404
    async with engine.connect() as conn:
        events = (
            await conn.execute(
                select(tables.event.c.action).where(tables.event.c.action == "TEMPLATE_DELETE")
            )
        ).all()
    assert len(events) == 1


async def test_download_from_a_catalogue(api: Client, world: World, fake_am: FakeAM) -> None:
    url = f"{world.base}/virtualmachinetemplates"
    headers = {**ADMIN, "Content-Type": REQUEST_JSON}
    started = await api.post(url, json={"ovfUrl": UBUNTU}, headers=headers)
    assert started.status == 202, await started.text()
    accepted = await _json(started)
    assert _rels(accepted)["status"] == (
        f"{fake_am.url}/erepos/{world.ent}/templates/{quote(UBUNTU, safe='')}"
    )
    by_link = await api.post(
        url, json={"links": [{"rel": "templateDefinition", "href": WINDOWS}]}, headers=headers
    )
    assert by_link.status == 202
    path = f"/am/erepos/{world.ent}/templates"
    assert fake_am.received == [
        ("POST", path, "text/plain", UBUNTU.encode()),
        ("POST", path, "text/plain", WINDOWS.encode()),
    ]
    for body in ({}, {"ovfUrl": "ftp://x/y.ovf"}):
        refused = await api.post(url, json=body, headers=headers)
        assert (refused.status, await _code(refused)) == (400, "AM-6")
    broken = await api.post(
        url, json={"ovfUrl": "http://catalogue.example/broken.ovf"}, headers=headers
    )
    assert (broken.status, await _code(broken)) == (400, "AM-6")
    assert (await api.post(url, json={"ovfUrl": UBUNTU}, headers={**headers, **USER})).status == 403
    in_xml = await api.post(
        url,
        data=b"<virtualMachineTemplateRequest><ovfUrl>http://c.example/a.ovf</ovfUrl>"
        b"</virtualMachineTemplateRequest>",
        headers={
            **ADMIN,
            "Content-Type": "application/vnd.abiquo.virtualmachinetemplaterequest+xml",
            "Accept": "application/vnd.abiquo.acceptedrequest+xml",
        },
    )
    assert in_xml.status == 202, await in_xml.text()
    assert ET.fromstring(await in_xml.read()).tag == "acceptedrequest"
    assert fake_am.received[-1][3] == b"http://c.example/a.ovf"


async def test_an_appliance_manager_that_does_not_answer_is_503(
    api: Client, world: World, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.execute(tables.remote_service.update().values(uri="http://127.0.0.1:9/am"))
    refused = await api.post(
        f"{world.base}/virtualmachinetemplates",
        json={"ovfUrl": UBUNTU},
        headers={**ADMIN, "Content-Type": REQUEST_JSON},
    )
    assert (refused.status, await _code(refused)) == (503, "AM-5")


# -- conversions -------------------------------------------------------------------------


async def test_conversions_are_sent_to_the_bpm(
    api: Client, world: World, engine: AsyncEngine, link: RecordingLink
) -> None:
    ubuntu = await _downloaded(engine, world.ent, UBUNTU, "ubuntu", DiskFormat.QCOW2_SPARSE)
    url = f"{world.base}/virtualmachinetemplates/{ubuntu}/conversions"
    asked = await api.put(f"{url}/vmdk_flat", headers=ADMIN)
    assert asked.status == 202, await asked.text()
    assert URL(_rels(await _json(asked))["status"]).path == f"{url}/VMDK_FLAT"
    ((dc_uuid, service, message),) = link.sent
    assert (dc_uuid, service) == (DC_UUID, "bpm")
    assert isinstance(message, ConvertTemplateDisk)
    assert (message.source_path, message.source_format, message.target_format) == (
        "x/ubuntu/disk",
        DiskFormat.QCOW2_SPARSE,
        DiskFormat.VMDK_FLAT,
    )
    # Asked again while queued: nothing more is sent.
    assert (await api.put(f"{url}/VMDK_FLAT", headers=ADMIN)).status == 202
    assert len(link.sent) == 1
    posted = await api.post(
        url,
        json={"targetFormat": "RAW"},
        headers={**ADMIN, "Content-Type": "application/vnd.abiquo.conversion+json"},
    )
    assert posted.status == 202, await posted.text()
    assert len(link.sent) == 2
    listed = await _json(await api.get(url, headers=ADMIN))
    assert [(c["targetFormat"], c["state"]) for c in listed["collection"]] == [
        ("VMDK_FLAT", "QUEUED"),
        ("RAW", "QUEUED"),
    ]
    one = await _json(await api.get(f"{url}/VMDK_FLAT", headers=ADMIN))
    assert (one["sourceFormat"], one["state"]) == ("QCOW2_SPARSE", "QUEUED")
    assert (await api.get(f"{url}/VHD_FLAT", headers=ADMIN)).status == 404
    for fmt, status, code in (
        ("QCOW2_SPARSE", 400, "AM-8"),
        ("FLOPPY", 400, "AM-8"),
        ("VMDK_STREAM_OPTIMIZED", 400, "AM-8"),
    ):
        refused = await api.put(f"{url}/{fmt}", headers=ADMIN)
        assert (refused.status, await _code(refused)) == (status, code)
    assert (await api.put(f"{url}/RAW", headers=OTHER)).status == 404


async def test_a_template_still_downloading_is_not_converted(
    api: Client, world: World, engine: AsyncEngine, link: RecordingLink
) -> None:
    await record_template_status(
        engine,
        TemplateStatusChanged(
            dc_uuid=DC_UUID,
            enterprise_id=str(world.ent),
            ovf_id=UBUNTU,
            status=TemplateStatus.DOWNLOADING,
            progress=5,
            at=T0 + timedelta(seconds=1),
        ),
    )
    listed = await _json(await api.get(f"{world.base}/virtualmachinetemplates", headers=ADMIN))
    (template,) = listed["collection"]
    assert (template["name"], template["state"]) == ("ubuntu", "DOWNLOADING")
    refused = await api.put(
        f"{world.base}/virtualmachinetemplates/{template['id']}/conversions/RAW", headers=ADMIN
    )
    assert (refused.status, await _code(refused)) == (409, "AM-9")
    assert link.sent == []
