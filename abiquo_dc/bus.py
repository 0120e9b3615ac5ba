"""The datacenter's in-process bus: typed messages between subsystems and the link.

Two ways to talk:
- publish/subscribe: every listener of a message's type (or of one of its base classes)
  gets it, in order, from its own bounded queue drained by its own guarded task. A
  listener that raises is logged and skipped; the publisher and the other listeners never
  see it. When a listener falls behind, its full queue makes publishers wait
  (backpressure) rather than drop.
- request/reply: exactly one handler serves a message type; `request` runs it in the
  caller's task under a timeout and returns its reply, or raises what the handler raised.

Every message carries the correlation id of the work that caused it: `publish` and
`request` fill it from the current context when it is empty, and listeners and handlers
run with it set, so whatever they publish in turn carries it on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from abiquo_dc.protocol.messages import Message, stamped
from abiquo_runtime.correlation import adopt, correlation
from abiquo_runtime.errors import PermanentError, TemporaryError
from abiquo_runtime.tasks import Supervisor

M = TypeVar("M", bound=Message)
Listener = Callable[[M], Awaitable[None]]
RequestHandler = Callable[[M], Awaitable[Message | None]]
Unsubscribe = Callable[[], None]


class NoHandler(PermanentError):
    """Nobody serves requests of this type."""

    code = "BUS-1"


class RequestTimeout(TemporaryError):
    code = "BUS-2"


@dataclass(eq=False)
class _Subscription:
    kind: type[Message]
    listener: Callable[[Any], Awaitable[None]]
    name: str
    queue: asyncio.Queue[Message]
    task: asyncio.Task[None] | None = field(default=None)


class Bus:
    def __init__(self, *, queue_size: int = 1024, name: str = "bus") -> None:
        self._queue_size = queue_size
        self._subscriptions: list[_Subscription] = []
        # Listeners per concrete message type, rebuilt when the subscriptions change.
        self._routes: dict[type[Message], tuple[_Subscription, ...]] = {}
        self._handlers: dict[type[Message], Callable[[Any], Awaitable[Message | None]]] = {}
        self._tasks = Supervisor(name)
        self._log = structlog.get_logger("abiquo.bus")
        self._closed = False

    # -- publish/subscribe -------------------------------------------------------------

    def subscribe(
        self, kind: type[M], listener: Listener[M], *, name: str | None = None
    ) -> Unsubscribe:
        """Call `listener` for every message of type `kind` (subclasses included)."""
        if self._closed:
            raise RuntimeError("the bus is closed")
        label: str = name or getattr(listener, "__qualname__", None) or repr(listener)
        sub = _Subscription(kind, listener, label, asyncio.Queue(self._queue_size))
        sub.task = self._tasks.spawn(self._deliver(sub), name=f"listener:{label}", forever=True)
        self._subscriptions.append(sub)
        self._routes.clear()

        def unsubscribe() -> None:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)
                self._routes.clear()
                if sub.task is not None:
                    sub.task.cancel()

        return unsubscribe

    def _listeners(self, kind: type[Message]) -> tuple[_Subscription, ...]:
        found = self._routes.get(kind)
        if found is None:
            found = self._routes[kind] = tuple(
                s for s in self._subscriptions if issubclass(kind, s.kind)
            )
        return found

    async def publish(self, message: Message) -> None:
        """Hand `message` to every listener of its type; waits only while a queue is full."""
        if self._closed:
            raise RuntimeError("the bus is closed")
        message = stamped(message)
        for sub in self._listeners(type(message)):
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                await sub.queue.put(message)

    async def _deliver(self, sub: _Subscription) -> None:
        queue = sub.queue
        while True:
            message = await queue.get()
            try:
                # This task is the listener's own: it takes on each message's id.
                adopt(message.correlation_id)
                await sub.listener(message)
            except Exception:
                self._log.exception(
                    "listener failed", listener=sub.name, message_type=type(message).__name__
                )
            finally:
                queue.task_done()

    # -- request/reply -----------------------------------------------------------------

    def serve(self, kind: type[M], handler: RequestHandler[M]) -> Unsubscribe:
        """Make `handler` the one that answers requests of type `kind`."""
        if kind in self._handlers:
            raise ValueError(f"{kind.__name__} already has a handler")
        self._handlers[kind] = handler

        def unserve() -> None:
            if self._handlers.get(kind) is handler:
                del self._handlers[kind]

        return unserve

    def serves(self, kind: type[Message]) -> bool:
        return any(k in self._handlers for k in kind.__mro__)

    async def request(self, message: Message, *, timeout: float | None) -> Message | None:
        """Run the handler of `message`'s type and return its reply (None: no timeout)."""
        handler = None
        for kind in type(message).__mro__:
            handler = self._handlers.get(kind)
            if handler is not None:
                break
        if handler is None:
            raise NoHandler(f"nothing serves {type(message).__name__} requests")
        message = stamped(message)
        with correlation(message.correlation_id):
            try:
                async with asyncio.timeout(timeout):
                    return await handler(message)
            except TimeoutError:
                raise RequestTimeout(
                    f"{type(message).__name__} got no reply within {timeout}s"
                ) from None

    # -- lifecycle ---------------------------------------------------------------------

    async def drain(self, timeout: float) -> bool:
        """Wait until every listener has handled what was published; False on timeout."""
        waits = [asyncio.ensure_future(s.queue.join()) for s in list(self._subscriptions)]
        if not waits:
            return True
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for w in pending:
            w.cancel()
        if pending:
            await asyncio.wait(pending)
        return not pending

    def backlog(self) -> dict[str, int]:
        """Messages waiting per listener: what a stuck shutdown names."""
        return {s.name: s.queue.qsize() for s in self._subscriptions if s.queue.qsize()}

    async def close(self) -> None:
        self._closed = True
        self._subscriptions.clear()
        self._routes.clear()
        self._handlers.clear()
        await self._tasks.close()
