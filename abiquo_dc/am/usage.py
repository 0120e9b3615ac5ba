"""How full the repository's file system is, told to central as `RepositoryUsage`.

The Appliance Manager reports at its start, every `usage_interval` seconds, and soon after
templates came or went (`changed()`), but not sooner than `usage_debounce` after the last
report: a burst of changes makes one message.

statvfs runs in the AM's threads under a timeout: on a hung NFS server it may not return
for as long as the server is away, and the loop must go on. While such a call is stuck
no other is started (the AM's threads are few): the next round waits for that one again.
A measure that fails is logged and tried again at the next round; it never stops the AM.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from abiquo_dc.am.repository import MOUNT_TIMEOUT, file_system
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.templates import RepositoryUsage

# The shortest pause between rounds whatever the settings say: never a busy loop.
MIN_PAUSE = 0.05


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A measure given up on may still fail later: its error is not worth a warning then.
    if not future.cancelled():
        future.exception()


class UsageReporter:
    def __init__(
        self,
        *,
        bus: Bus,
        dc_uuid: str,
        root: Path,
        executor: Executor | None,
        interval: float,
        debounce: float,
        log: structlog.stdlib.BoundLogger,
        timeout: float = MOUNT_TIMEOUT,
    ) -> None:
        self._bus = bus
        self._dc_uuid = dc_uuid
        self._root = root
        self._executor = executor
        self._interval = max(MIN_PAUSE, interval)
        self._debounce = max(0.0, debounce)
        self._timeout = timeout
        self._log = log
        self._changed = asyncio.Event()
        # A statvfs that outlived its timeout, still in a thread.
        self._pending: asyncio.Future[tuple[int, int]] | None = None

    def changed(self) -> None:
        """Templates came or went: report soon."""
        self._changed.set()

    async def run(self) -> None:
        """Report until cancelled (the AM stops)."""
        loop = asyncio.get_running_loop()
        while True:
            # Cleared before measuring: a change while the measure runs makes another.
            self._changed.clear()
            await self.report()
            last = loop.time()
            try:
                async with asyncio.timeout(self._interval):
                    await self._changed.wait()
            except TimeoutError:
                continue
            await asyncio.sleep(max(MIN_PAUSE, last + self._debounce - loop.time()))

    async def report(self) -> None:
        """Measure and publish once; a failure is logged, not raised."""
        try:
            capacity, free = await self._measure()
        except (OSError, TimeoutError) as exc:
            self._log.warning(
                "repository usage not measured",
                root=str(self._root),
                error=str(exc) or type(exc).__name__,
            )
            return
        except Exception:
            self._log.exception("repository usage not measured", root=str(self._root))
            return
        await self._bus.publish(
            RepositoryUsage(
                dc_uuid=self._dc_uuid,
                capacity_bytes=capacity,
                free_bytes=free,
                at=datetime.now(UTC),
            )
        )

    async def _measure(self) -> tuple[int, int]:
        pending = self._pending
        if pending is None or pending.done():
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._executor, file_system, self._root)
            pending.add_done_callback(_retrieve)
            self._pending = pending
        try:
            async with asyncio.timeout(self._timeout):
                # Shielded: a timeout gives up waiting, not the call, which the next
                # round waits for again instead of starting one more.
                return await asyncio.shield(pending)
        except TimeoutError:
            raise TimeoutError(
                f"the file system did not answer within {self._timeout:g}s"
            ) from None
        finally:
            if pending.done():
                self._pending = None
