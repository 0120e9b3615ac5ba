"""Connected drivers shared by everything that works on the same host.

A connection (an AIM's thrift pool, a vSphere session) costs a handshake and a login:
jobs on one host reuse one connected driver. Callers that ask for a host at the same
time share one connect. A driver that lost its host is `discard`ed by whoever saw it
fail, so the next caller connects afresh; drivers nobody used for `idle_timeout` are
closed by `close_idle`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from abiquo_dc.hypervisors.base import Driver
from abiquo_dc.protocol.definitions import HypervisorConnection

log = structlog.get_logger("abiquo_dc.hypervisors.pool")

Opener = Callable[[HypervisorConnection], Driver]


@dataclass
class _Entry:
    connecting: asyncio.Future[Driver]
    last_used: float


class DriverPool:
    def __init__(self, opener: Opener, *, idle_timeout: float = 300.0) -> None:
        self._opener = opener
        self.idle_timeout = idle_timeout
        self._entries: dict[HypervisorConnection, _Entry] = {}

    async def get(self, connection: HypervisorConnection) -> Driver:
        """A connected driver for `connection`; the driver's errors if it cannot connect."""
        entry = self._entries.get(connection)
        if entry is None:
            entry = _Entry(asyncio.get_running_loop().create_future(), time.monotonic())
            self._entries[connection] = entry
            try:
                driver = self._opener(connection)
                await driver.connect()
            except BaseException as exc:
                if self._entries.get(connection) is entry:
                    del self._entries[connection]
                if isinstance(exc, Exception):
                    entry.connecting.set_exception(exc)
                    # Those waiting share this failure; nobody else may be there to see it.
                    entry.connecting.exception()
                else:
                    entry.connecting.cancel()
                raise
            entry.connecting.set_result(driver)
            return driver
        entry.last_used = time.monotonic()
        return await asyncio.shield(entry.connecting)

    async def discard(self, connection: HypervisorConnection) -> None:
        """Forget the driver of `connection` (it lost its host) and close it."""
        entry = self._entries.pop(connection, None)
        if entry is not None:
            await self._close(entry)

    async def close_idle(self) -> int:
        """Close the drivers unused for `idle_timeout`; returns how many."""
        cutoff = time.monotonic() - self.idle_timeout
        idle = [c for c, e in self._entries.items() if e.last_used < cutoff]
        for connection in idle:
            await self.discard(connection)
        return len(idle)

    async def close(self) -> None:
        entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            await self._close(entry)

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    async def _close(entry: _Entry) -> None:
        if not entry.connecting.done() or entry.connecting.cancelled():
            return  # its connect() is still running, and closes what it opens on failure
        if entry.connecting.exception() is not None:
            return
        try:
            await entry.connecting.result().close()
        except Exception as exc:
            log.warning("closing a driver failed", error=str(exc))
