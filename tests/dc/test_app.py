"""The whole datacenter process, composed as abiquo-dc composes it, over the in-process
broker: the six remote services answer their checks, heartbeats and state changes reach
central's link, and the staged shutdown ends cleanly."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from abiquo_central.link import CentralLink
from abiquo_dc.app import Datacenter, build_datacenter
from abiquo_dc.protocol.messages import (
    CheckServices,
    Heartbeat,
    ServicesStatus,
    ServiceState,
    SubsystemStateChanged,
)
from abiquo_dc.settings import DatacenterSettings, DCSettings, RepositorySettings
from abiquo_runtime.messaging.memory import MemoryBroker
from abiquo_runtime.settings import HttpSettings, ShutdownSettings
from abiquo_runtime.shutdown import run_stages
from tests.link.conftest import Received

CHECKS = ["am", "bpm-async", "nodecollector", "virtualfactory", "ssm", "vsm"]


def repository(tmp_path: Path) -> RepositorySettings:
    """A template repository with its mark file: the AM runs only with one mounted."""
    path = tmp_path / "repository"
    path.mkdir(exist_ok=True)
    (path / ".abiquo_repository").touch()
    return RepositorySettings(path=str(path))


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Datacenter, CentralLink, Received]]:
    broker = MemoryBroker()
    received = Received()
    central = CentralLink(transport=broker.connection("central"), on_message=received.add)
    await central.start()
    await central.accept()
    settings = DCSettings(
        datacenter=DatacenterSettings(
            name="dc-test", state_dir=str(tmp_path), heartbeat_interval=0.1
        ),
        http=HttpSettings(host="127.0.0.1", port=0),
        repository=repository(tmp_path),
        shutdown=ShutdownSettings(drain_timeout=2, close_timeout=2, stop_accepting_timeout=1),
    )
    dc = build_datacenter(settings, transport=broker.connection("dc"))
    await dc.start()
    try:
        yield dc, central, received
    finally:
        await run_stages(dc.shutdown_stages())
        await central.close()


async def test_the_uuid_is_made_once_and_kept(tmp_path: Path) -> None:
    from abiquo_dc.identity import datacenter_uuid

    first = datacenter_uuid("", tmp_path)
    assert datacenter_uuid("", tmp_path) == first
    assert str(uuid.UUID(first)) == first
    given = str(uuid.uuid4())
    assert datacenter_uuid(given, tmp_path) == given


async def test_every_remote_service_answers_its_check(
    running: tuple[Datacenter, CentralLink, Received],
) -> None:
    dc, _, _ = running
    for subsystem in dc.subsystems:
        await subsystem.wait_running(5)
    async with aiohttp.ClientSession() as http:
        for path in CHECKS:
            async with http.get(f"{dc.server.url}/{path}/check") as response:
                assert response.status == 200, path
                body = await response.text()
                assert body == (dc.uuid if path in ("virtualfactory", "bpm-async") else "")
            assert response.headers["X-Correlation-ID"]


async def test_central_hears_heartbeats_and_state_changes(
    running: tuple[Datacenter, CentralLink, Received],
) -> None:
    dc, central, received = running

    def all_running(messages: list) -> bool:  # type: ignore[type-arg]
        beats = [m for m in messages if isinstance(m, Heartbeat)]
        return (
            bool(beats)
            and set(beats[-1].services.values()) == {ServiceState.RUNNING}
            and beats[-1].http_url == dc.server.url
        )

    await received.wait_for(all_running)
    beats = received.of(Heartbeat)
    assert beats[-1].dc_uuid == dc.uuid
    assert beats[-1].http_url == dc.server.url
    assert sorted(beats[-1].services) == sorted(CHECKS)
    assert [b.sequence for b in beats] == list(range(1, len(beats) + 1))
    changes = received.of(SubsystemStateChanged)
    assert {(c.service, c.state) for c in changes} >= {(p, ServiceState.RUNNING) for p in CHECKS}

    reply = await central.request(dc.uuid, CheckServices(dc_uuid=dc.uuid), timeout=5)
    assert isinstance(reply, ServicesStatus)
    assert set(reply.services) == set(CHECKS)


async def test_shutdown_runs_three_stages_and_says_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MemoryBroker()
    received = Received()
    central = CentralLink(transport=broker.connection("central"), on_message=received.add)
    await central.start()
    await central.accept()
    settings = DCSettings(
        datacenter=DatacenterSettings(state_dir=str(tmp_path), heartbeat_interval=0.1),
        http=HttpSettings(host="127.0.0.1", port=0),
        repository=repository(tmp_path),
    )
    dc = build_datacenter(settings, transport=broker.connection("dc"))
    await dc.start()
    for subsystem in dc.subsystems:
        await subsystem.wait_running(5)
    with caplog.at_level(logging.INFO):
        assert await run_stages(dc.shutdown_stages())
    lines = [r.getMessage() for r in caplog.records if "shutdown stage done" in r.getMessage()]
    assert len(lines) == 3
    # Each service's STOPPED went out before the link closed.
    await received.wait_for(
        lambda ms: (
            {
                m.service
                for m in ms
                if isinstance(m, SubsystemStateChanged) and m.state is ServiceState.STOPPED
            }
            == set(CHECKS)
        )
    )
    await central.close()
    await asyncio.sleep(0)
