"""The notifier: raw observations in, VM state changes out to central, each once.

Observations come off the store's channel one at a time, in order. For a subscribed VM,
what a host reports is compared with its last known state and host (in the store):

- the same: nothing is sent;
- another state: POWER_ON, POWER_OFF, PAUSED or RESUMED (ON after PAUSED);
- another host: MOVED (with the previous host), then the state, whatever it is;
- gone from its host: DESTROYED, after `move_window` seconds in which it was not seen
  elsewhere (a migration shows the VM on its new host around the time it leaves the old);
- its host lost past the grace period: UNKNOWN, never OFF.

A VM nobody subscribed to is counted and dropped.

Events leave through a bounded buffer, in order, each confirmed by the broker before the
next. While RabbitMQ is away the buffer fills; past its bound, the VMs whose events do
not fit are marked, and when the buffer has room again each marked VM's current state
is sent instead of the transitions it missed: central ends up right, never silently
wrong.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.monitoring import Subscription, VmEventKind, VmStateChanged
from abiquo_dc.vsm.monitor import Kind, Observation, Seen
from abiquo_dc.vsm.store import Known, VsmStore

log = structlog.get_logger("abiquo.dc.vsm")

Send = Callable[[VmStateChanged], Awaitable[None]]

_KIND = {
    ObservedState.OFF: VmEventKind.POWER_OFF,
    ObservedState.PAUSED: VmEventKind.PAUSED,
    ObservedState.UNKNOWN: VmEventKind.UNKNOWN,
    ObservedState.ABSENT: VmEventKind.DESTROYED,
}


def event_kind(before: ObservedState | None, after: ObservedState) -> VmEventKind:
    if after is ObservedState.ON:
        return VmEventKind.RESUMED if before is ObservedState.PAUSED else VmEventKind.POWER_ON
    return _KIND[after]


class Notifier:
    def __init__(
        self,
        *,
        store: VsmStore,
        send: Send,
        dc_uuid: str,
        buffer_size: int = 10_000,
        move_window: float = 2.0,
    ) -> None:
        self.store = store
        self._send = send
        self.dc_uuid = dc_uuid
        self.buffer_size = buffer_size
        self.move_window = move_window
        self._buffer: collections.deque[VmStateChanged] = collections.deque()
        self._ready = asyncio.Event()
        # VMs whose events did not fit: their current state goes out when there is room.
        self._dirty: dict[str, None] = {}
        # Destroys waiting out the move window.
        self._pending_gone: dict[str, asyncio.TimerHandle] = {}
        self._confirming: set[asyncio.Task[None]] = set()
        self._sequence = 0
        self.dropped = 0
        self.overflowed = 0
        self.sent = 0

    # -- observations in -----------------------------------------------------------------

    async def handle(self, observation: Observation) -> None:
        at = datetime.fromtimestamp(observation.at / 1000, UTC)
        match observation.kind:
            case Kind.STATE:
                for seen in observation.vms:
                    await self._state(observation.host, seen, at)
            case Kind.GONE:
                for seen in observation.vms:
                    await self._gone(observation.host, seen.uuid, at)
            case Kind.LISTING:
                listed = {seen.uuid for seen in observation.vms}
                # One round trip for the whole host; most of a listing is no news.
                looked = await self.store.lookup_many([seen.uuid for seen in observation.vms])
                for seen, pair in zip(observation.vms, looked, strict=True):
                    await self._state(observation.host, seen, at, pair)
                for uuid in (await self.store.known_on(observation.host)).keys() - listed:
                    await self._gone(observation.host, uuid, at)
            case Kind.HOST_LOST:
                await self._host_lost(observation.host, at)

    async def _state(
        self,
        host: str,
        seen: Seen,
        at: datetime,
        looked: tuple[Subscription | None, Known | None] | None = None,
    ) -> None:
        if looked is None:
            # One round trip: the state is recorded as it reads what was known before.
            sub, known = await self.store.observe(seen.uuid, Known(seen.state, host))
            recorded = True
        else:
            (sub, known), recorded = looked, False
        if sub is None:
            self.dropped += 1
            return
        pending = self._pending_gone.pop(seen.uuid, None)
        if pending is not None:
            pending.cancel()  # seen alive: a move, not a destroy
        before, before_host = self._before(sub, known)
        events: list[tuple[VmEventKind, str]] = []
        if before_host and before_host != host:
            events.append((VmEventKind.MOVED, before_host))
            events.append((event_kind(before, seen.state), ""))
        elif before is not seen.state:
            events.append((event_kind(before, seen.state), ""))
        if not recorded and known != Known(seen.state, host):
            await self.store.set_known(seen.uuid, Known(seen.state, host))
        for kind, previous in events:
            self._emit(sub, seen.name, host, kind, seen.state, at, previous)

    @staticmethod
    def _before(sub: Subscription, known: Known | None) -> tuple[ObservedState | None, str]:
        if known is not None:
            return known.state, known.host
        # Nothing seen yet: what central believes is the reference.
        return sub.state, sub.host

    async def _gone(self, host: str, uuid: str, at: datetime) -> None:
        sub, known = await self.store.lookup(uuid)
        if sub is None:
            self.dropped += 1
            return
        before, before_host = self._before(sub, known)
        if before_host != host or before is ObservedState.ABSENT or uuid in self._pending_gone:
            return
        loop = asyncio.get_running_loop()
        self._pending_gone[uuid] = loop.call_later(
            self.move_window, lambda: self._spawn_gone(uuid, host, at)
        )

    def _spawn_gone(self, uuid: str, host: str, at: datetime) -> None:
        self._pending_gone.pop(uuid, None)
        task = asyncio.get_running_loop().create_task(self._confirm_gone(uuid, host, at))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm_gone(self, uuid: str, host: str, at: datetime) -> None:
        try:
            sub, known = await self.store.lookup(uuid)
            if sub is None:
                return
            before, before_host = self._before(sub, known)
            if before_host != host or before is ObservedState.ABSENT:
                return  # it was seen elsewhere meanwhile
            await self.store.set_known(uuid, Known(ObservedState.ABSENT, host))
            self._emit(sub, sub.vm_name, host, VmEventKind.DESTROYED, ObservedState.ABSENT, at)
        except Exception:
            log.exception("a destroy could not be confirmed", vm=uuid)

    async def _host_lost(self, host: str, at: datetime) -> None:
        for uuid, known in (await self.store.known_on(host)).items():
            if known.state in (ObservedState.UNKNOWN, ObservedState.ABSENT):
                continue
            sub, _ = await self.store.lookup(uuid)
            if sub is None:
                continue
            await self.store.set_known(uuid, Known(ObservedState.UNKNOWN, host))
            self._emit(sub, sub.vm_name, host, VmEventKind.UNKNOWN, ObservedState.UNKNOWN, at)

    async def republish(self, uuid: str) -> bool:
        """Send the VM's current state again; False when nothing is known of it."""
        sub, known = await self.store.lookup(uuid)
        if sub is None or known is None:
            return False
        at = datetime.now(UTC)
        self._emit(sub, sub.vm_name, known.host, event_kind(None, known.state), known.state, at)
        return True

    # -- events out ----------------------------------------------------------------------

    def _emit(
        self,
        sub: Subscription,
        name: str,
        host: str,
        kind: VmEventKind,
        state: ObservedState,
        at: datetime,
        previous_host: str = "",
    ) -> None:
        if len(self._buffer) >= self.buffer_size:
            self.overflowed += 1
            if sub.vm_uuid not in self._dirty:
                log.warning("event buffer full; the VM will be sent as it is", vm=sub.vm_uuid)
            self._dirty[sub.vm_uuid] = None
            return
        self._buffer.append(
            VmStateChanged(
                dc_uuid=self.dc_uuid,
                vm_uuid=sub.vm_uuid,
                vm_name=name or sub.vm_name,
                host=host,
                event=kind,
                state=state,
                previous_host=previous_host,
                observed_at=at,
                sequence=self._next_sequence(),
            )
        )
        self._ready.set()

    def _next_sequence(self) -> int:
        # Increasing across restarts too, without a round trip: the clock in microseconds.
        self._sequence = max(self._sequence + 1, time.time_ns() // 1000)
        return self._sequence

    def backlog(self) -> int:
        return len(self._buffer)

    def close(self) -> None:
        for timer in self._pending_gone.values():
            timer.cancel()
        self._pending_gone.clear()
        for task in self._confirming:
            task.cancel()

    async def run_sender(self) -> None:
        """Send the buffer in order, forever (a guarded task of the service)."""
        while True:
            while not self._buffer:
                if self._dirty:
                    await self._resend_dirty()
                    continue
                self._ready.clear()
                await self._ready.wait()
            event = self._buffer[0]
            # Waits, retrying, until the broker confirms: the buffer holds the rest.
            await self._send(event)
            self._buffer.popleft()
            self.sent += 1

    async def _resend_dirty(self) -> None:
        batch = list(self._dirty)[: max(1, self.buffer_size // 2)]
        for uuid in batch:
            self._dirty.pop(uuid, None)
            await self.republish(uuid)
