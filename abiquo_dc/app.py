"""abiquo-dc's composition root: settings → transport → bus → link → subsystems → HTTP.

Every shared object is built here and handed to whoever needs it. The aiohttp
application owns the resources through its cleanup contexts, opened in this order and
closed in the reverse one:

1. the bus;
2. the link: connected, queues declared, outbound messages forwarded;
3. the status reporter: heartbeats and the CheckServices reply;
4. the six subsystems, each starting (and retrying) on its own;
5. the link's consumers: requests from central are taken only once all of the above run.

Shutdown, in stages with a timeout each: stop accepting (the HTTP listener, the link's
consumers), drain (in-flight HTTP requests, deliveries in handlers, bus backlogs), close
(the cleanup contexts above in reverse: subsystems stop and say so, heartbeats stop, the
link flushes and closes, the bus closes).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from abiquo_dc.am.service import ApplianceManager
from abiquo_dc.am.status import status_store
from abiquo_dc.bpm.service import BusinessProcessManager
from abiquo_dc.bus import Bus
from abiquo_dc.discovery.service import DiscoveryManager
from abiquo_dc.hypervisors.base import Driver
from abiquo_dc.hypervisors.pool import Opener
from abiquo_dc.hypervisors.registry import open_driver
from abiquo_dc.hypervisors.simulator import SimulatedCloud
from abiquo_dc.identity import datacenter_uuid
from abiquo_dc.link import DatacenterLink
from abiquo_dc.protocol.definitions import HypervisorConnection, HypervisorType
from abiquo_dc.settings import DCSettings, KvmSettings
from abiquo_dc.simulator_http import simulator_routes
from abiquo_dc.ssm.service import StorageSystemManager
from abiquo_dc.status import StatusReporter
from abiquo_dc.subsystem import Subsystem
from abiquo_dc.vfactory.service import VirtualFactory
from abiquo_dc.vsm.redis_store import RedisStore
from abiquo_dc.vsm.service import VirtualSystemMonitor
from abiquo_dc.vsm.store import MemoryStore, VsmStore
from abiquo_runtime.correlation import correlation
from abiquo_runtime.httpserver import HttpServer
from abiquo_runtime.messaging.transport import Transport
from abiquo_runtime.shutdown import Stage, three_stages

BUS = web.AppKey("bus", Bus)
LINK = web.AppKey("link", DatacenterLink)
STATUS = web.AppKey("status", StatusReporter)
SUBSYSTEMS = web.AppKey("subsystems", tuple[Subsystem, ...])
DC_UUID = web.AppKey("dc_uuid", str)


@web.middleware
async def correlation_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    with correlation(request.headers.get("X-Correlation-ID")) as cid:
        response: web.StreamResponse = await handler(request)
        response.headers["X-Correlation-ID"] = cid
        return response


class Datacenter:
    """One running datacenter: the object abiquo_runtime.process.serve runs."""

    def __init__(self, settings: DCSettings, *, transport: Transport, dc_uuid: str) -> None:
        self.settings = settings
        self.uuid = dc_uuid
        self.bus = Bus(name="dc.bus")
        # The simulator stands in for every hypervisor when the settings say so.
        self.simulator = (
            SimulatedCloud(settings.simulator.types or None) if settings.simulator.enabled else None
        )
        self.link = DatacenterLink(
            transport=transport,
            bus=self.bus,
            dc_uuid=dc_uuid,
            prefetch=settings.rabbitmq.prefetch,
            prefetch_by_service={"virtualfactory": settings.vfactory.prefetch},
            handler_timeout=settings.datacenter.handler_timeout,
        )
        self.subsystems: tuple[Subsystem, ...] = (
            ApplianceManager(
                bus=self.bus,
                dc_uuid=dc_uuid,
                repository=settings.repository,
                settings=settings.am,
                store=status_store(settings.redis, dc_uuid),
            ),
            BusinessProcessManager(
                bus=self.bus,
                dc_uuid=dc_uuid,
                repository=settings.repository,
                settings=settings.bpm,
                state_dir=Path(settings.datacenter.state_dir),
            ),
            DiscoveryManager(bus=self.bus, dc_uuid=dc_uuid, simulator=self.simulator),
            VirtualFactory(
                bus=self.bus,
                dc_uuid=dc_uuid,
                state_dir=Path(settings.datacenter.state_dir),
                # Notifications are confirmed by the broker before a task is acknowledged.
                publish=self.link.send,
                opener=driver_opener(settings, self.simulator),
                settings=settings.vfactory,
            ),
            StorageSystemManager(bus=self.bus, dc_uuid=dc_uuid),
            VirtualSystemMonitor(
                bus=self.bus,
                dc_uuid=dc_uuid,
                store=vsm_store(settings, dc_uuid),
                opener=driver_opener(settings, self.simulator, timeout=settings.vsm.driver_timeout),
                publish=self.link.send,
                state_dir=Path(settings.datacenter.state_dir),
                settings=settings.vsm,
            ),
        )
        self.app = web.Application(middlewares=[correlation_middleware])
        self.server = HttpServer(
            self.app,
            host=settings.http.host,
            port=settings.http.port,
            drain_timeout=settings.shutdown.drain_timeout,
        )
        self.status = StatusReporter(
            bus=self.bus,
            dc_uuid=dc_uuid,
            name=settings.datacenter.name,
            subsystems=self.subsystems,
            http_url=self.http_url,
            interval=settings.datacenter.heartbeat_interval,
        )
        self.app[BUS] = self.bus
        self.app[LINK] = self.link
        self.app[STATUS] = self.status
        self.app[SUBSYSTEMS] = self.subsystems
        self.app[DC_UUID] = dc_uuid
        for subsystem in self.subsystems:
            self.app.add_routes(subsystem.all_routes())
        if self.simulator is not None and settings.simulator.http_knobs:
            self.app.add_routes(simulator_routes(self.simulator))
        self.app.cleanup_ctx.extend(
            [
                self._bus_ctx,
                self._link_ctx,
                self._status_ctx,
                self._subsystems_ctx,
                self._accept_ctx,
            ]
        )

    def http_url(self) -> str:
        if self.settings.http.public_url:
            return self.settings.http.public_url.rstrip("/")
        try:
            return self.server.url
        except RuntimeError:  # not listening yet: the first heartbeat goes out before
            return f"http://{self.settings.http.host}:{self.settings.http.port}"

    # -- resources, in the order they open ---------------------------------------------

    async def _bus_ctx(self, app: web.Application) -> AsyncIterator[None]:
        yield
        await self.bus.close()

    async def _link_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.link.start()
        yield
        await self.link.close()

    async def _status_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.status.start()
        yield
        await self.status.close()

    async def _subsystems_ctx(self, app: web.Application) -> AsyncIterator[None]:
        for subsystem in self.subsystems:
            await subsystem.start()
        yield
        for subsystem in reversed(self.subsystems):
            await subsystem.stop()
        if self.simulator is not None:  # after its users
            await self.simulator.close()

    async def _accept_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.link.accept()
        yield
        await self.link.stop_accepting()

    # -- the Service protocol ----------------------------------------------------------

    async def start(self) -> None:
        await self.server.start()
        # The address is known only now (port 0 asks for any): say it without waiting.
        await self.bus.publish(self.status.heartbeat())

    def still_running(self) -> list[str]:
        names = [name for s in self.subsystems for name in s.tasks.running()]
        names += [f"bus backlog {k}={v}" for k, v in self.bus.backlog().items()]
        if self.link.in_flight():
            names.append(f"link deliveries in handlers={self.link.in_flight()}")
        return names

    def shutdown_stages(self) -> Sequence[Stage]:
        drain_timeout = self.settings.shutdown.drain_timeout
        return three_stages(
            self.settings.shutdown,
            stop_accepting=[
                ("http listener", self.server.stop_accepting),
                ("link consumers", self.link.stop_accepting),
            ],
            drain=[
                ("http requests", self.server.drain),
                ("link deliveries", lambda: self.link.drain(drain_timeout)),
                ("bus backlog", lambda: self.bus.drain(drain_timeout)),
            ],
            close=[("resources", self.server.close)],
            still_running=self.still_running,
        )


def vsm_store(settings: DCSettings, dc_uuid: str) -> Callable[[], VsmStore]:
    """The VSM's store: Redis, or in this process when no URL is set (all-in-one)."""
    redis = settings.redis
    if not redis.url:
        return MemoryStore
    return lambda: RedisStore(redis.url, prefix=redis.prefix, dc_uuid=dc_uuid)


