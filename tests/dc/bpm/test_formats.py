"""Telling a disk's real format (formats.py) and keeping paths inside the repository
(repository.py), on files qemu-img made."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from abiquo_dc.bpm.errors import (
    BadFormat,
    BadPath,
    NotMounted,
    SourceMissing,
    UnsafeSource,
)
from abiquo_dc.bpm.formats import TARGETS, detect, referenced_files, target
from abiquo_dc.bpm.repository import TEMP_PREFIX, Repository
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.settings import RepositorySettings
from tests.dc.bpm.harness import (
    FORMATS,
    MARK,
    disk_name,
    make,
    qemu_img,
    repository,
    write_raw,
)


def info(path: Path, driver: str | None = None) -> dict[str, object]:
    command = [qemu_img(), "info", "--output=json", str(path)]
    if driver:
        command[2:2] = ["-f", driver]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    found: dict[str, object] = json.loads(done.stdout)
    return found


def edges(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    return data[:512], data[-512:]


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict[DiskFormat, Path]:
    root = tmp_path_factory.mktemp("formats")
    raw = write_raw(root / "raw" / disk_name(DiskFormat.RAW))
    made = {DiskFormat.RAW: raw}
    for fmt in FORMATS:
        if fmt is not DiskFormat.RAW:
            made[fmt] = make(raw, fmt, root / fmt.value / disk_name(fmt))
    return made


# -- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_each_format_is_told_from_what_qemu_img_probes(
    disks: dict[DiskFormat, Path], fmt: DiskFormat
) -> None:
    path = disks[fmt]
    found = detect(info(path), *edges(path))
    assert fmt in found.formats
    if fmt in (DiskFormat.QCOW2_FLAT, DiskFormat.QCOW2_SPARSE):
        # qemu-img cannot tell metadata preallocation from none: both answer.
        assert found.formats == {DiskFormat.QCOW2_FLAT, DiskFormat.QCOW2_SPARSE}
    else:
        assert found.formats == {fmt}
    assert found.driver == TARGETS[fmt].driver


def test_a_fixed_vhd_probed_as_raw_is_a_vhd(disks: dict[DiskFormat, Path]) -> None:
    path = disks[DiskFormat.VHD_FLAT]
    probed = info(path)
    assert probed["format"] == "raw"
    assert detect(probed, *edges(path)).driver == "vpc"


def test_a_raw_disk_ending_like_a_vhd_footer_is_still_raw(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "disk.raw")
    with path.open("r+b") as f:
        f.seek(-512, os.SEEK_END)
        # The cookie, a fixed disk's type, and a checksum that does not add up.
        f.write(b"conectix" + bytes(52) + (2).to_bytes(4, "big") + b"\x00\x00\x00\x01")
    assert detect(info(path), *edges(path)).formats == {DiskFormat.RAW}


@pytest.mark.parametrize("driver", ["qed", "qcow"])
def test_formats_the_bpm_does_not_convert_are_refused(tmp_path: Path, driver: str) -> None:
    path = tmp_path / f"disk.{driver}"
    subprocess.run(
        [qemu_img(), "create", "-f", driver, str(path), "4M"], check=True, capture_output=True
    )
    with pytest.raises(BadFormat, match=driver):
        detect(info(path), *edges(path))


def test_formats_that_are_no_images_are_no_targets() -> None:
    with pytest.raises(BadFormat):
        target(DiskFormat.UNKNOWN)
    with pytest.raises(BadFormat):
        target(DiskFormat.INCOMPATIBLE)


def test_a_backing_file_is_refused(disks: dict[DiskFormat, Path], tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        [
            qemu_img(),
            "create",
            "-f",
            "qcow2",
            "-b",
            str(disks[DiskFormat.RAW]),
            "-F",
            "raw",
            str(overlay),
        ],
        check=True,
        capture_output=True,
    )
    with pytest.raises(UnsafeSource, match="backing file"):
        referenced_files(info(overlay))


def test_a_flat_vmdk_names_its_extent(disks: dict[DiskFormat, Path]) -> None:
    path = disks[DiskFormat.VMDK_FLAT]
    assert referenced_files(info(path)) == [str(path.parent / "disk-flat.vmdk")]


# -- paths -----------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    root = repository(tmp_path / "repo")
    write_raw(root / "1" / "t" / "disk.raw", size=1024 * 1024)
    return Repository(RepositorySettings(path=str(root), mark_file=MARK))


@pytest.mark.parametrize(
    "rel", ["", "/etc/passwd", "//etc/passwd", "../repo/1/t/disk.raw", "1/../../x", "a\x00b"]
)
def test_paths_that_are_absolute_or_climb_out_are_refused(repo: Repository, rel: str) -> None:
    with pytest.raises(BadPath):
        repo.open_source(rel)


def test_a_symbolic_link_out_of_the_repository_is_refused(repo: Repository, tmp_path: Path) -> None:
    outside = write_raw(tmp_path / "outside" / "secret.raw", size=1024 * 1024)
    root = Path(repo.settings.path)
    (root / "1" / "escape").symlink_to(outside.parent)
    (root / "1" / "t" / "link.raw").symlink_to(outside)
    for rel in ("1/escape/secret.raw", "1/t/link.raw"):
        with pytest.raises(BadPath, match="leads out"):
            repo.open_source(rel)


def test_a_link_inside_the_repository_is_followed_to_one_name(repo: Repository) -> None:
    root = Path(repo.settings.path)
    (root / "2").symlink_to(root / "1")
    assert repo.open_source("2/t/disk.raw").rel == "1/t/disk.raw"


def test_missing_disks_directories_and_unmounted_repositories(repo: Repository) -> None:
    with pytest.raises(SourceMissing):
        repo.open_source("1/t/nothing.raw")
    with pytest.raises(BadPath, match="not a regular file"):
        repo.open_source("1/t")
    (Path(repo.settings.path) / MARK).unlink()
    with pytest.raises(NotMounted, match="repository not mounted"):
        repo.open_source("1/t/disk.raw")


def test_where_conversions_go(repo: Repository) -> None:
    root = Path(repo.settings.path)
    source = repo.open_source("1/t/disk.raw")
    placed = repo.placement(source, TARGETS[DiskFormat.VMDK_SPARSE])
    assert placed.rel == "1/t/formats/VMDK_SPARSE/disk.vmdk"
    # A conversion converted again goes beside the template's others.
    again = write_raw(root / "1/t/formats/VHD_FLAT/disk.vhd", size=1024 * 1024)
    source = repo.open_source(str(again.relative_to(root)))
    assert repo.placement(source, TARGETS[DiskFormat.RAW]).rel == "1/t/formats/RAW/disk.raw"
    # ... never out of the repository, even when its root is called "formats".
    root = repository(root.parent / "formats")
    inner = Repository(RepositorySettings(path=str(root), mark_file=MARK))
    write_raw(root / "RAW/disk.raw", size=1024 * 1024)
    source = inner.open_source("RAW/disk.raw")
    assert inner.placement(source, TARGETS[DiskFormat.VDI_SPARSE]).rel == (
        "RAW/formats/VDI_SPARSE/disk.vdi"
    )


def test_a_sweep_removes_only_temporary_files(tmp_path: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}abc").mkdir()
    (tmp_path / f"{TEMP_PREFIX}abc" / "disk.qcow2").write_bytes(b"half")
    (tmp_path / f"{TEMP_PREFIX}file").write_bytes(b"half")
    (tmp_path / "disk.qcow2").write_bytes(b"whole")
    assert sorted(Repository.sweep(tmp_path)) == [f"{TEMP_PREFIX}abc", f"{TEMP_PREFIX}file"]
    assert [p.name for p in tmp_path.iterdir()] == ["disk.qcow2"]
    assert Repository.sweep(tmp_path / "absent") == []
