"""One monitor per host: what its VMs are doing, as raw observations for the notifier.

A monitor connects, lists the host's VMs (a full resynchronisation: a LISTING, which the
notifier compares with what it knew, VMs gone behind our back included), then follows
the host's event stream where the driver has one (AIM's waitEvents for KVM and Xen) or
lists again every `poll_interval` where it has none. It lists again every
`resync_interval` anyway, after every reconnect, and whenever asked (`resync()`).

A host that stops answering is reconnected with backoff; past `grace` seconds without it
the monitor says HOST_LOST, and the notifier makes its VMs UNKNOWN (never OFF). When the
host answers again, its listing tells their true states.

The monitor judges nothing: it reports what it sees; the notifier decides what is news.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any

import msgspec
import structlog

from abiquo_dc.hypervisors.base import Driver, PowerState, VmEvent, VmEventType, VmNotFound
from abiquo_dc.hypervisors.pool import Opener
from abiquo_dc.protocol.definitions import HypervisorConnection
from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.monitoring import MonitoredHost
from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import TemporaryError
from abiquo_runtime.tasks import Supervisor

log = structlog.get_logger("abiquo.dc.vsm")


class Kind(StrEnum):
    STATE = "STATE"
    GONE = "GONE"
    LISTING = "LISTING"
    HOST_LOST = "HOST_LOST"


class Seen(msgspec.Struct, frozen=True, array_like=True):
    uuid: str
    name: str
    state: ObservedState


class Observation(msgspec.Struct, frozen=True, array_like=True):
    """What a monitor saw on a host, as it goes over the store's channel."""

    kind: Kind
    host: str
    # STATE and GONE: one VM; LISTING: all of the host's.
    vms: list[Seen]
    # Milliseconds since the epoch, when it was seen.
    at: int


encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder(Observation).decode
# Where a monitor's observations go (the store's channel).
Emit = Callable[[Observation], Coroutine[Any, Any, None]]

_STATES = {
    PowerState.ON: ObservedState.ON,
    PowerState.OFF: ObservedState.OFF,
    PowerState.PAUSED: ObservedState.PAUSED,
    PowerState.UNKNOWN: ObservedState.UNKNOWN,
}
_EVENTS = {
    VmEventType.POWER_ON: ObservedState.ON,
    VmEventType.RESUMED: ObservedState.ON,
    VmEventType.POWER_OFF: ObservedState.OFF,
    VmEventType.PAUSED: ObservedState.PAUSED,
}


def now_ms() -> int:
    return int(time.time() * 1000)


class MonitorTimings(msgspec.Struct, frozen=True, kw_only=True):
    poll_interval: float = 30.0
    resync_interval: float = 300.0
    grace: float = 60.0
    reconnect_initial: float = 1.0
    reconnect_max: float = 30.0


class HostMonitor:
    def __init__(
        self,
        host: MonitoredHost,
        *,
        opener: Opener,
        emit: Emit,
        timings: MonitorTimings,
        tasks: Supervisor,
    ) -> None:
        self.host = host
        self._opener = opener
        self._emit = emit
        self.timings = timings
        self._tasks = tasks
        self._resync = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self.connected = False
        self.lost = False
        # A listing and the events around it leave in the order they were seen: an event
        # read while a listing is being taken goes after it (it may repeat what the listing
        # says, never be overtaken by an older picture).
        self._order = asyncio.Lock()

    @property
    def address(self) -> str:
        return self.host.address

    def start(self) -> None:
        self._task = self._tasks.spawn(self._run(), name=f"monitor:{self.address}", forever=True)

    async def stop(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def resync(self) -> None:
        """List the host's VMs again as soon as possible."""
        self._resync.set()

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(
            initial=self.timings.reconnect_initial, maximum=self.timings.reconnect_max
        )
        self._arm_grace()  # not connected yet: the clock runs from the start
        while True:
            driver: Driver | None = None
            try:
                driver = self._opener(self._connection())
                await driver.connect()
                await self._listing(driver)
                self._reached()
                backoff.reset()
                await self._follow(driver)
            except TemporaryError as exc:
                log.warning("host monitor lost its host", host=self.address, error=exc.message)
            finally:
                self.connected = False
                if driver is not None:
                    with contextlib.suppress(Exception):
                        await driver.close()
            self._arm_grace()
            await asyncio.sleep(backoff.next_delay())

    def _connection(self) -> HypervisorConnection:
        h = self.host
        return HypervisorConnection(
            type=h.type, address=h.address, port=h.port, credentials=h.credentials
        )

    async def _follow(self, driver: Driver) -> None:
        """Events (or polls) until the host is lost; listings on schedule and on demand."""
        if driver.capabilities.event_stream:
            stream = self._tasks.spawn(self._events(driver), name=f"events:{self.address}")
            try:
                await self._listings(driver, self.timings.resync_interval, stream)
            finally:
                stream.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await stream
        else:
            await self._listings(driver, self.timings.poll_interval, None)

    async def _listings(
        self, driver: Driver, interval: float, stream: asyncio.Task[None] | None
    ) -> None:
        while True:
            waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(self._resync.wait())]
            if stream is not None:
                waiters.append(stream)  # type: ignore[arg-type]
            try:
                done, _ = await asyncio.wait(
                    waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiters[0].cancel()
            if stream is not None and stream in done:
                stream.result()  # the stream's error ends the connection
                raise TemporaryError(f"the event stream of {self.address} ended")
            self._resync.clear()
            await self._listing(driver)

    async def _events(self, driver: Driver) -> None:
        event: VmEvent
        async for event in driver.events():
            if event.type is VmEventType.DESTROYED:
                kind, state = Kind.GONE, ObservedState.ABSENT
            elif event.type is VmEventType.CREATED:
                # Made (or migrated in) in a state the event does not tell: asked.
                try:
                    vm = await driver.get_vm(event.uuid)
                except VmNotFound:
                    continue
                kind, state = Kind.STATE, _STATES[vm.power_state]
            else:
                kind, state = Kind.STATE, _EVENTS[event.type]
            async with self._order:
                await self._emit(
                    Observation(
                        kind=kind,
                        host=self.address,
                        vms=[Seen(event.uuid, event.name, state)],
                        at=event.timestamp or now_ms(),
                    )
                )

    async def _listing(self, driver: Driver) -> None:
        async with self._order:
            vms = await driver.list_vms()
            seen = [Seen(vm.uuid, vm.name, _STATES[vm.power_state]) for vm in vms]
            await self._emit(
                Observation(kind=Kind.LISTING, host=self.address, vms=seen, at=now_ms())
            )

    # -- the grace period ----------------------------------------------------------------

    def _reached(self) -> None:
        self.connected = True
        self.lost = False
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _arm_grace(self) -> None:
        if self._grace is None and not self.lost:
            loop = asyncio.get_running_loop()
            self._grace = loop.call_later(self.timings.grace, self._declare_lost)

    def _declare_lost(self) -> None:
        self._grace = None
        if self.connected or self.lost:
            return
        self.lost = True
        log.warning("host unreachable past its grace period", host=self.address)
        lost = Observation(kind=Kind.HOST_LOST, host=self.address, vms=[], at=now_ms())
        self._tasks.spawn(self._emit(lost), name=f"lost:{self.address}")
