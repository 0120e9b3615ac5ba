"""Storage pools, volumes and domain disks through thrift, over libvirt's test driver.

The test driver resizes nothing (virStorageVolResize, virDomainBlockResize are not
supported by it): those calls are checked to reach libvirt and fail as LIBVIRT-ERROR.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aim.domains import DomainGroup
from aim.pools import PoolGroup
from tests.aim.test_domains import aim, domain_xml, node_uri

__all__ = ["node_uri"]  # the fixture, imported to be used here


def both() -> list[Any]:
    return [
        lambda c, h: DomainGroup(contract=c, host=h),
        lambda c, h: PoolGroup(contract=c, host=h),
    ]


def pool(contract: ModuleType, name: str, kind: str, target: str, **source: str) -> Any:
    return contract.StoragePool(
        name=name, type=getattr(contract.StoragePoolType, kind), targetPath=target, **source
    )


async def test_pools_created_listed_and_deleted(
    contract: ModuleType, node_uri: str, tmp_path: Path
) -> None:
    wanted = [
        pool(contract, "local", "DIR", str(tmp_path / "local")),
        pool(
            contract, "nfs", "NFS", str(tmp_path / "nfs"), sourceHost="filer", sourcePath="/export"
        ),
        pool(
            contract,
            "lun",
            "ISCSI",
            "/dev/disk/by-path",
            sourceHost="10.0.0.9",
            sourcePath="iqn.2024-01.com.example:store",
        ),
    ]
    async with aim(contract, node_uri, both()) as (client, _):
        for p in wanted:
            await client.createStoragePool(p)
            await client.createStoragePool(p)  # identical: nothing to do
        found = {p.name: p for p in await client.getStoragePools()}
        assert set(found) == {"local", "nfs", "lun"}
        for p in wanted:
            got = found[p.name]
            assert (got.type, got.targetPath) == (p.type, p.targetPath)
            assert (got.sourceHost, got.sourcePath) == (p.sourceHost, p.sourcePath)
            assert got.capacityBytes > 0 and 0 <= got.availableBytes <= got.capacityBytes
        # The same name for another pool is refused.
        other = pool(contract, "local", "DIR", str(tmp_path / "elsewhere"))
        with pytest.raises(contract.LibvirtException) as clash:
            await client.createStoragePool(other)
        assert clash.value.code == "LIBVIRT-STATE"
        await client.deleteStoragePool("nfs")
        assert {p.name for p in await client.getStoragePools()} == {"local", "lun"}
        with pytest.raises(contract.LibvirtException) as gone:
            await client.deleteStoragePool("nfs")
        assert gone.value.code == "LIBVIRT-NOT-FOUND"


async def test_invalid_pools(contract: ModuleType, node_uri: str, tmp_path: Path) -> None:
    bad = [
        pool(contract, "", "DIR", str(tmp_path)),
        pool(contract, "a/b", "DIR", str(tmp_path)),
        pool(contract, "x", "DIR", ""),
        pool(contract, "x", "NFS", str(tmp_path), sourceHost="filer"),
        pool(contract, "x", "ISCSI", str(tmp_path), sourcePath="iqn.x"),
        contract.StoragePool(name="x", type=99, targetPath=str(tmp_path)),
    ]
    async with aim(contract, node_uri, both()) as (client, _):
        for p in bad:
            with pytest.raises(contract.LibvirtException) as invalid:
                await client.createStoragePool(p)
            assert invalid.value.code == "LIBVIRT-INVALID", p
        # Markup in a name is escaped, not interpreted: the pool is named with it.
        odd = "<a&'\">"
        await client.createStoragePool(pool(contract, odd, "DIR", str(tmp_path / "<o>")))
        [made] = await client.getStoragePools()
        assert (made.name, made.targetPath) == (odd, str(tmp_path / "<o>"))


async def test_disks(contract: ModuleType, node_uri: str, tmp_path: Path) -> None:
    target = str(tmp_path / "local")
    async with aim(contract, node_uri, both()) as (client, _):
        await client.createStoragePool(pool(contract, "local", "DIR", target))
        path = await client.createDisk("local", "vm1.qcow2", 10 * 1024**2, "qcow2")
        assert path == f"{target}/vm1.qcow2"
        assert await client.createDisk("local", "vm1.raw", 1024**2, "raw") == f"{target}/vm1.raw"
        for args, code in [
            (("local", "x", 1024, "vmdk"), "LIBVIRT-INVALID"),
            (("local", "x", 0, "raw"), "LIBVIRT-INVALID"),
            (("local", "../x", 1024, "raw"), "LIBVIRT-INVALID"),
            (("nowhere", "x", 1024, "raw"), "LIBVIRT-NOT-FOUND"),
        ]:
            with pytest.raises(contract.LibvirtException) as bad:
                await client.createDisk(*args)
            assert bad.value.code == code, args
        with pytest.raises(contract.LibvirtException) as unsupported:
            await client.resizeVol("local", "vm1.qcow2", 20 * 1024**2)
        assert unsupported.value.code == "LIBVIRT-ERROR"  # the test driver cannot
        with pytest.raises(contract.LibvirtException) as missing:
            await client.resizeVol("local", "nothing", 20 * 1024**2)
        assert missing.value.code == "LIBVIRT-NOT-FOUND"
        await client.deleteDisk("local", "vm1.qcow2")
        with pytest.raises(contract.LibvirtException) as deleted:
            await client.deleteDisk("local", "vm1.qcow2")
        assert deleted.value.code == "LIBVIRT-NOT-FOUND"


async def test_domain_disks(contract: ModuleType, node_uri: str) -> None:
    async with aim(contract, node_uri, both()) as (client, _):
        uid = await client.defineDomain(domain_xml())
        await client.powerOn(uid)
        info = await client.getDomainBlockInfo(uid, "vda")
        assert info.capacityBytes > 0 and info.physicalBytes > 0
        assert info.allocationBytes <= info.physicalBytes
        with pytest.raises(contract.LibvirtException) as unsupported:
            await client.resizeDisk(uid, "vda", 2 * 1024**3)
        assert unsupported.value.code == "LIBVIRT-ERROR"  # the test driver cannot
        with pytest.raises(contract.LibvirtException) as no_disk:
            await client.getDomainBlockInfo(uid, "vdz")
        assert no_disk.value.code == "LIBVIRT-INVALID"
        for call, args in ((client.getDomainBlockInfo, ()), (client.resizeDisk, (1024**3,))):
            with pytest.raises(contract.LibvirtException) as missing:
                await call(str(uuid.uuid4()), "vda", *args)
            assert missing.value.code == "LIBVIRT-NOT-FOUND"
        for size in (-1, None):  # None: the argument left unset by the caller
            with pytest.raises(contract.LibvirtException) as invalid:
                await client.resizeDisk(uid, "vda", size)
            assert invalid.value.code == "LIBVIRT-INVALID"
