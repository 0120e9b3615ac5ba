"""A datacenter's link and central's link, over RabbitMQ and over the in-process broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from abiquo_central.link import CentralLink
from abiquo_dc.bus import Bus
from abiquo_dc.link import DatacenterLink
from abiquo_dc.protocol.messages import Message
from abiquo_runtime.messaging.amqp import AmqpTransport
from abiquo_runtime.messaging.memory import MemoryBroker
from abiquo_runtime.messaging.transport import Transport


@dataclass
class Received:
    """What central's link handed to its on_message, with a way to wait for it."""

    messages: list[Message] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def add(self, message: Message) -> None:
        async with self.changed:
            self.messages.append(message)
            self.changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[list[Message]], bool], timeout: float = 10.0
    ) -> list[Message]:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: predicate(self.messages))
        return self.messages

    def of(self, kind: type[Message]) -> list[Message]:
        return [m for m in self.messages if isinstance(m, kind)]


@dataclass
class Transports:
    kind: str
    make: Callable[[str], Transport]
    vhost: str = ""


@pytest.fixture(params=["memory", "rabbitmq"])
def transports(request: pytest.FixtureRequest) -> Transports:
    if request.param == "memory":
        broker = MemoryBroker()
        return Transports("memory", lambda name: broker.connection(name))
    url: str = request.getfixturevalue("rabbitmq_url")
    vhost: str = request.getfixturevalue("rabbitmq_vhost")
    return Transports(
        "rabbitmq",
        lambda name: AmqpTransport(url, connection_name=name, publish_timeout=20),
        vhost,
    )


@dataclass
class Pair:
    dc_uuid: str
    dc_name: str
    bus: Bus
    dc: DatacenterLink
    central: CentralLink
    received: Received
    transports: Transports


@pytest.fixture
async def pair(transports: Transports) -> AsyncIterator[Pair]:
    """A DC link over a bare bus (tests serve what they need) and a central link."""
    dc_uuid = str(uuid.uuid4())
    dc_name = f"test-dc {dc_uuid}"
    bus = Bus()
    received = Received()
    dc = DatacenterLink(
        transport=transports.make(dc_name),
        bus=bus,
        dc_uuid=dc_uuid,
        prefetch=4,
        handler_timeout=5,
        no_handler_delay=0.05,
    )
    central = CentralLink(
        transport=transports.make(f"test-central {dc_uuid}"),
        on_message=received.add,
        retry_delay=0.05,
    )
    await central.start()
    await central.accept()
    await dc.start()
    await dc.accept()
    try:
        yield Pair(dc_uuid, dc_name, bus, dc, central, received, transports)
    finally:
        await dc.close()
        await central.close()
        await bus.close()
