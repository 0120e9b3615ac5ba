"""The driver contract every hypervisor type implements, and passes one test suite for.

Drivers are async. Blocking SDKs (libvirt-python, pyvmomi, XenAPI, pywinrm) run in the
driver's own bounded executor, so one hung host never starves another, and every call
is bounded by a timeout. What a driver can do is told by its capability flags: the
allocator and the API consult them instead of asking "is this ESXi".

Errors are translated inside the driver into the taxonomy below; nothing of an SDK
leaks out. Reaching a state the VM is in already is success (power_on of a running VM,
deconfigure of a VM that is gone): jobs are retried, and a retry must not fail.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum

from abiquo_dc.protocol.definitions import (
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    VirtualMachineDefinition,
)
from abiquo_runtime.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermanentError,
    TemporaryError,
)

# -- errors ------------------------------------------------------------------------------


class HostUnreachable(TemporaryError):
    """The host does not answer, or answered too late: worth retrying later."""

    code = "HV-UNREACHABLE"


class AuthenticationFailed(PermanentError):
    code = "HV-AUTH"


class VmNotFound(NotFound):
    code = "HV-VM-NOT-FOUND"


class VmAlreadyExists(Conflict):
    code = "HV-VM-EXISTS"


class DiskInRepository(Conflict):
    """copy_disk_to_repository's destination exists: a copy never replaces a file there
    (a template's disk, or an earlier copy)."""

    code = "HV-DISK-EXISTS"


class WrongState(Conflict):
    """The VM is not in a state that allows the operation (reset of a powered-off VM)."""

    code = "HV-STATE"


class InvalidDefinition(InvalidInput):
    code = "HV-INVALID"


class NotSupported(PermanentError):
    """The hypervisor cannot do this at all (see the capability flags)."""

    code = "HV-NOT-SUPPORTED"


class DriverFailure(PermanentError):
    """The hypervisor refused for a reason of its own; the message says which."""

    code = "HV-FAILED"


# -- what drivers report -----------------------------------------------------------------


class PowerState(StrEnum):
    """The power state the hypervisor reports, kept apart from the lifecycle state."""

    ON = "ON"
    OFF = "OFF"
    PAUSED = "PAUSED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Capabilities:
    pause: bool = True
    reset: bool = True
    # A graceful shutdown through the guest (ACPI, tools).
    shutdown: bool = True
    # CPU and RAM changed on a running VM.
    live_reconfigure: bool = False
    # Pushed events (AIM's waitEvents, vSphere's property collector, XAPI's event.from);
    # without them the monitor polls.
    event_stream: bool = False
    iscsi_disks: bool = True
    # The disk formats the hypervisor boots from directly; others are converted first.
    disk_formats: frozenset[DiskFormat] = frozenset()


@dataclass(frozen=True)
class HostNic:
    name: str
    mac: str
    address: str = ""


@dataclass(frozen=True)
class Datastore:
    name: str
    path: str
    device: str
    type: str
    total_bytes: int
    free_bytes: int
    uuid: str = ""


@dataclass(frozen=True)
class HostInfo:
    name: str
    hypervisor_type: HypervisorType
    version: str
    cpu_cores: int
    cpu_sockets: int
    ram_bytes: int
    nics: tuple[HostNic, ...] = ()
    datastores: tuple[Datastore, ...] = ()
    initiator_iqn: str = ""


@dataclass(frozen=True)
class VmInfo:
    uuid: str
    name: str
    power_state: PowerState
    cpu: int = 0
    ram_mb: int = 0
    # For discovery of VMs that exist on the host but not in the platform.
    disks: tuple[str, ...] = field(default=())


class VmEventType(StrEnum):
    CREATED = "CREATED"
    DESTROYED = "DESTROYED"
    POWER_ON = "POWER_ON"
    POWER_OFF = "POWER_OFF"
    PAUSED = "PAUSED"
    RESUMED = "RESUMED"


@dataclass(frozen=True)
class VmEvent:
    uuid: str
    name: str
    type: VmEventType
    # Milliseconds since the epoch, as the host saw it.
    timestamp: int = 0


# -- the contract ------------------------------------------------------------------------


class Driver(abc.ABC):
    """One connection to one host. Resources are opened in connect(), never before."""

    hypervisor_type: HypervisorType
    capabilities: Capabilities

    def __init__(self, connection: HypervisorConnection, *, timeout: float = 30.0) -> None:
        self.connection = connection
        self.timeout = timeout

    @abc.abstractmethod
    async def connect(self) -> None:
        """Reach the host and log in; HostUnreachable or AuthenticationFailed if not."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection; idempotent."""

    @abc.abstractmethod
    async def host_info(self) -> HostInfo: ...

    @abc.abstractmethod
    async def list_vms(self) -> list[VmInfo]: ...

    @abc.abstractmethod
    async def get_vm(self, uuid: str) -> VmInfo:
        """VmNotFound when the host has no VM with that UUID."""

    @abc.abstractmethod
    async def configure(self, definition: VirtualMachineDefinition) -> None:
        """Create the VM, powered off, its disks ready. VmAlreadyExists if it exists."""

    @abc.abstractmethod
    async def reconfigure(self, definition: VirtualMachineDefinition) -> None:
        """Change CPU, RAM, disks and NICs; WrongState if running and not supported live."""

    @abc.abstractmethod
    async def deconfigure(self, definition: VirtualMachineDefinition) -> None:
        """Remove the VM and its non-persistent disks; a VM already gone is no error."""

    @abc.abstractmethod
    async def power_on(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def power_off(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def shutdown(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def reset(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def pause(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def resume(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def copy_disk_to_repository(
        self, definition: VirtualMachineDefinition, disk_index: int, repository_path: str
    ) -> None:
        """Copy a powered-off VM's disk back to the repository (an instance).

        DiskInRepository when `repository_path` exists; what is there is left as it is."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[VmEvent]:
        """The VMs' lifecycle events: pushed where the host has a stream, else polled."""
