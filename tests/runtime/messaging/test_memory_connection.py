"""Clients of one in-process broker: closing one leaves the others running."""

from __future__ import annotations

import asyncio

import pytest

from abiquo_runtime.messaging.memory import MemoryBroker
from abiquo_runtime.messaging.transport import Delivery, QueueSpec, TransportClosed


async def test_closing_one_connection_leaves_the_others() -> None:
    broker = MemoryBroker()
    first, second = broker.connection("first"), broker.connection("second")
    await first.connect()
    await second.connect()
    await first.declare(QueueSpec("work"))
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(delivery: Delivery) -> None:
        await delivery.ack()
        await got.put(delivery.body)

    await second.consume("work", handle, prefetch=1)
    reply_queue = await first.declare_reply_queue()
    await first.close()
    assert not first.is_connected
    with pytest.raises(TransportClosed):
        await first.publish("work", b"x", message_id="1")
    # The closed client's reply queue is gone, as an exclusive AMQP queue would be.
    with pytest.raises(Exception, match="no queue"):
        await second.publish(reply_queue, b"x", message_id="2")
    await second.publish("work", b"still here", message_id="3")
    assert await asyncio.wait_for(got.get(), 5) == b"still here"
    await second.close()
    await broker.close()
