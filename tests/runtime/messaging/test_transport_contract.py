"""The contract of transport.py, run against both transports.

Every test runs once on the in-memory broker and once on the local RabbitMQ (in this
run's vhost), with queue names of its own. Waits are on conditions with timeouts; the
few sleeps only give a wrong behaviour room to show itself, never decide a pass.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from abiquo_runtime.errors import Conflict, NotFound
from abiquo_runtime.messaging.amqp import AmqpTransport
from abiquo_runtime.messaging.memory import MemoryBroker
from abiquo_runtime.messaging.transport import (
    HEADER_DEAD_REASON,
    HEADER_ORIGINAL_QUEUE,
    Delivery,
    QueueSpec,
    Transport,
    TransportClosed,
)

REQUEUE_DELAY = 0.05
WAIT = 10.0

Behaviour = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True)
class Received:
    body: bytes
    queue: str
    message_id: str | None
    correlation_id: str | None
    reply_to: str | None
    headers: Mapping[str, Any]
    redelivered: bool


async def ack(delivery: Delivery) -> None:
    await delivery.ack()


class Inbox:
    """A handler that records each delivery, then behaves as told (ack by default)."""

    def __init__(self, behave: Behaviour = ack) -> None:
        self.got: list[Received] = []
        self._behave = behave
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.got.append(
            Received(
                body=delivery.body,
                queue=delivery.queue,
                message_id=delivery.message_id,
                correlation_id=delivery.correlation_id,
                reply_to=delivery.reply_to,
                headers=dict(delivery.headers),
                redelivered=delivery.redelivered,
            )
        )
        self._changed.set()
        await self._behave(delivery)

    @property
    def ids(self) -> list[str | None]:
        return [r.message_id for r in self.got]

    async def wait_for(self, count: int, timeout: float = WAIT) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.got) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.got


@pytest.fixture(autouse=True)
def collect_garbage_first() -> None:
    """Run the cyclic garbage collector now, between tests, while no loop is running.

    A full collection takes 30-50 ms on this kind of machine (more under load), and
    aio-pika leaves cyclic garbage behind (exceptions, and their tracebacks, from closed
    connections). Collected here, it is not left for an automatic collection to do in the
    middle of a loop step, where the loop guard would count it as a blocked loop.
    """
    gc.collect()


KINDS = [
    pytest.param("memory", id="memory"),
    pytest.param("amqp", id="amqp", marks=pytest.mark.rabbitmq),
]


@pytest.fixture(params=KINDS)
def broker_url(request: pytest.FixtureRequest) -> str | None:
    """None for the in-memory broker, else the URL of this run's RabbitMQ vhost."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("rabbitmq_url")
    return url


@pytest.fixture
async def transport(broker_url: str | None) -> AsyncIterator[Transport]:
    made: MemoryBroker | AmqpTransport
    if broker_url is None:
        made = MemoryBroker(requeue_delay=REQUEUE_DELAY)
    else:
        made = AmqpTransport(
            broker_url,
            connection_name=f"contract-{uuid.uuid4().hex[:8]}",
            publish_timeout=WAIT,
            reconnect_interval=0.2,
            requeue_delay=REQUEUE_DELAY,
        )
    await made.connect()
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
def qname() -> str:
    return f"contract.{uuid.uuid4().hex[:10]}"


async def test_round_trip_preserves_properties(transport: Transport, qname: str) -> None:
    await transport.declare(QueueSpec(qname))
    inbox = Inbox()
    consumer = await transport.consume(qname, inbox, prefetch=5)
    await transport.publish(
        qname,
        b"hello",
        message_id="m-1",
        correlation_id="c-1",
        reply_to="somewhere",
        headers={"type": "vm.deploy", "version": 2},
        expiration_ms=60_000,
        persistent=False,
    )
    [got] = await inbox.wait_for(1)
    assert got.body == b"hello"
    assert got.queue == qname
    assert (got.message_id, got.correlation_id, got.reply_to) == ("m-1", "c-1", "somewhere")
    assert got.headers["type"] == "vm.deploy"
    assert got.headers["version"] == 2
    assert got.redelivered is False
    assert await consumer.wait_idle(WAIT)
    assert consumer.in_flight == 0


