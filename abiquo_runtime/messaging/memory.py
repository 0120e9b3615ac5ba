"""The in-process twin of the RabbitMQ transport, for all-in-one and for tests.

One `MemoryBroker` is shared by every part of the process that would otherwise hold its
own RabbitMQ connection (central's link and the datacenter's link); the object itself is
the `Transport`. It keeps the promises of transport.py and mimics what RabbitMQ does
where the difference could be observed:

- a publish to a queue nobody declared raises `NotFound`, as `AmqpTransport` does when
  the broker returns the mandatory message;
- a requeued delivery goes back to the head of its queue, marked redelivered;
- a queue declared with a dead-letter queue sends there, besides what a handler
  dead-letters, what the broker itself drops: messages that expire (queue TTL or
  per-message expiration, checked at the head of the queue as RabbitMQ does) and the
  oldest messages beyond `max_length`. Those carry RabbitMQ's `x-first-death-reason`
  ("expired", "maxlen") and `x-first-death-queue` headers; queues without one drop them;
- declaring a queue again with other properties raises `Conflict`; an auto-deleted
  reply queue disappears when its last consumer is cancelled.

Nothing polls: a publish hands the message straight to a consumer's idle worker, or
appends it to the queue, where the next free worker takes it. A consumer runs `prefetch`
workers, each carrying one delivery at a time, which is what bounds its handlers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import structlog

from abiquo_runtime.errors import Conflict, NotFound
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

log = structlog.get_logger("abiquo.messaging")

_NO_HEADERS: Mapping[str, Any] = MappingProxyType({})
# A worker that keeps finding messages waiting yields to the loop after this many, so a
# handler that requeues without ever suspending cannot freeze the process.
_YIELD_EVERY = 32
# The headers RabbitMQ puts on what it dead-letters itself (besides x-death).
HEADER_FIRST_DEATH_REASON = "x-first-death-reason"
HEADER_FIRST_DEATH_QUEUE = "x-first-death-queue"


@dataclass(slots=True, eq=False)
class _Message:
    body: bytes
    message_id: str
    correlation_id: str | None
    reply_to: str | None
    headers: Mapping[str, Any]
    persistent: bool
    expiration_ms: int | None
    expires_at: float | None = None
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class _QueueShape:
    """What RabbitMQ compares when a queue is declared again."""

    durable: bool
    exclusive: bool = False
    auto_delete: bool = False
    dead_letter_to: str | None = None
    message_ttl_ms: int | None = None
    max_length: int | None = None


class _MemoryQueue:
    __slots__ = (
        "_broker",
        "_loop",
        "_may_expire",
        "_ready",
        "_timer",
        "_waiters",
        "consumers",
        "deleted",
        "name",
        "shape",
    )

    def __init__(self, broker: MemoryBroker, name: str, shape: _QueueShape) -> None:
        self._broker = broker
        self._loop = asyncio.get_running_loop()
        self.name = name
        self.shape = shape
        self._ready: deque[_Message] = deque()
        # Idle workers, in the order they asked: handing out in this order spreads the
        # messages round-robin over the consumers.
        self._waiters: deque[tuple[MemoryConsumer, asyncio.Future[MemoryDelivery | None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._may_expire = shape.message_ttl_ms is not None
        self.consumers: set[MemoryConsumer] = set()
        self.deleted = False

    def __len__(self) -> int:
        return len(self._ready)

    def publish(self, message: _Message) -> None:
        ttl = self.shape.message_ttl_ms
        expiration = message.expiration_ms
        if ttl is not None or expiration is not None:
            life = min(x for x in (ttl, expiration) if x is not None)
            message.expires_at = self._loop.time() + life / 1000
            self._may_expire = True
        self.offer(message, fresh=True)

    def offer(self, message: _Message, *, fresh: bool = False, front: bool = False) -> None:
        """Hand `message` to an idle worker, or queue it (at the head when `front`)."""
        if self.deleted:
            return
        expires_at = message.expires_at
        if expires_at is not None and not fresh and expires_at <= self._loop.time():
            self._drop(message, "expired")
            return
        waiters = self._waiters
        while waiters:
            consumer, waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(consumer._assign(self, message))
                return
        if expires_at is not None and expires_at <= self._loop.time():
            # A TTL of 0 means "now or never", as on RabbitMQ.
            self._drop(message, "expired")
            return
        ready = self._ready
        if front:
            ready.appendleft(message)
        else:
            ready.append(message)
        max_length = self.shape.max_length
        if max_length is not None:
            while len(ready) > max_length:
                self._drop(ready.popleft(), "maxlen")
        if self._may_expire:
            self._expire_head()

    def take(self, consumer: MemoryConsumer) -> MemoryDelivery | None:
        """The next message for a free worker of `consumer`, if one is waiting."""
        ready = self._ready
        if self._may_expire:
            self._expire_head()
        if not ready:
            return None
        message = ready.popleft()
        if self._may_expire:
            self._expire_head()
        return consumer._assign(self, message)

    def wait(self, consumer: MemoryConsumer) -> asyncio.Future[MemoryDelivery | None]:
        """A future the next offered message is handed through (None: stop waiting)."""
        waiter: asyncio.Future[MemoryDelivery | None] = self._loop.create_future()
        self._waiters.append((consumer, waiter))
        return waiter

    def remove_consumer(self, consumer: MemoryConsumer) -> None:
        """Release the workers of `consumer` that wait here; auto-delete when it was the last."""
        kept: deque[tuple[MemoryConsumer, asyncio.Future[MemoryDelivery | None]]] = deque()
        for entry in self._waiters:
            if entry[0] is consumer:
                if not entry[1].done():
                    entry[1].set_result(None)
            else:
                kept.append(entry)
        self._waiters = kept
        self.consumers.discard(consumer)
        if self.shape.auto_delete and not self.consumers:
            self._broker._delete(self)

    def dead_letter(self, message: _Message, extra: Mapping[str, Any]) -> bool:
        """Put a copy of `message` on `<name>.dlq` with `extra` headers; False: no such queue."""
        target = self._broker._queues.get(self.name + DEAD_LETTER_SUFFIX)
        if target is None:
            return False
        # RabbitMQ removes the expiration of what it dead-letters, so that it stays.
        target.offer(
            replace(
                message,
                headers={**message.headers, **extra},
                expiration_ms=None,
                expires_at=None,
                redelivered=False,
            ),
            fresh=True,
        )
        return True

    def _drop(self, message: _Message, reason: str) -> None:
        """What the broker itself drops: to the dead-letter queue when the queue has one."""
        if self.shape.dead_letter_to is None or not self.dead_letter(
            message, {HEADER_FIRST_DEATH_REASON: reason, HEADER_FIRST_DEATH_QUEUE: self.name}
        ):
            log.debug(
                "message dropped", queue=self.name, reason=reason, message_id=message.message_id
            )

    def _expire_head(self) -> None:
        """Drop the expired messages at the head; wake up when the next head expires."""
        ready = self._ready
        now = self._loop.time()
        while ready and (head := ready[0].expires_at) is not None and head <= now:
            self._drop(ready.popleft(), "expired")
        when = ready[0].expires_at if ready else None
        timer = self._timer
        if timer is not None:
            if when is not None and timer.when() == when:
                return
            timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._expire_head()

    def delete(self) -> None:
        self.deleted = True
        self._ready.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class MemoryBroker:
    """`Transport` in one process; one instance stands for the broker and every connection."""

    def __init__(self, *, requeue_delay: float = 1.0) -> None:
        self._requeue_delay = requeue_delay
        self._queues: dict[str, _MemoryQueue] = {}
        self._consumers: set[MemoryConsumer] = set()
        self._closed = False

    @property
    def is_connected(self) -> bool:
        return not self._closed

    async def connect(self) -> None:
        """Nothing to open: the broker is this object."""

    async def close(self) -> None:
        """Stop every consumer (their handlers are cancelled); publish raises from now on."""
        if self._closed:
            return
        self._closed = True
        consumers = tuple(self._consumers)
        # Release every idle worker first, so that what a cancelled handler gives back
        # is not handed to a worker about to be stopped.
        for consumer in consumers:
            await consumer.cancel()
        await asyncio.gather(*(consumer.close() for consumer in consumers))
        for queue in self._queues.values():
            queue.delete()
        self._queues.clear()

    def connection(self, name: str) -> MemoryConnection:
        """A client's own connection to this broker (see MemoryConnection)."""
        return MemoryConnection(self, name)

    def queue_length(self, queue: str) -> int:
        """Messages waiting in `queue` (not those handed to a consumer); for tests and metrics."""
        return len(self._existing(queue))

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the in-memory broker is closed")

    def _existing(self, name: str) -> _MemoryQueue:
        queue = self._queues.get(name)
        if queue is None:
            raise NotFound(f"no queue named {name!r}")
        return queue

    def _declare(self, name: str, shape: _QueueShape) -> None:
        existing = self._queues.get(name)
        if existing is None:
            self._queues[name] = _MemoryQueue(self, name, shape)
        elif existing.shape != shape:
            raise Conflict(f"queue {name!r} exists with other properties: {existing.shape}")

    def _delete(self, queue: _MemoryQueue) -> None:
        if self._queues.get(queue.name) is queue:
            del self._queues[queue.name]
        queue.delete()

    def _forget(self, consumer: MemoryConsumer) -> None:
        self._consumers.discard(consumer)

    async def declare(self, spec: QueueSpec) -> None:
        self._check_open()
        dead_letter_to = None
        if spec.dead_letter:
            dead_letter_to = spec.dead_letter_queue
            self._declare(dead_letter_to, _QueueShape(durable=spec.durable))
        self._declare(
            spec.name,
            _QueueShape(
                durable=spec.durable,
                dead_letter_to=dead_letter_to,
                message_ttl_ms=spec.message_ttl_ms,
                max_length=spec.max_length,
            ),
        )

    async def declare_reply_queue(self) -> str:
        self._check_open()
        name = f"reply.memory.{uuid.uuid4().hex[:12]}"
        self._declare(name, _QueueShape(durable=False, exclusive=True, auto_delete=True))
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
        """Queue the message; raises `NotFound` when no queue has that name."""
        if self._closed:
            raise TransportClosed("the in-memory broker is closed")
        target = self._queues.get(queue)
        if target is None:
            raise NotFound(f"no queue named {queue!r}: the message cannot be routed")
        target.publish(
            _Message(
                body,
                message_id,
                correlation_id,
                reply_to,
                dict(headers) if headers else _NO_HEADERS,
                persistent,
                expiration_ms,
            )
        )

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> MemoryConsumer:
        self._check_open()
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        target = self._existing(queue)
        consumer = MemoryConsumer(
            self, target, handler, prefetch=prefetch, requeue_delay=self._requeue_delay
        )
        target.consumers.add(consumer)
        self._consumers.add(consumer)
        consumer._start()
        return consumer


