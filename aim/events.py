"""Domain lifecycle events, numbered and kept for monitors that long-poll from a cursor.

libvirt's lifecycle event (type, detail) → the contract's EventType:

    DEFINED   ADDED, RENAMED, FROM_SNAPSHOT → CREATED     UPDATED (a redefine) → ignored
    UNDEFINED any                           → DESTROYED
    STARTED   any                           → POWER_ON
    SUSPENDED any                           → PAUSED
    PMSUSPENDED any                         → PAUSED     (the guest slept itself)
    RESUMED   any, after a PAUSED               → RESUMED (QEMU's unpause at start is not one)
    STOPPED   SAVED                         → SAVED
    STOPPED   any other                     → POWER_OFF
    CRASHED   any                           → POWER_OFF  (a STOPPED may follow if on_crash
                                                          destroys it: two POWER_OFFs)
    SHUTDOWN  any                           → ignored    (the guest finished shutting down;
                                                          the STOPPED that follows says it)

Sequences start at 1 in each AIM process. A restarted AIM starts again at 1, so a cursor
beyond the last sequence issued means "the AIM restarted": the answer is resync with the
cursor set back to the last sequence. The contract is unchanged.

The callback is registered on each connection the libvirt host makes. Events that came
while libvirt was away are lost: a reconnection takes a sequence number of its own, a
gap, and a caller whose cursor is before the gap is told to resync, with the events after
the gap.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from types import ModuleType
from typing import Any

import libvirt
import structlog

from aim.groups import raise_
from aim.libvirt_host import LibvirtHost

log = structlog.get_logger("aim.events")

# The longest a waitEvents call is held, whatever it asks: a caller's socket timeout
# should not be reached by a quiet host.
MAX_WAIT = 60.0
MAX_EVENTS = 1000

_E = libvirt
_BY_TYPE = {
    _E.VIR_DOMAIN_EVENT_UNDEFINED: "DESTROYED",
    _E.VIR_DOMAIN_EVENT_STARTED: "POWER_ON",
    _E.VIR_DOMAIN_EVENT_SUSPENDED: "PAUSED",
    _E.VIR_DOMAIN_EVENT_PMSUSPENDED: "PAUSED",
    _E.VIR_DOMAIN_EVENT_RESUMED: "RESUMED",
    _E.VIR_DOMAIN_EVENT_STOPPED: "POWER_OFF",
    _E.VIR_DOMAIN_EVENT_CRASHED: "POWER_OFF",
}


def event_type(event: int, detail: int) -> str | None:
    """The contract's EventType name for a libvirt lifecycle event, None to ignore it."""
    if event == _E.VIR_DOMAIN_EVENT_DEFINED:
        return None if detail == _E.VIR_DOMAIN_EVENT_DEFINED_UPDATED else "CREATED"
    if event == _E.VIR_DOMAIN_EVENT_STOPPED and detail == _E.VIR_DOMAIN_EVENT_STOPPED_SAVED:
        return "SAVED"
    return _BY_TYPE.get(event)


