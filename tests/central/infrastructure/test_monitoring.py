"""A datacenter that lost its monitoring state is told again about each of its machines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.infrastructure import racks
from abiquo_central.infrastructure.monitoring import restore_monitoring
from abiquo_central.notifications import message_handler
from abiquo_dc.protocol.definitions import Credentials
from abiquo_dc.protocol.messages import RequestFailed
from abiquo_dc.protocol.monitoring import MonitoringStateLost
from abiquo_runtime.errors import TemporaryError
from abiquo_runtime.secrets import SecretBox
from tests.central.conftest import T0, FakeClock
from tests.central.infrastructure.test_discovery import (
    DC_UUID,
    FakeDatacenter,
    calls_for,
    fake_dc,
    live_dc,
)
from tests.central.infrastructure.test_machines import ACTOR, _create, spec

__all__ = ["fake_dc", "live_dc"]


@pytest.fixture
async def two_machines(
    engine: AsyncEngine, fake_dc: FakeDatacenter, secrets: SecretBox, clock: FakeClock, live_dc: int
) -> None:
    rack = await racks.create_rack(engine, live_dc, racks.RackSpec(name="r1"), actor=ACTOR, now=T0)
    for address, password in (("10.0.0.1", None), ("10.0.0.2", "s3cret")):
        await _create(engine, fake_dc, secrets, clock, live_dc, rack.id, spec(address, password))
    # The datacenter forgets them (Redis flushed).
    fake_dc.monitored.clear()


async def test_every_machine_is_sent_again_with_its_credentials(
    engine: AsyncEngine, fake_dc: FakeDatacenter, secrets: SecretBox, two_machines: None
) -> None:
    taken = await restore_monitoring(engine, calls_for(fake_dc), secrets, DC_UUID)
    assert taken == 2
    assert sorted(fake_dc.monitored) == ["10.0.0.1", "10.0.0.2"]
    assert fake_dc.monitored["10.0.0.2"].credentials == Credentials(user="root", password="s3cret")
    assert fake_dc.monitored["10.0.0.1"].credentials == Credentials(user="root", password="")


async def test_another_datacenter_gets_nothing(
    engine: AsyncEngine, fake_dc: FakeDatacenter, secrets: SecretBox, two_machines: None
) -> None:
    assert await restore_monitoring(engine, calls_for(fake_dc), secrets, "another-uuid") == 0
    assert fake_dc.monitored == {}


async def test_a_silent_datacenter_is_tried_again_later(
    engine: AsyncEngine, fake_dc: FakeDatacenter, secrets: SecretBox, two_machines: None
) -> None:
    fake_dc.down = True
    with pytest.raises(TemporaryError):
        await restore_monitoring(engine, calls_for(fake_dc), secrets, DC_UUID)


async def test_a_refused_host_does_not_stop_the_others(
    engine: AsyncEngine, fake_dc: FakeDatacenter, secrets: SecretBox, two_machines: None
) -> None:
    fake_dc.failure = RequestFailed(code="GEN-1", message="refused")
    assert await restore_monitoring(engine, calls_for(fake_dc), secrets, DC_UUID) == 0


async def test_the_message_handler_restores_on_monitoring_state_lost(
    engine: AsyncEngine, fake_dc: FakeDatacenter, secrets: SecretBox, two_machines: None
) -> None:
    handle = message_handler(engine=engine, link=fake_dc, secrets=secrets, request_timeout=5.0)
    await handle(MonitoringStateLost(dc_uuid=DC_UUID, at=datetime.now(UTC)))
    assert sorted(fake_dc.monitored) == ["10.0.0.1", "10.0.0.2"]
