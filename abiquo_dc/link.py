"""The datacenter's side of the link to central: the bus ⇄ a message transport.

Inbound: the DC consumes its own request queues (abiquo.datacenter.requests.<uuid>.*),
decodes each message and hands it to the bus handler of its type. The delivery is
acknowledged only after the handler returned (its effect is done or durably recorded)
and, for a request with reply_to, after the reply was confirmed by the broker. What
cannot be decoded goes to the queue's dead-letter queue with the
reason; a TemporaryError puts it back on the queue; any other failure of a request is
answered with RequestFailed, of a command is dead-lettered. Handlers are bounded by a
timeout, except those of long-running messages (VM tasks, which return once the task is
done and its notifications confirmed: only then is the task acknowledged).

Outbound: every bus message whose type names an `outbound_queue` (heartbeats,
notifications, events) is published to that queue with confirms, retried for as long as
the broker is away. Publishes are pipelined (a window of them await their confirms at
once); they leave in order, but one retried after a failure may land after later ones:
consumers order by what the messages say (sequence numbers, timestamps), not by arrival.

The transport is RabbitMQ in production and the in-process MemoryBroker in all-in-one:
this module does not know which.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog

from abiquo_dc.bus import Bus, NoHandler
from abiquo_dc.protocol import codec
from abiquo_dc.protocol.messages import Inbound, Message, RequestFailed, stamped
from abiquo_dc.protocol.queues import (
    IN_REPLY_TO,
    outbound_specs,
    request_specs,
    requests_queue,
)
from abiquo_runtime.backoff import Backoff
from abiquo_runtime.correlation import correlation
from abiquo_runtime.errors import AbiquoError, TemporaryError
from abiquo_runtime.messaging.transport import Consumer, Delivery, Transport
from abiquo_runtime.tasks import Supervisor

_INBOUND: Any = Inbound


class DatacenterLink:
    def __init__(
        self,
        *,
        transport: Transport,
        bus: Bus,
        dc_uuid: str,
        prefetch: int = 16,
        prefetch_by_service: Mapping[str, int] | None = None,
        handler_timeout: float = 30.0,
        no_handler_delay: float = 1.0,
        publish_window: int = 64,
    ) -> None:
        self._window = asyncio.Semaphore(publish_window)
        self._publishing = Supervisor("dc.link.publish")
        self._no_handler_delay = no_handler_delay
        self._transport = transport
        self._bus = bus
        self._dc_uuid = dc_uuid
        self._prefetch = prefetch
        # Per service where it differs: VM tasks wait long in handlers (for their VM's
        # turn), so many more of them are taken at once than checks or discoveries.
        self._prefetch_by_queue = {
            requests_queue(dc_uuid, service): count
            for service, count in (prefetch_by_service or {}).items()
        }
        self._handler_timeout = handler_timeout
        self._consumers: list[Consumer] = []
        self._accepting = False
        self._unsubscribe: list[Any] = []
        self._log = structlog.get_logger("abiquo.dc.link").bind(dc=dc_uuid)

    async def start(self) -> None:
        """Connect, declare both directions and forward outbound messages."""
        await self._transport.connect()
        for spec in [*outbound_specs(), *request_specs(self._dc_uuid)]:
            await self._transport.declare(spec)
        self._unsubscribe.append(self._bus.subscribe(Message, self._forward, name="link.outbound"))
        self._log.info("link up")

    async def accept(self) -> None:
        """Start taking requests from central: once the subsystems are there to serve them."""
        self._accepting = True
        for spec in request_specs(self._dc_uuid):
            self._consumers.append(
                await self._transport.consume(
                    spec.name,
                    self._on_delivery,
                    prefetch=self._prefetch_by_queue.get(spec.name, self._prefetch),
                )
            )

    # -- outbound ----------------------------------------------------------------------

    async def _forward(self, message: Message) -> None:
        queue = type(message).outbound_queue
        if queue is None:
            return
        # Up to `publish_window` publishes wait for their confirms at once: one round trip
        # per message would cap the link at a few hundred messages a second. The window
        # full, this listener waits, its bus queue fills, and publishers feel it.
        await self._window.acquire()
        try:
            self._publishing.spawn(self._publish(queue, message), name="publish")
        except BaseException:
            self._window.release()
            raise

    async def _publish(self, queue: str, message: Message) -> None:
        try:
            await self._publish_until_confirmed(queue, message)
        finally:
            self._window.release()

    async def send(self, message: Message) -> None:
        """Publish `message` toward central and return once the broker confirmed it.

        For senders that must know (vfactory acknowledges a task only after its
        notifications are confirmed); the bus's outbound forwarding does not wait."""
        queue = type(message).outbound_queue
        if queue is None:
            raise ValueError(f"{type(message).__name__} does not go to central")
        await self._publish_until_confirmed(queue, stamped(message))

    async def _publish_until_confirmed(self, queue: str, message: Message) -> None:
        backoff = Backoff(initial=0.2, maximum=5.0)
        body = codec.encode(message)
        while True:
            try:
                await self._transport.publish(
                    queue,
                    body,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id or None,
                )
                return
            except TemporaryError as exc:
                # Never dropped: retried until the broker takes it; meanwhile the window
                # (or the sender) stays taken and the bus pushes back.
                delay = backoff.next_delay()
                self._log.warning(
                    "publish toward central failed; retrying",
                    queue=queue,
                    error=exc.message,
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)

    # -- inbound -----------------------------------------------------------------------

    async def _on_delivery(self, delivery: Delivery) -> None:
        try:
            message = codec.decode(delivery.body, _INBOUND)
        except codec.DecodeError as exc:
            self._log.warning(
                "undecodable request dead-lettered", queue=delivery.queue, error=str(exc)
            )
            await delivery.dead_letter(f"does not decode: {exc}")
            return
        with correlation(message.correlation_id or delivery.correlation_id):
            await self._handle(delivery, message)

    async def _handle(self, delivery: Delivery, message: Message) -> None:
        log = self._log.bind(message_type=type(message).__name__, message_id=message.message_id)
        # Long-running work (VM jobs) settles when it is done, however long that is.
        timeout = None if type(message).long_running else self._handler_timeout
        try:
            reply = await self._bus.request(message, timeout=timeout)
        except NoHandler as exc:
            # Every type that decodes belongs to a subsystem; that one is not serving yet
            # (still starting or retrying): hold the delivery a moment, then give it back.
            log.warning("no handler yet; requeued", error=exc.message)
            await asyncio.sleep(self._no_handler_delay)
            await delivery.requeue()
            return
        except TemporaryError as exc:
            log.warning("request failed for now; requeued", error=exc.message)
            await delivery.requeue()
            return
        except Exception as exc:
            if delivery.reply_to is None:
                log.exception("command failed; dead-lettered")
                await delivery.dead_letter(f"{type(exc).__name__}: {exc}")
                return
            log.exception("request failed")
            code = exc.code if isinstance(exc, AbiquoError) else "DC-0"
            reply = RequestFailed(code=code, message=str(exc))
        if delivery.reply_to is not None and reply is not None:
            await self._transport.publish(
                delivery.reply_to,
                codec.encode(reply),
                message_id=reply.message_id,
                correlation_id=message.correlation_id or None,
                headers={IN_REPLY_TO: message.message_id},
                persistent=False,
            )
        await delivery.ack()

    # -- shutdown stages ---------------------------------------------------------------

    async def stop_accepting(self) -> None:
        """Stop taking requests; those already in handlers run on (see drain)."""
        if self._accepting:
            self._accepting = False
            for consumer in self._consumers:
                await consumer.cancel()

    async def drain(self, timeout: float) -> bool:
        results = await asyncio.gather(*(c.wait_idle(timeout) for c in self._consumers))
        return all(results)

    def in_flight(self) -> int:
        return sum(c.in_flight for c in self._consumers)

    async def close(self, flush_timeout: float = 2.0) -> None:
        # What subsystems said while stopping (their STOPPED states) still goes out.
        await self._bus.drain(flush_timeout)
        left = await self._publishing.wait(flush_timeout)
        if left:
            self._log.warning("messages toward central not confirmed at close", count=len(left))
        await self._publishing.close()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        await self.stop_accepting()
        self._consumers.clear()
        await self._transport.close()
