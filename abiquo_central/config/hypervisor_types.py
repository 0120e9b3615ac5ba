"""The hypervisor types (abiquo_dc.protocol's HypervisorType): what each boots, and the
types of the machines each datacenter has.

`compatibility` is what a hypervisor boots without conversion; a template in another
format is converted by the datacenter's BPM before deploy (into `base_format` when
nothing else is asked). It must never claim more than the datacenter's drivers accept
(their Capabilities.disk_formats, which central cannot import): for KVM and XEN_3, the
types with a driver, it is exactly that set, which is why KVM lists no VHD (libvirt's
domains there attach raw, qcow2 and vmdk disks only) and XEN_3 lists more than Abiquo's
VMDK_FLAT. For the others it is Abiquo's table. VMDK_STREAM_OPTIMIZED is a transport
format: no hypervisor boots it, it is always converted.

Ids are Abiquo's (its HypervisorType ordinal + 1); default ports are where the
datacenter reaches each by default (the AIM for KVM and Xen, vSphere and XAPI over
HTTPS, WinRM, VirtualBox's web service).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.infrastructure.datacenters import DATACENTER_NOT_FOUND
from abiquo_dc.protocol.definitions import DiskFormat, HypervisorType
from abiquo_runtime.errors import NotFound

HYPERVISOR_TYPE_NOT_FOUND = "HYPERVISOR-0"

F = DiskFormat


@dataclass(frozen=True, slots=True)
class HypervisorTypeInfo:
    id: int
    type: HypervisorType
    # What people call it.
    real_name: str
    base_format: DiskFormat
    compatibility: tuple[DiskFormat, ...]
    default_port: int

    @property
    def name(self) -> str:
        return self.type.value


# What the KVM and Xen drivers of the datacenter boot (abiquo_dc/hypervisors/kvm.py).
_LIBVIRT = (F.RAW, F.QCOW2_FLAT, F.QCOW2_SPARSE, F.VMDK_FLAT, F.VMDK_SPARSE)
AIM_PORT = 60084

_ALL: tuple[HypervisorTypeInfo, ...] = (
    HypervisorTypeInfo(
        1,
        HypervisorType.VBOX,
        "VirtualBox",
        F.VDI_FLAT,
        (F.VDI_FLAT, F.VDI_SPARSE, F.VMDK_SPARSE, F.VHD_FLAT, F.VHD_SPARSE),
        18083,
    ),
    HypervisorTypeInfo(2, HypervisorType.KVM, "KVM", F.VMDK_FLAT, _LIBVIRT, AIM_PORT),
    HypervisorTypeInfo(3, HypervisorType.XEN_3, "Xen", F.VMDK_FLAT, _LIBVIRT, AIM_PORT),
    HypervisorTypeInfo(
        4, HypervisorType.VMX_04, "VMware ESXi", F.VMDK_FLAT, (F.VMDK_FLAT, F.VMDK_SPARSE), 443
    ),
    HypervisorTypeInfo(
        5,
        HypervisorType.HYPERV_301,
        "Microsoft Hyper-V",
        F.VHD_SPARSE,
        (F.VHD_SPARSE, F.VHD_FLAT, F.VHDX),
        5985,
    ),
    HypervisorTypeInfo(
        6,
        HypervisorType.XENSERVER,
        "Citrix XenServer",
        F.VHD_SPARSE,
        (F.VHD_SPARSE, F.VHD_FLAT),
        443,
    ),
)

BY_TYPE: Mapping[HypervisorType, HypervisorTypeInfo] = MappingProxyType({h.type: h for h in _ALL})
if set(BY_TYPE) != set(HypervisorType):
    # A type added to the protocol must be described here before central starts.
    raise RuntimeError(f"hypervisor types not described: {set(HypervisorType) - set(BY_TYPE)}")


def hypervisor_types() -> tuple[HypervisorTypeInfo, ...]:
    """Every hypervisor type, by id."""
    return _ALL


def hypervisor_type(key: str) -> HypervisorTypeInfo:
    """The type with this id ("2") or name ("KVM", any case); NotFound otherwise."""
    for info in _ALL:
        if key == str(info.id) or key.upper() == info.name:
            return info
    raise NotFound(f"There is no hypervisor type {key[:64]!r}", code=HYPERVISOR_TYPE_NOT_FOUND)


def accepts(hypervisor: HypervisorType, fmt: DiskFormat) -> bool:
    """Whether `hypervisor` boots a disk in `fmt` without converting it."""
    return fmt in BY_TYPE[hypervisor].compatibility


async def datacenter_types(engine: AsyncEngine, datacenter_id: int) -> list[HypervisorTypeInfo]:
    """The types of the machines registered in the datacenter, by id; NotFound when the
    datacenter does not exist. A machine of a type this central does not know (left by a
    newer version) is not listed rather than failing the whole listing."""
    dc, machine = tables.datacenter, tables.machine
    async with engine.connect() as conn:
        exists = (
            await conn.execute(select(dc.c.id).where(dc.c.id == datacenter_id))
        ).first() is not None
        if not exists:
            raise NotFound("The requested datacenter does not exist", code=DATACENTER_NOT_FOUND)
        names = (
            (
                await conn.execute(
                    select(machine.c.type)
                    .where(machine.c.datacenter_id == datacenter_id)
                    .distinct()
                )
            )
            .scalars()
            .all()
        )
    present = {str(n) for n in names}
    return [info for info in _ALL if info.name in present]
