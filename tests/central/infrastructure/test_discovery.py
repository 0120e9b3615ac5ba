"""Discovery through a datacenter, and the fake datacenter the infrastructure tests share.

FakeDatacenter answers over the link as a datacenter's Discovery Manager and VSM do,
with the protocol's own messages; `live_dc` registers a datacenter that sends
heartbeats (at the test clock's time) so that central sees it available.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.infrastructure import discovery
from abiquo_central.infrastructure.datacenters import (
    DatacenterAway,
    DatacenterUnlinked,
    ensure_datacenter,
    record_heartbeat,
)
from abiquo_central.infrastructure.machines import MachineState
from abiquo_central.link import DatacenterUnavailable
from abiquo_dc.protocol.definitions import Credentials, HypervisorType
from abiquo_dc.protocol.messages import (
    DetectHypervisor,
    DiscoveredDatastore,
    DiscoveredHost,
    DiscoveredNic,
    DiscoverHosts,
    DiscoveryFailure,
    HostsDiscovered,
    HypervisorDetected,
    Message,
    RequestFailed,
)
from abiquo_dc.protocol.monitoring import (
    MonitoredHost,
    MonitorHost,
    MonitoringDone,
    StopMonitoringHost,
)
from abiquo_runtime.errors import AbiquoError, InvalidInput, NotFound, TemporaryError
from tests.central.conftest import T0, FakeClock

DC_UUID = "5d2e1b1c-0000-4000-8000-00000000dc01"
GIB = 1024**3


def host(
    address: str,
    *,
    name: str | None = None,
    kind: HypervisorType = HypervisorType.KVM,
    datastores: int = 2,
) -> DiscoveredHost:
    """A host as a Discovery Manager reports it: 4 cores on 2 sockets, 16 GiB."""
    return DiscoveredHost(
        address=address,
        name=name or f"host-{address}",
        hypervisor_type=kind,
        version="1.0",
        cpu_cores=4,
        cpu_sockets=2,
        ram_bytes=16 * GIB,
        nics=[
            DiscoveredNic(name="eth0", mac="52:54:00:00:00:01"),
            DiscoveredNic(name="eth1", mac="52:54:00:00:00:02"),
        ],
        datastores=[
            DiscoveredDatastore(
                name=f"ds{i}",
                path=f"/var/lib/virt{i}",
                device=f"/dev/sda{i}",
                type="ext4",
                total_bytes=100 * GIB,
                free_bytes=60 * GIB,
                uuid=f"uuid-{i}",
            )
            for i in range(datastores)
        ],
        initiator_iqn="iqn.2025-03.test:host",
    )


@dataclass
class FakeDatacenter:
    """A datacenter behind the link: the hosts it can discover, with the credentials
    they need, what its VSM watches, and every request it received."""

    hosts: dict[str, DiscoveredHost] = field(default_factory=dict)
    passwords: dict[str, Credentials] = field(default_factory=dict)
    monitored: dict[str, MonitoredHost] = field(default_factory=dict)
    requests: list[Message] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)
    # Set to make every request fail as the link does when the DC does not answer.
    down: bool = False
    # Set to answer every request with this failure (the DC's handler raised).
    failure: RequestFailed | None = None
    # Run as the request of that type arrives (to change things meanwhile).
    hooks: dict[type, Callable[[], Awaitable[None]]] = field(default_factory=dict)

    def add(self, found: DiscoveredHost, credentials: Credentials | None = None) -> None:
        self.hosts[found.address] = found
        if credentials is not None:
            self.passwords[found.address] = credentials

    async def send(self, dc_uuid: str, service: str, message: Message) -> None:
        raise NotImplementedError("central asks; it sends no commands here")

    def _one(self, address: str, hypervisor: HypervisorType, creds: Credentials) -> object:
        found = self.hosts.get(address)
        if found is None or found.hypervisor_type != hypervisor:
            return DiscoveryFailure(
                address=address, code="HV-UNREACHABLE", message=f"{address} did not answer"
            )
        needed = self.passwords.get(address)
        if needed is not None and needed != creds:
            return DiscoveryFailure(
                address=address, code="HV-AUTH", message="the hypervisor refused the credentials"
            )
        return found

    async def request(self, dc_uuid: str, message: Message, *, timeout: float) -> Message:
        self.requests.append(message)
        self.timeouts.append(timeout)
        if self.down or dc_uuid != DC_UUID:
            raise DatacenterUnavailable(f"datacenter {dc_uuid} did not answer within {timeout}s")
        hook = self.hooks.get(type(message))
        if hook is not None:
            await hook()
        if self.failure is not None:
            # What CentralLink raises for a RequestFailed reply.
            raise AbiquoError(self.failure.message, code=self.failure.code)
        if isinstance(message, DiscoverHosts):
            addresses = list(message.addresses)
            if message.ip_from:
                first = int(ipaddress.ip_address(message.ip_from))
                last = int(ipaddress.ip_address(message.ip_to))
                addresses += [str(ipaddress.ip_address(n)) for n in range(first, last + 1)]
            results = [self._one(a, message.hypervisor, message.credentials) for a in addresses]
            return HostsDiscovered(
                hosts=[r for r in results if isinstance(r, DiscoveredHost)],
                errors=[r for r in results if isinstance(r, DiscoveryFailure)],
            )
        if isinstance(message, DetectHypervisor):
            found = self.hosts.get(message.address)
            return HypervisorDetected(
                address=message.address, hypervisor=found.hypervisor_type if found else None
            )
        if isinstance(message, MonitorHost):
            self.monitored[message.host.address] = message.host
            return MonitoringDone(count=1)
        if isinstance(message, StopMonitoringHost):
            return MonitoringDone(count=int(self.monitored.pop(message.address, None) is not None))
        raise AssertionError(f"unexpected request {message!r}")


async def beat(engine: AsyncEngine, clock: FakeClock, sequence: int = 1) -> None:
    """A heartbeat of the datacenter, sent now (by the test clock)."""
    await record_heartbeat(
        engine,
        dc_uuid=DC_UUID,
        name="dc one",
        sequence=sequence,
        started_at=T0,
        sent_at=clock(),
        http_url="http://dc1:8009",
        services={"discovery": "RUNNING", "vsm": "RUNNING"},
    )


async def add_live_dc(engine: AsyncEngine, clock: FakeClock, name: str = "Madrid") -> int:
    dc_id = await ensure_datacenter(engine, uuid=DC_UUID, name=name, location="Spain", now=T0)
    await beat(engine, clock)
    return dc_id


@pytest.fixture
def fake_dc() -> FakeDatacenter:
    fake = FakeDatacenter()
    fake.add(host("10.0.0.1"))
    fake.add(host("10.0.0.2", datastores=1), Credentials(user="root", password="s3cret"))
    fake.add(host("10.0.0.9", kind=HypervisorType.VMX_04))
    return fake


@pytest.fixture
async def live_dc(engine: AsyncEngine, clock: FakeClock) -> int:
    """A registered datacenter, heard from just now."""
    return await add_live_dc(engine, clock)


def calls_for(fake: FakeDatacenter) -> discovery.DatacenterCalls:
    return discovery.DatacenterCalls(link=fake, request_timeout=10.0)


# -- the edge's parsing ------------------------------------------------------------------


def test_addresses_hypervisors_and_ports_are_parsed() -> None:
    assert discovery.parse_address(" 10.0.0.01 ".replace("01", "1")) == "10.0.0.1"
    assert discovery.parse_address("::FFFF:1") == "::ffff:1"
    assert discovery.parse_hypervisor("kvm") is HypervisorType.KVM
    assert discovery.parse_port(None) == 0
    assert discovery.parse_port("443") == 443
    for bad in ("10.0.0", "host.example", ""):
        with pytest.raises(InvalidInput):
            discovery.parse_address(bad)
    with pytest.raises(InvalidInput, match="one of: KVM"):
        discovery.parse_hypervisor("VMWARE")
    for port in ("-1", "65536", "http"):
        with pytest.raises(InvalidInput):
            discovery.parse_port(port)


def test_ranges_are_bounded() -> None:
    assert discovery.range_size("10.0.0.1", "10.0.0.1") == 1
    assert discovery.range_size("10.0.0.0", "10.0.3.255") == 1024
    with pytest.raises(InvalidInput, match="at most 1024"):
        discovery.range_size("10.0.0.0", "10.0.4.0")
    with pytest.raises(InvalidInput, match="ends before"):
        discovery.range_size("10.0.0.2", "10.0.0.1")
    with pytest.raises(InvalidInput, match="IP version"):
        discovery.range_size("10.0.0.1", "::1")
    with pytest.raises(InvalidInput, match="ipTo"):
        discovery.range_size("10.0.0.1", "")


def test_a_range_gets_the_time_its_hosts_may_take() -> None:
    calls = discovery.DatacenterCalls(link=FakeDatacenter(), request_timeout=10.0)
    assert calls.discovery_timeout(1) == 20.0
    assert calls.discovery_timeout(32) == 20.0
    assert calls.discovery_timeout(33) == 30.0
    assert calls.discovery_timeout(1024) == 10.0 + 32 * 10.0


# -- through the link --------------------------------------------------------------------


async def test_discover_single_maps_the_host(
    engine: AsyncEngine, clock: FakeClock, fake_dc: FakeDatacenter, live_dc: int
) -> None:
    spec = await discovery.discover_single(
        engine,
        calls_for(fake_dc),
        live_dc,
        ip="10.0.0.2",
        hypervisor=HypervisorType.KVM,
        user="root",
        password="s3cret",
        port=16509,
        now=clock(),
        liveness_timeout=15.0,
    )
    assert (spec.name, spec.ip, spec.ip_service, spec.type) == (
        "host-10.0.0.2",
        "10.0.0.2",
        "10.0.0.2",
        HypervisorType.KVM,
    )
    assert (spec.cpu, spec.ram, spec.port, spec.user) == (8, 16 * 1024, 16509, "root")
    assert spec.virtual_switch == "eth0,eth1"
    assert spec.state is MachineState.MANAGED
    assert spec.password is None
    [store] = spec.datastores
    assert (store.name, store.root_path, store.size, store.used_size, store.enabled) == (
        "ds0",
        "/var/lib/virt0",
        100 * GIB,
        40 * GIB,
        False,
    )
    [sent] = fake_dc.requests
    assert isinstance(sent, DiscoverHosts)
    assert sent.addresses == ["10.0.0.2"] and sent.credentials.password == "s3cret"
    assert fake_dc.timeouts == [20.0]


async def test_discover_single_failures(
    engine: AsyncEngine, clock: FakeClock, fake_dc: FakeDatacenter, live_dc: int
) -> None:
    async def single(ip: str, password: str = "") -> object:
        return await discovery.discover_single(
            engine,
            calls_for(fake_dc),
            live_dc,
            ip=ip,
            hypervisor=HypervisorType.KVM,
            user="root",
            password=password,
            now=clock(),
            liveness_timeout=15.0,
        )

    with pytest.raises(NotFound) as absent:
        await single("10.0.0.7")
    assert absent.value.code == "HV-UNREACHABLE"
    with pytest.raises(InvalidInput) as refused:
        await single("10.0.0.2", "wrong")
    assert refused.value.code == "HV-AUTH"
    fake_dc.failure = RequestFailed(code="HV-FAILED", message="the hypervisor broke")
    with pytest.raises(TemporaryError) as failed:
        await single("10.0.0.1")
    assert failed.value.code == "HV-FAILED"
    fake_dc.failure = RequestFailed(code="GEN-1", message="bad port")
    with pytest.raises(InvalidInput):
        await single("10.0.0.1")
    fake_dc.failure = None
    fake_dc.down = True
    with pytest.raises(DatacenterUnavailable):
        await single("10.0.0.1")


async def test_discover_multiple_leaves_out_what_did_not_answer(
    engine: AsyncEngine, clock: FakeClock, fake_dc: FakeDatacenter, live_dc: int
) -> None:
    async def multiple(ip_to: str) -> list[str]:
        specs = await discovery.discover_multiple(
            engine,
            calls_for(fake_dc),
            live_dc,
            ip_from="10.0.0.1",
            ip_to=ip_to,
            hypervisor=HypervisorType.KVM,
            now=clock(),
            liveness_timeout=15.0,
        )
        return [s.ip for s in specs]

    # 10.0.0.2 wants credentials, 10.0.0.9 is another type: only 10.0.0.1 is found.
    assert await multiple("10.0.0.20") == ["10.0.0.1"]
    fake_dc.hosts.pop("10.0.0.1")
    with pytest.raises(NotFound) as none:
        await multiple("10.0.0.20")
    assert none.value.code == discovery.NOTHING_ANSWERED
    assert "10.0.0.2: HV-AUTH" in none.value.message and "and 10 more" in none.value.message
    with pytest.raises(InvalidInput):
        await multiple("10.0.8.0")
    # Refused before anything was sent.
    assert len(fake_dc.requests) == 2


async def test_detect_hypervisor(
    engine: AsyncEngine, clock: FakeClock, fake_dc: FakeDatacenter, live_dc: int
) -> None:
    calls = calls_for(fake_dc)
    found = await discovery.detect_hypervisor(
        engine, calls, live_dc, ip="10.0.0.9", now=clock(), liveness_timeout=15.0
    )
    assert found is HypervisorType.VMX_04
    with pytest.raises(NotFound) as absent:
        await discovery.detect_hypervisor(
            engine, calls, live_dc, ip="10.0.0.8", now=clock(), liveness_timeout=15.0
        )
    assert absent.value.code == discovery.NO_HYPERVISOR


async def test_a_silent_or_unlinked_datacenter_is_not_asked(
    engine: AsyncEngine, clock: FakeClock, fake_dc: FakeDatacenter, live_dc: int
) -> None:
    clock.advance(16)
    with pytest.raises(DatacenterAway):
        await discovery.detect_hypervisor(
            engine, calls_for(fake_dc), live_dc, ip="10.0.0.9", now=clock(), liveness_timeout=15.0
        )
    await beat(engine, clock, sequence=2)
    assert (
        await discovery.detect_hypervisor(
            engine, calls_for(fake_dc), live_dc, ip="10.0.0.9", now=clock(), liveness_timeout=15.0
        )
        is HypervisorType.VMX_04
    )
    unlinked = await ensure_datacenter(engine, uuid="other", name="Unlinked", location="", now=T0)
    from abiquo_central.db import tables

    async with engine.begin() as conn:
        await conn.execute(
            tables.datacenter.update().where(tables.datacenter.c.id == unlinked).values(uuid=None)
        )
    with pytest.raises(DatacenterUnlinked):
        await discovery.detect_hypervisor(
            engine, calls_for(fake_dc), unlinked, ip="10.0.0.9", now=clock(), liveness_timeout=15.0
        )
    assert len(fake_dc.requests) == 1
