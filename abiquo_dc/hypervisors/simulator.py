"""The simulator: whole hosts in memory, for tests and benchmarks at scale.

As Abiquo's hypervisor mock and CloudStack's simulator: a `SimulatedCloud` holds any
number of `SimulatedHost`s keyed by address, and `SimulatorDriver` talks to one of them
through the ordinary driver contract. A host is plain data (dicts, no task per VM, no
polling loop), so a thousand hosts of twenty VMs cost little more than their dicts.

Faults are scripted per operation name on the host (see OPERATIONS): `delay`, `fail`
(the next N calls), `hang` (never answer: the driver's timeout turns it into
HostUnreachable), `disconnect` (every call fails, event streams break) and `mayhem`
(VMs created, destroyed and powered behind the platform's back, by a task the cloud's
Supervisor owns).

An address no host has is refused at once with HostUnreachable, as a real host whose
port is closed refuses a connection: waiting for the timeout would slow every test of
an unreachable host without simulating anything more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import time
import uuid as uuid_module
import weakref
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

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
from abiquo_dc.protocol.definitions import (
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    IscsiDisk,
    RepositoryDisk,
    VirtualMachineDefinition,
)
from abiquo_runtime.tasks import Supervisor

# The operation names faults are scripted on: the driver's methods.
OPERATIONS = frozenset(
    {
        "connect",
        "host_info",
        "list_vms",
        "get_vm",
        "configure",
        "reconfigure",
        "deconfigure",
        "power_on",
        "power_off",
        "shutdown",
        "reset",
        "pause",
        "resume",
        "copy_disk_to_repository",
        "events",
    }
)

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", re.IGNORECASE)
GIB = 1024**3


class Mayhem(StrEnum):
    """What mayhem does behind the platform's back."""

    CREATE = "create"
    DESTROY = "destroy"
    POWER = "power"


@dataclass
class SimulatedDatastore:
    name: str
    path: str
    total_bytes: int
    used_bytes: int = 0

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - self.used_bytes


@dataclass
class SimulatedVm:
    definition: VirtualMachineDefinition
    power_state: PowerState = PowerState.OFF
    # The disk files this VM owns: path -> (datastore path, size, persistent).
    files: dict[str, tuple[str, int, bool]] = field(default_factory=dict)

    def info(self) -> VmInfo:
        d = self.definition
        return VmInfo(
            uuid=d.uuid,
            name=d.name,
            power_state=self.power_state,
            cpu=d.cpu,
            ram_mb=d.ram_mb,
            disks=disk_names(d),
        )


def disk_file(definition: VirtualMachineDefinition, index: int, datastore: str) -> str:
    """Where the copy of a repository disk lands: <datastore>/<vm uuid>[-n]."""
    suffix = "" if index == 0 else f"-{index}"
    return f"{datastore.rstrip('/')}/{definition.uuid}{suffix}"


def disk_names(definition: VirtualMachineDefinition) -> tuple[str, ...]:
    names: list[str] = []
    for i, disk in enumerate(definition.disks):
        if isinstance(disk, RepositoryDisk):
            names.append(disk_file(definition, i, disk.datastore))
        else:
            names.append(f"{disk.target}:{disk.lun}")
    return tuple(names)


@dataclass
class _Fail:
    remaining: int
    error: Exception | None


# Pushed to a subscriber's queue: the stream broke (disconnect) or ended (cloud closed).
_BROKEN = object()
_ENDED = object()


