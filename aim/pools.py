"""Storage pools and their volumes (the VMs' disks), and the block devices of domains.

Pool and volume XML is built with ElementTree, so whatever the caller sends is escaped.
Deleting a pool stops and forgets it; it never deletes the data in it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from types import ModuleType
from typing import Any

import libvirt

from aim.libvirt_host import LibvirtHost, fail, parse_uuid

# The contract's StoragePoolType name → libvirt's pool type.
_LIBVIRT_TYPES = {"DIR": "dir", "NFS": "netfs", "ISCSI": "iscsi"}
_FORMATS = frozenset({"raw", "qcow2"})


def _sub(parent: ET.Element, tag: str, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, tag, attrs)


def _describe(xml: str) -> tuple[str, str, str | None, str | None]:
    """(libvirt type, target path, source host, source path) of a pool's XML."""
    root = ET.fromstring(xml)
    host = root.find("source/host")
    source = root.find("source/dir")
    if source is None:
        source = root.find("source/device")
    return (
        root.get("type", ""),
        root.findtext("target/path", ""),
        host.get("name") if host is not None else None,
        source.get("path") if source is not None else None,
    )


def _check_capacity(value: int | None) -> int:
    # isinstance too: an argument the caller left unset arrives as None.
    if not isinstance(value, int) or value <= 0:
        fail("LIBVIRT-INVALID", f"capacityBytes must be positive, not {value}")
    return value


