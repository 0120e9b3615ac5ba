"""Virtual System Monitor: every state change of the subscribed VMs, sent to central once.

Pieces (each in its module): the store (Redis, or in-process for the all-in-one) keeps
the monitored hosts with their credentials encrypted, the subscriptions and each VM's
last known state; a monitor per host (monitor.py) publishes what it sees on the store's
channel; the notifier (notifier.py), the channel's one reader, turns that into events
for central, through a bounded buffer, each confirmed by the broker.

When the store was emptied (Redis flushed, or restarted without its data), which a
watchdog checks every few seconds and at start, the DC tells central
(MonitoringStateLost) and central sends again the hosts and subscriptions it wants.

Central drives it with requests on the link (MonitorHost, Subscribe, ...); the same
operations are on HTTP as Abiquo's VSM had them (http.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from abiquo_dc.bus import Bus, Unsubscribe
from abiquo_dc.hypervisors.pool import Opener
from abiquo_dc.protocol.envelope import Message
from abiquo_dc.protocol.monitoring import (
    InvalidateVm,
    ListMonitoredHosts,
    ListSubscriptions,
    MonitoredHost,
    MonitoredHosts,
    MonitorHost,
    MonitoringDone,
    MonitoringStateLost,
    RepublishVm,
    StopMonitoringHost,
    Subscribe,
    Subscription,
    Subscriptions,
)
from abiquo_dc.protocol.monitoring import (
    Unsubscribe as UnsubscribeVms,
)
from abiquo_dc.settings import VsmSettings
from abiquo_dc.subsystem import Subsystem
from abiquo_dc.vsm import monitor as observations
from abiquo_dc.vsm.credentials import HostVault, UnreadableHost
from abiquo_dc.vsm.monitor import HostMonitor, MonitorTimings, Observation
from abiquo_dc.vsm.notifier import Notifier
from abiquo_dc.vsm.store import VsmStore
from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import InvalidInput, NotFound, TemporaryError

Publish = Callable[[Message], Awaitable[None]]
KEY_FILE = "vsm.key"
# Observations on their way to the store's channel: past this, monitors wait.
OBSERVATION_BACKLOG = 10_000
OBSERVATION_BATCH = 500


class VirtualSystemMonitor(Subsystem):
    name = "vsm"
    path = "vsm"

    def __init__(
        self,
        *,
        bus: Bus,
        dc_uuid: str,
        store: Callable[[], VsmStore],
        opener: Opener,
        publish: Publish,
        state_dir: Path,
        settings: VsmSettings | None = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        super().__init__(bus=bus, dc_uuid=dc_uuid, backoff=backoff)
        self.settings = settings or VsmSettings()
        self._make_store = store
        self._opener = opener
        self._publish = publish
        self.key_path = state_dir / KEY_FILE
        self.store: VsmStore | None = None
        self.notifier: Notifier | None = None
        self.vault: HostVault | None = None
        self.monitors: dict[str, HostMonitor] = {}
        self._unserve: list[Unsubscribe] = []
        # Hosts whose observations could not be published (the store was away).
        self._missed: set[str] = set()
        # Hosts are added, replaced and removed one change at a time: two at once on one
        # address would leave a monitor running that nobody holds.
        self._hosts_lock = asyncio.Lock()
        self._outgoing: asyncio.Queue[Observation] = asyncio.Queue(OBSERVATION_BACKLOG)

    # -- lifecycle -----------------------------------------------------------------------

    async def setup(self) -> None:
        s = self.settings
        self.vault = HostVault.open(self.key_path)
        store = self._make_store()
        await store.open()
        self.store = store
        self.notifier = Notifier(
            store=store,
            send=self._publish,
            dc_uuid=self.dc_uuid,
            buffer_size=s.buffer,
            move_window=s.move_window,
        )
        self._outgoing = asyncio.Queue(OBSERVATION_BACKLOG)
        self.tasks.spawn(self._write_observations(), name="observations", forever=True)
        self.tasks.spawn(self._listen(), name="channel", forever=True)
        self.tasks.spawn(self.notifier.run_sender(), name="sender", forever=True)
        if await store.alive():
            for address, blob in (await store.hosts()).items():
                try:
                    host = self.vault.decrypt(blob)
                except UnreadableHost as exc:
                    # One host the key does not open must not stop the others' monitoring.
                    self.log.error(
                        "monitored host unreadable; skipped", host=address, error=str(exc)
                    )
                    continue
                self._start_monitor(host)
        else:
            await self._state_lost()
        self.tasks.spawn(self._watchdog(), name="watchdog", forever=True)
        for kind, handler in (
            (MonitorHost, self.on_monitor_host),
            (StopMonitoringHost, self.on_stop_monitoring_host),
            (ListMonitoredHosts, self.on_list_hosts),
            (Subscribe, self.on_subscribe),
            (UnsubscribeVms, self.on_unsubscribe),
            (ListSubscriptions, self.on_list_subscriptions),
            (RepublishVm, self.on_republish),
            (InvalidateVm, self.on_invalidate),
        ):
            self._unserve.append(self.bus.serve(kind, handler))  # type: ignore[arg-type]

    async def teardown(self) -> None:
        while self._unserve:
            self._unserve.pop()()
        for monitor in list(self.monitors.values()):
            await monitor.stop()
        self.monitors.clear()
        if self.notifier is not None:
            self.notifier.close()
        if self.store is not None:
            await self.store.close()
        self.store = self.notifier = None

    def routes(self) -> list[web.RouteDef]:
        from abiquo_dc.vsm.http import vsm_routes

        return vsm_routes(self)

    # -- the operations (bus and HTTP) ---------------------------------------------------

    def _parts(self) -> tuple[VsmStore, Notifier, HostVault]:
        if self.store is None or self.notifier is None or self.vault is None:
            raise VsmNotRunning("the VSM is not running")
        return self.store, self.notifier, self.vault

    async def monitor_host(self, host: MonitoredHost) -> None:
        store, _, vault = self._parts()
        if not host.address:
            raise InvalidInput("a host needs an address")
        async with self._hosts_lock:
            await store.put_host(host.address, vault.encrypt(host))
            old = self.monitors.pop(host.address, None)
            if old is not None:
                await old.stop()
            self._start_monitor(host)

    async def stop_monitoring(self, address: str) -> bool:
        store, _, _ = self._parts()
        async with self._hosts_lock:
            removed = await store.remove_host(address)
            monitor = self.monitors.pop(address, None)
            if monitor is not None:
                await monitor.stop()
        return removed or monitor is not None

    def hosts(self) -> list[MonitoredHost]:
        """The monitored hosts, credentials left out."""
        self._parts()
        return [
            MonitoredHost(address=m.host.address, type=m.host.type, port=m.host.port)
            for m in self.monitors.values()
        ]

    async def subscribe(self, subscriptions: list[Subscription]) -> int:
        store, _, _ = self._parts()
        for sub in subscriptions:
            if not sub.vm_uuid or not sub.host:
                raise InvalidInput("a subscription needs a VM uuid and a host")
        await store.subscribe(subscriptions)
        # What the hosts say now is compared with what central believes.
        for address in {sub.host for sub in subscriptions}:
            monitor = self.monitors.get(address)
            if monitor is not None:
                monitor.resync()
        return len(subscriptions)

    async def unsubscribe(self, vm_uuids: list[str]) -> int:
        store, _, _ = self._parts()
        return await store.unsubscribe(vm_uuids)

    async def subscriptions(self) -> list[Subscription]:
        store, _, _ = self._parts()
        return await store.subscriptions()

    async def _find(self, host: str, vm_name: str) -> Subscription:
        for sub in await self.subscriptions():
            if sub.host == host and (sub.vm_name == vm_name or sub.vm_uuid == vm_name):
                return sub
        raise NotFound(f"no subscribed VM {vm_name!r} on {host}")

    async def republish(self, host: str, vm_name: str) -> None:
        _, notifier, _ = self._parts()
        sub = await self._find(host, vm_name)
        if not await notifier.republish(sub.vm_uuid):
            # Nothing seen yet: the host's next listing will say.
            self._resync(sub.host)

    async def invalidate(self, host: str, vm_name: str) -> None:
        store, _, _ = self._parts()
        sub = await self._find(host, vm_name)
        await store.forget(sub.vm_uuid)
        self._resync(sub.host)

    # -- on the bus ------------------------------------------------------------------------

    async def on_monitor_host(self, request: MonitorHost) -> MonitoringDone:
        await self.monitor_host(request.host)
        return MonitoringDone(count=1)

    async def on_stop_monitoring_host(self, request: StopMonitoringHost) -> MonitoringDone:
        return MonitoringDone(count=int(await self.stop_monitoring(request.address)))

    async def on_list_hosts(self, request: ListMonitoredHosts) -> MonitoredHosts:
        return MonitoredHosts(hosts=self.hosts())

    async def on_subscribe(self, request: Subscribe) -> MonitoringDone:
        return MonitoringDone(count=await self.subscribe(request.subscriptions))

    async def on_unsubscribe(self, request: UnsubscribeVms) -> MonitoringDone:
        return MonitoringDone(count=await self.unsubscribe(request.vm_uuids))

    async def on_list_subscriptions(self, request: ListSubscriptions) -> Subscriptions:
        return Subscriptions(subscriptions=await self.subscriptions())

    async def on_republish(self, request: RepublishVm) -> MonitoringDone:
        await self.republish(request.host, request.vm_name)
        return MonitoringDone(count=1)

    async def on_invalidate(self, request: InvalidateVm) -> MonitoringDone:
        await self.invalidate(request.host, request.vm_name)
        return MonitoringDone(count=1)

    # -- monitors and the channel ----------------------------------------------------------

    def _start_monitor(self, host: MonitoredHost) -> None:
        s = self.settings
        monitor = HostMonitor(
            host,
            opener=self._opener,
            emit=self._emit,
            timings=MonitorTimings(
                poll_interval=s.poll_interval,
                resync_interval=s.resync_interval,
                grace=s.grace,
                reconnect_initial=s.reconnect_initial,
                reconnect_max=s.reconnect_max,
            ),
            tasks=self.tasks,
        )
        self.monitors[host.address] = monitor
        monitor.start()

    def _resync(self, address: str) -> None:
        monitor = self.monitors.get(address)
        if monitor is not None:
            monitor.resync()

    async def _emit(self, observation: Observation) -> None:
        # Monitors hand their observations to one writer: a thousand hosts reporting at
        # once make a few pipelined round trips on one connection, in the order seen.
        await self._outgoing.put(observation)

    async def _write_observations(self) -> None:
        while True:
            batch = [await self._outgoing.get()]
            while not self._outgoing.empty() and len(batch) < OBSERVATION_BATCH:
                batch.append(self._outgoing.get_nowait())
            store = self.store
            try:
                if store is None:
                    raise VsmNotRunning("the VSM is stopping")
                await store.publish_many([observations.encode(o) for o in batch])
            except TemporaryError as exc:
                # Not the hosts' fault: their monitors go on; they list again once the
                # store is back (the watchdog sees to it).
                hosts = {o.host for o in batch}
                if not hosts <= self._missed:
                    self.log.warning(
                        "observations lost; hosts to be listed again", error=exc.message
                    )
                self._missed.update(hosts)

    async def _listen(self) -> None:
        backoff = Backoff(initial=self.settings.reconnect_initial, maximum=5.0)
        while True:
            store, notifier, _ = self._parts()
            try:
                async for payload in store.listen():
                    backoff.reset()
                    try:
                        await notifier.handle(observations.decode(payload))
                    except TemporaryError as exc:
                        self.log.warning("observation not handled", error=exc.message)
                        self._missed.update(self.monitors)
            except TemporaryError as exc:
                self.log.warning("the observation channel broke", error=exc.message)
            # What was published while nobody listened is lost: every host lists again.
            await asyncio.sleep(backoff.next_delay())
            self._missed.update(self.monitors)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_interval)
            store, _, _ = self._parts()
            try:
                alive = await store.alive()
            except TemporaryError:
                continue
            if not alive:
                await self._state_lost()
            for address in list(self._missed):
                self._missed.discard(address)
                self._resync(address)

    async def _state_lost(self) -> None:
        store, _, _ = self._parts()
        await store.mark()
        self.log.warning("monitoring state lost; central asked to send it again")
        self._missed.update(self.monitors)
        await self._publish(MonitoringStateLost(dc_uuid=self.dc_uuid, at=datetime.now(UTC)))


class VsmNotRunning(TemporaryError):
    code = "VSM-STOPPED"
