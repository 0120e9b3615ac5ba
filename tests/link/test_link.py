"""Central and a datacenter exchanging commands, requests, notifications and heartbeats,
over the real RabbitMQ and over the in-process broker alike."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from abiquo_dc.protocol import codec, queues
from abiquo_dc.protocol.messages import (
    CheckServices,
    Heartbeat,
    ServicesStatus,
    ServiceState,
    SubsystemStateChanged,
)
from abiquo_runtime.correlation import correlation, current_correlation_id
from abiquo_runtime.errors import AbiquoError
from abiquo_runtime.messaging.transport import HEADER_DEAD_REASON, Delivery
from tests.link.conftest import Pair


def status_change(pair: Pair, service: str = "vsm") -> SubsystemStateChanged:
    return SubsystemStateChanged(
        dc_uuid=pair.dc_uuid, service=service, state=ServiceState.RUNNING, at=datetime.now(UTC)
    )


async def test_request_and_reply(pair: Pair) -> None:
    seen: list[str | None] = []

    async def check(m: CheckServices) -> ServicesStatus:
        seen.append(current_correlation_id())
        return ServicesStatus(dc_uuid=m.dc_uuid, services={"am": ServiceState.RUNNING})

    pair.bus.serve(CheckServices, check)
    with correlation("http-request-7"):
        reply = await pair.central.request(
            pair.dc_uuid, CheckServices(dc_uuid=pair.dc_uuid), timeout=10
        )
    assert isinstance(reply, ServicesStatus)
    assert reply.services == {"am": ServiceState.RUNNING}
    # The HTTP request's correlation id reached the DC's handler.
    assert seen == ["http-request-7"]


async def test_a_failing_handler_answers_with_its_error(pair: Pair) -> None:
    async def broken(m: CheckServices) -> None:
        raise AbiquoError("no such host", code="DISCOVERY-3")

    pair.bus.serve(CheckServices, broken)
    with pytest.raises(AbiquoError, match="no such host") as info:
        await pair.central.request(pair.dc_uuid, CheckServices(dc_uuid=pair.dc_uuid), timeout=10)
    assert info.value.code == "DISCOVERY-3"


async def test_a_command_is_acked_after_its_handler_ran(pair: Pair) -> None:
    handled = asyncio.Event()

    async def command(m: CheckServices) -> None:
        handled.set()

    pair.bus.serve(CheckServices, command)
    await pair.central.send(pair.dc_uuid, "virtualfactory", CheckServices(dc_uuid=pair.dc_uuid))
    await asyncio.wait_for(handled.wait(), 10)


async def test_a_command_waits_for_its_subsystem_to_serve(pair: Pair) -> None:
    # Sent before anything serves its type (a subsystem still starting): not lost.
    await pair.central.send(pair.dc_uuid, "bpm", CheckServices(dc_uuid=pair.dc_uuid))
    await asyncio.sleep(0.2)
    handled = asyncio.Event()

    async def command(m: CheckServices) -> None:
        handled.set()

    pair.bus.serve(CheckServices, command)
    await asyncio.wait_for(handled.wait(), 10)


async def test_notifications_and_heartbeats_reach_central(pair: Pair) -> None:
    with correlation("job-1"):
        await pair.bus.publish(status_change(pair))
    beat = Heartbeat(
        dc_uuid=pair.dc_uuid,
        name="dc",
        sequence=1,
        started_at=datetime.now(UTC),
        sent_at=datetime.now(UTC),
        http_url="http://127.0.0.1:8009",
        services={"vsm": ServiceState.RUNNING},
    )
    await pair.bus.publish(beat)
    # A message of the bus that is not for central stays in the DC.
    await pair.bus.publish(CheckServices(dc_uuid=pair.dc_uuid))
    await pair.received.wait_for(lambda ms: len(ms) >= 2)
    [change] = pair.received.of(SubsystemStateChanged)
    assert change.correlation_id == "job-1"
    [got] = pair.received.of(Heartbeat)
    assert got.message_id == beat.message_id
    await asyncio.sleep(0.1)
    assert not pair.received.of(CheckServices)


async def test_undecodable_request_is_dead_lettered_and_the_dc_goes_on(pair: Pair) -> None:
    queue = queues.requests_queue(pair.dc_uuid, "virtualfactory")
    probe = pair.transports.make(f"probe {pair.dc_uuid}")
    await probe.connect()
    dead: asyncio.Queue[Delivery] = asyncio.Queue()

    async def collect(delivery: Delivery) -> None:
        await delivery.ack()
        await dead.put(delivery)

    try:
        consumer = await probe.consume(queue + ".dlq", collect, prefetch=10)
        for body in (b"not json", b'{"type": "no_such_message"}', b'{"type": "check_services"}'):
            await probe.publish(queue, body, message_id=f"bad-{len(body)}")
        reasons = []
        for _ in range(3):
            delivery = await asyncio.wait_for(dead.get(), 10)
            reasons.append(str(delivery.headers[HEADER_DEAD_REASON]))
        assert all(r.startswith("does not decode") for r in reasons)
        await consumer.cancel()
    finally:
        await probe.close()

    # The DC still serves.
    async def check(m: CheckServices) -> ServicesStatus:
        return ServicesStatus(dc_uuid=m.dc_uuid, services={})

    pair.bus.serve(CheckServices, check)
    reply = await pair.central.request(
        pair.dc_uuid, CheckServices(dc_uuid=pair.dc_uuid), timeout=10
    )
    assert isinstance(reply, ServicesStatus)


async def test_undecodable_notification_is_dead_lettered_at_central(pair: Pair) -> None:
    probe = pair.transports.make(f"probe {pair.dc_uuid}")
    await probe.connect()
    dead: asyncio.Queue[Delivery] = asyncio.Queue()

    async def collect(delivery: Delivery) -> None:
        await delivery.ack()
        await dead.put(delivery)

    try:
        consumer = await probe.consume(queues.NOTIFICATIONS + ".dlq", collect, prefetch=10)
        await probe.publish(queues.NOTIFICATIONS, b"\xff\xfe", message_id=f"garbage {pair.dc_uuid}")
        while True:  # other tests of this run may have left theirs
            delivery = await asyncio.wait_for(dead.get(), 10)
            if delivery.message_id == f"garbage {pair.dc_uuid}":
                break
        await consumer.cancel()
    finally:
        await probe.close()
    await pair.bus.publish(status_change(pair))
    await pair.received.wait_for(lambda ms: bool(ms))


def test_messages_round_trip_through_the_codec() -> None:
    change = SubsystemStateChanged(
        dc_uuid="u", service="am", state=ServiceState.FAILED, reason="x", at=datetime.now(UTC)
    )
    assert codec.decode(codec.encode(change), SubsystemStateChanged) == change
