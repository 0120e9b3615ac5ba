"""The hypervisor types' table, and the types of a datacenter's machines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.config import hypervisor_types as ht
from abiquo_central.db import tables
from abiquo_central.db.rows import inserted_id
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_dc.protocol.definitions import DiskFormat, HypervisorType
from abiquo_runtime.errors import NotFound

NOW = datetime(2025, 3, 1, tzinfo=UTC)


def test_every_type_is_described_with_abiquos_ids() -> None:
    described = ht.hypervisor_types()
    assert {h.type for h in described} == set(HypervisorType)
    assert {h.name: h.id for h in described} == {
        "VBOX": 1,
        "KVM": 2,
        "XEN_3": 3,
        "VMX_04": 4,
        "HYPERV_301": 5,
        "XENSERVER": 6,
    }


@pytest.mark.parametrize("info", ht.hypervisor_types(), ids=lambda h: h.name)
def test_the_base_format_is_bootable_and_stream_optimized_never(
    info: ht.HypervisorTypeInfo,
) -> None:
    assert info.base_format in info.compatibility
    assert DiskFormat.VMDK_STREAM_OPTIMIZED not in info.compatibility
    assert DiskFormat.UNKNOWN not in info.compatibility
    assert DiskFormat.INCOMPATIBLE not in info.compatibility
    assert info.default_port > 0


def test_the_table() -> None:
    f = DiskFormat
    assert ht.BY_TYPE[HypervisorType.KVM].base_format is f.VMDK_FLAT
    assert set(ht.BY_TYPE[HypervisorType.KVM].compatibility) == {
        f.RAW,
        f.QCOW2_FLAT,
        f.QCOW2_SPARSE,
        f.VMDK_FLAT,
        f.VMDK_SPARSE,
    }
    assert ht.BY_TYPE[HypervisorType.VMX_04].compatibility == (f.VMDK_FLAT, f.VMDK_SPARSE)
    assert ht.BY_TYPE[HypervisorType.XENSERVER].base_format is f.VHD_SPARSE
    assert ht.BY_TYPE[HypervisorType.HYPERV_301].base_format is f.VHD_SPARSE
    assert ht.accepts(HypervisorType.HYPERV_301, f.VHDX)
    assert ht.BY_TYPE[HypervisorType.VBOX].base_format is f.VDI_FLAT
    assert not ht.accepts(HypervisorType.VMX_04, f.VMDK_STREAM_OPTIMIZED)


def test_the_libvirt_types_claim_what_the_datacenter_boots() -> None:
    # Central's table is what the datacenter's drivers accept (their capabilities), never
    # more: a tenant told a format is fine must not have it converted at deploy.
    from abiquo_dc.hypervisors.kvm import KvmDriver, XenDriver

    assert set(ht.BY_TYPE[HypervisorType.KVM].compatibility) == KvmDriver.capabilities.disk_formats
    assert (
        set(ht.BY_TYPE[HypervisorType.XEN_3].compatibility) == XenDriver.capabilities.disk_formats
    )


@pytest.mark.parametrize("key", ["2", "KVM", "kvm"])
def test_found_by_id_or_name(key: str) -> None:
    assert ht.hypervisor_type(key).type is HypervisorType.KVM


@pytest.mark.parametrize("key", ["0", "7", "ESX", ""])
def test_unknown_is_not_found(key: str) -> None:
    with pytest.raises(NotFound) as missing:
        ht.hypervisor_type(key)
    assert missing.value.code == ht.HYPERVISOR_TYPE_NOT_FOUND


async def _machine(engine: AsyncEngine, dc: int, rack: int, ip: str, kind: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            tables.machine.insert().values(
                datacenter_id=dc,
                rack_id=rack,
                name=ip,
                ip=ip,
                type=kind,
                state="MANAGED",
                cpu=4,
                ram=4096,
                created_at=NOW,
            )
        )


async def _rack(engine: AsyncEngine, dc: int) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            tables.rack.insert().values(
                datacenter_id=dc, name="r1", vlan_id_min=2, vlan_id_max=4094, created_at=NOW
            )
        )
        return inserted_id(result)


async def test_a_datacenters_types_are_its_machines(engine: AsyncEngine) -> None:
    dc = await ensure_datacenter(engine, uuid="dc-1", name="Barcelona", location="ES", now=NOW)
    empty = await ensure_datacenter(engine, uuid="dc-2", name="Madrid", location="ES", now=NOW)
    rack = await _rack(engine, dc)
    await _machine(engine, dc, rack, "10.0.0.1", "VMX_04")
    await _machine(engine, dc, rack, "10.0.0.2", "KVM")
    await _machine(engine, dc, rack, "10.0.0.3", "KVM")
    # Left by a newer version: not listed, and no failure either.
    await _machine(engine, dc, rack, "10.0.0.4", "FUTURE_HV")
    assert [h.name for h in await ht.datacenter_types(engine, dc)] == ["KVM", "VMX_04"]
    assert await ht.datacenter_types(engine, empty) == []
    with pytest.raises(NotFound) as missing:
        await ht.datacenter_types(engine, 999_999)
    assert missing.value.code == "DC-0"
