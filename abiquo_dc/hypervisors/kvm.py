"""The KVM and Xen drivers: everything through the host's AIM.

Domain operations and the event stream go through the AIM's thrift contract too, not a
libvirt remote URI: one channel to the host, one TLS configuration (the datacenter's
client certificate), one place where the host's answers become codes, and no libvirtd
port to open on the hosts. Disks are copied and deleted by the AIM's "Rimp" methods,
VLAN bridges made by createVLAN, and the host's datastores, NICs and initiator IQN come
from it as well.

A VM's first disk is copied to <datastore>/<uuid>, its others to <datastore>/<uuid>-n
(see domain_xml.disk_path): the names the AIM's disk methods take.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog

from abiquo_dc.hypervisors.aim_client import AimClient, AimFailure
from abiquo_dc.hypervisors.base import (
    Capabilities,
    Datastore,
    Driver,
    DriverFailure,
    HostInfo,
    HostNic,
    HostUnreachable,
    InvalidDefinition,
    PowerState,
    VmAlreadyExists,
    VmEvent,
    VmEventType,
    VmInfo,
    VmNotFound,
    WrongState,
)
from abiquo_dc.hypervisors.domain_xml import Flavour, disk_name, disk_path, domain_xml
from abiquo_dc.protocol.definitions import (
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    RepositoryDisk,
    VirtualMachineDefinition,
)

log = structlog.get_logger("abiquo_dc.hypervisors.kvm")

MiB = 1024 * 1024

_POWER = {
    "RUNNING": PowerState.ON,
    "BLOCKED": PowerState.ON,
    "SHUTDOWN": PowerState.ON,  # shutting down: still on until libvirt says SHUTOFF
    "PAUSED": PowerState.PAUSED,
    "PMSUSPENDED": PowerState.PAUSED,
    "SHUTOFF": PowerState.OFF,
    "CRASHED": PowerState.OFF,
}

_EVENTS = {
    "CREATED": VmEventType.CREATED,
    "DESTROYED": VmEventType.DESTROYED,
    "POWER_ON": VmEventType.POWER_ON,
    "POWER_OFF": VmEventType.POWER_OFF,
    "PAUSED": VmEventType.PAUSED,
    "RESUMED": VmEventType.RESUMED,
    # A managed save stops the domain: to the platform it is off.
    "SAVED": VmEventType.POWER_OFF,
}

# A cursor beyond any sequence the AIM issued: it answers resync with its last sequence,
# which is how a stream starts at "now" rather than replaying the AIM's history.
_NOW = 2**62
EVENT_BATCH = 100


class KvmDriver(Driver):
    hypervisor_type = HypervisorType.KVM
    flavour: Flavour = "kvm"
    default_domain_type = "kvm"
    capabilities = Capabilities(
        pause=True,
        reset=True,
        shutdown=True,
        live_reconfigure=False,
        event_stream=True,
        iscsi_disks=True,
        disk_formats=frozenset(
            {
                DiskFormat.RAW,
                DiskFormat.QCOW2_FLAT,
                DiskFormat.QCOW2_SPARSE,
                DiskFormat.VMDK_FLAT,
                DiskFormat.VMDK_SPARSE,
            }
        ),
    )

    def __init__(
        self,
        connection: HypervisorConnection,
        *,
        timeout: float = 30.0,
        domain_type: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        vlan_interface: str = "eth0",
        bridge_prefix: str = "abiquo_",
        event_wait: float = 20.0,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
    ) -> None:
        """`event_wait`: how long one waitEvents long-poll is held by the AIM (seconds);
        `reconnect_delay` doubles up to `max_reconnect_delay` while the host is away."""
        super().__init__(connection, timeout=timeout)
        # None: the type's own (kvm, xen); tests pass "qemu" or "test".
        self.domain_type = domain_type or self.default_domain_type
        self.ssl_context = ssl_context
        self.vlan_interface = vlan_interface
        self.bridge_prefix = bridge_prefix
        self.event_wait = event_wait
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self._aim: AimClient | None = None
        # Where the event stream goes on from: set at connect(), so no event after
        # connect() is missed by a stream started later.
        self._cursor = 0

    # -- connection ----------------------------------------------------------------------

    async def connect(self) -> None:
        if self._aim is not None:
            return
        aim = AimClient(
            self.connection.address,
            self.connection.port,
            timeout=self.timeout,
            ssl_context=self.ssl_context,
        )
        try:
            await aim.call("getNodeInfo")
            batch = await aim.call("waitEvents", _NOW, 1, 0)
        except BaseException:
            await aim.close()
            raise
        self._cursor = batch.cursor
        self._aim = aim

    async def close(self) -> None:
        aim, self._aim = self._aim, None
        if aim is not None:
            await aim.close()

    async def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        if self._aim is None:
            raise HostUnreachable(f"not connected to {self.connection.address}")
        return await self._aim.call(method, *args, timeout=timeout)

    # -- the host --------------------------------------------------------------------------

    async def host_info(self) -> HostInfo:
        node = await self._call("getNodeInfo")
        datastores = await self._call("getDatastores")
        nics = await self._call("getNetInterfaces")
        try:
            iqn = await self._call("getInitiatorIQN")
        except DriverFailure as exc:
            # A host without an iSCSI initiator still runs VMs on file disks.
            log.warning("no initiator IQN", host=self.connection.address, error=str(exc))
            iqn = ""
        v = node.hypervisorVersion
        return HostInfo(
            name=node.hostname,
            hypervisor_type=self.hypervisor_type,
            version=f"{node.hypervisorType} {v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}",
            cpu_cores=node.cpus,
            cpu_sockets=node.sockets * max(node.nodes, 1),
            ram_bytes=node.memoryBytes,
            nics=tuple(HostNic(name=n.name, mac=n.macAddress, address=n.address) for n in nics),
            datastores=tuple(
                Datastore(
                    name=d.path,
                    path=d.path,
                    device=d.device,
                    type=d.type,
                    total_bytes=d.totalSize,
                    free_bytes=d.usableSize,
                )
                for d in datastores
            ),
            initiator_iqn=iqn,
        )

    # -- VMs -----------------------------------------------------------------------------

    def _vm_info(self, info: Any) -> VmInfo:
        state = self._aim_contract_name("DomainState", info.state)
        return VmInfo(
            uuid=info.uuid,
            name=info.name,
            power_state=_POWER.get(state, PowerState.UNKNOWN),
            cpu=info.virtualCpus,
            ram_mb=info.maxMemoryBytes // MiB,
        )

    def _aim_contract_name(self, enum: str, value: int) -> str:
        assert self._aim is not None
        names: dict[int, str] = getattr(self._aim.contract, enum)._VALUES_TO_NAMES
        return names.get(value, "UNKNOWN")

    async def list_vms(self) -> list[VmInfo]:
        return [self._vm_info(d) for d in await self._call("getDomains")]

    async def get_vm(self, uuid: str) -> VmInfo:
        try:
            return self._vm_info(await self._call("getDomainInfo", uuid))
        except InvalidDefinition:
            # A malformed UUID names no VM of this host.
            raise VmNotFound(f"no VM {uuid!r} on {self.connection.address}") from None

    async def _power_state(self, uuid: str) -> PowerState:
        return (await self.get_vm(uuid)).power_state

    def _with_bridges(self, definition: VirtualMachineDefinition) -> VirtualMachineDefinition:
        """A tagged NIC is plugged into the bridge of its VLAN, named by this driver."""
        nics = [
            msgspec.structs.replace(nic, bridge=self._bridge(nic.vlan_tag)) if nic.vlan_tag else nic
            for nic in definition.nics
        ]
        return msgspec.structs.replace(definition, nics=nics)

    def _bridge(self, tag: int) -> str:
        return f"{self.bridge_prefix}{tag}"

    def _xml(self, definition: VirtualMachineDefinition) -> str:
        return domain_xml(
            self._with_bridges(definition), domain_type=self.domain_type, flavour=self.flavour
        )

    async def _create_vlans(self, definition: VirtualMachineDefinition) -> None:
        # Idempotent on the AIM; never removed on a rollback: other VMs may share them.
        for tag in sorted({nic.vlan_tag for nic in definition.nics if nic.vlan_tag}):
            await self._call("createVLAN", tag, self.vlan_interface, self._bridge(tag))

    async def configure(self, definition: VirtualMachineDefinition) -> None:
        xml = self._xml(definition)  # an invalid definition fails before any copy
        if await self._call("existDomain", definition.uuid):
            raise VmAlreadyExists(f"{definition.uuid} exists on {self.connection.address}")
        # VLANs first: cheaper to fail on than a disk copy.
        await self._create_vlans(definition)
        copied: list[int] = []
        try:
            # The first disk last: the others pass through its name (<uuid>) on the way.
            indexes = [i for i, d in enumerate(definition.disks) if isinstance(d, RepositoryDisk)]
            for index in sorted(indexes, key=lambda i: i == 0):
                await self._copy_from_repository(definition, index)
                copied.append(index)
            await self._call("defineDomain", xml)
        except BaseException:
            # No half-made VM: a definition whose answer was lost may exist, so it goes too.
            await asyncio.shield(self._undo_configure(definition, copied))
            raise

    async def _undo_configure(
        self, definition: VirtualMachineDefinition, copied: list[int]
    ) -> None:
        with contextlib.suppress(Exception):
            await self._call("undefineDomain", definition.uuid)
        for index in copied:
            try:
                await self._delete_disk(definition, index)
            except Exception as exc:
                log.warning("disk left behind", vm=definition.uuid, disk=index, error=str(exc))

    async def reconfigure(self, definition: VirtualMachineDefinition) -> None:
        if await self._power_state(definition.uuid) != PowerState.OFF:
            raise WrongState(f"{definition.uuid} must be off to be reconfigured here")
        xml = self._xml(definition)
        await self._create_vlans(definition)
        # Disks added since: copied now; those that exist are left as they are.
        for index, disk in enumerate(definition.disks):
            if isinstance(disk, RepositoryDisk) and not await self._disk_exists(definition, index):
                await self._copy_from_repository(definition, index)
        await self._call("defineDomain", xml)

    async def deconfigure(self, definition: VirtualMachineDefinition) -> None:
        try:
            if await self._power_state(definition.uuid) != PowerState.OFF:
                await self._call("powerOff", definition.uuid)
            await self._call("undefineDomain", definition.uuid)
        except VmNotFound:
            pass  # gone already: its disks may not be
        for index, disk in enumerate(definition.disks):
            if isinstance(disk, RepositoryDisk) and not disk.persistent:
                await self._delete_disk(definition, index)

    # -- power ---------------------------------------------------------------------------

    async def power_on(self, uuid: str) -> None:
        await self._call("powerOn", uuid)

    async def power_off(self, uuid: str) -> None:
        await self._call("powerOff", uuid)

    async def shutdown(self, uuid: str) -> None:
        await self._call("shutdown", uuid)

    async def reset(self, uuid: str) -> None:
        await self._call("reset", uuid)

    async def pause(self, uuid: str) -> None:
        await self._call("pause", uuid)

    async def resume(self, uuid: str) -> None:
        await self._call("resume", uuid)

    # -- disks ---------------------------------------------------------------------------

    async def _disk_exists(self, definition: VirtualMachineDefinition, index: int) -> bool:
        try:
            await self._call("getDiskFileSize", disk_path(definition, index))
        except AimFailure as exc:
            if exc.aim_code == "RIMP-NOT-FOUND":
                return False
            raise
        return True

    async def _copy_from_repository(self, definition: VirtualMachineDefinition, index: int) -> None:
        disk = definition.disks[index]
        assert isinstance(disk, RepositoryDisk)
        datastore, name = disk_name(definition, index)
        # A copy takes as long as the disk is big: no call timeout of its own.
        await self._call(
            "copyFromRepositoryToDatastore",
            disk.repository_path,
            datastore,
            name,
            timeout=max(self.timeout, 3600.0),
        )

    async def _delete_disk(self, definition: VirtualMachineDefinition, index: int) -> None:
        datastore, name = disk_name(definition, index)
        await self._call("deleteVirtualImageFromDatastore", datastore, name)

    async def copy_disk_to_repository(
        self, definition: VirtualMachineDefinition, disk_index: int, repository_path: str
    ) -> None:
        if not 0 <= disk_index < len(definition.disks):
            raise InvalidDefinition(f"{definition.uuid} has no disk {disk_index}")
        with contextlib.suppress(VmNotFound):  # its disks may outlive it
            if await self._power_state(definition.uuid) != PowerState.OFF:
                raise WrongState(f"{definition.uuid} must be off to copy its disks")
        datastore, name = disk_name(definition, disk_index)
        await self._call(
            "copyFromDatastoreToRepository",
            name,
            datastore,
            repository_path,
            timeout=max(self.timeout, 3600.0),
        )

    # -- events --------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[VmEvent]:
        delay = self.reconnect_delay
        wait_ms = int(self.event_wait * 1000)
        while True:
            cursor = self._cursor
            try:
                batch = await self._call(
                    "waitEvents",
                    cursor,
                    EVENT_BATCH,
                    wait_ms,
                    timeout=self.event_wait + self.timeout,
                )
            except HostUnreachable as exc:
                # The cursor is kept: the AIM's history covers the time away.
                log.warning("event stream lost", host=self.connection.address, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
                continue
            delay = self.reconnect_delay
            if batch.resync:
                # Events were lost (the AIM restarted, or its history moved past us): the
                # monitor's periodic listing catches up; the stream goes on from here.
                log.warning("event stream resynchronised", host=self.connection.address)
                self._cursor = batch.cursor
                continue
            for event in batch.events:
                self._cursor = event.sequence
                kind = _EVENTS.get(self._aim_contract_name("EventType", event.type))
                if kind is not None:
                    yield VmEvent(
                        uuid=event.domainUuid,
                        name=event.domainName,
                        type=kind,
                        timestamp=event.timestamp,
                    )
            self._cursor = max(self._cursor, batch.cursor)


class XenDriver(KvmDriver):
    """Xen hosts run the same AIM; only the domain XML differs."""

    hypervisor_type = HypervisorType.XEN_3
    flavour: Flavour = "xen"
    default_domain_type = "xen"
