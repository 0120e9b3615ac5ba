"""Central's side of the link to every datacenter, over a message transport.

Central is stateless between requests and may run as several processes: they consume
the shared notification, event and heartbeat queues as competing consumers, and each has
a private reply queue for its own requests to datacenters. Commands go to the queue of
the datacenter they concern, named by its UUID.

A message toward central is acknowledged only after `on_message` returned (its effect is
in the database). What does not decode goes to the dead-letter queue; a permanent error
too; anything else is put back on the queue after a pause, to be tried again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from abiquo_dc.protocol import codec
from abiquo_dc.protocol.messages import Message, Outbound, Reply, RequestFailed, stamped
from abiquo_dc.protocol.queues import (
    IN_REPLY_TO,
    outbound_specs,
    request_specs,
    requests_queue,
)
from abiquo_runtime.correlation import correlation
from abiquo_runtime.errors import AbiquoError, InvalidInput, PermanentError, TemporaryError
from abiquo_runtime.messaging.transport import Consumer, Delivery, Transport

OnMessage = Callable[[Message], Awaitable[None]]

_OUTBOUND: Any = Outbound
_REPLY: Any = Reply


class DatacenterUnavailable(TemporaryError):
    code = "DC-1"


class DatacenterRequests(Protocol):
    """What the API asks of the datacenters: CentralLink, or NoLink when there is none."""

    async def send(self, dc_uuid: str, service: str, message: Message) -> None: ...

    async def request(self, dc_uuid: str, message: Message, *, timeout: float) -> Message: ...


class NoLink:
    """The datacenters of an API that was built without a link: every one unavailable."""

    async def send(self, dc_uuid: str, service: str, message: Message) -> None:
        raise DatacenterUnavailable(f"datacenter {dc_uuid} cannot be reached: there is no link")

    async def request(self, dc_uuid: str, message: Message, *, timeout: float) -> Message:
        raise DatacenterUnavailable(f"datacenter {dc_uuid} cannot be reached: there is no link")


class CentralLink:
    def __init__(
        self,
        *,
        transport: Transport,
        on_message: OnMessage,
        prefetch: int = 16,
        retry_delay: float = 1.0,
    ) -> None:
        self._transport = transport
        self._on_message = on_message
        self._prefetch = prefetch
        self._retry_delay = retry_delay
        self._consumers: list[Consumer] = []
        self._reply_queue: str | None = None
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._declared: set[str] = set()
        self._accepting = False
        self._log = structlog.get_logger("abiquo.central.link")

    async def start(self) -> None:
        """Connect, declare the queues toward central and take replies."""
        await self._transport.connect()
        for spec in outbound_specs():
            await self._transport.declare(spec)
        self._reply_queue = await self._transport.declare_reply_queue()
        self._consumers.append(
            await self._transport.consume(self._reply_queue, self._on_reply, prefetch=64)
        )

    async def accept(self) -> None:
        """Start consuming what the datacenters send."""
        self._accepting = True
        for spec in outbound_specs():
            self._consumers.append(
                await self._transport.consume(spec.name, self._on_delivery, prefetch=self._prefetch)
            )

    # -- toward a datacenter -----------------------------------------------------------

    async def _declare_for(self, dc_uuid: str) -> None:
        # The DC may never have started: its queues must exist before anything is sent,
        # or the message would be unroutable.
        if dc_uuid in self._declared:
            return
        for spec in request_specs(dc_uuid):
            await self._transport.declare(spec)
        self._declared.add(dc_uuid)

    async def send(self, dc_uuid: str, service: str, message: Message) -> None:
        """Send a command; returns once the broker holds it."""
        await self._declare_for(dc_uuid)
        message = stamped(message)
        await self._transport.publish(
            requests_queue(dc_uuid, service),
            codec.encode(message),
            message_id=message.message_id,
            correlation_id=message.correlation_id,
        )

    async def request(self, dc_uuid: str, message: Message, *, timeout: float) -> Message:
        """Ask a datacenter and wait for its answer; a RequestFailed answer is raised."""
        if self._reply_queue is None:
            raise RuntimeError("the link is not started")
        await self._declare_for(dc_uuid)
        message = stamped(message)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[message.message_id] = future
        try:
            await self._transport.publish(
                requests_queue(dc_uuid, "rpc"),
                codec.encode(message),
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                reply_to=self._reply_queue,
                expiration_ms=max(1, int(timeout * 1000)),
                persistent=False,
            )
            try:
                async with asyncio.timeout(timeout):
                    reply = await future
            except TimeoutError:
                raise DatacenterUnavailable(
                    f"datacenter {dc_uuid} did not answer within {timeout}s"
                ) from None
        finally:
            self._pending.pop(message.message_id, None)
        if isinstance(reply, RequestFailed):
            if reply.temporary:
                raise TemporaryError(reply.message, code=reply.code)
            raise AbiquoError(reply.message, code=reply.code)
        return reply

    async def _on_reply(self, delivery: Delivery) -> None:
        await delivery.ack()
        in_reply_to = str(delivery.headers.get(IN_REPLY_TO, ""))
        future = self._pending.get(in_reply_to)
        if future is None or future.done():
            return  # its caller gave up already
        try:
            future.set_result(codec.decode(delivery.body, _REPLY))
        except codec.DecodeError as exc:
            future.set_exception(PermanentError(f"undecodable reply: {exc}"))

    # -- from the datacenters ----------------------------------------------------------

    async def _on_delivery(self, delivery: Delivery) -> None:
        try:
            message = codec.decode(delivery.body, _OUTBOUND)
        except codec.DecodeError as exc:
            self._log.warning(
                "undecodable message dead-lettered", queue=delivery.queue, error=str(exc)
            )
            await delivery.dead_letter(f"does not decode: {exc}")
            return
        with correlation(message.correlation_id or delivery.correlation_id):
            try:
                await self._on_message(message)
            except (PermanentError, InvalidInput) as exc:
                self._log.warning("message refused; dead-lettered", error=exc.message)
                await delivery.dead_letter(exc.message)
                return
            except Exception:
                self._log.exception(
                    "handling a datacenter message failed; requeued",
                    message_type=type(message).__name__,
                )
                await asyncio.sleep(self._retry_delay)
                await delivery.requeue()
                return
        await delivery.ack()

    # -- shutdown stages ---------------------------------------------------------------

    async def stop_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            for consumer in self._consumers[1:]:
                await consumer.cancel()

    async def drain(self, timeout: float) -> bool:
        results = await asyncio.gather(*(c.wait_idle(timeout) for c in self._consumers[1:]))
        return all(results)

    def in_flight(self) -> int:
        return sum(c.in_flight for c in self._consumers)

    async def close(self) -> None:
        await self.stop_accepting()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(DatacenterUnavailable("the link is closing"))
        self._consumers.clear()
        await self._transport.close()


def new_process_name() -> str:
    return f"abiquo-central {uuid.uuid4().hex[:8]}"
