"""The transport contract that the links of central and of each datacenter are built on.

Two implementations: `amqp.AmqpTransport` over RabbitMQ for production and
`memory.MemoryBroker` in one process for all-in-one. Both give the same guarantees, and
one contract test suite runs against both:

- `publish` returns only once the broker has taken responsibility for the message
  (publisher confirm); across a reconnect it waits and retries, up to its timeout, and
  then raises TemporaryError. A retry may duplicate a message: consumers are idempotent.
- a delivery is acknowledged only by its handler's outcome: `ack()` after the effect,
  `requeue()` for a temporary failure, `dead_letter(reason)` for a message that can never
  be handled (it goes to the queue's dead-letter queue `<queue>.dlq`, with the reason and
  the original queue in its headers). A handler that raises without settling the
  delivery gets it requeued; a delivery left unsettled when the connection drops comes
  back (redelivered=True).
- at most `prefetch` deliveries per consumer are in a handler at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

DEAD_LETTER_SUFFIX = ".dlq"
HEADER_DEAD_REASON = "x-abiquo-dead-reason"
HEADER_ORIGINAL_QUEUE = "x-abiquo-original-queue"


class TransportClosed(Exception):
    """The transport was closed on purpose; nothing more can go through it."""


@dataclass(frozen=True)
class QueueSpec:
    name: str
    durable: bool = True
    # Declare `<name>.dlq` and send rejected messages there.
    dead_letter: bool = True
    # Messages older than this are dropped by the broker (heartbeats, RPC requests).
    message_ttl_ms: int | None = None
    max_length: int | None = None

    @property
    def dead_letter_queue(self) -> str:
        return self.name + DEAD_LETTER_SUFFIX


class Delivery(Protocol):
    @property
    def body(self) -> bytes: ...

    @property
    def queue(self) -> str: ...

    @property
    def message_id(self) -> str | None: ...

    @property
    def correlation_id(self) -> str | None: ...

    @property
    def reply_to(self) -> str | None: ...

    @property
    def headers(self) -> Mapping[str, Any]: ...

    @property
    def redelivered(self) -> bool: ...

    @property
    def settled(self) -> bool: ...

    async def ack(self) -> None: ...

    async def requeue(self) -> None: ...

    async def dead_letter(self, reason: str) -> None: ...


Handler = Callable[[Delivery], Awaitable[None]]


class Consumer(Protocol):
    @property
    def in_flight(self) -> int:
        """Deliveries handed to the handler and not yet settled."""
        ...

    async def cancel(self) -> None:
        """Stop receiving new deliveries; those in a handler run on."""
        ...

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no delivery is in a handler; False on timeout."""
        ...


class Transport(Protocol):
    @property
    def is_connected(self) -> bool: ...

    async def connect(self) -> None:
        """Open the connection; raise TemporaryError when the broker cannot be reached."""
        ...

    async def close(self) -> None: ...

    async def declare(self, spec: QueueSpec) -> None:
        """Declare a queue (and its dead-letter queue); idempotent; restored on reconnect."""
        ...

    async def declare_reply_queue(self) -> str:
        """A private, auto-deleted queue for replies to this process; returns its name."""
        ...

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
    ) -> None: ...

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Consumer: ...