async def test_declare_is_idempotent_and_rejects_other_properties(
    transport: Transport, qname: str
) -> None:
    await transport.declare(QueueSpec(qname, message_ttl_ms=60_000))
    await transport.declare(QueueSpec(qname, message_ttl_ms=60_000))
    with pytest.raises(Conflict):
        await transport.declare(QueueSpec(qname, message_ttl_ms=5_000))
    # The transport is still usable afterwards (RabbitMQ closed and reopened a channel).
    inbox = Inbox()
    await transport.consume(qname, inbox, prefetch=1)
    await transport.publish(qname, b"x", message_id="after-conflict")
    await inbox.wait_for(1)


async def test_ack_removes_the_message(transport: Transport, qname: str) -> None:
    await transport.declare(QueueSpec(qname))
    first = Inbox()
    consumer = await transport.consume(qname, first, prefetch=1)
    await transport.publish(qname, b"1", message_id="m-1")
    await first.wait_for(1)
    await consumer.cancel()
    assert await consumer.wait_idle(WAIT)

    # FIFO: had m-1 stayed, the next consumer would get it before the marker.
    await transport.publish(qname, b"2", message_id="marker")
    second = Inbox()
    await transport.consume(qname, second, prefetch=1)
    [got] = await second.wait_for(1)
    assert got.message_id == "marker"
    assert first.ids == ["m-1"]


async def test_requeue_redelivers_marked_redelivered(transport: Transport, qname: str) -> None:
    async def requeue_once(delivery: Delivery) -> None:
        if delivery.redelivered:
            await delivery.ack()
        else:
            await delivery.requeue()

    await transport.declare(QueueSpec(qname))
    inbox = Inbox(requeue_once)
    await transport.consume(qname, inbox, prefetch=1)
    await transport.publish(qname, b"again", message_id="m-1")
    got = await inbox.wait_for(2)
    assert [r.message_id for r in got] == ["m-1", "m-1"]
    assert [r.redelivered for r in got] == [False, True]
    assert got[1].body == b"again"


@pytest.mark.parametrize("failure", ["raises", "returns unsettled"])
async def test_handler_that_does_not_settle_gets_it_back(
    transport: Transport, qname: str, failure: str
) -> None:
    async def fail_once(delivery: Delivery) -> None:
        if delivery.redelivered:
            await delivery.ack()
        elif failure == "raises":
            raise RuntimeError("a temporary failure in the handler")

    await transport.declare(QueueSpec(qname))
    inbox = Inbox(fail_once)
    consumer = await transport.consume(qname, inbox, prefetch=1)
    await transport.publish(qname, b"x", message_id="m-1")
    got = await inbox.wait_for(2)
    assert [r.redelivered for r in got] == [False, True]
    assert await consumer.wait_idle(WAIT)
    assert consumer.in_flight == 0


async def test_dead_letter_lands_in_dlq_with_reason(transport: Transport, qname: str) -> None:
    async def reject_first(delivery: Delivery) -> None:
        if delivery.message_id == "poison":
            await delivery.dead_letter("cannot decode")
        else:
            await delivery.ack()

    spec = QueueSpec(qname)
    await transport.declare(spec)
    main = Inbox(reject_first)
    dead = Inbox()
    await transport.consume(qname, main, prefetch=1)
    await transport.consume(spec.dead_letter_queue, dead, prefetch=1)
    await transport.publish(
        qname, b"\x00garbage", message_id="poison", correlation_id="c-7", headers={"type": "x"}
    )
    [got] = await dead.wait_for(1)
    assert got.body == b"\x00garbage"
    assert (got.message_id, got.correlation_id) == ("poison", "c-7")
    assert got.headers[HEADER_DEAD_REASON] == "cannot decode"
    assert got.headers[HEADER_ORIGINAL_QUEUE] == qname
    assert got.headers["type"] == "x"
    assert got.queue == spec.dead_letter_queue
    # The original was acked: the next delivery on the main queue is the marker.
    await transport.publish(qname, b"", message_id="marker")
    await main.wait_for(2)
    assert main.ids == ["poison", "marker"]