class SimulatedHost:
    """One hypervisor host in memory; tests reach its fault knobs directly."""

    def __init__(
        self,
        cloud: SimulatedCloud,
        address: str,
        *,
        name: str = "",
        hypervisor_type: HypervisorType = HypervisorType.KVM,
        version: str = "simulated-1.0",
        cpu_cores: int = 16,
        cpu_sockets: int = 2,
        ram_bytes: int = 64 * GIB,
        nics: Iterable[HostNic] | None = None,
        datastores: Iterable[SimulatedDatastore] | None = None,
        initiator_iqn: str = "",
        queue_size: int = 10_000,
        disk_formats: Iterable[DiskFormat] | None = None,
    ) -> None:
        """`disk_formats`: those the host boots from (all when None), as a real
        hypervisor's driver declares them; others are converted before a deploy."""
        self.cloud = cloud
        self.address = address
        self.name = name or f"sim-{address}"
        self.hypervisor_type = hypervisor_type
        self.version = version
        self.cpu_cores = cpu_cores
        self.cpu_sockets = cpu_sockets
        self.ram_bytes = ram_bytes
        self.nics = tuple(nics or (HostNic("eth0", "52:54:00:00:00:01", address),))
        stores = datastores or (SimulatedDatastore("vmstore", "/var/lib/virt", 1024 * GIB),)
        self.datastores: dict[str, SimulatedDatastore] = {d.path: d for d in stores}
        self.initiator_iqn = initiator_iqn or f"iqn.2026-01.sim:{self.name}"
        self.disk_formats = frozenset(DiskFormat if disk_formats is None else disk_formats)
        self.vms: dict[str, SimulatedVm] = {}
        # Disk files copied back to the repository: repository path -> size.
        self.repository: dict[str, int] = {}
        # The disk files on the datastores, kept apart from the VMs for the same reason.
        self._files: dict[str, int] = {}
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[object]] = set()
        self._delays: dict[str, float] = {}
        self._fails: dict[str, _Fail] = {}
        self._hangs: set[str] = set()
        self._disconnected_until = 0.0
        self._mayhem: asyncio.Task[None] | None = None

    # -- fault knobs ---------------------------------------------------------------------

    def delay(self, op: str, seconds: float) -> None:
        """Every call of `op` answers `seconds` late (0 removes the delay)."""
        _check_op(op)
        if seconds > 0:
            self._delays[op] = seconds
        else:
            self._delays.pop(op, None)

    def fail(self, op: str, *, times: int = 1, error: Exception | None = None) -> None:
        """The next `times` calls of `op` raise `error` (a fresh HostUnreachable if none)."""
        _check_op(op)
        if times > 0:
            self._fails[op] = _Fail(times, error)
        else:
            self._fails.pop(op, None)

    def hang(self, op: str) -> None:
        """Calls of `op` never answer; the driver's timeout turns that into HostUnreachable."""
        _check_op(op)
        self._hangs.add(op)

    def disconnect(self, seconds: float) -> None:
        """Every call fails with HostUnreachable for `seconds`; event streams break now."""
        self._disconnected_until = time.monotonic() + seconds
        for queue in self._subscribers:
            self._push(queue, _BROKEN)
        self._subscribers.clear()

    @property
    def disconnected(self) -> bool:
        return time.monotonic() < self._disconnected_until

    def heal(self) -> None:
        """Remove every scripted fault (calls already hanging stay hung)."""
        self._delays.clear()
        self._fails.clear()
        self._hangs.clear()
        self._disconnected_until = 0.0
        self.stop_mayhem()

    def mayhem(
        self,
        rate_per_second: float,
        kinds: Iterable[str] = (Mayhem.CREATE, Mayhem.DESTROY, Mayhem.POWER),
        *,
        seed: int | None = None,
    ) -> None:
        """VMs created, destroyed and powered behind the platform's back, `rate` a second."""
        self.stop_mayhem()
        chosen = [Mayhem(k) for k in kinds]
        if rate_per_second <= 0 or not chosen:
            return
        self._mayhem = self.cloud.supervisor.spawn(
            self._run_mayhem(rate_per_second, chosen, random.Random(seed)),
            name=f"mayhem {self.address}",
            forever=True,
        )

    def stop_mayhem(self) -> None:
        if self._mayhem is not None:
            self._mayhem.cancel()
            self._mayhem = None

    async def _run_mayhem(self, rate: float, kinds: list[Mayhem], rng: random.Random) -> None:
        while True:
            await asyncio.sleep(1.0 / rate)
            kind = rng.choice(kinds)
            if kind is Mayhem.CREATE:
                self.add_vm(_stray_definition(rng))
                continue
            if not self.vms:
                continue
            victim = self.vms[rng.choice(list(self.vms))]
            if kind is Mayhem.DESTROY:
                self.remove_vm(victim.definition.uuid)
            else:
                on = victim.power_state is PowerState.OFF
                self.set_power(victim.definition.uuid, PowerState.ON if on else PowerState.OFF)

    # -- out-of-band changes (mayhem, tests, discovery scenarios) ------------------------

    def add_vm(
        self, definition: VirtualMachineDefinition, power_state: PowerState = PowerState.OFF
    ) -> None:
        """Create a VM as someone else would; validated as configure validates."""
        self._validate(definition)
        if definition.uuid in self.vms:
            raise VmAlreadyExists(f"VM {definition.uuid} exists on {self.address}")
        vm = SimulatedVm(definition)
        self._allocate(vm, definition)
        self.vms[definition.uuid] = vm
        self._emit(definition, VmEventType.CREATED)
        if power_state is not PowerState.OFF:
            self.set_power(definition.uuid, power_state)

    def remove_vm(self, uuid: str) -> bool:
        """Remove a VM and its non-persistent disk files; False when it was not there."""
        vm = self.vms.pop(uuid, None)
        if vm is None:
            return False
        for path, (store, size, persistent) in vm.files.items():
            if not persistent:
                self._free(path, store, size)
        self._emit(vm.definition, VmEventType.DESTROYED)
        return True

    def set_power(self, uuid: str, state: PowerState) -> None:
        vm = self._vm(uuid)
        before, vm.power_state = vm.power_state, state
        if before is state:
            return
        if state is PowerState.PAUSED:
            self._emit(vm.definition, VmEventType.PAUSED)
        elif state is PowerState.ON:
            resumed = before is PowerState.PAUSED
            self._emit(vm.definition, VmEventType.RESUMED if resumed else VmEventType.POWER_ON)
        elif state is PowerState.OFF:
            self._emit(vm.definition, VmEventType.POWER_OFF)

    def file_exists(self, path: str) -> bool:
        """Whether a disk file is on a datastore (a persistent disk outlives its VM)."""
        return path in self._files

    # -- what the driver calls -----------------------------------------------------------

    async def gate(self, op: str) -> None:
        """Apply the faults scripted on `op`: raise, wait, or never return."""
        if self.disconnected:
            raise HostUnreachable(f"{self.address} is disconnected")
        failure = self.take_failure(op)
        if failure is not None:
            raise failure
        delay = self._delays.get(op)
        if delay:
            await asyncio.sleep(delay)
        if op in self._hangs:
            await asyncio.Event().wait()

    def take_failure(self, op: str) -> Exception | None:
        """The error a scripted `fail` has for this call of `op`, counting it down."""
        failure = self._fails.get(op)
        if failure is None:
            return None
        failure.remaining -= 1
        if failure.remaining <= 0:
            del self._fails[op]
        return failure.error or HostUnreachable(f"{self.address} failed {op} (scripted)")

    def slow(self, op: str) -> bool:
        """Whether a call of `op` may take time (the driver bounds only those)."""
        return op in self._delays or op in self._hangs

    def info(self) -> HostInfo:
        return HostInfo(
            name=self.name,
            hypervisor_type=self.hypervisor_type,
            version=self.version,
            cpu_cores=self.cpu_cores,
            cpu_sockets=self.cpu_sockets,
            ram_bytes=self.ram_bytes,
            nics=self.nics,
            datastores=tuple(
                Datastore(
                    name=d.name,
                    path=d.path,
                    device=f"/dev/sim/{d.name}",
                    type="ext4",
                    total_bytes=d.total_bytes,
                    free_bytes=d.free_bytes,
                    uuid=f"{self.name}:{d.name}",
                )
                for d in self.datastores.values()
            ),
            initiator_iqn=self.initiator_iqn,
        )

    def configure(self, definition: VirtualMachineDefinition) -> None:
        self.add_vm(definition)

    def reconfigure(self, definition: VirtualMachineDefinition) -> None:
        vm = self._vm(definition.uuid)
        self._validate(definition)
        old = vm.files
        vm.files = {}
        # Files the new definition keeps are neither freed nor allocated again.
        kept = set(disk_names(definition))
        for path, (store, size, persistent) in old.items():
            if path in kept:
                vm.files[path] = (store, size, persistent)
            elif not persistent:
                self._free(path, store, size)
        self._allocate(vm, definition)
        vm.definition = definition

    def subscribe(self) -> asyncio.Queue[object]:
        queue: asyncio.Queue[object] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[object]) -> None:
        self._subscribers.discard(queue)

    def end_stream(self, queue: asyncio.Queue[object]) -> None:
        if queue in self._subscribers:
            self._subscribers.discard(queue)
            self._push(queue, _ENDED)

    def end_streams(self) -> None:
        for queue in self._subscribers:
            self._push(queue, _ENDED)
        self._subscribers.clear()

    def vm(self, uuid: str) -> SimulatedVm:
        return self._vm(uuid)

    # -- internals -----------------------------------------------------------------------

    def _vm(self, uuid: str) -> SimulatedVm:
        vm = self.vms.get(uuid)
        if vm is None:
            raise VmNotFound(f"no VM {uuid} on {self.address}")
        return vm

    def _validate(self, d: VirtualMachineDefinition) -> None:
        problems: list[str] = []
        if not d.uuid:
            problems.append("no uuid")
        if not d.name:
            problems.append("no name")
        if d.cpu < 1:
            problems.append(f"cpu {d.cpu} < 1")
        if d.ram_mb < 1:
            problems.append(f"ram {d.ram_mb} MB < 1")
        macs = [nic.mac.lower() for nic in d.nics]
        if len(set(macs)) != len(macs):
            problems.append("duplicate MAC addresses")
        problems += [f"bad MAC {m!r}" for m in macs if not _MAC.match(m)]
        for i, disk in enumerate(d.disks):
            if disk.size_bytes < 0:
                problems.append(f"disk {i} has a negative size")
            if isinstance(disk, RepositoryDisk) and disk.datastore not in self.datastores:
                problems.append(f"disk {i}: no datastore {disk.datastore!r} on {self.address}")
            if isinstance(disk, IscsiDisk) and not (disk.portal and disk.target):
                problems.append(f"disk {i}: iSCSI disk without portal or target")
        if not 0 <= d.display.port <= 65535:
            problems.append(f"display port {d.display.port} out of range")
        if problems:
            raise InvalidDefinition(f"VM {d.uuid or d.name}: " + "; ".join(problems))

    def _allocate(self, vm: SimulatedVm, d: VirtualMachineDefinition) -> None:
        """Copy the repository disks not there yet, all or none: space is checked first."""
        wanted: dict[str, tuple[str, int, bool]] = {}
        for i, disk in enumerate(d.disks):
            if isinstance(disk, RepositoryDisk):
                path = disk_file(d, i, disk.datastore)
                if path not in vm.files:
                    wanted[path] = (disk.datastore, disk.size_bytes, disk.persistent)
        need: dict[str, int] = {}
        for path, (store, size, _) in wanted.items():
            # A persistent disk kept from an earlier life of the VM is reused as is.
            if path not in self._files:
                need[store] = need.get(store, 0) + size
        for store, size in need.items():
            if self.datastores[store].free_bytes < size:
                raise DriverFailure(f"no space left on {store} of {self.address}")
        for path, (store, size, persistent) in wanted.items():
            if path not in self._files:
                self._files[path] = size
                self.datastores[store].used_bytes += size
            vm.files[path] = (store, size, persistent)

    def _free(self, path: str, store: str, size: int) -> None:
        if self._files.pop(path, None) is not None and store in self.datastores:
            self.datastores[store].used_bytes -= size

    def _emit(self, d: VirtualMachineDefinition, kind: VmEventType) -> None:
        if not self._subscribers:
            return
        event = VmEvent(d.uuid, d.name, kind, int(time.time() * 1000))
        for queue in self._subscribers:
            self._push(queue, event)

    @staticmethod
    def _push(queue: asyncio.Queue[object], item: object) -> None:
        # A subscriber that does not keep up loses its oldest events, not the host's time.
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(item)


