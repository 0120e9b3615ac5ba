"""What a virtual machine is made of, as central sends it and the drivers build it.

Part of the protocol because vfactory's jobs carry it over the link; the hypervisor
drivers take it as it comes.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class HypervisorType(StrEnum):
    KVM = "KVM"
    XEN_3 = "XEN_3"
    VMX_04 = "VMX_04"
    XENSERVER = "XENSERVER"
    HYPERV_301 = "HYPERV_301"
    VBOX = "VBOX"


class DiskFormat(StrEnum):
    UNKNOWN = "UNKNOWN"
    RAW = "RAW"
    INCOMPATIBLE = "INCOMPATIBLE"
    VMDK_STREAM_OPTIMIZED = "VMDK_STREAM_OPTIMIZED"
    VMDK_FLAT = "VMDK_FLAT"
    VMDK_SPARSE = "VMDK_SPARSE"
    VHD_FLAT = "VHD_FLAT"
    VHD_SPARSE = "VHD_SPARSE"
    # Hyper-V's; dynamically allocated.
    VHDX = "VHDX"
    VDI_FLAT = "VDI_FLAT"
    VDI_SPARSE = "VDI_SPARSE"
    QCOW2_FLAT = "QCOW2_FLAT"
    QCOW2_SPARSE = "QCOW2_SPARSE"


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    user: str = ""
    password: str = ""


class HypervisorConnection(msgspec.Struct, frozen=True, kw_only=True):
    """How to reach a hypervisor: its type, address and (for vendor APIs) credentials."""

    type: HypervisorType
    address: str
    # 0: the type's usual port (AIM 60084, libvirt 16509, vSphere 443, ...).
    port: int = 0
    credentials: Credentials = msgspec.field(default_factory=Credentials)


class RepositoryDisk(msgspec.Struct, frozen=True, kw_only=True, tag="repository"):
    """A template's disk in the repository, copied to a datastore of the host."""

    # Relative to the repository: <enterprise>/<template dir>/<file>.
    repository_path: str
    # The datastore's directory on the host, where the copy goes as <datastore>/<vm uuid>[-n].
    datastore: str
    format: DiskFormat
    size_bytes: int
    # A disk that outlives the VM (an instance) is kept when the VM is deconfigured.
    persistent: bool = False


class IscsiDisk(msgspec.Struct, frozen=True, kw_only=True, tag="iscsi"):
    """A volume on a storage server, attached over iSCSI."""

    portal: str  # host:port
    target: str  # IQN
    lun: int = 0
    size_bytes: int
    persistent: bool = True


Disk = RepositoryDisk | IscsiDisk


class Nic(msgspec.Struct, frozen=True, kw_only=True):
    mac: str
    ip: str = ""
    vlan_tag: int = 0
    network_name: str = ""
    # The Linux bridge (KVM, Xen) or the port group (ESXi) the NIC is plugged into.
    bridge: str = ""
    # The host's interface (KVM, Xen) or virtual switch (ESXi) that carries the VLAN's
    # tagged traffic: the machine's virtualSwitch. Empty: the driver's default.
    virtual_switch: str = ""


class RemoteDisplay(msgspec.Struct, frozen=True, kw_only=True):
    port: int = 0
    password: str = ""
    address: str = "0.0.0.0"


class VirtualMachineDefinition(msgspec.Struct, frozen=True, kw_only=True):
    uuid: str
    name: str
    cpu: int
    ram_mb: int
    # The first is the boot disk.
    disks: list[Disk] = msgspec.field(default_factory=list)
    nics: list[Nic] = msgspec.field(default_factory=list)
    display: RemoteDisplay = msgspec.field(default_factory=RemoteDisplay)
