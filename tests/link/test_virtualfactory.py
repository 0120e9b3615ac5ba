"""VM tasks from central through the link to the Virtualization Manager and back, over
the real RabbitMQ and over the in-process broker alike."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from abiquo_central.link import CentralLink
from abiquo_dc.bus import Bus
from abiquo_dc.hypervisors.base import Driver
from abiquo_dc.hypervisors.simulator import SimulatedCloud, SimulatorDriver
from abiquo_dc.link import DatacenterLink
from abiquo_dc.protocol import queues
from abiquo_dc.protocol.definitions import HypervisorConnection
from abiquo_dc.protocol.jobs import JobNotification, JobState
from abiquo_dc.vfactory.service import VirtualFactory
from abiquo_runtime.messaging.transport import HEADER_DEAD_REASON, Delivery
from tests.dc.vfactory.harness import definition, deploy, fast_settings, task
from tests.link.conftest import Received, Transports


@dataclass
class Setup:
    dc_uuid: str
    cloud: SimulatedCloud
    central: CentralLink
    received: Received
    transports: Transports

    def notifications(self) -> list[JobNotification]:
        return [m for m in self.received.messages if isinstance(m, JobNotification)]


@pytest.fixture
async def setup(transports: Transports, tmp_path: Path) -> AsyncIterator[Setup]:
    dc_uuid = str(uuid.uuid4())
    cloud = SimulatedCloud()
    cloud.add_host("10.0.0.1")
    bus = Bus()
    received = Received()
    # A handler timeout far shorter than the tasks: VM tasks must not be bound by it.
    link = DatacenterLink(
        transport=transports.make(f"test-dc {dc_uuid}"),
        bus=bus,
        dc_uuid=dc_uuid,
        prefetch=4,
        prefetch_by_service={"virtualfactory": 64},
        handler_timeout=0.1,
        no_handler_delay=0.05,
    )
    central = CentralLink(
        transport=transports.make(f"test-central {dc_uuid}"),
        on_message=received.add,
        retry_delay=0.05,
    )

    def opener(c: HypervisorConnection) -> Driver:
        return SimulatorDriver(c, cloud=cloud, timeout=5.0)

    factory = VirtualFactory(
        bus=bus,
        dc_uuid=dc_uuid,
        state_dir=tmp_path,
        publish=link.send,
        opener=opener,
        settings=fast_settings(),
    )
    await central.start()
    await central.accept()
    await link.start()
    await factory.start()
    await factory.wait_running(5)
    await link.accept()
    try:
        yield Setup(dc_uuid, cloud, central, received, transports)
    finally:
        await link.stop_accepting()
        await factory.stop()
        await link.close()
        await central.close()
        await bus.close()
        await cloud.close()


async def test_a_deploy_goes_through_and_every_step_comes_back(setup: Setup) -> None:
    host = setup.cloud.host("10.0.0.1")
    host.delay("configure", 0.3)  # longer than the link's handler timeout
    d = definition()
    t = deploy(d)
    await setup.central.send(setup.dc_uuid, "virtualfactory", t)
    await setup.received.wait_for(lambda ms: sum(isinstance(m, JobNotification) for m in ms) >= 4)
    got = setup.notifications()
    assert [(n.job_type.value, n.state.value) for n in got] == [
        ("CONFIGURE", "START"),
        ("CONFIGURE", "DONE"),
        ("POWER_ON", "START"),
        ("POWER_ON", "DONE"),
    ]
    # All of them carry the correlation id central gave the task.
    assert len({n.correlation_id for n in got}) == 1
    assert got[0].correlation_id
    assert d.uuid in host.vms
    # Sent again (as after a lost acknowledgement): nothing more happens.
    await setup.central.send(setup.dc_uuid, "virtualfactory", t)
    await asyncio.sleep(0.5)
    assert len(setup.notifications()) == 4


async def test_many_tasks_at_once_each_reach_their_end(setup: Setup) -> None:
    tasks = [deploy(definition()) for _ in range(40)]
    await asyncio.gather(*(setup.central.send(setup.dc_uuid, "virtualfactory", t) for t in tasks))
    await setup.received.wait_for(
        lambda ms: sum(isinstance(m, JobNotification) for m in ms) >= 160, timeout=30
    )
    done = [n for n in setup.notifications() if n.state is JobState.DONE]
    assert len(done) == 80 == len({n.job_id for n in done})
    assert len(setup.cloud.host("10.0.0.1").vms) == 40


async def test_a_task_that_makes_no_sense_is_dead_lettered(setup: Setup) -> None:
    queue = queues.requests_queue(setup.dc_uuid, "virtualfactory")
    probe = setup.transports.make(f"probe {setup.dc_uuid}")
    await probe.connect()
    dead: asyncio.Queue[Delivery] = asyncio.Queue()

    async def collect(delivery: Delivery) -> None:
        await delivery.ack()
        await dead.put(delivery)

    try:
        consumer = await probe.consume(queue + ".dlq", collect, prefetch=10)
        await setup.central.send(setup.dc_uuid, "virtualfactory", task())
        delivery = await asyncio.wait_for(dead.get(), 10)
        assert "InvalidInput" in str(delivery.headers[HEADER_DEAD_REASON])
        await consumer.cancel()
    finally:
        await probe.close()
    assert setup.notifications() == []