class MemoryConsumer:
    """`prefetch` workers taking turns on one queue; each runs one handler at a time."""

    def __init__(
        self,
        broker: MemoryBroker,
        queue: _MemoryQueue,
        handler: Handler,
        *,
        prefetch: int,
        requeue_delay: float,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._handler = handler
        self._prefetch = prefetch
        self._requeue_delay = requeue_delay
        self._tasks = Supervisor(f"memory-consumer:{queue.name}")
        self._unsettled = 0
        self._busy = BusyCount()
        self._workers = 0
        self._stopping = False
        self._log = log.bind(queue=queue.name)

    @property
    def in_flight(self) -> int:
        return self._unsettled

    def _start(self) -> None:
        for number in range(self._prefetch):
            self._workers += 1
            self._tasks.spawn(self._work(), name=f"worker-{number}")

    def _assign(self, queue: _MemoryQueue, message: _Message) -> MemoryDelivery:
        self._unsettled += 1
        self._busy.enter()
        return MemoryDelivery(queue, message, self)

    def _settled(self) -> None:
        self._unsettled -= 1

    async def _work(self) -> None:
        queue = self._queue
        in_a_row = 0
        try:
            while not self._stopping:
                delivery = queue.take(self)
                if delivery is None:
                    in_a_row = 0
                    delivery = await self._next(queue)
                    if delivery is None:
                        return
                else:
                    in_a_row += 1
                    if in_a_row >= _YIELD_EVERY:
                        in_a_row = 0
                        await asyncio.sleep(0)
                await self._run(delivery)
        finally:
            self._workers -= 1
            if self._workers == 0 and self._stopping:
                self._broker._forget(self)

    async def _next(self, queue: _MemoryQueue) -> MemoryDelivery | None:
        waiter = queue.wait(self)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed over just as this worker was stopped: give it back.
                delivery = waiter.result()
                if delivery is not None:
                    delivery._give_back()
                    self._done_with_one()
            else:
                waiter.cancel()
            raise

    async def _run(self, delivery: MemoryDelivery) -> None:
        try:
            await run_handler(
                self._handler, delivery, log=self._log, requeue_delay=self._requeue_delay
            )
        finally:
            # Also when the handler was cancelled: the delivery goes back, redelivered.
            if not delivery.settled:
                delivery._give_back()
            self._done_with_one()

    def _done_with_one(self) -> None:
        self._busy.leave()

    async def wait_idle(self, timeout: float) -> bool:
        return await self._busy.wait_idle(timeout)

    async def cancel(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        # Idle workers are released and end; busy ones end after their delivery.
        self._queue.remove_consumer(self)

    async def close(self) -> None:
        """Cancel, and stop the handlers under way (their deliveries go back)."""
        await self.cancel()
        await self._tasks.close()
        self._broker._forget(self)


class MemoryDelivery:
    """One message handed to a handler; settled once, by ack, requeue or dead_letter."""

    __slots__ = ("_consumer", "_message", "_queue", "_redelivered", "_settled")

    def __init__(self, queue: _MemoryQueue, message: _Message, consumer: MemoryConsumer) -> None:
        self._queue = queue
        self._message = message
        self._consumer = consumer
        self._redelivered = message.redelivered
        self._settled = False

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def queue(self) -> str:
        return self._queue.name

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
        return self._redelivered

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> None:
        self._settle()

    async def requeue(self) -> None:
        self._settle()
        self._requeue()

    async def dead_letter(self, reason: str) -> None:
        """Move the message to `<queue>.dlq` with the reason; dropped when there is none."""
        self._check_unsettled()
        extra = {HEADER_DEAD_REASON: reason, HEADER_ORIGINAL_QUEUE: self._queue.name}
        if not self._queue.dead_letter(self._message, extra):
            self._consumer._log.error(
                "no dead-letter queue; dropping the message",
                message_id=self._message.message_id,
                reason=reason,
            )
        self._settle()

    def _give_back(self) -> None:
        """Requeue without the handler's say: it failed, was stopped, or never ran."""
        self._settle()
        self._requeue()

    def _requeue(self) -> None:
        self._message.redelivered = True
        self._queue.offer(self._message, front=True)

    def _check_unsettled(self) -> None:
        if self._settled:
            raise RuntimeError(
                f"delivery {self._message.message_id} of {self._queue.name} is already settled"
            )

    def _settle(self) -> None:
        self._check_unsettled()
        self._settled = True
        self._consumer._settled()


def _conforms(broker: MemoryBroker, consumer: MemoryConsumer, delivery: MemoryDelivery) -> None:
    """Let mypy check that the classes satisfy the protocols of transport.py."""
    _t: Transport = broker
    _c: Consumer = consumer
    _d: Delivery = delivery


class MemoryConnection:
    """One client's connection to a shared MemoryBroker (central's link, a DC's link).

    Closing it ends only its own consumers and reply queues, as closing one AMQP
    connection does, and leaves the broker and the other clients running: in all-in-one,
    central's link may close before the datacenter's has sent its last words.
    """

    def __init__(self, broker: MemoryBroker, name: str) -> None:
        self.broker = broker
        self.name = name
        self._consumers: list[MemoryConsumer] = []
        self._reply_queues: list[str] = []
        self._closed = False

    @property
    def is_connected(self) -> bool:
        return not self._closed and self.broker.is_connected

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed(f"the connection {self.name!r} is closed")

    async def connect(self) -> None:
        self._check_open()
        await self.broker.connect()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for consumer in self._consumers:
            await consumer.cancel()
        await asyncio.gather(*(consumer.close() for consumer in self._consumers))
        self._consumers.clear()
        for name in self._reply_queues:
            queue = self.broker._queues.get(name)
            if queue is not None:
                self.broker._delete(queue)
        self._reply_queues.clear()

    async def declare(self, spec: QueueSpec) -> None:
        self._check_open()
        await self.broker.declare(spec)

    async def declare_reply_queue(self) -> str:
        self._check_open()
        name = await self.broker.declare_reply_queue()
        self._reply_queues.append(name)
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
        self._check_open()
        await self.broker.publish(
            queue,
            body,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            headers=headers,
            expiration_ms=expiration_ms,
            persistent=persistent,
        )

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> MemoryConsumer:
        self._check_open()
        consumer = await self.broker.consume(queue, handler, prefetch=prefetch)
        self._consumers.append(consumer)
        return consumer
