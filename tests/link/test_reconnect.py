"""The datacenter's RabbitMQ connection closed by the server: restored, nothing lost."""

from __future__ import annotations

import asyncio

import pytest

from abiquo_dc.protocol.messages import CheckServices
from tests import services
from tests.link.conftest import Pair


@pytest.fixture(params=["rabbitmq"])
def transports(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    from abiquo_runtime.messaging.amqp import AmqpTransport
    from tests.link.conftest import Transports

    url: str = request.getfixturevalue("rabbitmq_url")
    vhost: str = request.getfixturevalue("rabbitmq_vhost")
    return Transports(
        "rabbitmq",
        lambda name: AmqpTransport(url, connection_name=name, publish_timeout=30),
        vhost,
    )


async def test_server_side_close_loses_no_command(pair: Pair) -> None:
    handled: set[str] = set()
    all_in = asyncio.Event()
    total = 60

    async def command(m: CheckServices) -> None:
        handled.add(m.message_id)
        if len(handled) == total:
            all_in.set()

    pair.bus.serve(CheckServices, command)
    sent: list[str] = []

    async def send(n: int) -> None:
        for _ in range(n):
            message = CheckServices(dc_uuid=pair.dc_uuid)
            await pair.central.send(pair.dc_uuid, "virtualfactory", message)
            sent.append(message.message_id)
            await asyncio.sleep(0.01)

    await send(20)
    closed = await asyncio.to_thread(
        services.close_rabbitmq_connections, pair.dc_name, pair.transports.vhost
    )
    assert closed >= 1
    await send(40)
    await asyncio.wait_for(all_in.wait(), 60)
    assert handled == set(sent)

    # And what the DC says after the reconnect reaches central too.
    from datetime import UTC, datetime

    from abiquo_dc.protocol.messages import ServiceState, SubsystemStateChanged

    await pair.bus.publish(
        SubsystemStateChanged(
            dc_uuid=pair.dc_uuid, service="am", state=ServiceState.RUNNING, at=datetime.now(UTC)
        )
    )
    await pair.received.wait_for(lambda ms: bool(ms), timeout=30)