class EventGroup:
    METHODS = ("waitEvents",)

    def __init__(self, *, contract: ModuleType, host: LibvirtHost, history: int) -> None:
        self._contract = contract
        self._host = host
        self._history: collections.deque[Any] = collections.deque(maxlen=history)
        self._sequence = itertools.count(1)
        self._last = 0
        # The last event reported per domain, to judge the next one by.
        self._last_type: dict[str, str] = {}
        # Set and replaced at each event. Not an asyncio.Condition: libvirt's callback is
        # synchronous and cannot take a Condition's lock to notify; on one thread an
        # Event swapped per change wakes every waiter just the same.
        self._changed = asyncio.Event()
        # The connection the callback is registered on, and its id there.
        self._callback: tuple[libvirt.virConnect, int] | None = None
        self._subscribed_once = False
        # The sequence of the latest reconnection: events before it may be missing.
        self._gap = 0
        self._closing = False

    async def start(self) -> None:
        await self._host.subscribe(self._subscribe)

    async def _subscribe(self, conn: libvirt.virConnect) -> None:
        """Register the lifecycle callback on a new connection of the libvirt host."""
        callback_id = await self._host.call(
            conn.domainEventRegisterAny,
            None,
            libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            self._on_lifecycle,
            None,
        )
        self._callback = (conn, callback_id)
        # A domain already paused when the AIM starts is resumed later: that RESUMED
        # must count (see _on_lifecycle).
        for uuid in await self._host.call(_paused_domains, conn):
            self._last_type.setdefault(uuid, "PAUSED")
        if self._subscribed_once:
            # Whatever happened while libvirt was away was not seen.
            self._gap = self._last = next(self._sequence)
            log.warning("lifecycle events lost while libvirt was away", gap=self._gap)
            self._wake()
        self._subscribed_once = True

    async def close(self) -> None:
        self._closing = True
        callback, self._callback = self._callback, None
        if callback is not None and self._host.connected:
            conn, callback_id = callback
            try:
                await self._host.call(conn.domainEventDeregisterAny, callback_id)
            except Exception as exc:  # the connection may be gone already
                log.warning("lifecycle callback not deregistered", error=str(exc))
        self._wake()  # waiters answer now rather than at their timeout

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_lifecycle(
        self, _conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int, _o: Any
    ) -> None:
        # libvirtaio runs this on the loop's thread: no locking needed.
        try:
            name = event_type(event, detail)
            if name is None:
                return
            uuid = dom.UUIDString()
            # QEMU starts a guest paused and lets it go: libvirt says RESUMED just before
            # STARTED. A resume means something only after a pause; others are dropped.
            previous = self._last_type.get(uuid)
            if name == "RESUMED" and previous != "PAUSED":
                return
            if name == "DESTROYED":
                self._last_type.pop(uuid, None)
            else:
                self._last_type[uuid] = name
            sequence = next(self._sequence)
            self._history.append(
                self._contract.DomainEvent(
                    sequence=sequence,
                    domainUuid=uuid,
                    domainName=dom.name(),
                    type=getattr(self._contract.EventType, name),
                    timestamp=int(time.time() * 1000),
                )
            )
            self._last = sequence
            self._wake()
        except Exception:  # an exception here would only be printed by libvirt
            log.exception("lifecycle event lost", event=event, detail=detail)

    def _invalid(self, message: str) -> None:
        raise_(self._contract.EventsException, "EVENTS-INVALID", message)

    async def waitEvents(self, cursor: int, max: int, timeoutMs: int) -> Any:
        # isinstance first: an argument the caller left unset arrives as None.
        if not isinstance(max, int) or not 1 <= max <= MAX_EVENTS:
            self._invalid(f"max must be within 1..{MAX_EVENTS}, not {max}")
        if not isinstance(cursor, int) or cursor < 0:
            self._invalid(f"cursor must not be negative, not {cursor}")
        if not isinstance(timeoutMs, int) or timeoutMs < 0:
            self._invalid(f"timeoutMs must not be negative, not {timeoutMs}")
        batch = self._contract.EventBatch
        if cursor > self._last:
            # A cursor from before this process: the AIM restarted, its events are gone.
            return batch(events=[], cursor=self._last, resync=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeoutMs / 1000, MAX_WAIT)
        while self._last <= cursor and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                break
        resync = bool(self._history) and self._history[0].sequence > cursor + 1
        if self._gap > cursor:
            # Events were lost at the gap: the caller lists the domains and goes on
            # from the gap; what came before it is of no use to it any more.
            resync, cursor = True, self._gap
        events = list(itertools.islice((e for e in self._history if e.sequence > cursor), max))
        return batch(events=events, cursor=events[-1].sequence if events else cursor, resync=resync)


def _paused_domains(conn: libvirt.virConnect) -> list[str]:
    """The UUIDs of the domains paused right now (blocking: run it in the host's pool)."""
    flags = libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED
    return [dom.UUIDString() for dom in conn.listAllDomains(flags)]