async def test_dead_letter_without_dlq_drops_the_message(transport: Transport, qname: str) -> None:
    async def reject_poison(delivery: Delivery) -> None:
        if delivery.message_id == "poison":
            await delivery.dead_letter("cannot decode")
        else:
            await delivery.ack()

    await transport.declare(QueueSpec(qname, dead_letter=False))
    main = Inbox(reject_poison)
    await transport.consume(qname, main, prefetch=1)
    await transport.publish(qname, b"", message_id="poison")
    await transport.publish(qname, b"", message_id="marker")
    await main.wait_for(2)
    assert main.ids == ["poison", "marker"]


async def test_settling_twice_is_an_error(transport: Transport, qname: str) -> None:
    errors: list[BaseException] = []

    async def ack_twice(delivery: Delivery) -> None:
        await delivery.ack()
        assert delivery.settled
        try:
            await delivery.requeue()
        except RuntimeError as exc:
            errors.append(exc)

    await transport.declare(QueueSpec(qname))
    inbox = Inbox(ack_twice)
    consumer = await transport.consume(qname, inbox, prefetch=1)
    await transport.publish(qname, b"", message_id="m-1")
    await inbox.wait_for(1)
    assert await consumer.wait_idle(WAIT)
    assert len(errors) == 1


async def test_prefetch_bounds_the_handlers(transport: Transport, qname: str) -> None:
    prefetch, total = 3, 10
    running = 0
    most = 0
    full = asyncio.Event()
    gate = asyncio.Event()

    async def slow(delivery: Delivery) -> None:
        nonlocal running, most
        # Acked at once: only the consumer itself can keep a fourth handler out.
        await delivery.ack()
        running += 1
        most = max(most, running)
        if running == prefetch:
            full.set()
        try:
            await gate.wait()
        finally:
            running -= 1

    await transport.declare(QueueSpec(qname))
    inbox = Inbox(slow)
    consumer = await transport.consume(qname, inbox, prefetch=prefetch)
    for n in range(total):
        await transport.publish(qname, b"", message_id=f"m-{n}")
    await asyncio.wait_for(full.wait(), WAIT)
    await asyncio.sleep(0.2)  # room for a wrong extra delivery to arrive
    assert running == prefetch
    assert len(inbox.got) == prefetch
    gate.set()
    await inbox.wait_for(total)
    assert await consumer.wait_idle(WAIT)
    assert most == prefetch
    assert set(inbox.ids) == {f"m-{n}" for n in range(total)}
    assert len(inbox.ids) == total


async def test_cancel_stops_deliveries_and_wait_idle_waits(
    transport: Transport, qname: str
) -> None:
    gate = asyncio.Event()

    async def held(delivery: Delivery) -> None:
        await gate.wait()
        await delivery.ack()

    await transport.declare(QueueSpec(qname))
    first = Inbox(held)
    consumer = await transport.consume(qname, first, prefetch=2)
    for n in range(4):
        await transport.publish(qname, b"", message_id=f"m-{n}")
    await first.wait_for(2)
    await consumer.cancel()
    assert consumer.in_flight == 2
    assert not await consumer.wait_idle(0.05)
    gate.set()
    assert await consumer.wait_idle(WAIT)
    assert consumer.in_flight == 0

    await transport.publish(qname, b"", message_id="marker")
    second = Inbox()
    await transport.consume(qname, second, prefetch=5)
    await second.wait_for(3)
    assert second.ids == ["m-2", "m-3", "marker"]
    assert first.ids == ["m-0", "m-1"]


async def test_reply_queue_round_trip(transport: Transport, qname: str) -> None:
    async def answer(delivery: Delivery) -> None:
        assert delivery.reply_to is not None
        await transport.publish(
            delivery.reply_to,
            b"pong:" + delivery.body,
            message_id=f"reply-{delivery.message_id}",
            correlation_id=delivery.correlation_id,
        )
        await delivery.ack()

    await transport.declare(QueueSpec(qname))
    await transport.consume(qname, answer, prefetch=4)
    reply_queue = await transport.declare_reply_queue()
    assert reply_queue != await transport.declare_reply_queue()
    replies = Inbox()
    await transport.consume(reply_queue, replies, prefetch=4)
    await transport.publish(
        qname, b"ping", message_id="q-1", correlation_id="c-9", reply_to=reply_queue
    )
    [got] = await replies.wait_for(1)
    assert (got.body, got.correlation_id, got.queue) == (b"pong:ping", "c-9", reply_queue)


