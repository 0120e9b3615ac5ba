"""The KVM driver against a real AIM: its thrift server over libvirt's test driver.

Most tests get a host of their own (kvm_host.running_kvm_host without a libvirtd): a
test driver on a node file in tmp_path, private to the AIM, so domain operations go
through the AIM and each test starts from an empty host. Those about the libvirt channel
use the private libvirtd's test driver, shared with the AIM (the `kvm_host` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from abiquo_dc.hypervisors.aim_client import AimClient
from abiquo_dc.hypervisors.base import (
    DriverFailure,
    HostUnreachable,
    InvalidDefinition,
    PowerState,
    VmAlreadyExists,
    VmEvent,
    VmEventType,
    VmNotFound,
    WrongState,
)
from abiquo_dc.hypervisors.kvm import KvmDriver, XenDriver
from abiquo_dc.hypervisors.libvirt_domains import LibvirtDomains
from abiquo_dc.protocol.definitions import (
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    Nic,
    RepositoryDisk,
    VirtualMachineDefinition,
)
from tests.aim.e2e_host import Libvirtd
from tests.dc.hypervisors.kvm_host import (
    DATA,
    IQN,
    TEMPLATE,
    KvmHost,
    hung_libvirt,
    running_kvm_host,
    tcp_uri,
)
from tests.dc.hypervisors.kvm_host import kvm_host as kvm_host
from tests.dc.hypervisors.kvm_host import private_libvirtd as private_libvirtd


@pytest.fixture
async def aim_host(tmp_path: Path) -> AsyncIterator[KvmHost]:
    async with running_kvm_host(tmp_path) as host:
        yield host


@pytest.fixture
async def driver(aim_host: KvmHost) -> AsyncIterator[KvmDriver]:
    drv = aim_host.driver()
    await drv.connect()
    try:
        yield drv
    finally:
        await drv.close()


async def test_host_info(driver: KvmDriver, aim_host: KvmHost) -> None:
    info = await driver.host_info()
    assert info.hypervisor_type is HypervisorType.KVM
    assert info.version.startswith("TEST ")
    assert (info.cpu_cores, info.cpu_sockets, info.ram_bytes) == (2, 1, 8 * 1024**3)
    assert [d.path for d in info.datastores] == [str(aim_host.datastore)]
    assert info.datastores[0].total_bytes >= info.datastores[0].free_bytes > 0
    assert info.nics and all(n.name for n in info.nics)
    assert info.initiator_iqn == IQN


async def test_configure_copies_and_defines(driver: KvmDriver, aim_host: KvmHost) -> None:
    vm = aim_host.definition(n_disks=2)
    await driver.configure(vm)
    first, second = aim_host.datastore / vm.uuid, aim_host.datastore / f"{vm.uuid}-1"
    assert first.read_bytes() == (aim_host.repository / TEMPLATE).read_bytes()
    assert second.read_bytes() == (aim_host.repository / DATA).read_bytes()
    got = await driver.get_vm(vm.uuid)
    assert (got.name, got.power_state, got.cpu, got.ram_mb) == (vm.name, PowerState.OFF, 1, 256)
    assert vm.uuid in {v.uuid for v in await driver.list_vms()}
    with pytest.raises(VmAlreadyExists):
        await driver.configure(vm)
    await driver.deconfigure(vm)
    assert not first.exists() and not second.exists()
    assert sorted(p.name for p in aim_host.datastore.iterdir()) == []
    with pytest.raises(VmNotFound):
        await driver.get_vm(vm.uuid)
    await driver.deconfigure(vm)  # gone already: fine


async def test_power_operations(driver: KvmDriver, aim_host: KvmHost) -> None:
    vm = aim_host.definition()
    await driver.configure(vm)

    async def state() -> PowerState:
        return (await driver.get_vm(vm.uuid)).power_state

    with pytest.raises(WrongState):
        await driver.reset(vm.uuid)
    with pytest.raises(WrongState):
        await driver.pause(vm.uuid)
    await driver.power_on(vm.uuid)
    await driver.power_on(vm.uuid)
    assert await state() is PowerState.ON
    await driver.pause(vm.uuid)
    assert await state() is PowerState.PAUSED
    await driver.resume(vm.uuid)
    await driver.reset(vm.uuid)
    assert await state() is PowerState.ON
    with pytest.raises(WrongState):
        await driver.reconfigure(vm)
    await driver.shutdown(vm.uuid)
    assert await state() is PowerState.OFF
    await driver.power_off(vm.uuid)
    await driver.power_on(vm.uuid)
    # deconfigure powers a running VM off first.
    await driver.deconfigure(vm)
    assert not (aim_host.datastore / vm.uuid).exists()


async def test_unknown_vms(driver: KvmDriver) -> None:
    for uid in ("00000000-0000-4000-8000-00000000dead", "not-a-uuid"):
        with pytest.raises(VmNotFound):
            await driver.get_vm(uid)
    with pytest.raises(VmNotFound):
        await driver.power_on("00000000-0000-4000-8000-00000000dead")


async def test_reconfigure_adds_a_disk(driver: KvmDriver, aim_host: KvmHost) -> None:
    vm = aim_host.definition()
    await driver.configure(vm)
    bigger = aim_host.definition(n_disks=2, uuid=vm.uuid, name=vm.name, cpu=2, ram_mb=512)
    await driver.reconfigure(bigger)
    got = await driver.get_vm(vm.uuid)
    assert (got.cpu, got.ram_mb) == (2, 512)
    assert (aim_host.datastore / f"{vm.uuid}-1").exists()
    with pytest.raises(VmNotFound):
        await driver.reconfigure(aim_host.definition())
    await driver.deconfigure(bigger)
    assert list(aim_host.datastore.iterdir()) == []


async def test_persistent_disks_stay(driver: KvmDriver, aim_host: KvmHost) -> None:
    vm = aim_host.definition()
    kept = VirtualMachineDefinition(
        **{
            **{f: getattr(vm, f) for f in vm.__struct_fields__},
            "disks": [
                RepositoryDisk(
                    repository_path=TEMPLATE,
                    datastore=str(aim_host.datastore),
                    format=DiskFormat.QCOW2_SPARSE,
                    size_bytes=4096,
                    persistent=True,
                )
            ],
        }
    )
    await driver.configure(kept)
    await driver.deconfigure(kept)
    assert (aim_host.datastore / vm.uuid).exists()


async def test_copy_disk_to_repository(driver: KvmDriver, aim_host: KvmHost) -> None:
    vm = aim_host.definition(n_disks=2)
    await driver.configure(vm)
    await driver.copy_disk_to_repository(vm, 1, "1/instances/data-copy.raw")
    await driver.copy_disk_to_repository(vm, 0, "1/instances/boot-copy.qcow2")
    repo = aim_host.repository / "1" / "instances"
    assert (repo / "data-copy.raw").read_bytes() == (aim_host.repository / DATA).read_bytes()
    assert (repo / "boot-copy.qcow2").read_bytes() == (aim_host.repository / TEMPLATE).read_bytes()
    # Both disks are back under their own names.
    assert sorted(p.name for p in aim_host.datastore.iterdir()) == [vm.uuid, f"{vm.uuid}-1"]
    await driver.power_on(vm.uuid)
    with pytest.raises(WrongState):
        await driver.copy_disk_to_repository(vm, 0, "1/instances/again.qcow2")
    await driver.deconfigure(vm)


async def test_invalid_definitions_copy_nothing(driver: KvmDriver, aim_host: KvmHost) -> None:
    vm = aim_host.definition(
        disks=[
            RepositoryDisk(
                repository_path=TEMPLATE,
                datastore=str(aim_host.datastore),
                format=DiskFormat.VHD_FLAT,
                size_bytes=1,
            )
        ]
    )
    with pytest.raises(InvalidDefinition):
        await driver.configure(vm)
    assert list(aim_host.datastore.iterdir()) == []


async def test_a_failed_define_removes_the_copies(driver: KvmDriver, aim_host: KvmHost) -> None:
    first = aim_host.definition()
    await driver.configure(first)
    # libvirt refuses a second domain of the same name: after the disks are copied.
    clash = aim_host.definition(n_disks=2, name=first.name)
    with pytest.raises(DriverFailure):
        await driver.configure(clash)
    assert [p.name for p in aim_host.datastore.iterdir()] == [first.uuid]
    assert [v.uuid for v in await driver.list_vms()] == [first.uuid]
    await driver.deconfigure(first)


async def test_a_missing_template_fails_cleanly(driver: KvmDriver, aim_host: KvmHost) -> None:
    vm = aim_host.definition(n_disks=2)
    (aim_host.repository / TEMPLATE).unlink()  # the first disk, copied last
    with pytest.raises(DriverFailure):
        await driver.configure(vm)
    assert list(aim_host.datastore.iterdir()) == []
    assert await driver.list_vms() == []


async def test_a_vlan_failure_leaves_nothing(aim_host: KvmHost) -> None:
    # No such parent interface: the AIM's createVLAN refuses (this machine cannot make
    # VLANs anyway), and the driver reports it without leaving half a VM.
    drv = aim_host.driver(vlan_interface="abqnone0")
    await drv.connect()
    try:
        vm = aim_host.definition(nics=[Nic(mac="52:54:00:aa:bb:cc", vlan_tag=42)])
        with pytest.raises(DriverFailure):
            await drv.configure(vm)
        assert list(aim_host.datastore.iterdir()) == []
        assert await drv.list_vms() == []
    finally:
        await drv.close()


async def test_a_vlan_is_made_on_the_nics_virtual_switch(tmp_path: Path) -> None:
    # The machine's own interface for VLANs when the NIC names one, else the driver's.
    async with running_kvm_host(tmp_path / "vlans", recorded_vlans=True) as host:
        assert host.vlans is not None
        drv = host.driver(vlan_interface="eth9")
        await drv.connect()
        try:
            vm = host.definition(
                nics=[
                    Nic(mac="52:54:00:aa:bb:01", vlan_tag=42, virtual_switch="bond0"),
                    Nic(mac="52:54:00:aa:bb:02", vlan_tag=43),
                ]
            )
            await drv.configure(vm)
            assert host.vlans.current == {(42, "bond0", "abiquo_42"), (43, "eth9", "abiquo_43")}
            await drv.deconfigure(vm)
        finally:
            await drv.close()


async def test_events(driver: KvmDriver, aim_host: KvmHost) -> None:
    vm = aim_host.definition()
    stream = driver.events()
    try:
        await driver.configure(vm)
        await driver.power_on(vm.uuid)
        await driver.pause(vm.uuid)
        await driver.resume(vm.uuid)
        await driver.power_off(vm.uuid)
        await driver.deconfigure(vm)
        async with asyncio.timeout(5):
            seen = [await anext(stream) for _ in range(6)]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    assert [e.type for e in seen] == [
        VmEventType.CREATED,
        VmEventType.POWER_ON,
        VmEventType.PAUSED,
        VmEventType.RESUMED,
        VmEventType.POWER_OFF,
        VmEventType.DESTROYED,
    ]
    assert {(e.uuid, e.name) for e in seen} == {(vm.uuid, vm.name)}
    assert all(e.timestamp > 0 for e in seen)


async def test_events_survive_a_lost_connection(driver: KvmDriver, aim_host: KvmHost) -> None:
    vm = aim_host.definition()
    await driver.configure(vm)
    stream = driver.events()
    try:
        async with asyncio.timeout(5):
            assert (await anext(stream)).type is VmEventType.CREATED
        # Every pooled connection breaks under the stream's feet; it reconnects and
        # goes on from its cursor.
        assert driver._aim is not None
        for client, _ in driver._aim._idle:
            client.close()
        await driver.power_on(vm.uuid)
        async with asyncio.timeout(5):
            assert (await anext(stream)).type is VmEventType.POWER_ON
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    await driver.deconfigure(vm)


async def test_events_go_on_after_the_aim_restarts(tmp_path: Path) -> None:
    pending: asyncio.Future[VmEvent] | None = None
    async with running_kvm_host(tmp_path) as aim_host:
        drv = aim_host.driver(reconnect_delay=0.02, max_reconnect_delay=0.05)
        stream = drv.events()
        try:
            await drv.connect()
            vm = aim_host.definition()
            await drv.configure(vm)
            async with asyncio.timeout(5):
                assert (await anext(stream)).type is VmEventType.CREATED
        finally:
            # The AIM's drain waits for its clients to go: its connections drop first,
            # as they would when the AIM's process ends.
            for client, _ in drv._aim._idle if drv._aim is not None else ():
                client.close()
    try:
        # The AIM is gone: the stream keeps trying, with its cursor.
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.2)
        assert not pending.done()
        async with running_kvm_host(tmp_path, port=aim_host.port) as again:
            # A new AIM numbers its events from 1 again: the stream resynchronises (its
            # cursor is beyond them) and reports what happens from then on.
            await asyncio.sleep(0.3)
            await drv.configure(again.definition())
            async with asyncio.timeout(5):
                event = await pending
            assert event.type is VmEventType.CREATED
            await drv.close()
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await stream.aclose()  # type: ignore[attr-defined]
        await drv.close()


async def test_unreachable_host() -> None:
    drv = KvmDriver(
        HypervisorConnection(type=HypervisorType.KVM, address="127.0.0.1", port=1), timeout=2
    )
    with pytest.raises(HostUnreachable):
        await drv.connect()
    with pytest.raises(HostUnreachable):
        await drv.list_vms()
    await drv.close()


async def test_a_silent_host_times_out() -> None:
    """An AIM that accepts and never answers: the call is bounded, the host unreachable."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AimClient("127.0.0.1", port, timeout=0.3)
    try:
        with pytest.raises(HostUnreachable):
            await client.call("getNodeInfo")
    finally:
        await client.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def test_defaults() -> None:
    assert AimClient("h", 0).port == 60084
    conn = HypervisorConnection(type=HypervisorType.XEN_3, address="h")
    xen = XenDriver(conn)
    assert (xen.hypervisor_type, xen.domain_type, xen.flavour) == (
        HypervisorType.XEN_3,
        "xen",
        "xen",
    )
    assert XenDriver(conn, libvirt_uri="xen+tcp://h/system").libvirt_uri == "xen+tcp://h/system"
    kvm = KvmDriver(conn)
    assert (kvm.domain_type, kvm.vlan_interface, kvm.bridge_prefix) == ("kvm", "eth0", "abiquo_")
    assert (kvm.libvirt_uri, kvm.libvirt_threads) == (None, 4)
    caps = kvm.capabilities
    assert caps.pause and caps.reset and caps.shutdown and caps.event_stream
    assert not caps.live_reconfigure
    assert DiskFormat.VMDK_SPARSE in caps.disk_formats
    assert DiskFormat.VHD_FLAT not in caps.disk_formats


