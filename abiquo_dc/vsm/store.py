"""Where the VSM keeps what it monitors, and the channel its monitors speak on.

Redis in production (redis_store.py): the monitored hosts (credentials encrypted by the
caller), the subscriptions, each VM's last known state and host, and a pub/sub channel
from the monitors to the notifier. `MemoryStore` is the all-in-one's in-process twin;
one contract test suite runs against both.

An epoch key marks the state as written by this DC: when Redis is flushed or restarted
empty, `alive()` turns False and the service rebuilds from central.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NamedTuple, Protocol

from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.monitoring import Subscription


class Known(NamedTuple):
    """A VM's last known state, and the host it was seen on."""

    state: ObservedState
    host: str


class VsmStore(Protocol):
    async def open(self) -> None:
        """Connect; TemporaryError when the store cannot be reached."""
        ...

    async def close(self) -> None: ...

    async def alive(self) -> bool:
        """Whether the state this DC wrote is there (False once emptied)."""
        ...

    async def mark(self) -> None:
        """Write the epoch: what is there from now on is this DC's."""
        ...

    # -- hosts (the blob is the caller's: encrypted credentials and all) -----------------

    async def put_host(self, address: str, blob: bytes) -> None: ...

    async def remove_host(self, address: str) -> bool: ...

    async def hosts(self) -> dict[str, bytes]: ...

    # -- subscriptions and what is known of each VM ----------------------------------------

    async def subscribe(self, subscriptions: list[Subscription]) -> None: ...

    async def unsubscribe(self, vm_uuids: list[str]) -> int: ...

    async def subscriptions(self) -> list[Subscription]: ...

    async def lookup(self, vm_uuid: str) -> tuple[Subscription | None, Known | None]:
        """The VM's subscription and its last known state, in one round trip."""
        ...

    async def lookup_many(
        self, vm_uuids: list[str]
    ) -> list[tuple[Subscription | None, Known | None]]:
        """`lookup` for each, in one round trip."""
        ...

    async def observe(self, vm_uuid: str, known: Known) -> tuple[Subscription | None, Known | None]:
        """For a subscribed VM, record `known` (as set_known); either way, return its
        subscription and what was known before, in one round trip."""
        ...

    async def set_known(self, vm_uuid: str, known: Known) -> None:
        """Record the VM's state and host (and move it in the per-host index)."""
        ...

    async def forget(self, vm_uuid: str) -> None: ...

    async def known_on(self, host: str) -> dict[str, Known]:
        """The subscribed VMs last seen on `host`, with what is known of them."""
        ...

    # -- the monitors' channel -----------------------------------------------------------

    async def publish(self, payload: bytes) -> None: ...

    async def publish_many(self, payloads: list[bytes]) -> None:
        """Publish each, in order, in one round trip."""
        ...

    def listen(self) -> AsyncIterator[bytes]:
        """What is published from now on, until close(); TemporaryError when the
        channel breaks (what was published meanwhile is lost: resynchronise)."""
        ...


class MemoryStore:
    """The store in this process, for the all-in-one: nothing survives a restart."""

    def __init__(self) -> None:
        self._epoch = False
        self._hosts: dict[str, bytes] = {}
        self._subs: dict[str, Subscription] = {}
        self._known: dict[str, Known] = {}
        self._listeners: set[asyncio.Queue[bytes | None]] = set()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        for queue in self._listeners:
            queue.put_nowait(None)

    async def alive(self) -> bool:
        return self._epoch

    async def mark(self) -> None:
        self._epoch = True

    def flush(self) -> None:
        """Empty it, as a FLUSHALL would (for tests)."""
        self._epoch = False
        self._hosts.clear()
        self._subs.clear()
        self._known.clear()

    async def put_host(self, address: str, blob: bytes) -> None:
        self._hosts[address] = blob

    async def remove_host(self, address: str) -> bool:
        return self._hosts.pop(address, None) is not None

    async def hosts(self) -> dict[str, bytes]:
        return dict(self._hosts)

    async def subscribe(self, subscriptions: list[Subscription]) -> None:
        for sub in subscriptions:
            self._subs[sub.vm_uuid] = sub

    async def unsubscribe(self, vm_uuids: list[str]) -> int:
        gone = 0
        for uuid in vm_uuids:
            gone += self._subs.pop(uuid, None) is not None
            self._known.pop(uuid, None)
        return gone

    async def subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    async def lookup(self, vm_uuid: str) -> tuple[Subscription | None, Known | None]:
        return self._subs.get(vm_uuid), self._known.get(vm_uuid)

    async def lookup_many(
        self, vm_uuids: list[str]
    ) -> list[tuple[Subscription | None, Known | None]]:
        return [(self._subs.get(u), self._known.get(u)) for u in vm_uuids]

    async def observe(self, vm_uuid: str, known: Known) -> tuple[Subscription | None, Known | None]:
        sub, before = self._subs.get(vm_uuid), self._known.get(vm_uuid)
        if sub is not None:
            self._known[vm_uuid] = known
        return sub, before

    async def set_known(self, vm_uuid: str, known: Known) -> None:
        self._known[vm_uuid] = known

    async def forget(self, vm_uuid: str) -> None:
        self._known.pop(vm_uuid, None)

    async def known_on(self, host: str) -> dict[str, Known]:
        return {uuid: k for uuid, k in self._known.items() if k.host == host}

    async def publish(self, payload: bytes) -> None:
        for queue in self._listeners:
            queue.put_nowait(payload)

    async def publish_many(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            await self.publish(payload)

    async def listen(self) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            while (payload := await queue.get()) is not None:
                yield payload
        finally:
            self._listeners.discard(queue)
