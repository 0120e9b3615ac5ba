"""The disk formats templates come in (abiquo_dc.protocol's DiskFormat), as Abiquo
describes them.

Ids and URIs are Abiquo's DiskFormatType ones (the id is its ordinal), so that clients
that store or compare them keep working; VHDX, which came after Abiquo, follows the last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_runtime.errors import NotFound

DISK_FORMAT_NOT_FOUND = "DISKFORMAT-0"


@dataclass(frozen=True, slots=True)
class DiskFormatInfo:
    id: int
    format: DiskFormat
    description: str
    # How OVF envelopes name it (the Appliance Manager writes and reads these).
    uri: str

    @property
    def name(self) -> str:
        return self.format.value


_VMWARE = "http://www.vmware.com/technical-resources/interfaces/vmdk_access.html"
_VHD = "http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx"
_VDI = "http://forums.virtualbox.org/viewtopic.php?t=8046"
_QCOW2 = "http://people.gnome.org/~markmc/qcow-image-format.html"

_ALL: tuple[DiskFormatInfo, ...] = (
    DiskFormatInfo(0, DiskFormat.UNKNOWN, "Unknown disk format", "http://unknown"),
    DiskFormatInfo(1, DiskFormat.RAW, "Disk format device", "http://raw"),
    DiskFormatInfo(2, DiskFormat.INCOMPATIBLE, "Incompatible disk type", "http://incompatible"),
    DiskFormatInfo(
        3,
        DiskFormat.VMDK_STREAM_OPTIMIZED,
        "VMWare streamOptimized format (for transport: converted before deploy)",
        f"{_VMWARE}#streamOptimized",
    ),
    DiskFormatInfo(4, DiskFormat.VMDK_FLAT, "VMWare Fixed Disk", f"{_VMWARE}#monolithic_flat"),
    DiskFormatInfo(5, DiskFormat.VMDK_SPARSE, "VMWare Sparse Disk", f"{_VMWARE}#monolithic_sparse"),
    DiskFormatInfo(6, DiskFormat.VHD_FLAT, "VHD Fixed Disk", f"{_VHD}#monolithic_flat"),
    DiskFormatInfo(7, DiskFormat.VHD_SPARSE, "VHD Sparse Disk", f"{_VHD}#monolithic_sparse"),
    DiskFormatInfo(8, DiskFormat.VDI_FLAT, "VDI Fixed disk", f"{_VDI}#monolithic_flat"),
    DiskFormatInfo(9, DiskFormat.VDI_SPARSE, "VDI Sparse disk", f"{_VDI}#monolithic_sparse"),
    DiskFormatInfo(10, DiskFormat.QCOW2_FLAT, "QCOW2 Fixed disk", f"{_QCOW2}#monolithic_flat"),
    DiskFormatInfo(11, DiskFormat.QCOW2_SPARSE, "QCOW2 Sparse disk", f"{_QCOW2}#monolithic_sparse"),
    DiskFormatInfo(
        12,
        DiskFormat.VHDX,
        "Hyper-V VHDX dynamically expanding disk",
        "http://www.microsoft.com/vhdx",
    ),
)

BY_FORMAT: Mapping[DiskFormat, DiskFormatInfo] = MappingProxyType({d.format: d for d in _ALL})
if set(BY_FORMAT) != set(DiskFormat):
    # A DiskFormat added to the protocol must be described here before central starts.
    raise RuntimeError(f"disk formats without a description: {set(DiskFormat) - set(BY_FORMAT)}")


def disk_formats() -> tuple[DiskFormatInfo, ...]:
    """Every disk format, by id."""
    return _ALL


def disk_format(key: str) -> DiskFormatInfo:
    """The disk format with this id ("4") or name ("VMDK_FLAT", any case); NotFound else."""
    for info in _ALL:
        if key == str(info.id) or key.upper() == info.name:
            return info
    raise NotFound(f"There is no disk format {key[:64]!r}", code=DISK_FORMAT_NOT_FOUND)
