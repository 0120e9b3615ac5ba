"""Crashes mid-conversion: a BPM in a process of its own killed with SIGKILL while
qemu-img writes, then a new one on the same state directory. What the crash left is
removed at start and the request is tried once more; interrupted twice, it fails. An
orderly stop, however often, is no interruption."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import ConversionState
from tests.dc.bpm.harness import (
    MIB,
    alive,
    compare,
    kill_all,
    pids_in,
    repository,
    running_bpm,
    slow_qemu_img,
    temporaries,
    write_random,
)

BIG = "1/t/big.raw"
TARGET = DiskFormat.QCOW2_SPARSE
REPOSITORY_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = repository(tmp_path / "repo")
    write_random(root / BIG, 8 * MIB)
    return root


@contextlib.asynccontextmanager
async def child(root: Path, state: Path, qemu_img: Path, *request: str) -> AsyncIterator[None]:
    """A BPM process (crash_child.py), killed with SIGKILL on the way out; its log goes to
    child.log beside the state directory."""
    log = await asyncio.to_thread((state.parent / "child.log").open, "ab")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.dc.bpm.crash_child",
        str(root),
        str(state),
        str(qemu_img),
        *request,
        cwd=REPOSITORY_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    log.close()
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            assert (await process.stdout.readline()).strip() == b"ready"
        yield
    finally:
        process.kill()
        await process.wait()


async def writing(directory: Path, pids: Path, runs: int, known: list[Path]) -> list[Path]:
    """Wait until the `runs`th qemu-img convert writes into a new temporary directory."""
    async with asyncio.timeout(30):
        while True:
            fresh = [p for p in temporaries(directory) if p not in known]
            if len(pids_in(pids)) >= runs and fresh and any(f.iterdir() for f in fresh):
                return fresh
            await asyncio.sleep(0.02)


async def test_a_crash_leaves_no_half_file_and_the_request_is_retried_once(
    root: Path, tmp_path: Path
) -> None:
    slow, pids = slow_qemu_img(tmp_path, rate="4M")
    state = tmp_path / "state"
    directory = root / "1/t/formats" / TARGET.value
    async with child(root, state, slow, "c-1", BIG, TARGET.value):
        left = await writing(directory, pids, 1, [])
    # The DC's host crashed with it: its qemu-img is gone too (systemd kills the unit's
    # processes).
    kill_all(pids_in(pids))
    assert all(p.exists() for p in left)
    async with running_bpm(root, state_dir=state, executable=str(slow)) as h:
        # Removed at start, before the retry writes anything.
        assert not any(p.exists() for p in left)
        [listed] = h.bpm.conversions()
        assert (listed.id, listed.retried) == ("c-1", True)
        done = await h.ended("c-1")
    assert done.state is ConversionState.DONE, done.error
    # Central was told QUEUED by the first run; the retry says START, then DONE.
    assert h.states("c-1")[0] == "START"
    assert temporaries(directory) == []
    made = root / done.target_path
    assert await compare(root / BIG, DiskFormat.RAW, made, TARGET) == "Images are identical."
    assert sorted(p.name for p in directory.iterdir()) == ["big.qcow2"]


async def test_interrupted_twice_it_fails(root: Path, tmp_path: Path) -> None:
    slow, pids = slow_qemu_img(tmp_path, rate="4M")
    state = tmp_path / "state"
    directory = root / "1/t/formats" / TARGET.value
    async with child(root, state, slow, "c-1", BIG, TARGET.value):
        first = await writing(directory, pids, 1, [])
    kill_all(pids_in(pids))
    # The next start retries it (no new request: it comes from the journal) ...
    async with child(root, state, slow):
        second = await writing(directory, pids, 2, first)
    kill_all(pids_in(pids))
    assert all(p.exists() for p in second)
    # ... and the one after gives up on it.
    async with running_bpm(root, state_dir=state) as h:
        failed = await h.ended("c-1")
        assert h.bpm.conversions() == []
    assert failed.state is ConversionState.FAILED
    assert failed.error.startswith("BPM-INTERRUPTED: interrupted twice"), failed.error
    assert temporaries(directory) == []
    assert not (directory / "big.qcow2").exists()


async def test_an_orderly_stop_is_not_an_interruption(root: Path, tmp_path: Path) -> None:
    slow, pids = slow_qemu_img(tmp_path, rate="4M")
    state = tmp_path / "state"
    directory = root / "1/t/formats" / TARGET.value
    for run in (1, 2):
        async with running_bpm(root, state_dir=state, executable=str(slow)) as h:
            if run == 1:
                await h.ask("c-1", BIG, DiskFormat.RAW, TARGET)
            await h.reached("c-1", ConversionState.PROGRESS)
            assert len(temporaries(directory)) == 1
        # Stopped: qemu-img killed and its files removed; the request kept.
        assert not alive(pids_in(pids)[-1])
        assert temporaries(directory) == []
    async with running_bpm(root, state_dir=state) as h:
        done = await h.ended("c-1")
    assert done.state is ConversionState.DONE, done.error
    assert (root / done.target_path).is_file()


async def test_an_ended_request_delivered_again_after_a_restart_is_not_run_again(
    root: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    async with running_bpm(root, state_dir=state) as h:
        await h.ask("c-1", BIG, DiskFormat.RAW, DiskFormat.VDI_SPARSE)
        first = await h.ended("c-1")
    async with running_bpm(root, state_dir=state) as h:
        await h.ask("c-1", BIG, DiskFormat.RAW, DiskFormat.VDI_SPARSE)
        again = await h.ended("c-1")
        assert h.states("c-1") == ["DONE"]
        assert h.bpm.conversion("c-1").state is ConversionState.DONE
    assert again.target_path == first.target_path
