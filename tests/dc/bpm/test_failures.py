"""When conversions go wrong: qemu-img failing, a converted disk that does not match its
source, a conversion too slow, qemu-img missing, the repository away at start, the BPM
stopping under a waiting request. Each ends with a stable code and no file left."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from abiquo_dc.bpm.errors import BpmStopped
from abiquo_dc.bpm.service import BusinessProcessManager
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.definitions import DiskFormat, HypervisorType
from abiquo_dc.protocol.jobs import ConvertDisk
from abiquo_dc.protocol.messages import ServiceState
from abiquo_dc.protocol.templates import ConversionState
from abiquo_dc.settings import BpmSettings, RepositorySettings
from abiquo_runtime.backoff import Backoff
from tests.dc.bpm.harness import (
    MARK,
    MIB,
    alive,
    pids_in,
    qemu_img,
    repository,
    running_bpm,
    slow_qemu_img,
    temporaries,
    until,
    write_random,
    write_raw,
)

RAW = "1/t/disk.raw"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = repository(tmp_path / "repo")
    write_raw(root / RAW)
    return root


def wrapper(directory: Path, on_convert: str) -> Path:
    """A qemu-img that runs `on_convert` (sh) for `convert`, with $TARGET its last
    argument, and is the real one otherwise."""
    script = directory / "qemu-img-wrapper"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = convert ]; then\n'
        '  for TARGET in "$@"; do :; done\n'
        f"  {on_convert}\n"
        "fi\n"
        f'exec "{qemu_img()}" "$@"\n'
    )
    script.chmod(0o755)
    return script


async def test_qemu_img_failing_fails_the_conversion_with_its_message(
    root: Path, tmp_path: Path
) -> None:
    failing = wrapper(tmp_path, 'echo "qemu-img: simulated write error" >&2; exit 1')
    async with running_bpm(root, executable=str(failing)) as h:
        await h.ask("c-1", RAW, DiskFormat.RAW, DiskFormat.QCOW2_SPARSE)
        failed = await h.ended("c-1")
    assert failed.state is ConversionState.FAILED
    assert failed.error.startswith("BPM-QEMU-IMG: qemu-img convert to QCOW2_SPARSE failed")
    assert "simulated write error" in failed.error
    assert temporaries(root / "1/t/formats/QCOW2_SPARSE") == []
    assert not (root / "1/t/formats/QCOW2_SPARSE/disk.qcow2").exists()


async def test_a_converted_disk_that_differs_from_its_source_is_not_kept(
    root: Path, tmp_path: Path
) -> None:
    # The real conversion, then a byte of the result changed behind its back.
    corrupting = wrapper(
        tmp_path,
        f'"{qemu_img()}" "$@" || exit $?\n'
        '  printf "X" | dd of="$TARGET" bs=1 seek=100 conv=notrunc 2>/dev/null\n'
        "  exit 0",
    )
    async with running_bpm(root, executable=str(corrupting)) as h:
        # A fixed VHD starts with the disk's data: byte 100 is the guest's.
        await h.ask("c-1", RAW, DiskFormat.RAW, DiskFormat.VHD_FLAT)
        corrupt = await h.ended("c-1")
    assert corrupt.state is ConversionState.FAILED
    assert corrupt.error.startswith("BPM-VERIFY: the converted disk differs"), corrupt.error
    assert list((root / "1/t/formats/VHD_FLAT").iterdir()) == []


async def test_a_conversion_past_its_timeout_is_killed(root: Path, tmp_path: Path) -> None:
    write_random(root / "1/t/big.raw", 8 * MIB)
    slow, pids = slow_qemu_img(tmp_path, rate="1M")
    async with running_bpm(root, executable=str(slow), timeout=0.5) as h:
        await h.ask("c-1", "1/t/big.raw", DiskFormat.RAW, DiskFormat.QCOW2_SPARSE)
        failed = await h.ended("c-1")
    assert failed.state is ConversionState.FAILED
    assert failed.error.startswith("BPM-TIMEOUT: "), failed.error
    assert not alive(pids_in(pids)[-1])
    assert temporaries(root / "1/t/formats/QCOW2_SPARSE") == []


async def test_without_qemu_img_the_bpm_fails_to_start(root: Path, tmp_path: Path) -> None:
    bus = Bus()
    bpm = BusinessProcessManager(
        bus=bus,
        dc_uuid="dc-test",
        repository=RepositorySettings(path=str(root), mark_file=MARK),
        settings=BpmSettings(qemu_img=str(tmp_path / "no-qemu-img")),
    )
    await bpm.start()
    try:
        with pytest.raises(RuntimeError, match="qemu-utils"):
            await bpm.wait_running(5.0)
        assert bpm.state is ServiceState.FAILED
    finally:
        await bpm.stop()
        await bus.close()


async def test_unfinished_requests_wait_for_the_repository_to_be_mounted(
    root: Path, tmp_path: Path
) -> None:
    write_random(root / "1/t/big.raw", 8 * MIB)
    slow, _ = slow_qemu_img(tmp_path, rate="4M")
    state = tmp_path / "state"
    async with running_bpm(root, state_dir=state, executable=str(slow)) as h:
        await h.ask("c-1", "1/t/big.raw", DiskFormat.RAW, DiskFormat.VMDK_SPARSE)
        await h.reached("c-1", ConversionState.PROGRESS)
    (root / MARK).unlink()
    bus = Bus()
    bpm = BusinessProcessManager(
        bus=bus,
        dc_uuid="dc-test",
        repository=RepositorySettings(path=str(root), mark_file=MARK),
        settings=BpmSettings(qemu_img=qemu_img()),
        state_dir=state,
        backoff=lambda: Backoff(initial=0.02, maximum=0.05),
    )
    await bpm.start()
    try:
        await until(lambda: bpm.state is ServiceState.RETRYING)
        assert "repository not mounted" in bpm.reason
        (root / MARK).touch()
        await bpm.wait_running(5.0)
        await until(lambda: bpm.conversion("c-1").state is ConversionState.DONE)
    finally:
        await bpm.stop()
        await bus.close()


async def test_a_waiting_convert_disk_is_told_when_the_bpm_stops(
    root: Path, tmp_path: Path
) -> None:
    write_random(root / "1/t/big.raw", 8 * MIB)
    slow, _ = slow_qemu_img(tmp_path, rate="2M")
    ask = ConvertDisk(
        repository_path="1/t/big.raw",
        source_format=DiskFormat.RAW,
        target_formats=[DiskFormat.QCOW2_SPARSE],
        hypervisor=HypervisorType.KVM,
    )
    ask_too = ConvertDisk(
        repository_path="1/t/big.raw",
        source_format=DiskFormat.RAW,
        target_formats=[DiskFormat.VDI_SPARSE],
        hypervisor=HypervisorType.KVM,
    )
    async with running_bpm(root, executable=str(slow)) as h:
        running = asyncio.ensure_future(h.bus.request(ask, timeout=30))
        waiting = asyncio.ensure_future(h.bus.request(ask_too, timeout=30))
        await h.until(lambda: len(h.bpm.conversions()) == 2)
    for request in (running, waiting):
        with pytest.raises(BpmStopped):
            await request
