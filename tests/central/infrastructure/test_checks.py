"""Checking remote services against a small datacenter that answers /check as abiquo-dc does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from abiquo_central.infrastructure.checks import (
    MAX_CHECK_TIMEOUT,
    Target,
    check_services,
    check_timeout,
    probe,
    reported_states,
)
from abiquo_central.link import NoLink
from abiquo_dc.protocol.messages import Message, ServicesStatus, ServiceState

DC_UUID = "6f1c2a7e-0d7b-4d0e-9f3e-1a2b3c4d5e6f"

VF = Target("", answers_uuid=True, names_datacenter=True, dc_path="virtualfactory")


@dataclass
class FakeDc:
    """A datacenter's HTTP port: each service's /check answers what `answers` says
    (a status, and a body); a path not in it is 404. `hang` paths never answer."""

    uuid: str = DC_UUID
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    url: str = ""

    def __post_init__(self) -> None:
        if not self.answers:
            self.answers = {
                "virtualfactory": (200, self.uuid),
                "bpm-async": (200, self.uuid),
                "am": (200, ""),
                "vsm": (200, ""),
                "nodecollector": (200, ""),
                "ssm": (503, "ssm is FAILED: no storage"),
            }

    async def check(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        if service in self.hang:
            await asyncio.sleep(3600)
        status, body = self.answers.get(service, (404, ""))
        return web.Response(status=status, text=body)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{service}/check", self.check)
        return app

    def uri(self, service: str) -> str:
        return f"{self.url}/{service}"


async def serve(dc: FakeDc) -> AsyncIterator[FakeDc]:
    """Serve `dc` on a free port of 127.0.0.1 while the caller runs."""
    async with TestServer(dc.app(), host="127.0.0.1") as server:
        dc.url = str(server.make_url("")).rstrip("/")
        yield dc


@pytest.fixture
async def fake_dc() -> AsyncIterator[FakeDc]:
    async for dc in serve(FakeDc()):
        yield dc


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class FakeLink:
    """A link whose datacenter reports these states (or never answers, with None)."""

    def __init__(self, states: dict[str, ServiceState] | None) -> None:
        self.states = states
        self.asked: list[str] = []

    async def send(self, dc_uuid: str, service: str, message: Message) -> None:
        raise NotImplementedError

    async def request(self, dc_uuid: str, message: Message, *, timeout: float) -> Message:
        self.asked.append(dc_uuid)
        if self.states is None:
            return await NoLink().request(dc_uuid, message, timeout=timeout)
        return ServicesStatus(dc_uuid=dc_uuid, services=self.states)


def test_the_timeout_is_short() -> None:
    assert check_timeout(10.0) == MAX_CHECK_TIMEOUT
    assert check_timeout(1.5) == 1.5
    assert check_timeout(0.0) > 0


async def test_a_virtual_factory_answers_its_uuid(
    fake_dc: FakeDc, session: aiohttp.ClientSession
) -> None:
    found = await probe(
        session, Target(fake_dc.uri("virtualfactory"), answers_uuid=True), timeout=1
    )
    assert (found.up, found.uuid) == (True, DC_UUID)
    # A trailing slash makes no double one.
    found = await probe(session, Target(fake_dc.uri("am") + "/"), timeout=1)
    assert (found.up, found.uuid) == (True, None)


async def test_what_is_down(fake_dc: FakeDc, session: aiohttp.ClientSession) -> None:
    found = await probe(session, Target(fake_dc.uri("ssm")), timeout=1)
    assert not found.up and "503" in found.reason
    found = await probe(session, Target(fake_dc.uri("nothing")), timeout=1)
    assert not found.up and "404" in found.reason
    # A service that answers 200 but no UUID is no virtual factory.
    found = await probe(session, Target(fake_dc.uri("am"), answers_uuid=True), timeout=1)
    assert not found.up and "no datacenter UUID" in found.reason
    fake_dc.hang.add("vsm")
    found = await probe(session, Target(fake_dc.uri("vsm")), timeout=0.2)
    assert not found.up and "did not answer within 0.2s" in found.reason


async def test_nothing_listening(session: aiohttp.ClientSession, unused_tcp_port: int) -> None:
    found = await probe(session, Target(f"http://127.0.0.1:{unused_tcp_port}/am"), timeout=1)
    assert not found.up and "cannot be reached" in found.reason
    found = await probe(
        session, Target(f"omapi://127.0.0.1:{unused_tcp_port}", tcp=True), timeout=1
    )
    assert not found.up and "cannot be reached" in found.reason


async def test_dhcp_is_checked_by_connecting(session: aiohttp.ClientSession) -> None:
    accepted: list[bool] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(True)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        found = await probe(session, Target(f"omapi://127.0.0.1:{port}", tcp=True), timeout=1)
    finally:
        server.close()
        await server.wait_closed()
    assert found.up
    await asyncio.sleep(0)  # let the server see the connection
    assert accepted


async def test_the_datacenter_is_asked_by_the_uuid_its_factory_answered(
    fake_dc: FakeDc, session: aiohttp.ClientSession
) -> None:
    link = FakeLink({"virtualfactory": ServiceState.RUNNING, "am": ServiceState.RETRYING})
    targets = [
        Target(
            fake_dc.uri("virtualfactory"),
            answers_uuid=True,
            names_datacenter=True,
            dc_path="virtualfactory",
        ),
        Target(fake_dc.uri("am"), dc_path="am"),
        Target(fake_dc.uri("nodecollector"), dc_path="nodecollector"),
    ]
    vf, am, nc = await check_services(session, link, targets, dc_uuid=None, timeout=1)
    assert link.asked == [DC_UUID]
    assert vf.up and vf.uuid == DC_UUID
    # /check said yes, but the datacenter itself says the AM is retrying.
    assert not am.up and "RETRYING" in am.reason
    # What the datacenter does not report stands as /check found it.
    assert nc.up


async def test_a_silent_link_leaves_the_checks_as_they_are(
    fake_dc: FakeDc, session: aiohttp.ClientSession
) -> None:
    link = FakeLink(None)
    [am] = await check_services(
        session, link, [Target(fake_dc.uri("am"), dc_path="am")], dc_uuid=DC_UUID, timeout=1
    )
    assert am.up and link.asked == [DC_UUID]
    # With no UUID known nor learnt, there is nobody to ask.
    link = FakeLink({})
    [am] = await check_services(
        session, link, [Target(fake_dc.uri("am"), dc_path="am")], dc_uuid=None, timeout=1
    )
    assert am.up and link.asked == []


async def test_reported_states_are_plain_names() -> None:
    link = FakeLink({"vsm": ServiceState.FAILED})
    assert await reported_states(link, str(uuid.uuid4()), timeout=1) == {"vsm": "FAILED"}
    assert await reported_states(NoLink(), "x", timeout=1) is None
