"""What only a real RabbitMQ can show: connections lost and restored.

Two ways to break the connection: RabbitMQ closing it (rabbitmqctl close_connection,
found by the connection's name), which the transport must ride through on its own; and
a TCP proxy between the transport and the broker that a test stops and restarts, for an
outage whose length the test controls.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from abiquo_runtime.errors import TemporaryError
from abiquo_runtime.messaging.amqp import AmqpTransport
from abiquo_runtime.messaging.transport import Delivery, QueueSpec, TransportClosed
from tests import services
from tests.runtime.messaging.test_transport_contract import (
    Inbox,
    collect_garbage_first,  # noqa: F401 (an autouse fixture, for these tests too)
)

pytestmark = pytest.mark.rabbitmq

WAIT = 20.0


def transport_for(url: str, **options: float) -> AmqpTransport:
    return AmqpTransport(
        url,
        connection_name=f"test-amqp-{uuid.uuid4().hex[:8]}",
        reconnect_interval=options.pop("reconnect_interval", 0.1),
        publish_timeout=options.pop("publish_timeout", WAIT),
        requeue_delay=0.05,
        **options,
    )


async def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """For states nothing announces (is_connected): look again every few milliseconds."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (nothing announces these states)
            await asyncio.sleep(0.01)


async def kill_connection(transport: AmqpTransport, vhost: str) -> None:
    """Have RabbitMQ close the transport's connection; wait until the transport noticed.

    It may have reconnected already by then: aio-pika starts at once.
    """
    losses = transport.connection_losses
    closed = await asyncio.to_thread(
        services.close_rabbitmq_connections, transport.connection_name, vhost
    )
    assert closed == 1
    await wait_until(lambda: transport.connection_losses > losses)


