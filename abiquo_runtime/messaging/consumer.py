"""What both transports' consumers share: counting deliveries under way, and the policy
for a delivery its handler did not settle."""

from __future__ import annotations

import asyncio
from typing import Any

from abiquo_runtime.messaging.transport import Delivery, Handler


class BusyCount:
    """How many deliveries a consumer has under way, and a wait for there to be none."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[asyncio.Future[None]] = []

    def enter(self) -> None:
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0 and self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_idle(self, timeout: float) -> bool:
        """True once nothing is under way; False if still busy after `timeout`."""
        if self.count == 0:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            return self.count == 0
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


async def run_handler(
    handler: Handler, delivery: Delivery, *, log: Any, requeue_delay: float
) -> None:
    """Hand `delivery` to `handler`. What the handler leaves unsettled (it raised, or it
    forgot) is logged and, after a pause, left for the caller to give back: the pause is
    there so that a message that always fails does not spin."""
    failed = False
    try:
        await handler(delivery)
    except Exception:
        failed = True
        if delivery.settled:
            log.exception("handler failed after settling", message_id=delivery.message_id)
        else:
            log.exception("handler failed; requeueing", message_id=delivery.message_id)
    if not delivery.settled:
        if not failed:
            log.error(
                "handler returned without settling; requeueing", message_id=delivery.message_id
            )
        await asyncio.sleep(requeue_delay)
