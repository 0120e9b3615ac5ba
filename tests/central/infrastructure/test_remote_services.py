"""Remote services: their types and URIs, registering and checking them, what status shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import msgspec
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import PageRequest
from abiquo_central.infrastructure import datacenters
from abiquo_central.infrastructure import remote_services as rs
from abiquo_central.infrastructure.remote_services import ServiceType
from abiquo_dc.protocol import codec
from abiquo_dc.protocol.messages import Inbound, Message, ServiceState
from abiquo_dc.protocol.queues import requests_queue
from abiquo_dc.protocol.templates import AnnounceTemplates
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound
from tests.central.conftest import T0
from tests.central.infrastructure.test_checks import DC_UUID, FakeDc, FakeLink, serve

OTHER_UUID = "0a0b0c0d-1111-2222-3333-444455556666"


@pytest.fixture
async def fake_dc() -> AsyncIterator[FakeDc]:
    async for dc in serve(FakeDc()):
        yield dc


@pytest.fixture
async def checker() -> AsyncIterator[rs.Checker]:
    async with aiohttp.ClientSession() as session:
        yield rs.Checker(session=session, link=None, timeout=1)


async def _dc(engine: AsyncEngine, name: str = "bcn") -> int:
    spec = datacenters.DatacenterSpec(name=name, location="Barcelona")
    return await datacenters.create_datacenter(engine, spec, checker=None, actor=None, now=T0)


async def _uuid(engine: AsyncEngine, dc_id: int) -> str | None:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                select(tables.datacenter.c.uuid).where(tables.datacenter.c.id == dc_id)
            )
        ).scalar_one()


# -- types and URIs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("VIRTUAL_FACTORY", ServiceType.VIRTUAL_FACTORY),
        ("virtual_factory", ServiceType.VIRTUAL_FACTORY),
        ("virtualfactory", ServiceType.VIRTUAL_FACTORY),
        ("vsm", ServiceType.VIRTUAL_SYSTEM_MONITOR),
        ("virtualsystemmonitor", ServiceType.VIRTUAL_SYSTEM_MONITOR),
        ("bpm-async", ServiceType.BPM_SERVICE),
        ("BPM_SERVICE", ServiceType.BPM_SERVICE),
        ("am", ServiceType.APPLIANCE_MANAGER),
        ("dhcpservice", ServiceType.DHCP_SERVICE),
    ],
)
def test_types_in_every_spelling(text: str, kind: ServiceType) -> None:
    assert rs.parse_type(text) is kind
    assert rs.parse_type(text, in_path=True) is kind


def test_unknown_types() -> None:
    with pytest.raises(InvalidInput) as caught:
        rs.parse_type("FLUX_CAPACITOR")
    assert caught.value.code == "RS-1" and "VIRTUAL_FACTORY" in caught.value.message
    with pytest.raises(InvalidInput, match="needs a type"):
        rs.parse_type(" ")
    with pytest.raises(NotFound) as missing:
        rs.parse_type("fluxcapacitor", in_path=True)
    assert missing.value.code == "RS-0"
    assert ServiceType.APPLIANCE_MANAGER.path_name == "appliancemanager"


@pytest.mark.parametrize(
    ("kind", "uri", "stored"),
    [
        (
            ServiceType.VIRTUAL_FACTORY,
            " http://DC1:8009/virtualfactory/ ",
            "http://dc1:8009/virtualfactory",
        ),
        (ServiceType.APPLIANCE_MANAGER, "https://dc.example.com/am", "https://dc.example.com/am"),
        (ServiceType.VIRTUAL_SYSTEM_MONITOR, "http://10.0.0.1/vsm", "http://10.0.0.1/vsm"),
        (
            ServiceType.NODE_COLLECTOR,
            "http://[::1]:8009/nodecollector",
            "http://[::1]:8009/nodecollector",
        ),
        (ServiceType.DHCP_SERVICE, "omapi://dhcp.local:7911", "omapi://dhcp.local:7911"),
        (ServiceType.DHCP_SERVICE, "OMAPI://dhcp.local", "omapi://dhcp.local:7911"),
    ],
)
def test_valid_uris(kind: ServiceType, uri: str, stored: str) -> None:
    assert rs.validate_uri(kind, uri) == stored


@pytest.mark.parametrize(
    ("kind", "uri", "why"),
    [
        (ServiceType.VIRTUAL_FACTORY, "", "empty"),
        (ServiceType.VIRTUAL_FACTORY, "ftp://dc/vf", "scheme must be http or https"),
        (ServiceType.VIRTUAL_FACTORY, "dc1:8009/vf", "scheme"),
        (ServiceType.VIRTUAL_FACTORY, "http:///vf", "host"),
        (ServiceType.VIRTUAL_FACTORY, "http://dc one/vf", "spaces"),
        (ServiceType.VIRTUAL_FACTORY, "http://dc:99999/vf", "1 to 65535"),
        (ServiceType.VIRTUAL_FACTORY, "http://dc:0/vf", "1 to 65535"),
        (ServiceType.VIRTUAL_FACTORY, "http://dc:http/vf", "1 to 65535"),
        (ServiceType.VIRTUAL_FACTORY, "http://u:p@dc/vf", "credentials"),
        (ServiceType.VIRTUAL_FACTORY, "http://dc/vf?x=1", "query"),
        (ServiceType.VIRTUAL_FACTORY, "http://" + "d" * 1100, "longer than 1024"),
        (ServiceType.VIRTUAL_FACTORY, "http://dc\x00/vf", "control"),
        (ServiceType.DHCP_SERVICE, "http://dhcp:7911", "scheme must be omapi"),
        (ServiceType.DHCP_SERVICE, "omapi://dhcp:7911/x", "no path"),
    ],
)
def test_invalid_uris(kind: ServiceType, uri: str, why: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        rs.validate_uri(kind, uri)
    assert caught.value.code == "RS-2"
    assert why in caught.value.message


def test_shown_status() -> None:
    vf = ServiceType.VIRTUAL_FACTORY
    running = {"virtualfactory": "RUNNING"}
    assert rs.shown_status(vf, 1, alive=True, reported=running) == 1
    assert rs.shown_status(vf, 1, alive=False, reported=running) == 0
    assert rs.shown_status(vf, 0, alive=True, reported=running) == 0
    assert rs.shown_status(vf, 1, alive=True, reported={"virtualfactory": "RETRYING"}) == 0
    # What the heartbeat does not name (the DHCP service) depends on the check alone.
    assert rs.shown_status(ServiceType.DHCP_SERVICE, 1, alive=True, reported=running) == 1
    assert rs.shown_status(vf, 1, alive=True, reported=None) == 1


# -- registering and checking --------------------------------------------------------------


async def test_the_factory_names_the_datacenter(
    engine: AsyncEngine, fake_dc: FakeDc, checker: rs.Checker
) -> None:
    dc_id = await _dc(engine)
    assert await _uuid(engine, dc_id) is None
    found = await rs.create_remote_service(
        engine,
        dc_id,
        ServiceType.VIRTUAL_FACTORY,
        fake_dc.uri("virtualfactory"),
        checker=checker,
        actor=None,
        now=T0,
    )
    assert (found.status, found.checked_at) == (1, T0)
    assert await _uuid(engine, dc_id) == DC_UUID
    # The BPM answers the same UUID: it is this datacenter's.
    bpm = await rs.create_remote_service(
        engine,
        dc_id,
        ServiceType.BPM_SERVICE,
        fake_dc.uri("bpm-async"),
        checker=checker,
        actor=None,
    )
    assert bpm.status == 1
    # Shown up only while the datacenter is alive.
    shown = await rs.get_remote_service(
        engine, dc_id, ServiceType.BPM_SERVICE, now=T0, liveness_timeout=15
    )
    assert shown.status == 0
    events = await _events(engine)
    assert events[-2:] == [("REMOTE_SERVICES_CREATE", None), ("REMOTE_SERVICES_CREATE", None)]


async def _queued(engine: AsyncEngine) -> list[tuple[str, str, Message]]:
    """What the outbox holds for the datacenters: (dc_uuid, service, message), each
    message without its own id (a new one each time) to compare it."""
    out = tables.outbox
    async with engine.connect() as conn:
        rows = await conn.execute(select(out.c.dc_uuid, out.c.service, out.c.body))
        return [
            (r.dc_uuid, r.service, _sans_id(codec.decode(r.body.encode(), Inbound))) for r in rows
        ]


def _sans_id(message: Message) -> Message:
    return msgspec.structs.replace(message, message_id="")


ASKED = [(DC_UUID, rs.TEMPLATE_COMMANDS, _sans_id(AnnounceTemplates(dc_uuid=DC_UUID)))]


async def test_a_datacenter_first_named_is_asked_for_its_templates(
    engine: AsyncEngine, fake_dc: FakeDc, checker: rs.Checker
) -> None:
    dc_id = await _dc(engine)
    # Services registered before the factory name no datacenter: nothing to ask yet.
    await rs.create_remote_service(
        engine, dc_id, ServiceType.APPLIANCE_MANAGER, fake_dc.uri("am"), checker=checker, actor=None
    )
    assert await _queued(engine) == []
    await rs.create_remote_service(
        engine,
        dc_id,
        ServiceType.VIRTUAL_FACTORY,
        fake_dc.uri("virtualfactory"),
        checker=checker,
        actor=None,
        now=T0,
    )
    assert await _queued(engine) == ASKED
    # A queue whose messages wait for the DC, not the rpc one's that expire.
    assert requests_queue(DC_UUID, rs.TEMPLATE_COMMANDS).endswith(".bpm")
    # Known now: other services, checks and registering again ask nothing more.
    await rs.create_remote_service(
        engine,
        dc_id,
        ServiceType.BPM_SERVICE,
        fake_dc.uri("bpm-async"),
        checker=checker,
        actor=None,
    )
    await rs.check_remote_service(
        engine, dc_id, ServiceType.VIRTUAL_FACTORY, checker=checker, actor=None
    )
    async with aiohttp.ClientSession() as session:
        await rs.register_remote_service(
            engine, session, dc_id, "virtualfactory", fake_dc.uri("virtualfactory")
        )
    assert await _queued(engine) == ASKED


async def test_a_datacenter_created_with_its_factory_is_asked_for_its_templates(
    engine: AsyncEngine, fake_dc: FakeDc, checker: rs.Checker
) -> None:
    spec = datacenters.DatacenterSpec(
        name="bcn",
        location="Barcelona",
        remote_services=(
            ("VIRTUAL_FACTORY", fake_dc.uri("virtualfactory")),
            ("BPM_SERVICE", fake_dc.uri("bpm-async")),
        ),
    )
    await datacenters.create_datacenter(engine, spec, checker=checker, actor=None, now=T0)
    assert await _queued(engine) == ASKED


async def _events(engine: AsyncEngine) -> list[tuple[str, int | None]]:
    ev = tables.event
    async with engine.connect() as conn:
        rows = await conn.execute(select(ev.c.action, ev.c.user_id).order_by(ev.c.id))
        return [(r.action, r.user_id) for r in rows]


async def test_a_bpm_of_another_datacenter_is_refused(
    engine: AsyncEngine, fake_dc: FakeDc, checker: rs.Checker
) -> None:
    dc_id = await datacenters.ensure_datacenter(engine, uuid=OTHER_UUID, name="x", location="")
    with pytest.raises(Conflict) as caught:
        await rs.create_remote_service(
            engine,
            dc_id,
            ServiceType.BPM_SERVICE,
            fake_dc.uri("bpm-async"),
            checker=checker,
            actor=None,
        )
    assert caught.value.code == "RS-5"
    page = await rs.list_remote_services(
        engine, dc_id, page=PageRequest(), now=T0, liveness_timeout=15
    )
    assert page.total == 0


async def test_a_factory_already_known_is_refused(
    engine: AsyncEngine, fake_dc: FakeDc, checker: rs.Checker
) -> None:
    await datacenters.ensure_datacenter(engine, uuid=DC_UUID, name="first", location="")
    dc_id = await _dc(engine, "second")
    with pytest.raises(Conflict) as caught:
        await rs.create_remote_service(
            engine,
            dc_id,
            ServiceType.VIRTUAL_FACTORY,
            fake_dc.uri("virtualfactory"),
            checker=checker,
            actor=None,
        )
    assert caught.value.code == "RS-6" and "first" in caught.value.message
    assert await _uuid(engine, dc_id) is None


async def test_one_uri_one_service(
    engine: AsyncEngine, fake_dc: FakeDc, checker: rs.Checker
) -> None:
    one, two = await _dc(engine, "one"), await _dc(engine, "two")
    await rs.create_remote_service(
        engine, one, ServiceType.APPLIANCE_MANAGER, fake_dc.uri("am"), checker=checker, actor=None
    )
    with pytest.raises(Conflict) as caught:
        await rs.create_remote_service(
            engine,
            two,
            ServiceType.APPLIANCE_MANAGER,
            fake_dc.uri("am") + "/",
            checker=checker,
            actor=None,
        )
    assert caught.value.code == "RS-4" and "one" in caught.value.message
    with pytest.raises(Conflict) as again:
        await rs.create_remote_service(
            engine,
            one,
            ServiceType.APPLIANCE_MANAGER,
            "http://elsewhere/am",
            checker=checker,
            actor=None,
        )
    assert again.value.code == "RS-3"


async def test_a_silent_service_is_registered_down_and_learnt_later(
    engine: AsyncEngine, checker: rs.Checker, unused_tcp_port: int
) -> None:
    dc_id = await _dc(engine)
    uri = f"http://127.0.0.1:{unused_tcp_port}/virtualfactory"
    found = await rs.create_remote_service(
        engine, dc_id, ServiceType.VIRTUAL_FACTORY, uri, checker=checker, actor=None
    )
    assert found.status == 0 and await _uuid(engine, dc_id) is None
    with pytest.raises(rs.RemoteServiceDown) as caught:
        await rs.check_remote_service(
            engine, dc_id, ServiceType.VIRTUAL_FACTORY, checker=checker, actor=None
        )
    assert caught.value.code == "RS-7"
    # The datacenter starts where the URI says: the next check finds it.
    async for dc in serve(FakeDc()):
        await rs.update_remote_service(
            engine,
            dc_id,
            ServiceType.VIRTUAL_FACTORY,
            dc.uri("virtualfactory"),
            checker=checker,
            actor=None,
        )
        assert await _uuid(engine, dc_id) == DC_UUID
        checked = await rs.check_remote_service(
            engine, dc_id, ServiceType.VIRTUAL_FACTORY, checker=checker, actor=None, now=T0
        )
        assert (checked.status, checked.uri) == (1, dc.uri("virtualfactory"))
    actions = [a for a, _ in await _events(engine)]
    assert actions[-4:] == [
        "REMOTE_SERVICES_CREATE",
        "REMOTE_SERVICES_CHECK",
        "REMOTE_SERVICE_UPDATE",
        "REMOTE_SERVICES_CHECK",
    ]


async def test_the_datacenter_says_what_runs(
    engine: AsyncEngine, fake_dc: FakeDc, checker: rs.Checker
) -> None:
    dc_id = await datacenters.ensure_datacenter(engine, uuid=DC_UUID, name="x", location="")
    link = FakeLink({"am": ServiceState.RETRYING})
    slow = rs.Checker(session=checker.session, link=link, timeout=1)
    found = await rs.create_remote_service(
        engine, dc_id, ServiceType.APPLIANCE_MANAGER, fake_dc.uri("am"), checker=slow, actor=None
    )
    assert found.status == 0 and link.asked == [DC_UUID]


async def test_check_of_a_service_moved_to_another_datacenter(
    engine: AsyncEngine, fake_dc: FakeDc, checker: rs.Checker
) -> None:
    dc_id = await _dc(engine)
    await rs.create_remote_service(
        engine,
        dc_id,
        ServiceType.VIRTUAL_FACTORY,
        fake_dc.uri("virtualfactory"),
        checker=checker,
        actor=None,
    )
    fake_dc.answers["virtualfactory"] = (200, OTHER_UUID)
    with pytest.raises(Conflict) as caught:
        await rs.check_remote_service(
            engine, dc_id, ServiceType.VIRTUAL_FACTORY, checker=checker, actor=None
        )
    assert caught.value.code == "RS-5"
    async with engine.connect() as conn:
        status = (await conn.execute(select(tables.remote_service.c.status))).scalar_one()
    assert status == 0


async def test_register_is_idempotent(engine: AsyncEngine, fake_dc: FakeDc) -> None:
    dc_id = await datacenters.ensure_datacenter(engine, uuid=DC_UUID, name="aio", location="")
    async with aiohttp.ClientSession() as session:
        first = await rs.register_remote_service(
            engine, session, dc_id, "VIRTUAL_FACTORY", fake_dc.uri("virtualfactory"), timeout=1
        )
        again = await rs.register_remote_service(
            engine, session, dc_id, ServiceType.VIRTUAL_FACTORY, fake_dc.uri("virtualfactory")
        )
        assert (first.id, first.status) == (again.id, 1)
        fake_dc.answers["vsm"] = (503, "")
        down = await rs.register_remote_service(
            engine, session, dc_id, ServiceType.VIRTUAL_SYSTEM_MONITOR, fake_dc.uri("vsm")
        )
        assert down.status == 0
        still_down = await rs.register_remote_service(
            engine, session, dc_id, ServiceType.VIRTUAL_SYSTEM_MONITOR, fake_dc.uri("vsm")
        )
        assert still_down.status == 0
        moved = await rs.register_remote_service(
            engine, session, dc_id, ServiceType.VIRTUAL_SYSTEM_MONITOR, fake_dc.uri("am")
        )
        assert (moved.id, moved.uri, moved.status) == (down.id, fake_dc.uri("am"), 1)
    # The system registered them: no user.
    assert {user for _, user in await _events(engine)} == {None}


async def test_delete(engine: AsyncEngine, fake_dc: FakeDc, checker: rs.Checker) -> None:
    dc_id = await datacenters.ensure_datacenter(engine, uuid=DC_UUID, name="x", location="")
    await rs.create_remote_service(
        engine,
        dc_id,
        ServiceType.NODE_COLLECTOR,
        fake_dc.uri("nodecollector"),
        checker=checker,
        actor=None,
    )
    await rs.delete_remote_service(engine, dc_id, ServiceType.NODE_COLLECTOR, actor=None)
    with pytest.raises(NotFound) as caught:
        await rs.delete_remote_service(engine, dc_id, ServiceType.NODE_COLLECTOR, actor=None)
    assert caught.value.code == "RS-0"
    with pytest.raises(NotFound) as no_dc:
        await rs.get_remote_service(
            engine, 4242, ServiceType.NODE_COLLECTOR, now=T0, liveness_timeout=1
        )
    assert no_dc.value.code == "DC-0"


async def test_status_follows_the_heartbeats(
    engine: AsyncEngine, fake_dc: FakeDc, checker: rs.Checker
) -> None:
    dc_id = await datacenters.ensure_datacenter(engine, uuid=DC_UUID, name="x", location="")
    await rs.create_remote_service(
        engine, dc_id, ServiceType.APPLIANCE_MANAGER, fake_dc.uri("am"), checker=checker, actor=None
    )

    async def status(at: float) -> int:
        found = await rs.get_remote_service(
            engine,
            dc_id,
            ServiceType.APPLIANCE_MANAGER,
            now=T0 + timedelta(seconds=at),
            liveness_timeout=15,
        )
        return found.status

    assert await status(0) == 0
    await datacenters.record_heartbeat(
        engine,
        dc_uuid=DC_UUID,
        name="x",
        sequence=1,
        started_at=T0,
        sent_at=T0,
        http_url=fake_dc.url,
        services={"am": "RUNNING"},
    )
    assert (await status(0), await status(15), await status(16)) == (1, 1, 0)
    await datacenters.record_heartbeat(
        engine,
        dc_uuid=DC_UUID,
        name="x",
        sequence=2,
        started_at=T0,
        sent_at=T0 + timedelta(seconds=16),
        http_url=fake_dc.url,
        services={"am": "FAILED"},
    )
    assert await status(16) == 0