def driver_opener(
    settings: DCSettings, simulator: SimulatedCloud | None, *, timeout: float | None = None
) -> Opener:
    """How the subsystems open a driver for a host, with the settings' options."""
    kvm = settings.kvm
    call_timeout = timeout or settings.vfactory.driver_timeout
    context = aim_tls_context(kvm)

    def open_(connection: HypervisorConnection) -> Driver:
        options: dict[str, Any] = {
            "domain_type": kvm.domain_type or None,
            "vlan_interface": kvm.vlan_interface,
            "bridge_prefix": kvm.bridge_prefix,
            "ssl_context": context,
            # None: the URI the host's AIM reports.
            "libvirt_uri": kvm.libvirt_uri.format(address=connection.address) or None,
        }
        return open_driver(
            connection,
            simulator=simulator,
            timeout=call_timeout,
            options={HypervisorType.KVM: options, HypervisorType.XEN_3: options},
        )

    return open_


def aim_tls_context(kvm: KvmSettings) -> ssl.SSLContext | None:
    """The client side of TLS toward the AIMs, when the settings name a CA."""
    if not kvm.aim_tls_ca:
        return None
    # The AIM's certificate must name the address the host was added with (an IP SAN).
    context = ssl.create_default_context(cafile=kvm.aim_tls_ca)
    if kvm.aim_tls_cert:
        context.load_cert_chain(kvm.aim_tls_cert, kvm.aim_tls_key or None)
    return context


def build_datacenter(
    settings: DCSettings, *, transport: Transport, dc_uuid: str | None = None
) -> Datacenter:
    uuid = dc_uuid or datacenter_uuid(settings.datacenter.uuid, Path(settings.datacenter.state_dir))
    return Datacenter(settings, transport=transport, dc_uuid=uuid)