async def test_expired_messages_go_to_the_dlq_not_to_consumers(
    transport: Transport, qname: str
) -> None:
    spec = QueueSpec(qname, message_ttl_ms=100)
    await transport.declare(spec)
    dead = Inbox()
    await transport.consume(spec.dead_letter_queue, dead, prefetch=5)
    await transport.publish(qname, b"stale", message_id="queue-ttl")
    await transport.publish(qname, b"stale", message_id="message-ttl", expiration_ms=20)
    got = await dead.wait_for(2)
    assert sorted(r.message_id or "" for r in got) == ["message-ttl", "queue-ttl"]
    assert all(r.headers["x-first-death-reason"] == "expired" for r in got)
    assert all(r.headers["x-first-death-queue"] == qname for r in got)

    main = Inbox()
    await transport.consume(qname, main, prefetch=5)
    await transport.publish(qname, b"fresh", message_id="fresh")
    await main.wait_for(1)
    assert main.ids == ["fresh"]


async def test_expired_messages_are_dropped_without_dlq(transport: Transport, qname: str) -> None:
    await transport.declare(QueueSpec(qname, dead_letter=False))
    await transport.publish(qname, b"stale", message_id="stale", expiration_ms=20)
    await asyncio.sleep(0.15)  # well past its expiration
    main = Inbox()
    await transport.consume(qname, main, prefetch=5)
    await transport.publish(qname, b"fresh", message_id="fresh")
    await main.wait_for(1)
    assert main.ids == ["fresh"]


async def test_max_length_drops_the_oldest_to_the_dlq(transport: Transport, qname: str) -> None:
    spec = QueueSpec(qname, max_length=2)
    await transport.declare(spec)
    for n in range(3):
        await transport.publish(qname, b"", message_id=f"m-{n}")
    dead = Inbox()
    await transport.consume(spec.dead_letter_queue, dead, prefetch=1)
    [got] = await dead.wait_for(1)
    assert got.message_id == "m-0"
    assert got.headers["x-first-death-reason"] == "maxlen"
    main = Inbox()
    await transport.consume(qname, main, prefetch=5)
    await main.wait_for(2)
    assert main.ids == ["m-1", "m-2"]


async def test_publish_to_an_undeclared_queue_fails(transport: Transport, qname: str) -> None:
    with pytest.raises(NotFound):
        await transport.publish(qname, b"", message_id="nowhere")
    # Nothing broke on the way: a declared queue still works.
    await transport.declare(QueueSpec(qname))
    inbox = Inbox()
    await transport.consume(qname, inbox, prefetch=1)
    await transport.publish(qname, b"", message_id="somewhere")
    await inbox.wait_for(1)


async def test_consume_from_an_undeclared_queue_fails(transport: Transport, qname: str) -> None:
    with pytest.raises(NotFound):
        await transport.consume(qname, Inbox(), prefetch=1)


async def test_closed_transport_refuses_publish(transport: Transport, qname: str) -> None:
    await transport.declare(QueueSpec(qname))
    assert transport.is_connected
    await transport.close()
    assert not transport.is_connected
    with pytest.raises(TransportClosed):
        await transport.publish(qname, b"", message_id="late")
    await transport.close()  # idempotent


async def test_close_stops_handlers_under_way(transport: Transport, qname: str) -> None:
    started = asyncio.Event()

    async def forever(delivery: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()

    await transport.declare(QueueSpec(qname))
    await transport.consume(qname, forever, prefetch=2)
    await transport.publish(qname, b"", message_id="m-1")
    await asyncio.wait_for(started.wait(), WAIT)
    await asyncio.wait_for(transport.close(), WAIT)
