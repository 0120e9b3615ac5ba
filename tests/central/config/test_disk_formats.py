"""The disk formats' descriptions."""

from __future__ import annotations

import pytest

from abiquo_central.config import disk_formats as df
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_runtime.errors import NotFound


def test_every_format_is_described_once_with_abiquos_ids() -> None:
    described = df.disk_formats()
    assert {d.format for d in described} == set(DiskFormat)
    assert [d.id for d in described] == list(range(len(described)))
    assert len({d.uri for d in described}) == len(described)
    assert all(d.description for d in described)
    assert df.BY_FORMAT[DiskFormat.VMDK_FLAT].id == 4
    assert df.BY_FORMAT[DiskFormat.QCOW2_SPARSE].id == 11
    assert df.BY_FORMAT[DiskFormat.VHD_SPARSE].uri.endswith("#monolithic_sparse")


@pytest.mark.parametrize("key", ["4", "VMDK_FLAT", "vmdk_flat"])
def test_found_by_id_or_name(key: str) -> None:
    assert df.disk_format(key).format is DiskFormat.VMDK_FLAT


@pytest.mark.parametrize("key", ["13", "VMDK", "x" * 64])
def test_unknown_is_not_found(key: str) -> None:
    with pytest.raises(NotFound) as missing:
        df.disk_format(key)
    assert missing.value.code == df.DISK_FORMAT_NOT_FOUND
