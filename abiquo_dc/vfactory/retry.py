"""How a job's step that fails for now is tried again: the same backoff for every peer.

A job talks to its host and to the other subsystems (the BPM, the Appliance Manager);
each of them can be away for a moment (a host rebooting, a subsystem still starting).
A TemporaryError is retried with backoff up to `attempts` times in all, then raised;
anything else is raised at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import structlog

from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import TemporaryError

log = structlog.get_logger("abiquo.dc.vfactory")

T = TypeVar("T")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    attempts: int = 5
    initial: float = 1.0
    maximum: float = 30.0


async def retrying(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, **context: str) -> T:
    """`attempt()`'s result, called again after a TemporaryError while attempts remain.

    The wait is outside `attempt`: what it holds (a host's slot) is free meanwhile.
    `context` goes into the log line of each retry."""
    backoff = Backoff(initial=policy.initial, maximum=policy.maximum)
    tried = 1
    while True:
        try:
            return await attempt()
        except TemporaryError as exc:
            if tried >= policy.attempts:
                raise
            delay = backoff.next_delay()
            log.warning(
                "failed for now; retrying",
                **context,
                attempt=tried,
                error=exc.message,
                retry_in=round(delay, 2),
            )
            tried += 1
            await asyncio.sleep(delay)