# -- domains over libvirt ----------------------------------------------------------------


async def test_domains_go_over_the_uri_the_aim_reports(kvm_host: KvmHost) -> None:
    drv = kvm_host.driver()
    await drv.connect()
    try:
        assert isinstance(drv.domains, LibvirtDomains)
        assert drv.domains.uri == kvm_host.remote_uri
        vm = kvm_host.definition()
        await drv.configure(vm)
        await drv.power_on(vm.uuid)
        # Done over the driver's own connection, seen by the AIM's.
        host = kvm_host.libvirt
        dom = await host.call(host.conn.lookupByUUIDString, vm.uuid)
        assert await host.call(dom.isActive)
        assert (kvm_host.datastore / vm.uuid).exists()  # the copy: the AIM's
        await drv.deconfigure(vm)
        assert not await host.call(
            lambda: vm.uuid in {d.UUIDString() for d in host.conn.listAllDomains(0)}
        )
    finally:
        await drv.close()


async def test_an_empty_uri_keeps_the_domains_on_the_aim(kvm_host: KvmHost) -> None:
    drv = kvm_host.driver(libvirt_uri="")
    await drv.connect()
    try:
        assert drv.domains.kind == "aim"
        assert "test" in {vm.name for vm in await drv.list_vms()}
    finally:
        await drv.close()


