"""The RabbitMQ transport, over aio-pika's robust connection.

How the contract of transport.py is kept on a real broker:

- One robust connection named `connection_name` (RabbitMQ shows it, tests close it by
  name). aio-pika reopens it after a drop and, on each of its channels, re-declares the
  queues and restarts the consumers that were registered through it.
- One channel with publisher confirms carries every publish and every declaration, so a
  publish that waits for `channel.ready()` after a reconnect only goes out once the
  declarations (the exclusive reply queues above all) exist again.
- Each consumer has a channel of its own, so `basic.qos` bounds that consumer alone.
- `publish` is mandatory on the default exchange: a message no queue takes comes back
  and is reported as `NotFound` (the caller named a queue that does not exist). Any
  other failure (connection down, channel being restored, broker nack) is retried until
  `publish_timeout`, then reported as `TemporaryError`; a retry may duplicate a message.
- The reply queues have client-made names, so a name handed out stays valid across
  reconnects; while the connection is down the queue does not exist (RabbitMQ deletes
  an exclusive queue with its connection) and replies sent meanwhile are refused.
- Queues declared with a dead-letter queue get `x-dead-letter-exchange: ""` and
  `x-dead-letter-routing-key: <name>.dlq`, so what the broker itself drops (expired
  messages, overflow) lands there too, with RabbitMQ's `x-death` headers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
    DeliveryMode,
)
from aio_pika.exceptions import (
    CONNECTION_EXCEPTIONS,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)
from aiormq.exceptions import ChannelAccessRefused, ChannelLockedResource
from yarl import URL

from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import (
    AbiquoError,
    Conflict,
    NotFound,
    PermanentError,
    TemporaryError,
)
from abiquo_runtime.messaging.consumer import BusyCount, run_handler
from abiquo_runtime.messaging.transport import (
    DEAD_LETTER_SUFFIX,
    HEADER_DEAD_REASON,
    HEADER_ORIGINAL_QUEUE,
    Consumer,
    Delivery,
    Handler,
    QueueSpec,
    Transport,
    TransportClosed,
)
from abiquo_runtime.tasks import Supervisor

T = TypeVar("T")

log = structlog.get_logger("abiquo.messaging")

# How long a consumer waits for the broker to confirm basic.cancel before it stops
# waiting (the channel is closed soon after anyway).
CANCEL_TIMEOUT = 5.0


def queue_arguments(spec: QueueSpec) -> dict[str, Any]:
    """The x-arguments RabbitMQ keeps for `spec`; they must match on every declaration."""
    arguments: dict[str, Any] = {}
    if spec.dead_letter:
        arguments["x-dead-letter-exchange"] = ""
        arguments["x-dead-letter-routing-key"] = spec.dead_letter_queue
    if spec.message_ttl_ms is not None:
        arguments["x-message-ttl"] = spec.message_ttl_ms
    if spec.max_length is not None:
        arguments["x-max-length"] = spec.max_length
    return arguments


class _QueueShape:
    """How a queue was declared here, to declare it alike on a consumer's channel."""

    __slots__ = ("arguments", "auto_delete", "durable", "exclusive")

    def __init__(
        self,
        *,
        durable: bool,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.durable = durable
        self.exclusive = exclusive
        self.auto_delete = auto_delete
        self.arguments = arguments

    async def declare(
        self, channel: AbstractRobustChannel, name: str, *, robust: bool
    ) -> AbstractRobustQueue:
        return await channel.declare_queue(
            name,
            durable=self.durable,
            exclusive=self.exclusive,
            auto_delete=self.auto_delete,
            arguments=self.arguments,
            robust=robust,
        )


def _translate(exc: BaseException) -> AbiquoError | None:
    """The error for the caller, or None when the failure is worth retrying."""
    if isinstance(exc, PublishError):
        return NotFound(f"the broker could not route the message: no such queue ({exc})")
    if isinstance(exc, ChannelNotFoundEntity):
        return NotFound(f"no such queue: {exc}")
    if isinstance(exc, ChannelPreconditionFailed | ChannelLockedResource):
        return Conflict(f"the queue exists with other properties or owner: {exc}")
    if isinstance(exc, ChannelAccessRefused):
        return PermanentError(f"the broker refused access: {exc}")
    return None


class AmqpTransport:
    """`Transport` over RabbitMQ; see the module docstring for how each promise is kept."""

    def __init__(
        self,
        url: str,
        *,
        connection_name: str,
        publish_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        reconnect_interval: float = 1.0,
        requeue_delay: float = 1.0,
    ) -> None:
        self._url = url
        self._name = connection_name
        self._publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_interval = reconnect_interval
        self._requeue_delay = requeue_delay
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        # Queues this transport declared, and those it registered for re-declaration on
        # reconnect (registering the same name twice would re-declare it twice).
        self._shapes: dict[str, _QueueShape] = {}
        self._consumers: set[AmqpConsumer] = set()
        # The deadlines of the operations under way: close() expires them at once, so
        # nobody waits for a reconnect that will never come.
        self._deadlines: set[asyncio.Timeout] = set()
        self._closed = False
        self._losses = 0
        self._up = False
        safe_url = URL(url).with_password("***") if URL(url).password else URL(url)
        self._log = log.bind(connection=connection_name, broker=str(safe_url))

    @property
    def is_connected(self) -> bool:
        connection = self._connection
        return (
            not self._closed
            and connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
        )

    @property
    def connection_name(self) -> str:
        return self._name

    @property
    def connection_losses(self) -> int:
        """How often the connection dropped (and a reconnect began); for health and tests."""
        return self._losses

    async def connect(self) -> None:
        if self._closed:
            raise TransportClosed(f"transport {self._name} is closed")
        if self._connection is not None:
            return
        try:
            connection = await aio_pika.connect_robust(
                self._url,
                client_properties={"connection_name": self._name},
                timeout=self._connect_timeout,
                reconnect_interval=self._reconnect_interval,
            )
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
            raise TemporaryError(f"RabbitMQ cannot be reached: {exc!r}") from exc
        try:
            async with asyncio.timeout(self._connect_timeout):
                channel = connection.channel(publisher_confirms=True, on_return_raises=True)
                await channel.initialize()
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
            await _quietly(connection.close(), "close connection", self._log)
            raise TemporaryError(f"RabbitMQ did not open a channel: {exc!r}") from exc
        connection.close_callbacks.add(self._on_connection_lost)
        connection.reconnect_callbacks.add(self._on_reconnected)
        self._connection = connection
        self._channel = channel
        self._up = True
        self._log.info("connected to RabbitMQ")

    def _on_connection_lost(
        self, _sender: object, exc: BaseException | None = None, *_args: object
    ) -> None:
        # aio-pika calls this for the drop and again for each failed attempt to reconnect.
        if self._closed:
            return
        if self._up:
            self._up = False
            self._losses += 1
            self._log.warning("RabbitMQ connection lost; reconnecting", error=repr(exc))
        else:
            self._log.info("RabbitMQ still unreachable; retrying", error=repr(exc))

    def _on_reconnected(self, _sender: object, *_args: object) -> None:
        self._up = True
        self._log.info("RabbitMQ connection restored")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        for deadline in tuple(self._deadlines):
            if not deadline.expired():
                deadline.reschedule(loop.time())
        consumers = tuple(self._consumers)
        await asyncio.gather(*(consumer.close() for consumer in consumers))
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await _quietly(connection.close(), "close connection", self._log)
            self._log.info("RabbitMQ connection closed")

    def _forget(self, consumer: AmqpConsumer) -> None:
        self._consumers.discard(consumer)

    def _require_channel(self) -> AbstractRobustChannel:
        if self._closed:
            raise TransportClosed(f"transport {self._name} is closed")
        if self._channel is None:
            raise RuntimeError("AmqpTransport.connect() was not called")
        return self._channel

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` until it succeeds, fails for good, or `publish_timeout` passes."""
        backoff = Backoff(initial=0.05, maximum=1.0)
        try:
            async with asyncio.timeout(self._publish_timeout) as deadline:
                self._deadlines.add(deadline)
                try:
                    while True:
                        try:
                            return await attempt()
                        except (*CONNECTION_EXCEPTIONS, DeliveryError) as exc:
                            error = _translate(exc)
                            if error is not None:
                                raise error from exc
                            self._log.info(
                                "retrying after a broker failure", op=what, error=repr(exc)
                            )
                        if self._closed:
                            raise TransportClosed(f"transport {self._name} closed during {what}")
                        await asyncio.sleep(backoff.next_delay())
                finally:
                    self._deadlines.discard(deadline)
        except TimeoutError as exc:
            if self._closed:
                raise TransportClosed(f"transport {self._name} closed during {what}") from exc
            raise TemporaryError(
                f"{what}: RabbitMQ did not confirm within {self._publish_timeout} s"
            ) from exc

    async def declare(self, spec: QueueSpec) -> None:
        channel = self._require_channel()
        shapes: list[tuple[str, _QueueShape]] = []
        if spec.dead_letter:
            shapes.append((spec.dead_letter_queue, _QueueShape(durable=spec.durable)))
        shapes.append(
            (spec.name, _QueueShape(durable=spec.durable, arguments=queue_arguments(spec)))
        )
        for name, shape in shapes:
            await self._declare(channel, name, shape)

    async def _declare(self, channel: AbstractRobustChannel, name: str, shape: _QueueShape) -> None:
        register = name not in self._shapes

        async def attempt() -> None:
            await channel.ready()
            await shape.declare(channel, name, robust=register)

        await self._retrying(f"declare {name}", attempt)
        if register:
            self._shapes[name] = shape

    async def declare_reply_queue(self) -> str:
        channel = self._require_channel()
        name = f"reply.{self._name}.{uuid.uuid4().hex[:12]}"
        await self._declare(
            channel, name, _QueueShape(durable=False, exclusive=True, auto_delete=True)
        )
        return name

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        headers: Mapping[str, Any] | None = None,
        expiration_ms: int | None = None,
        persistent: bool = True,
    ) -> None:
        channel = self._require_channel()
        message = aio_pika.Message(
            body,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            headers=dict(headers) if headers else None,
            # aio-pika takes seconds and truncates seconds * 1000 to an int: the half
            # millisecond keeps float rounding from turning 1001 ms into 1000.
            expiration=None if expiration_ms is None else (expiration_ms + 0.5) / 1000,
            delivery_mode=DeliveryMode.PERSISTENT if persistent else DeliveryMode.NOT_PERSISTENT,
        )

        async def attempt() -> None:
            # ready() also waits for the declarations to be restored after a reconnect.
            await channel.ready()
            await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)

        await self._retrying(f"publish to {queue}", attempt)

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> AmqpConsumer:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._require_channel()
        connection = self._connection
        assert connection is not None
        consumer = AmqpConsumer(
            self, queue, handler, prefetch=prefetch, requeue_delay=self._requeue_delay
        )
        shape = self._shapes.get(queue)
        await self._retrying(f"consume {queue}", lambda: consumer.start(connection, shape))
        if self._closed:
            await consumer.close()
            raise TransportClosed(f"transport {self._name} closed during consume {queue}")
        self._consumers.add(consumer)
        return consumer


class AmqpConsumer:
    """One consumer on its own channel; each delivery runs in a task this object owns."""

    def __init__(
        self,
        transport: AmqpTransport,
        queue: str,
        handler: Handler,
        *,
        prefetch: int,
        requeue_delay: float,
    ) -> None:
        self._transport = transport
        self._queue_name = queue
        self._handler = handler
        self._prefetch = prefetch
        self._requeue_delay = requeue_delay
        self._tasks = Supervisor(f"amqp-consumer:{queue}")
        # aio-pika's broker-side prefetch bounds the unacknowledged deliveries; this
        # bounds the handlers, since a handler may go on running after it acked.
        self._slots = asyncio.Semaphore(prefetch)
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractRobustQueue | None = None
        self._tag: str | None = None
        self._busy = BusyCount()
        self._unsettled = 0
        self._stopping = False
        self._released = False
        self._log = log.bind(queue=queue, connection=transport.connection_name)

    @property
    def in_flight(self) -> int:
        return self._unsettled

    async def start(self, connection: AbstractRobustConnection, shape: _QueueShape | None) -> None:
        channel = connection.channel(publisher_confirms=False)
        try:
            await channel.initialize()
            await channel.set_qos(prefetch_count=self._prefetch)
            if shape is None:
                # Somebody else declared it: check that it exists, as basic.consume would.
                queue = await channel.declare_queue(self._queue_name, passive=True)
            else:
                # Declared alike on this channel too, so that restoring this channel after
                # a reconnect does not depend on the order channels are restored in.
                queue = await shape.declare(channel, self._queue_name, robust=True)
            self._tag = await queue.consume(self._on_message, no_ack=False)
        except BaseException:
            if channel.is_initialized:
                await _quietly(channel.close(), "close channel", self._log)
            raise
        self._channel = channel
        self._queue = queue

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Called by aio-pika for each delivery; returns at once so deliveries run
        # concurrently, each in a task of this consumer.
        if self._stopping:
            # Delivered before the broker saw basic.cancel: give it back.
            await _quietly(message.nack(requeue=True), "requeue", self._log)
            return
        delivery = AmqpDelivery(message, self._queue_name, self)
        self._busy.enter()
        self._tasks.spawn(self._deliver(delivery), name=f"delivery-{message.delivery_tag}")

    async def _deliver(self, delivery: AmqpDelivery) -> None:
        try:
            async with self._slots:
                if self._stopping:
                    await delivery._settle("requeue", lambda: delivery._message.nack(requeue=True))
                    return
                await self._run(delivery)
        finally:
            self._busy.leave()
            if self._busy.count == 0 and self._stopping:
                await self._release()

    async def _run(self, delivery: AmqpDelivery) -> None:
        self._unsettled += 1
        delivery._handed = True
        try:
            await run_handler(
                self._handler, delivery, log=self._log, requeue_delay=self._requeue_delay
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopping or (task is not None and task.cancelling()):
                # Shutting down: closing the channel gives the delivery back.
                raise
            self._log.error("handler was cancelled", message_id=delivery.message_id)
            await asyncio.sleep(self._requeue_delay)
        if not delivery.settled:
            await delivery.requeue()

    def _settled(self) -> None:
        self._unsettled -= 1

    async def wait_idle(self, timeout: float) -> bool:
        return await self._busy.wait_idle(timeout)

    async def cancel(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._queue is not None and self._tag is not None:
            # RobustQueue.cancel forgets the consumer first: it is not restored later.
            await _quietly(
                asyncio.wait_for(self._queue.cancel(self._tag), CANCEL_TIMEOUT),
                "cancel consumer",
                self._log,
            )
        if self._busy.count == 0:
            await self._release()
        # Otherwise the last delivery task releases the channel when it ends.

    async def close(self) -> None:
        """Cancel, stop the handlers (their deliveries go back), close the channel."""
        await self.cancel()
        await self._tasks.close()
        await self._release()

    async def _release(self) -> None:
        if self._released:
            return
        self._released = True
        channel, self._channel = self._channel, None
        if channel is not None:
            await _quietly(channel.close(), "close channel", self._log)
        self._transport._forget(self)


class AmqpDelivery:
    """One message handed to a handler; settled once, by ack, requeue or dead_letter."""

    __slots__ = ("_consumer", "_handed", "_message", "_queue", "_settled")

    def __init__(
        self, message: AbstractIncomingMessage, queue: str, consumer: AmqpConsumer
    ) -> None:
        self._message = message
        self._queue = queue
        self._consumer = consumer
        self._settled = False
        self._handed = False

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def queue(self) -> str:
        return self._queue

    @property
    def message_id(self) -> str | None:
        return self._message.message_id

    @property
    def correlation_id(self) -> str | None:
        return self._message.correlation_id

    @property
    def reply_to(self) -> str | None:
        return self._message.reply_to

    @property
    def headers(self) -> Mapping[str, Any]:
        return self._message.headers

    @property
    def redelivered(self) -> bool:
        return bool(self._message.redelivered)

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> None:
        await self._settle("ack", self._message.ack)

    async def requeue(self) -> None:
        await self._settle("requeue", lambda: self._message.nack(requeue=True))

    async def dead_letter(self, reason: str) -> None:
        """Copy the message to `<queue>.dlq` with the reason, then ack the original.

        Without a `.dlq` queue the message is rejected: dropped, or dead-lettered by the
        broker if the queue names a dead-letter exchange. A failure to publish the copy
        (broker unreachable past the publish timeout) propagates, leaving the delivery
        unsettled.
        """
        self._check_unsettled()
        message = self._message
        headers = {
            **message.headers,
            HEADER_DEAD_REASON: reason,
            HEADER_ORIGINAL_QUEUE: self._queue,
        }
        try:
            await self._consumer._transport.publish(
                self._queue + DEAD_LETTER_SUFFIX,
                message.body,
                message_id=message.message_id or uuid.uuid4().hex,
                correlation_id=message.correlation_id,
                reply_to=message.reply_to,
                headers=headers,
                persistent=message.delivery_mode == DeliveryMode.PERSISTENT,
            )
        except NotFound:
            self._consumer._log.error(
                "no dead-letter queue; rejecting the message",
                message_id=message.message_id,
                reason=reason,
            )
            await self._settle("reject", lambda: message.reject(requeue=False))
            return
        await self._settle("ack", message.ack)

    def _check_unsettled(self) -> None:
        if self._settled:
            raise RuntimeError(f"delivery {self.message_id} of {self._queue} is already settled")

    async def _settle(self, action: str, operation: Callable[[], Awaitable[None]]) -> None:
        """Send the settlement; a dead channel is not the handler's problem."""
        self._check_unsettled()
        self._settled = True
        if self._handed:
            self._consumer._settled()
        try:
            await operation()
        except CONNECTION_EXCEPTIONS as exc:
            # The channel that carried it is gone: the broker redelivers the message.
            self._consumer._log.warning(
                "could not settle a delivery; the broker will redeliver it",
                action=action,
                message_id=self.message_id,
                error=repr(exc),
            )


async def _quietly(operation: Awaitable[Any], what: str, logger: Any) -> None:
    """Await a cleanup step whose failure changes nothing for the caller; log it."""
    try:
        await operation
    except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
        logger.debug("cleanup step failed", step=what, error=repr(exc))


def _conforms(transport: AmqpTransport, consumer: AmqpConsumer, delivery: AmqpDelivery) -> None:
    """Let mypy check that the classes satisfy the protocols of transport.py."""
    _t: Transport = transport
    _c: Consumer = consumer
    _d: Delivery = delivery
