"""The KVM and Xen drivers: libvirt for the domains, the host's AIM for the rest.

Domain operations (define, undefine, look up, list, power) go through libvirt-python on
the host's libvirt URI (libvirt_domains.py): libvirt's own remote protocol, with its own
TLS or SASL, one hop from the daemon that does the work. The URI is the driver's
`libvirt_uri` when given (qemu+tcp://host/system, qemu+tls://host/system,
xen+tcp://host/system), else the one the host's AIM reports in getNodeInfo
(remoteLibvirtUri: its libvirt.remote_uri setting).

When neither names one, the domain operations go through the AIM's thrift methods
instead (aim_domains.py), which do the same over the AIM's own libvirt connection. That
fallback is kept for hosts whose libvirtd does not listen to the network (the AIM's port,
with its TLS, is then the only one to open), and for libvirt state that only the AIM's
connection sees: libvirt's test driver on a file, as the all-in-one's demo host, is
private to the connection that opened it. `libvirt_uri=""` forces it.

Everything else goes through the AIM over thrift (TLS when the driver is given an
ssl_context): disks copied and deleted by its "Rimp" methods, VLAN bridges made by
createVLAN, the host's facts, datastores, NICs and initiator IQN, and the lifecycle
events, long-polled with waitEvents from a cursor (the AIM keeps a numbered history a
monitor resumes from after a disconnection, which libvirt's callbacks do not).

Every blocking libvirt call runs in the driver's own bounded thread pool and is bounded
by the driver's timeout: a hung host times out as HostUnreachable and delays neither the
loop nor another host.

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
from abiquo_dc.hypervisors.aim_domains import AimDomains
from abiquo_dc.hypervisors.base import (
    Capabilities,
    Datastore,
    DiskInRepository,
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
from abiquo_dc.hypervisors.domain_channel import DomainChannel
from abiquo_dc.hypervisors.domain_xml import Flavour, disk_name, disk_path, domain_xml
from abiquo_dc.hypervisors.libvirt_domains import THREADS, LibvirtDomains
from abiquo_dc.protocol.definitions import (
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    RepositoryDisk,
    VirtualMachineDefinition,
)

log = structlog.get_logger("abiquo_dc.hypervisors.kvm")

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
        libvirt_uri: str | None = None,
        libvirt_threads: int = THREADS,
    ) -> None:
        """`event_wait`: how long one waitEvents long-poll is held by the AIM (seconds);
        `reconnect_delay` doubles up to `max_reconnect_delay` while the host is away.
        `libvirt_uri`: where domain operations go; None: the URI the AIM reports, ""
        (or none reported): through the AIM. `libvirt_threads`: the size of this
        driver's pool for libvirt's blocking calls."""
        super().__init__(connection, timeout=timeout)
        # None: the type's own (kvm, xen); tests pass "qemu" or "test".
        self.domain_type = domain_type or self.default_domain_type
        self.ssl_context = ssl_context
        self.vlan_interface = vlan_interface
        self.bridge_prefix = bridge_prefix
        self.event_wait = event_wait
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.libvirt_uri = libvirt_uri
        self.libvirt_threads = libvirt_threads
        self._aim: AimClient | None = None
        self._domains: DomainChannel | None = None
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
        domains: DomainChannel | None = None
        try:
            node = await aim.call("getNodeInfo")
            batch = await aim.call("waitEvents", _NOW, 1, 0)
            domains = self._domain_channel(aim, node)
            await domains.open()
        except BaseException:
            if domains is not None:
                await domains.close()
            await aim.close()
            raise
        self._cursor = batch.cursor
        self._aim = aim
        self._domains = domains

    def _domain_channel(self, aim: AimClient, node: Any) -> DomainChannel:
        # An AIM older than the field has it None: domains through the AIM.
        uri = self.libvirt_uri
        if uri is None:
            uri = getattr(node, "remoteLibvirtUri", None) or ""
        log.info(
            "domain operations",
            host=self.connection.address,
            channel="libvirt" if uri else "aim",
            uri=uri,
        )
        if not uri:
            return AimDomains(aim)
        return LibvirtDomains(
            uri,
            timeout=self.timeout,
            threads=self.libvirt_threads,
            credentials=self.connection.credentials,
        )

    @property
    def domains(self) -> DomainChannel:
        """The channel domain operations take (libvirt or the AIM), once connected."""
        if self._domains is None:
            raise HostUnreachable(f"not connected to {self.connection.address}")
        return self._domains

    async def close(self) -> None:
        domains, self._domains = self._domains, None
        aim, self._aim = self._aim, None
        if domains is not None:
            await domains.close()
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

    def _aim_contract_name(self, enum: str, value: int) -> str:
        assert self._aim is not None
        names: dict[int, str] = getattr(self._aim.contract, enum)._VALUES_TO_NAMES
        return names.get(value, "UNKNOWN")

    async def list_vms(self) -> list[VmInfo]:
        return await self.domains.list()

    async def get_vm(self, uuid: str) -> VmInfo:
        try:
            return await self.domains.get(uuid)
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
        # On the interface the machine names for its VLANs, else the configured one.
        wanted = {
            (nic.vlan_tag, nic.virtual_switch or self.vlan_interface)
            for nic in definition.nics
            if nic.vlan_tag
        }
        for tag, interface in sorted(wanted):
            await self._call("createVLAN", tag, interface, self._bridge(tag))

    async def configure(self, definition: VirtualMachineDefinition) -> None:
        xml = self._xml(definition)  # an invalid definition fails before any copy
        if await self.domains.exists(definition.uuid):
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
            await self.domains.define(xml)
        except BaseException:
            # No half-made VM: a definition whose answer was lost may exist, so it goes too.
            await asyncio.shield(self._undo_configure(definition, copied))
            raise

    async def _undo_configure(
        self, definition: VirtualMachineDefinition, copied: list[int]
    ) -> None:
        with contextlib.suppress(Exception):
            await self.domains.undefine(definition.uuid)
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
        await self.domains.define(xml)

    async def deconfigure(self, definition: VirtualMachineDefinition) -> None:
        try:
            if await self._power_state(definition.uuid) != PowerState.OFF:
                await self.domains.power_off(definition.uuid)
            await self.domains.undefine(definition.uuid)
        except VmNotFound:
            pass  # gone already: its disks may not be
        for index, disk in enumerate(definition.disks):
            if isinstance(disk, RepositoryDisk) and not disk.persistent:
                await self._delete_disk(definition, index)

    # -- power ---------------------------------------------------------------------------

    async def power_on(self, uuid: str) -> None:
        await self.domains.power_on(uuid)

    async def power_off(self, uuid: str) -> None:
        await self.domains.power_off(uuid)

    async def shutdown(self, uuid: str) -> None:
        await self.domains.shutdown(uuid)

    async def reset(self, uuid: str) -> None:
        await self.domains.reset(uuid)

    async def pause(self, uuid: str) -> None:
        await self.domains.pause(uuid)

    async def resume(self, uuid: str) -> None:
        await self.domains.resume(uuid)

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
        try:
            await self._call(
                "copyFromDatastoreToRepository",
                name,
                datastore,
                repository_path,
                timeout=max(self.timeout, 3600.0),
            )
        except AimFailure as exc:
            # Translated here rather than in the AIM client: RIMP-EXISTS means "the
            # repository has that file" only for this call (renameDisk, say, answers it
            # of a datastore's file).
            if exc.aim_code == "RIMP-EXISTS":
                raise DiskInRepository(f"{repository_path}: {exc.message}") from exc
            raise

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
    """Xen hosts run the same AIM; only the domain XML differs, and the libvirt URI
    (xen+tcp://host/system, from the driver or as the AIM reports it)."""

    hypervisor_type = HypervisorType.XEN_3
    flavour: Flavour = "xen"
    default_domain_type = "xen"