async def test_a_remote_tcp_uri_given_to_the_driver(
    kvm_host: KvmHost, private_libvirtd: Libvirtd
) -> None:
    over_tcp = kvm_host.driver(libvirt_uri=tcp_uri(private_libvirtd))
    over_aim = kvm_host.driver(libvirt_uri="")
    await over_tcp.connect()
    await over_aim.connect()
    try:
        vm = kvm_host.definition()
        await over_tcp.configure(vm)
        await over_tcp.power_on(vm.uuid)
        assert (await over_aim.get_vm(vm.uuid)).power_state is PowerState.ON
        await over_aim.pause(vm.uuid)
        assert (await over_tcp.get_vm(vm.uuid)).power_state is PowerState.PAUSED
        await over_tcp.deconfigure(vm)
        with pytest.raises(VmNotFound):
            await over_aim.get_vm(vm.uuid)
    finally:
        await over_tcp.close()
        await over_aim.close()


async def test_a_driver_built_with_defaults_works_on_the_host(kvm_host: KvmHost) -> None:
    """As a DC process builds it: no test options, domain type "kvm"."""
    drv = KvmDriver(kvm_host.connection, timeout=10.0)
    await drv.connect()
    try:
        vm = kvm_host.definition()
        await drv.configure(vm)
        await drv.power_on(vm.uuid)
        assert (await drv.get_vm(vm.uuid)).power_state is PowerState.ON
        await drv.deconfigure(vm)
    finally:
        await drv.close()