class Proxy:
    """A TCP forwarder to RabbitMQ that a test can take down (an outage) and bring back."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.StreamWriter] = set()
        self._links: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in self._streams:
            writer.transport.abort()
        if self._links:
            await asyncio.wait(self._links, timeout=5)

    async def _link(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        self._streams.add(client_out)
        try:
            try:
                broker_in, broker_out = await asyncio.open_connection(
                    services.RABBITMQ_HOST, services.RABBITMQ_PORT
                )
            except OSError:
                client_out.transport.abort()
                return
            self._streams.add(broker_out)
            await asyncio.gather(_pipe(client_in, broker_out), _pipe(broker_in, client_out))
            self._streams.discard(broker_out)
        finally:
            self._streams.discard(client_out)
            self._links.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.transport.abort()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    made = Proxy()
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


@pytest.fixture
def proxied_url(proxy: Proxy, rabbitmq_vhost: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}/{rabbitmq_vhost}"


@pytest.fixture
async def amqp(rabbitmq_url: str) -> AsyncIterator[AmqpTransport]:
    transport = transport_for(rabbitmq_url)
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.close()


@pytest.fixture
def qname() -> str:
    return f"amqp.{uuid.uuid4().hex[:10]}"


async def test_connect_to_a_closed_port_fails_fast() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = transport_for(f"amqp://guest:guest@127.0.0.1:{port}/", connect_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(TemporaryError):
        await transport.connect()
    assert time.monotonic() - started < 3.0
    assert not transport.is_connected
    await transport.close()


async def test_no_message_lost_when_rabbitmq_closes_the_connection(
    amqp: AmqpTransport, rabbitmq_vhost: str, qname: str
) -> None:
    await amqp.declare(QueueSpec(qname))
    consumed: set[str] = set()
    progress = asyncio.Event()

    async def record(delivery: Delivery) -> None:
        await asyncio.sleep(0.001)  # a handler that takes a little time
        await delivery.ack()
        assert delivery.message_id is not None
        consumed.add(delivery.message_id)
        progress.set()

    async def consumed_at_least(count: int) -> None:
        while len(consumed) < count:
            progress.clear()
            await progress.wait()

    await amqp.consume(qname, record, prefetch=2)
    published: list[str] = []
    stop = asyncio.Event()

    async def publish_steadily() -> None:
        while not stop.is_set():
            message_id = f"m-{len(published)}"
            await amqp.publish(qname, b"payload", message_id=message_id)
            published.append(message_id)
            await asyncio.sleep(0.005)

    publisher = asyncio.create_task(publish_steadily(), name="test-publisher")
    try:
        await asyncio.wait_for(consumed_at_least(50), WAIT)
        await kill_connection(amqp, rabbitmq_vhost)
        at_kill = len(consumed)
        await wait_until(lambda: amqp.is_connected)
        # Consumption resumes by itself.
        await asyncio.wait_for(consumed_at_least(at_kill + 50), WAIT)
        stop.set()
        await asyncio.wait_for(publisher, WAIT)
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
    await wait_until(lambda: consumed >= set(published))
    assert len(published) > 100


async def test_reply_queue_and_consumers_are_restored_after_reconnect(
    amqp: AmqpTransport, rabbitmq_vhost: str
) -> None:
    reply_queue = await amqp.declare_reply_queue()
    replies = Inbox()
    await amqp.consume(reply_queue, replies, prefetch=5)
    await amqp.publish(reply_queue, b"before", message_id="before")
    await replies.wait_for(1)
    # RabbitMQ deletes an exclusive queue with its connection: it must be declared again.
    await kill_connection(amqp, rabbitmq_vhost)
    await amqp.publish(reply_queue, b"after", message_id="after")
    await replies.wait_for(2)
    assert replies.ids == ["before", "after"]
    assert amqp.is_connected


async def test_settling_on_a_dead_channel_does_not_raise(
    amqp: AmqpTransport, rabbitmq_vhost: str, qname: str
) -> None:
    gate = asyncio.Event()
    errors: list[BaseException] = []
    seen: list[bool] = []

    async def held(delivery: Delivery) -> None:
        seen.append(delivery.redelivered)
        if not delivery.redelivered:
            await gate.wait()
        try:
            await delivery.ack()
        except BaseException as exc:
            errors.append(exc)
            raise

    await amqp.declare(QueueSpec(qname))
    inbox = Inbox(held)
    await amqp.consume(qname, inbox, prefetch=1)
    await amqp.publish(qname, b"", message_id="m-1")
    await inbox.wait_for(1)
    await kill_connection(amqp, rabbitmq_vhost)
    gate.set()
    # The broker gives the unacknowledged delivery again, on the restored consumer.
    await inbox.wait_for(2)
    assert seen == [False, True]
    assert errors == []


async def test_publish_during_an_outage_waits_for_the_broker(
    proxy: Proxy, proxied_url: str, qname: str
) -> None:
    transport = transport_for(proxied_url)
    await transport.connect()
    try:
        await transport.declare(QueueSpec(qname))
        inbox = Inbox()
        await transport.consume(qname, inbox, prefetch=5)
        await proxy.stop()
        await wait_until(lambda: not transport.is_connected)

        publish = asyncio.create_task(
            transport.publish(qname, b"", message_id="during-outage"), name="test-publish"
        )
        try:
            done, _ = await asyncio.wait({publish}, timeout=0.5)
            assert not done, "publish returned while the broker was unreachable"
            await proxy.start()
            await asyncio.wait_for(publish, WAIT)
        finally:
            publish.cancel()
            await asyncio.gather(publish, return_exceptions=True)
        await inbox.wait_for(1)
        assert inbox.ids == ["during-outage"]
    finally:
        await transport.close()


async def test_publish_gives_up_after_its_timeout(
    proxy: Proxy, proxied_url: str, qname: str
) -> None:
    transport = transport_for(proxied_url, publish_timeout=0.5)
    await transport.connect()
    try:
        await transport.declare(QueueSpec(qname))
        await proxy.stop()
        started = time.monotonic()
        with pytest.raises(TemporaryError):
            await transport.publish(qname, b"", message_id="too-late")
        assert 0.4 < time.monotonic() - started < 3.0
    finally:
        await transport.close()


async def test_close_releases_a_publish_waiting_for_the_broker(
    proxy: Proxy, proxied_url: str, qname: str
) -> None:
    transport = transport_for(proxied_url)
    await transport.connect()
    try:
        await transport.declare(QueueSpec(qname))
        await proxy.stop()
        await wait_until(lambda: not transport.is_connected)
        publish = asyncio.create_task(
            transport.publish(qname, b"", message_id="never"), name="test-publish"
        )
        done, _ = await asyncio.wait({publish}, timeout=0.2)
        assert not done
    finally:
        await transport.close()
    with pytest.raises(TransportClosed):
        await asyncio.wait_for(publish, 5)


async def test_consumer_of_a_queue_declared_elsewhere_is_restored(
    amqp: AmqpTransport, rabbitmq_url: str, rabbitmq_vhost: str, qname: str
) -> None:
    # The queue belongs to another connection (another process in production): the
    # consumer only checks that it exists, and must come back after its own reconnect.
    await amqp.declare(QueueSpec(qname))
    other = transport_for(rabbitmq_url)
    await other.connect()
    try:
        inbox = Inbox()
        await other.consume(qname, inbox, prefetch=2)
        await amqp.publish(qname, b"", message_id="before")
        await inbox.wait_for(1)
        await kill_connection(other, rabbitmq_vhost)
        await amqp.publish(qname, b"", message_id="after")
        await inbox.wait_for(2)
        assert inbox.ids == ["before", "after"]
    finally:
        await other.close()
