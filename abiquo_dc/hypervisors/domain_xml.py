"""A VirtualMachineDefinition as libvirt domain XML, for the KVM and Xen drivers.

Only this: where each disk lives on the host and what XML libvirt is given. Built with
xml.etree, so every value from the definition is escaped; characters XML cannot carry
at all (control characters) are refused rather than passed on.

`domain_type` is libvirt's <domain type=...>: "kvm" on a real KVM host, "qemu" where
there is no hardware virtualisation (all-in-one, the tests' machines), "xen" for Xen,
"test" for libvirt's test driver. `flavour` ("kvm" or "xen") chooses the guest's
devices: virtio for KVM, Xen's paravirtual disks for Xen.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Literal

from abiquo_dc.hypervisors.base import InvalidDefinition
from abiquo_dc.protocol.definitions import (
    DiskFormat,
    IscsiDisk,
    RepositoryDisk,
    VirtualMachineDefinition,
)

Flavour = Literal["kvm", "xen"]

DOMAIN_TYPES = frozenset({"kvm", "qemu", "xen", "test"})
ISCSI_PORT = 3260

_DRIVER_TYPES = {
    DiskFormat.RAW: "raw",
    DiskFormat.QCOW2_FLAT: "qcow2",
    DiskFormat.QCOW2_SPARSE: "qcow2",
    DiskFormat.VMDK_FLAT: "vmdk",
    DiskFormat.VMDK_SPARSE: "vmdk",
    DiskFormat.VMDK_STREAM_OPTIMIZED: "vmdk",
}

_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
# XML 1.0's Char production: anything else cannot appear in a document, escaped or not.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def disk_name(definition: VirtualMachineDefinition, index: int) -> tuple[str, str]:
    """(datastore, file name) of repository disk `index`: <uuid> for the first disk,
    <uuid>-<index> for the others, the names the AIM's disk methods take."""
    disk = definition.disks[index]
    if not isinstance(disk, RepositoryDisk):
        raise InvalidDefinition(f"disk {index} of {definition.name!r} is not a file disk")
    return disk.datastore, definition.uuid if index == 0 else f"{definition.uuid}-{index}"


def disk_path(definition: VirtualMachineDefinition, index: int) -> str:
    """Where the copy of repository disk `index` lives: <datastore>/<uuid>[-index]."""
    datastore, name = disk_name(definition, index)
    return f"{datastore.rstrip('/')}/{name}"


def driver_type(disk_format: DiskFormat) -> str:
    """libvirt's <driver type=...> for a disk format; InvalidDefinition when none fits."""
    try:
        return _DRIVER_TYPES[disk_format]
    except KeyError:
        raise InvalidDefinition(f"disk format {disk_format} cannot be booted here") from None


def target_device(prefix: str, index: int) -> str:
    """vda..vdz, vdaa..vdaz, ... as the kernel names its disks."""
    letters = ""
    n = index
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return prefix + letters