def _check_op(op: str) -> None:
    if op not in OPERATIONS:
        raise ValueError(f"unknown operation {op!r}; one of {sorted(OPERATIONS)}")


def _stray_definition(rng: random.Random) -> VirtualMachineDefinition:
    uuid = str(uuid_module.UUID(int=rng.getrandbits(128), version=4))
    return VirtualMachineDefinition(uuid=uuid, name=f"stray-{uuid[:8]}", cpu=1, ram_mb=256)


class SimulatedCloud:
    """Any number of simulated hosts in one process, keyed by address.

    It stands in for the hypervisor types in `types` (None: for every type), so that
    one datacenter can hold simulated hosts next to real ones of another type.
    """

    def __init__(self, types: Iterable[HypervisorType] | None = None) -> None:
        self.hosts: dict[str, SimulatedHost] = {}
        self.supervisor = Supervisor("simulated-cloud")
        self.types = frozenset(types) if types is not None else None

    def simulates(self, hypervisor: HypervisorType) -> bool:
        """Whether drivers of this type are the simulator's."""
        return self.types is None or hypervisor in self.types

    def add_host(self, address: str, **kwargs: object) -> SimulatedHost:
        """A new host at `address`; keyword arguments as SimulatedHost takes them."""
        if address in self.hosts:
            raise ValueError(f"a simulated host answers at {address} already")
        host = SimulatedHost(self, address, **kwargs)  # type: ignore[arg-type]
        self.hosts[address] = host
        return host

    def remove_host(self, address: str) -> None:
        host = self.hosts.pop(address, None)
        if host is not None:
            host.stop_mayhem()
            host.end_streams()

    def host(self, address: str) -> SimulatedHost:
        return self.hosts[address]

    async def close(self) -> None:
        """Stop every mayhem task and end every event stream."""
        for host in self.hosts.values():
            host.end_streams()
        await self.supervisor.close()