def _check_name(name: str, what: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        fail("LIBVIRT-INVALID", f"not a {what} name: {name!r}")


class PoolGroup:
    METHODS = (
        "createStoragePool",
        "deleteStoragePool",
        "getStoragePools",
        "createDisk",
        "deleteDisk",
        "resizeVol",
        "resizeDisk",
        "getDomainBlockInfo",
    )

    def __init__(self, *, contract: ModuleType, host: LibvirtHost) -> None:
        self._contract = contract
        self._host = host
        self._type_names: dict[int, str] = dict(contract.StoragePoolType._VALUES_TO_NAMES)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    # -- pools -----------------------------------------------------------------------

    def _pool_xml(self, pool: Any) -> tuple[str, tuple[str, str, str | None, str | None]]:
        """The XML for a pool of the contract, and what `_describe` will read back of it."""
        kind = _LIBVIRT_TYPES.get(self._type_names.get(pool.type, ""))
        if kind is None:
            fail("LIBVIRT-INVALID", f"unknown storage pool type {pool.type!r}")
        _check_name(pool.name or "", "pool")
        if not pool.targetPath:
            fail("LIBVIRT-INVALID", "a storage pool needs a targetPath")
        root = ET.Element("pool", type=kind)
        _sub(root, "name").text = pool.name
        host: str | None = None
        path: str | None = None
        if kind != "dir":
            if not pool.sourceHost or not pool.sourcePath:
                fail("LIBVIRT-INVALID", f"a {kind} pool needs sourceHost and sourcePath")
            host, path = pool.sourceHost, pool.sourcePath
            source = _sub(root, "source")
            _sub(source, "host", name=host)
            if kind == "netfs":
                _sub(source, "dir", path=path)
                _sub(source, "format", type="nfs")
            else:
                _sub(source, "device", path=path)
        target = _sub(root, "target")
        _sub(target, "path").text = pool.targetPath
        return ET.tostring(root, encoding="unicode"), (kind, pool.targetPath, host, path)

    def _create_pool(self, name: str, xml: str, wanted: tuple[Any, ...]) -> None:
        conn = self._host.conn
        try:
            existing = conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise
            existing = None
        if existing is not None:
            if _describe(existing.XMLDesc(0)) != wanted:
                fail("LIBVIRT-STATE", f"a different storage pool named {name!r} exists")
            pool = existing
        else:
            pool = conn.storagePoolDefineXML(xml, 0)
            try:
                # An iSCSI pool has nothing to build: its LUNs exist on the target.
                if wanted[0] != "iscsi":
                    pool.build(0)
            except libvirt.libvirtError:
                pool.undefine()
                raise
        # Identical and there already: only what is missing is done.
        if not pool.isActive():
            pool.create(0)
        if not pool.autostart():
            pool.setAutostart(1)

    def _delete_pool(self, name: str) -> None:
        pool = self._host.conn.storagePoolLookupByName(name)
        if pool.isActive():
            pool.destroy()
        pool.undefine()

    def _pools(self) -> list[Any]:
        found = []
        names = {v: k for k, v in _LIBVIRT_TYPES.items()}
        for pool in self._host.conn.listAllStoragePools(0):
            kind, target, host, path = _describe(pool.XMLDesc(0))
            if kind not in names:
                continue  # a pool the contract cannot describe (lvm, rbd, ...)
            _state, capacity, _allocation, available = pool.info()
            found.append(
                self._contract.StoragePool(
                    name=pool.name(),
                    type=getattr(self._contract.StoragePoolType, names[kind]),
                    targetPath=target,
                    sourceHost=host,
                    sourcePath=path,
                    capacityBytes=capacity,
                    availableBytes=available,
                )
            )
        return found

    async def createStoragePool(self, pool: Any) -> None:
        xml, wanted = self._pool_xml(pool)
        await self._host.call(self._create_pool, pool.name, xml, wanted)

    async def deleteStoragePool(self, name: str) -> None:
        await self._host.call(self._delete_pool, name)

    async def getStoragePools(self) -> list[Any]:
        return await self._host.call(self._pools)

    # -- volumes ---------------------------------------------------------------------

    def _volume(self, pool: str, name: str) -> libvirt.virStorageVol:
        return self._host.conn.storagePoolLookupByName(pool).storageVolLookupByName(name)

    async def createDisk(self, pool: str, name: str, capacityBytes: int, format: str) -> str:
        _check_name(name, "disk")
        if format not in _FORMATS:
            fail("LIBVIRT-INVALID", f"format must be raw or qcow2, not {format!r}")
        _check_capacity(capacityBytes)
        root = ET.Element("volume")
        _sub(root, "name").text = name
        _sub(root, "capacity", unit="bytes").text = str(capacityBytes)
        _sub(_sub(root, "target"), "format", type=format)
        xml = ET.tostring(root, encoding="unicode")

        def create() -> str:
            vol = self._host.conn.storagePoolLookupByName(pool).createXML(xml, 0)
            return str(vol.path())

        return await self._host.call(create)

    async def deleteDisk(self, pool: str, name: str) -> None:
        await self._host.call(lambda: self._volume(pool, name).delete(0))

    async def resizeVol(self, pool: str, name: str, capacityBytes: int) -> None:
        _check_capacity(capacityBytes)
        await self._host.call(lambda: self._volume(pool, name).resize(capacityBytes, 0))

    # -- the disks of domains ------------------------------------------------------------

    async def resizeDisk(self, uuid: str, diskPath: str, capacityBytes: int) -> None:
        uuid = parse_uuid(uuid)
        _check_capacity(capacityBytes)

        def resize() -> None:
            conn = self._host.conn
            dom = conn.lookupByUUIDString(uuid)
            if dom.isActive():
                # The guest sees the new size at once.
                dom.blockResize(diskPath, capacityBytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            else:
                # No running qemu to ask: the file is resized as a volume of its pool.
                conn.storageVolLookupByPath(diskPath).resize(capacityBytes, 0)

        await self._host.call(resize)

    async def getDomainBlockInfo(self, uuid: str, diskPath: str) -> Any:
        uuid = parse_uuid(uuid)

        def info() -> Any:
            dom = self._host.conn.lookupByUUIDString(uuid)
            capacity, allocation, physical = dom.blockInfo(diskPath, 0)
            return self._contract.BlockInfo(
                capacityBytes=capacity, allocationBytes=allocation, physicalBytes=physical
            )

        return await self._host.call(info)