def split_portal(portal: str) -> tuple[str, int]:
    """host:port (or [v6]:port, or a bare host) → (host, port)."""
    host, port = portal, ISCSI_PORT
    if portal.startswith("["):
        end = portal.find("]")
        if end < 0:
            raise InvalidDefinition(f"malformed iSCSI portal {portal!r}")
        host, rest = portal[1:end], portal[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise InvalidDefinition(f"malformed iSCSI portal {portal!r}")
            port = _port(rest[1:], portal)
    elif portal.count(":") == 1:
        host, raw = portal.split(":")
        port = _port(raw, portal)
    if not host:
        raise InvalidDefinition(f"malformed iSCSI portal {portal!r}")
    return host, port


def _port(raw: str, portal: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise InvalidDefinition(f"malformed iSCSI portal {portal!r}")
    return int(raw)


def domain_xml(
    definition: VirtualMachineDefinition,
    *,
    domain_type: str = "kvm",
    flavour: Flavour = "kvm",
) -> str:
    """The domain XML for `definition`; InvalidDefinition when it cannot be expressed."""
    if domain_type not in DOMAIN_TYPES:
        raise InvalidDefinition(f"unknown libvirt domain type {domain_type!r}")
    if definition.cpu < 1 or definition.ram_mb < 1:
        raise InvalidDefinition(f"{definition.name!r} needs at least one CPU and 1 MB of RAM")
    if not definition.name:
        raise InvalidDefinition("a VM needs a name")

    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = definition.name
    ET.SubElement(domain, "uuid").text = definition.uuid
    ET.SubElement(domain, "memory", unit="MiB").text = str(definition.ram_mb)
    ET.SubElement(domain, "vcpu").text = str(definition.cpu)
    os_ = ET.SubElement(domain, "os")
    ET.SubElement(os_, "type").text = "hvm"
    ET.SubElement(os_, "boot", dev="hd")
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    devices = ET.SubElement(domain, "devices")
    _disks(devices, definition, flavour)
    _nics(devices, definition, flavour)
    _display(devices, definition)
    _console(devices)
    text = ET.tostring(domain, encoding="unicode")
    bad = _NOT_XML.search(text)
    if bad:
        raise InvalidDefinition(f"{definition.name!r} holds a character XML cannot carry")
    return text


def _disks(devices: ET.Element, definition: VirtualMachineDefinition, flavour: Flavour) -> None:
    prefix, bus = ("xvd", "xen") if flavour == "xen" else ("vd", "virtio")
    for index, disk in enumerate(definition.disks):
        target = {"dev": target_device(prefix, index), "bus": bus}
        if isinstance(disk, RepositoryDisk):
            element = ET.SubElement(devices, "disk", type="file", device="disk")
            ET.SubElement(element, "driver", name="qemu", type=driver_type(disk.format))
            ET.SubElement(element, "source", file=disk_path(definition, index))
        elif isinstance(disk, IscsiDisk):
            host, port = split_portal(disk.portal)
            element = ET.SubElement(devices, "disk", type="network", device="disk")
            ET.SubElement(element, "driver", name="qemu", type="raw")
            source = ET.SubElement(
                element, "source", protocol="iscsi", name=f"{disk.target}/{disk.lun}"
            )
            ET.SubElement(source, "host", name=host, port=str(port))
        else:  # pragma: no cover - the Disk union has two members
            raise InvalidDefinition(f"unknown disk {disk!r}")
        ET.SubElement(element, "target", target)


def _nics(devices: ET.Element, definition: VirtualMachineDefinition, flavour: Flavour) -> None:
    seen: set[str] = set()
    for nic in definition.nics:
        mac = nic.mac.lower()
        if not _MAC.fullmatch(mac):
            raise InvalidDefinition(f"{nic.mac!r} is not a MAC address")
        if mac in seen:
            # Two NICs with one MAC would fight over the same frames.
            raise InvalidDefinition(f"the MAC {nic.mac} is twice in {definition.name!r}")
        seen.add(mac)
        if not nic.bridge:
            raise InvalidDefinition(f"the NIC {nic.mac} of {definition.name!r} has no bridge")
        element = ET.SubElement(devices, "interface", type="bridge")
        ET.SubElement(element, "mac", address=nic.mac)
        ET.SubElement(element, "source", bridge=nic.bridge)
        # Xen's guests use its own paravirtual NIC (netfront) when no model is named.
        if flavour == "kvm":
            ET.SubElement(element, "model", type="virtio")


def _display(devices: ET.Element, definition: VirtualMachineDefinition) -> None:
    display = definition.display
    attrs = {"type": "vnc", "listen": display.address or "0.0.0.0"}
    if display.port:
        attrs.update(port=str(display.port), autoport="no")
    else:
        # Port 0: the host picks a free one.
        attrs.update(port="-1", autoport="yes")
    if display.password:
        attrs["passwd"] = display.password
    ET.SubElement(devices, "graphics", attrs)


def _console(devices: ET.Element) -> None:
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")


def all_disk_paths(definition: VirtualMachineDefinition) -> Sequence[str]:
    """The host paths of the definition's file disks, in order ("" for iSCSI disks)."""
    return [
        disk_path(definition, i) if isinstance(d, RepositoryDisk) else ""
        for i, d in enumerate(definition.disks)
    ]
