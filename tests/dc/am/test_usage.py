"""How full the repository's file system is, told to central (RepositoryUsage): at the
AM's start, after templates come or go (no more than once per usage_debounce), every
usage_interval, and through a failed or hung measure without stopping."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest
import structlog

from abiquo_dc.am import usage
from abiquo_dc.am.status import MemoryStatusStore
from abiquo_dc.am.usage import UsageReporter
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.messages import ServiceState
from abiquo_dc.protocol.templates import RepositoryUsage
from tests.dc.am.harness import (
    DC,
    FAST,
    Am,
    AmRunner,
    eventually,
    in_thread,
    make_disk,
    need_qemu_img,
    repository_dir,
)
from tests.dc.am.test_downloads import template_url
from tests.dc.am.test_uploads import INFO, form, upload

DEBOUNCE = 0.5
# Other tests write to the same file system meanwhile: free space moves a little.
TOLERANCE = 256 * 1024**2


def statvfs(root: Path) -> tuple[int, int]:
    fs = os.statvfs(root)
    return fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize


def assert_measures(message: RepositoryUsage, root: Path) -> None:
    capacity, free = statvfs(root)
    assert message.dc_uuid == DC
    assert abs(message.capacity_bytes - capacity) <= TOLERANCE
    assert abs(message.free_bytes - free) <= TOLERANCE
    assert 0 < message.free_bytes <= message.capacity_bytes


def gaps(messages: list[RepositoryUsage]) -> list[float]:
    return [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(messages)]


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[AmRunner]:
    need_qemu_img()
    memory = MemoryStatusStore()
    # No periodic report within a test: what comes is the start's and the changes'.
    settings = msgspec.structs.replace(FAST, usage_interval=600.0, usage_debounce=DEBOUNCE)
    started = AmRunner(await repository_dir(tmp_path), lambda: memory, settings)
    try:
        yield started
    finally:
        await started.close()


async def test_usage_is_reported_at_start_and_after_templates_come_or_go(
    runner: AmRunner, tmp_path: Path
) -> None:
    am: Am = await runner.start()
    await eventually(lambda: am.usages)
    assert_measures(am.usages[0], am.repository)

    # An upload: reported again once it is there.
    disk = await make_disk(tmp_path / "source.qcow2", data_mib=8)
    data = await in_thread(disk.read_bytes)
    uploaded = []
    for n in range(3):
        response = await upload(am, form({**INFO, "name": f"t{n}"}, data))
        assert response.status == 201, await response.text()
        uploaded.append((await response.json())["ovf_id"])
    await eventually(lambda: len(am.usages) >= 2)
    await asyncio.sleep(DEBOUNCE * 2)
    after_uploads = len(am.usages)

    # Deleted in a burst: reported again, not once per template.
    for ovf_id in uploaded:
        response = await am.client.delete(template_url(ovf_id))
        assert response.status == 204, await response.text()
    await eventually(lambda: len(am.usages) > after_uploads)
    await asyncio.sleep(DEBOUNCE * 2)
    assert len(am.usages) <= after_uploads + 2
    # Never two reports closer than the debounce (the clock that stamps them is another).
    assert all(gap >= DEBOUNCE - 0.05 for gap in gaps(am.usages)), gaps(am.usages)
    assert_measures(am.usages[-1], am.repository)


async def test_a_failed_measure_is_logged_and_the_next_interval_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    need_qemu_img()
    real = usage.file_system
    calls = 0

    def failing_once(root: Path) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(5, "Input/output error", str(root))
        return real(root)

    monkeypatch.setattr(usage, "file_system", failing_once)
    settings = msgspec.structs.replace(FAST, usage_interval=0.3)
    memory = MemoryStatusStore()
    runner = AmRunner(await repository_dir(tmp_path), lambda: memory, settings)
    try:
        with caplog.at_level(logging.WARNING):
            am = await runner.start()
            await eventually(lambda: am.usages)
        assert calls >= 2
        assert any(
            "repository usage not measured" in r.getMessage()
            and "Input/output error" in r.getMessage()
            for r in caplog.records
        )
        assert am.service.state is ServiceState.RUNNING
        assert_measures(am.usages[0], am.repository)
        # And on, every interval.
        await eventually(lambda: len(am.usages) >= 3)
    finally:
        await runner.close()


async def test_a_hung_measure_is_waited_for_not_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A statvfs on an NFS server that went away: the loop goes on, the rounds give up
    waiting but start no other call, and the one that finally returns is reported."""
    root = tmp_path / "nfs"
    root.mkdir()
    real = usage.file_system
    answer = threading.Event()
    calls = 0

    def hung(path: Path) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        answer.wait(10)
        return real(path)

    monkeypatch.setattr(usage, "file_system", hung)
    bus = Bus(name="test.bus")
    reports: list[RepositoryUsage] = []

    async def collect(message: RepositoryUsage) -> None:
        reports.append(message)

    bus.subscribe(RepositoryUsage, collect)
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-am")
    reporter = UsageReporter(
        bus=bus,
        dc_uuid=DC,
        root=root,
        executor=executor,
        interval=0.1,
        debounce=0.0,
        log=structlog.get_logger("test.usage"),
        timeout=0.1,
    )
    task = asyncio.get_running_loop().create_task(reporter.run())
    try:
        with caplog.at_level(logging.WARNING):
            await eventually(
                lambda: sum("did not answer" in r.getMessage() for r in caplog.records) >= 3
            )
        assert (calls, reports) == (1, [])
        answer.set()
        await eventually(lambda: reports)
        assert_measures_of(reports[0], root)
    finally:
        answer.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bus.drain(2)
        await bus.close()
        await in_thread(executor.shutdown)


def assert_measures_of(message: RepositoryUsage, root: Path) -> None:
    capacity, free = statvfs(root)
    assert message.capacity_bytes == capacity
    assert abs(message.free_bytes - free) <= TOLERANCE


async def test_without_a_repository_nothing_is_reported(tmp_path: Path) -> None:
    from abiquo_dc.am.service import ApplianceManager

    bus = Bus(name="test.bus")
    reports: list[RepositoryUsage] = []

    async def collect(message: RepositoryUsage) -> None:
        reports.append(message)

    bus.subscribe(RepositoryUsage, collect)
    service = ApplianceManager(
        bus=bus, dc_uuid=DC, settings=msgspec.structs.replace(FAST, usage_interval=0.05)
    )
    await service.start()
    try:
        await service.wait_running(5)
        await asyncio.sleep(0.2)
        assert reports == []
        assert "usage" not in " ".join(service.tasks.running())
    finally:
        await service.stop()
        await bus.close()
