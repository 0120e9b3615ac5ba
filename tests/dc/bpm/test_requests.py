"""The BPM's requests on the bus: ConvertTemplateDisk (as the link hands it over from
central) and ConvertDisk (from vfactory), their bad inputs, repeats and shortcuts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from abiquo_dc.bpm.errors import NotMounted
from abiquo_dc.bpm.service import BusinessProcessManager
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.definitions import DiskFormat, HypervisorType
from abiquo_dc.protocol.jobs import ConvertDisk, DiskConverted
from abiquo_dc.protocol.templates import ConversionState
from abiquo_runtime.errors import InvalidInput, NotFound
from tests.dc.bpm.harness import (
    MARK,
    MIB,
    Harness,
    compare,
    make,
    qemu_img,
    repository,
    running_bpm,
    slow_qemu_img,
    write_random,
    write_raw,
)

RAW = "1/t/disk.raw"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = repository(tmp_path / "repo")
    write_raw(root / RAW)
    return root


def _unsafe_overlay(root: Path) -> None:
    subprocess.run(
        [
            qemu_img(),
            "create",
            "-f",
            "qcow2",
            "-b",
            str(root / RAW),
            "-F",
            "raw",
            str(root / "1/t/overlay.qcow2"),
        ],
        check=True,
        capture_output=True,
    )


def _vmdk_reading_elsewhere(root: Path) -> None:
    make(root / RAW, DiskFormat.VMDK_FLAT, root / "1/t/flat.vmdk")
    descriptor = root / "1/t/flat.vmdk"
    descriptor.write_text(descriptor.read_text().replace('"flat-flat.vmdk"', '"/etc/hostname"'))


def _qed(root: Path) -> None:
    subprocess.run(
        [qemu_img(), "create", "-f", "qed", str(root / "1/t/disk.qed"), "4M"],
        check=True,
        capture_output=True,
    )


def _escape(root: Path) -> None:
    (root / "1/out").symlink_to("/etc")


BAD: list[tuple[str, str, DiskFormat, DiskFormat, Callable[[Path], None] | None, str]] = [
    ("unknown target", RAW, DiskFormat.RAW, DiskFormat.UNKNOWN, None, "BPM-FORMAT"),
    ("unknown source", RAW, DiskFormat.INCOMPATIBLE, DiskFormat.RAW, None, "BPM-FORMAT"),
    ("a qed", "1/t/disk.qed", DiskFormat.RAW, DiskFormat.QCOW2_SPARSE, _qed, "BPM-FORMAT"),
    ("climbing", "../../etc/hostname", DiskFormat.RAW, DiskFormat.QCOW2_SPARSE, None, "BPM-PATH"),
    ("absolute", "/etc/hostname", DiskFormat.RAW, DiskFormat.QCOW2_SPARSE, None, "BPM-PATH"),
    ("link out", "1/out/hostname", DiskFormat.RAW, DiskFormat.QCOW2_SPARSE, _escape, "BPM-PATH"),
    ("directory", "1/t", DiskFormat.RAW, DiskFormat.QCOW2_SPARSE, None, "BPM-PATH"),
    ("missing", "1/t/none.raw", DiskFormat.RAW, DiskFormat.QCOW2_SPARSE, None, "BPM-NOT-FOUND"),
    (
        "declared otherwise",
        RAW,
        DiskFormat.VMDK_SPARSE,
        DiskFormat.QCOW2_SPARSE,
        None,
        "BPM-FORMAT-MISMATCH",
    ),
    (
        "backing file",
        "1/t/overlay.qcow2",
        DiskFormat.QCOW2_SPARSE,
        DiskFormat.RAW,
        _unsafe_overlay,
        "BPM-UNSAFE-SOURCE",
    ),
    (
        "extent elsewhere",
        "1/t/flat.vmdk",
        DiskFormat.VMDK_FLAT,
        DiskFormat.RAW,
        _vmdk_reading_elsewhere,
        "BPM-UNSAFE-SOURCE",
    ),
]


@pytest.mark.parametrize(
    ("source", "source_format", "target_format", "prepare", "code"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
async def test_a_bad_request_is_answered_failed_with_its_code(
    root: Path,
    source: str,
    source_format: DiskFormat,
    target_format: DiskFormat,
    prepare: Callable[[Path], None] | None,
    code: str,
) -> None:
    if prepare is not None:
        # In a thread: it may run qemu-img, which would hold the loop.
        await asyncio.to_thread(prepare, root)
    async with running_bpm(root) as h:
        await h.ask("bad-1", source, source_format, target_format)
        note = await h.ended("bad-1")
        assert h.bpm.conversions() == []
    assert note.state is ConversionState.FAILED
    assert note.error.startswith(f"{code}: "), note.error
    assert h.states("bad-1") == ["FAILED"]
    assert not (root / "1/t/formats").exists()


async def test_an_unmounted_repository_is_a_temporary_error(root: Path) -> None:
    async with running_bpm(root) as h:
        (root / MARK).unlink()
        with pytest.raises(NotMounted, match="repository not mounted"):
            await h.ask("c-1", RAW, DiskFormat.RAW, DiskFormat.QCOW2_SPARSE)
        # Nothing was said: the link gives the request back to its queue.
        await h.bus.drain(1.0)
        assert h.notes == []
        (root / MARK).touch()
        await h.ask("c-1", RAW, DiskFormat.RAW, DiskFormat.QCOW2_SPARSE)
        assert (await h.ended("c-1")).state is ConversionState.DONE


async def test_a_request_notifies_queued_start_and_done(root: Path) -> None:
    async with running_bpm(root) as h:
        await h.ask("c-1", RAW, DiskFormat.RAW, DiskFormat.VHD_SPARSE)
        done = await h.ended("c-1")
    assert h.states("c-1")[0] == "QUEUED"
    assert h.states("c-1")[1] == "START"
    assert h.states("c-1")[-1] == "DONE"
    assert done.target_path == "1/t/formats/VHD_SPARSE/disk.vhd"
    assert done.target_format is DiskFormat.VHD_SPARSE
    assert done.progress == 100.0
    assert all(n.dc_uuid == "dc-test" for n in h.notes)


async def test_a_conversion_made_before_is_done_at_once_unless_its_source_changed(
    root: Path,
) -> None:
    async with running_bpm(root) as h:
        await h.ask("c-1", RAW, DiskFormat.RAW, DiskFormat.VDI_SPARSE)
        first = await h.ended("c-1")
        made = root / first.target_path
        written = made.stat().st_mtime_ns
        await h.ask("c-2", RAW, DiskFormat.RAW, DiskFormat.VDI_SPARSE)
        again = await h.ended("c-2")
        assert h.states("c-2") == ["DONE"]
        assert again.target_path == first.target_path
        assert made.stat().st_mtime_ns == written
        # The template's disk written since: its conversion is stale, and made again.
        later = time.time() + 5
        os.utime(root / RAW, (later, later))
        await h.ask("c-3", RAW, DiskFormat.RAW, DiskFormat.VDI_SPARSE)
        assert (await h.ended("c-3")).state is ConversionState.DONE
        assert "START" in h.states("c-3")
        assert made.stat().st_mtime_ns != written


async def test_a_request_delivered_again_is_the_same_request(root: Path) -> None:
    async with running_bpm(root) as h:
        await h.ask("c-1", RAW, DiskFormat.RAW, DiskFormat.QCOW2_FLAT)
        await h.ask("c-1", RAW, DiskFormat.RAW, DiskFormat.QCOW2_FLAT)
        await h.ended("c-1")
        assert h.states("c-1").count("START") == 1
        # Once ended, it is answered with its outcome, not run again.
        await h.ask("c-1", RAW, DiskFormat.RAW, DiskFormat.QCOW2_FLAT)
        await h.until(lambda: h.states("c-1").count("DONE") == 2)
        assert h.states("c-1").count("START") == 1
        assert h.of("c-1")[-1].target_path == "1/t/formats/QCOW2_FLAT/disk.qcow2"


async def test_a_disk_declared_in_the_target_format_is_its_own_answer(root: Path) -> None:
    async with running_bpm(root) as h:
        await h.ask("c-1", RAW, DiskFormat.RAW, DiskFormat.RAW)
        note = await h.ended("c-1")
    assert h.states("c-1") == ["DONE"]
    assert note.target_path == RAW


# -- ConvertDisk, from vfactory ---------------------------------------------------------------


def convert_disk(path: str, fmt: DiskFormat, *targets: DiskFormat) -> ConvertDisk:
    return ConvertDisk(
        repository_path=path,
        source_format=fmt,
        target_formats=list(targets),
        hypervisor=HypervisorType.KVM,
    )


async def _request(h: Harness, message: ConvertDisk) -> DiskConverted:
    reply = await h.bus.request(message, timeout=30)
    assert isinstance(reply, DiskConverted)
    return reply


async def test_convert_disk_is_answered_once_the_disk_exists(root: Path) -> None:
    async with running_bpm(root) as h:
        vmdk = await asyncio.to_thread(
            make, root / RAW, DiskFormat.VMDK_STREAM_OPTIMIZED, root / "1/t/disk.vmdk"
        )
        ask = convert_disk(
            "1/t/disk.vmdk",
            DiskFormat.VMDK_STREAM_OPTIMIZED,
            DiskFormat.UNKNOWN,
            DiskFormat.QCOW2_SPARSE,
            DiskFormat.RAW,
        )
        reply = await _request(h, ask)
        # The first of the asked formats the BPM makes.
        assert reply.format is DiskFormat.QCOW2_SPARSE
        assert reply.repository_path == "1/t/formats/QCOW2_SPARSE/disk.qcow2"
        made = root / reply.repository_path
        identical = await compare(vmdk, DiskFormat.VMDK_STREAM_OPTIMIZED, made, reply.format)
        assert identical == "Images are identical."
        written = made.stat().st_mtime_ns
        # Asked again: at once, from what was made.
        started = time.monotonic()
        assert (await _request(h, ask)).repository_path == reply.repository_path
        assert time.monotonic() - started < 2.0
        assert made.stat().st_mtime_ns == written
        # vfactory's requests are not central's: nothing is notified of them.
        await h.bus.drain(1.0)
        assert h.notes == []


async def test_convert_disk_of_a_disk_in_a_format_asked_for_is_the_disk(root: Path) -> None:
    async with running_bpm(root) as h:
        reply = await _request(
            h, convert_disk(RAW, DiskFormat.RAW, DiskFormat.QCOW2_SPARSE, DiskFormat.RAW)
        )
        assert (reply.repository_path, reply.format) == (RAW, DiskFormat.RAW)
        assert not (root / "1/t/formats").exists()


async def test_convert_disk_bad_inputs_raise(root: Path) -> None:
    async with running_bpm(root) as h:
        with pytest.raises(InvalidInput, match="at least one"):
            await h.bus.request(convert_disk(RAW, DiskFormat.RAW), timeout=5)
        with pytest.raises(InvalidInput, match="makes none") as unknown:
            await h.bus.request(convert_disk(RAW, DiskFormat.RAW, DiskFormat.UNKNOWN), timeout=5)
        assert unknown.value.code == "BPM-FORMAT"
        with pytest.raises(NotFound) as missing:
            await h.bus.request(
                convert_disk("1/t/none.raw", DiskFormat.RAW, DiskFormat.QCOW2_SPARSE), timeout=5
            )
        assert missing.value.code == "BPM-NOT-FOUND"
        with pytest.raises(InvalidInput) as mismatch:
            await h.bus.request(
                convert_disk(RAW, DiskFormat.VDI_FLAT, DiskFormat.QCOW2_SPARSE), timeout=5
            )
        assert mismatch.value.code == "BPM-FORMAT-MISMATCH"
        with pytest.raises(InvalidInput) as climbing:
            await h.bus.request(
                convert_disk("../x.raw", DiskFormat.RAW, DiskFormat.QCOW2_SPARSE), timeout=5
            )
        assert climbing.value.code == "BPM-PATH"


async def test_convert_disk_and_a_template_conversion_of_the_same_disk_join(
    root: Path, tmp_path: Path
) -> None:
    write_random(root / "1/t/big.raw", 8 * MIB)
    slow, _ = slow_qemu_img(tmp_path, rate="8M")
    async with running_bpm(root, executable=str(slow)) as h:
        ask = asyncio.ensure_future(
            _request(h, convert_disk("1/t/big.raw", DiskFormat.RAW, DiskFormat.VMDK_SPARSE))
        )
        try:
            await h.until(lambda: len(h.bpm.conversions()) == 1)
            await h.ask("c-1", "1/t/big.raw", DiskFormat.RAW, DiskFormat.VMDK_SPARSE)
            [listed] = h.bpm.conversions()
            assert listed.requests[1] == "c-1"
            assert listed.requests[0].startswith("vf-")
            reply = await ask
        finally:
            await asyncio.wait([ask])
        note = await h.ended("c-1")
        assert note.target_path == reply.repository_path == "1/t/formats/VMDK_SPARSE/big.vmdk"
        # Joined while it ran: told QUEUED, then where it stood.
        assert h.states("c-1")[:2] == ["QUEUED", "START"]


async def test_the_older_construction_works_without_a_journal(root: Path) -> None:
    """BusinessProcessManager(bus=..., dc_uuid=...) as the composition root called it:
    the default settings, no journal."""
    bus = Bus()
    bpm = BusinessProcessManager(bus=bus, dc_uuid="dc-test")
    assert bpm.journal_path is None
    assert bpm.repository_settings.path == "/opt/vm_repository"
    await bpm.start()
    try:
        await bpm.wait_running(5.0)
        assert bpm.conversions() == []
    finally:
        await bpm.stop()
        await bus.close()