class SimulatorDriver(Driver):
    """The contract, on a host of a SimulatedCloud found by `connection.address`."""

    hypervisor_type = HypervisorType.KVM
    capabilities = Capabilities(
        pause=True,
        reset=True,
        shutdown=True,
        live_reconfigure=True,
        event_stream=True,
        iscsi_disks=True,
        disk_formats=frozenset(DiskFormat),
    )

    def __init__(
        self, connection: HypervisorConnection, *, cloud: SimulatedCloud, timeout: float = 30.0
    ) -> None:
        super().__init__(connection, timeout=timeout)
        self.cloud = cloud
        self.hypervisor_type = connection.type
        self._host: SimulatedHost | None = None
        # The event streams handed out, ended by close() so no consumer waits forever.
        self._streams: weakref.WeakSet[_EventStream] = weakref.WeakSet()

    async def _enter(self, op: str) -> SimulatedHost:
        host = self._host
        if host is None:
            raise HostUnreachable(f"not connected to {self.connection.address}")
        if self.cloud.hosts.get(host.address) is not host:
            raise HostUnreachable(f"{host.address} is gone")
        if not host.slow(op):
            # The common case costs no timer: thousands of hosts stay cheap.
            await host.gate(op)
            return host
        try:
            async with asyncio.timeout(self.timeout):
                await host.gate(op)
        except TimeoutError:
            raise HostUnreachable(
                f"{host.address} did not answer {op} within {self.timeout} s"
            ) from None
        return host

    async def connect(self) -> None:
        host = self.cloud.hosts.get(self.connection.address)
        if host is None:
            raise HostUnreachable(f"connection to {self.connection.address} refused")
        self._host = host
        try:
            await self._enter("connect")
        except BaseException:
            self._host = None
            raise
        self.hypervisor_type = host.hypervisor_type
        self.capabilities = dataclasses.replace(self.capabilities, disk_formats=host.disk_formats)

    async def close(self) -> None:
        self._host = None
        for stream in list(self._streams):
            stream.end()

    async def host_info(self) -> HostInfo:
        return (await self._enter("host_info")).info()

    async def list_vms(self) -> list[VmInfo]:
        return [vm.info() for vm in (await self._enter("list_vms")).vms.values()]

    async def get_vm(self, uuid: str) -> VmInfo:
        return (await self._enter("get_vm")).vm(uuid).info()

    async def configure(self, definition: VirtualMachineDefinition) -> None:
        (await self._enter("configure")).configure(definition)

    async def reconfigure(self, definition: VirtualMachineDefinition) -> None:
        (await self._enter("reconfigure")).reconfigure(definition)

    async def deconfigure(self, definition: VirtualMachineDefinition) -> None:
        (await self._enter("deconfigure")).remove_vm(definition.uuid)

    async def power_on(self, uuid: str) -> None:
        host = await self._enter("power_on")
        self._require(host, uuid, "power on", PowerState.OFF, PowerState.ON)
        host.set_power(uuid, PowerState.ON)

    async def power_off(self, uuid: str) -> None:
        host = await self._enter("power_off")
        host.set_power(uuid, PowerState.OFF)

    async def shutdown(self, uuid: str) -> None:
        host = await self._enter("shutdown")
        # A paused guest cannot hear the ACPI button.
        self._require(host, uuid, "shut down", PowerState.ON, PowerState.OFF)
        host.set_power(uuid, PowerState.OFF)

    async def reset(self, uuid: str) -> None:
        host = await self._enter("reset")
        self._require(host, uuid, "reset", PowerState.ON)

    async def pause(self, uuid: str) -> None:
        host = await self._enter("pause")
        self._require(host, uuid, "pause", PowerState.ON, PowerState.PAUSED)
        host.set_power(uuid, PowerState.PAUSED)

    async def resume(self, uuid: str) -> None:
        host = await self._enter("resume")
        self._require(host, uuid, "resume", PowerState.PAUSED, PowerState.ON)
        host.set_power(uuid, PowerState.ON)

    async def copy_disk_to_repository(
        self, definition: VirtualMachineDefinition, disk_index: int, repository_path: str
    ) -> None:
        host = await self._enter("copy_disk_to_repository")
        self._require(host, definition.uuid, "copy a disk of", PowerState.OFF)
        disks = host.vm(definition.uuid).definition.disks
        if not 0 <= disk_index < len(disks):
            raise InvalidDefinition(f"VM {definition.uuid} has no disk {disk_index}")
        if repository_path in host.repository:
            raise DiskInRepository(f"{repository_path} is in the repository already")
        host.repository[repository_path] = disks[disk_index].size_bytes

    def events(self) -> AsyncIterator[VmEvent]:
        # Subscribed now, not at the first __anext__: what happens after events() returns
        # is seen, as the contract suite expects.
        host = self._host
        if host is None or host.disconnected:
            return _FailedStream(HostUnreachable(f"no event stream from {self.connection.address}"))
        failure = host.take_failure("events")
        if failure is not None:
            return _FailedStream(failure)
        stream = _EventStream(host)
        self._streams.add(stream)
        return stream

    @staticmethod
    def _require(host: SimulatedHost, uuid: str, what: str, *allowed: PowerState) -> None:
        state = host.vm(uuid).power_state
        if state not in allowed:
            raise WrongState(f"cannot {what} VM {uuid}: it is {state}")


class _EventStream:
    """One subscriber's events; HostUnreachable when the host disconnects."""

    def __init__(self, host: SimulatedHost) -> None:
        self._host = host
        self._queue: asyncio.Queue[object] | None = host.subscribe()

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> VmEvent:
        queue = self._queue
        if queue is None:
            raise StopAsyncIteration
        item = await queue.get()
        if isinstance(item, VmEvent):
            return item
        self._close()
        if item is _BROKEN:
            raise HostUnreachable(f"event stream from {self._host.address} broke")
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._close()

    def end(self) -> None:
        """End the stream: a consumer waiting now gets StopAsyncIteration."""
        if self._queue is not None:
            self._host.end_stream(self._queue)

    def _close(self) -> None:
        if self._queue is not None:
            self._host.unsubscribe(self._queue)
            self._queue = None


class _FailedStream:
    def __init__(self, error: Exception) -> None:
        self._error: Exception | None = error

    def __aiter__(self) -> _FailedStream:
        return self

    async def __anext__(self) -> VmEvent:
        error, self._error = self._error, None
        if error is None:
            raise StopAsyncIteration
        raise error

    async def aclose(self) -> None:
        self._error = None
