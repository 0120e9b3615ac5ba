"""How much runs at once: one task per VM, a few jobs per host, a bound per datacenter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable


class VmLocks:
    """A queue per VM: tasks on one VM run one after the other, in arrival order."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, uuids: Iterable[str]) -> AsyncIterator[None]:
        # Always in sorted order: two tasks over the same VMs never wait for each other.
        ordered = sorted(set(uuids))
        for uuid in ordered:
            self._users[uuid] = self._users.get(uuid, 0) + 1
            self._locks.setdefault(uuid, asyncio.Lock())
        held: list[asyncio.Lock] = []
        try:
            for uuid in ordered:
                lock = self._locks[uuid]
                await lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                lock.release()
            for uuid in ordered:
                self._users[uuid] -= 1
                if not self._users[uuid]:  # the last one out: no lock kept per VM ever seen
                    del self._users[uuid]
                    del self._locks[uuid]

    def busy(self) -> int:
        return len(self._locks)


class HostSlots:
    """At most `per_host` hypervisor operations on one host and `total` in the datacenter."""

    def __init__(self, *, per_host: int, total: int) -> None:
        self.per_host = per_host
        self._total = asyncio.Semaphore(total)
        self._hosts: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        semaphore = self._hosts.get(host)
        if semaphore is None:
            semaphore = self._hosts[host] = asyncio.Semaphore(self.per_host)
        # The host's slot first: a busy host's jobs do not hold datacenter slots waiting.
        async with semaphore, self._total:
            yield