async def test_an_unreachable_libvirt_fails_the_connect(kvm_host: KvmHost) -> None:
    drv = kvm_host.driver(libvirt_uri="test+tcp://127.0.0.1:1/default")
    with pytest.raises(HostUnreachable):
        await drv.connect()
    with pytest.raises(HostUnreachable):
        await drv.list_vms()
    assert drv._aim is None  # the AIM's client was closed with it
    await drv.close()


async def test_a_hung_libvirt_host_does_not_delay_another(kvm_host: KvmHost) -> None:
    """Libvirt that accepts and never answers: that driver's connect times out within its
    timeout, while the driver of another host goes on answering quickly over libvirt."""
    async with hung_libvirt() as uri:
        hung = kvm_host.driver(libvirt_uri=uri, timeout=1.0)
        other = kvm_host.driver()
        await other.connect()
        try:
            assert other.domains.kind == "libvirt"
            started = time.monotonic()
            connecting = asyncio.ensure_future(hung.connect())
            slowest = 0.0
            while not connecting.done():
                before = time.monotonic()
                await other.list_vms()
                slowest = max(slowest, time.monotonic() - before)
                await asyncio.sleep(0.02)
            with pytest.raises(HostUnreachable, match=r"no answer within 1\.0 s"):
                await connecting
            assert 1.0 <= time.monotonic() - started < 2.5
            assert slowest < 0.5
        finally:
            await hung.close()
            await other.close()
