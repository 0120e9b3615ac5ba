"""One conversion at a time per repository, the rest queued in order and visible over
HTTP; progress; cancellation over HTTP and on the bus."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import CancelConversion, ConversionState
from abiquo_runtime.errors import NotFound
from tests.dc.bpm.harness import (
    MIB,
    Harness,
    alive,
    compare,
    pids_in,
    repository,
    running_bpm,
    slow_qemu_img,
    temporaries,
    write_random,
)

Client = TestClient[web.Request, web.Application]
BIG = "1/t/big.raw"
FIVE = [
    DiskFormat.QCOW2_SPARSE,
    DiskFormat.VMDK_SPARSE,
    DiskFormat.VHD_SPARSE,
    DiskFormat.VDI_SPARSE,
    DiskFormat.VMDK_FLAT,
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = repository(tmp_path / "repo")
    write_random(root / BIG, 8 * MIB)
    return root


@pytest.fixture
async def slow(root: Path, tmp_path: Path) -> AsyncIterator[tuple[Harness, Client, Path]]:
    """A BPM whose conversions take about a second (8 MiB at 8 MiB/s), and its HTTP."""
    executable, pids = slow_qemu_img(tmp_path, rate="8M")
    async with running_bpm(root, executable=str(executable), progress_interval=0.1) as h:
        app = web.Application()
        app.add_routes(h.bpm.all_routes())
        async with TestClient(TestServer(app)) as client:
            yield h, client, pids


async def test_five_requests_at_once_run_one_after_another(
    slow: tuple[Harness, Client, Path], root: Path
) -> None:
    h, client, _ = slow
    ids = [f"c-{i}" for i in range(5)]
    await asyncio.gather(
        *(h.ask(i, BIG, DiskFormat.RAW, fmt) for i, fmt in zip(ids, FIVE, strict=True))
    )
    listed = await (await client.get("/bpm-async/conversions")).json()
    order = [c["id"] for c in listed]
    assert sorted(order) == ids
    assert [c["position"] for c in listed] == [0, 1, 2, 3, 4]
    assert [c["state"] for c in listed[1:]] == ["QUEUED"] * 4
    assert listed[0]["state"] in ("START", "PROGRESS")
    for i in ids:
        assert (await h.ended(i)).state is ConversionState.DONE
    # In the order they were listed, and never two at once: each START comes after the
    # DONE before it.
    events = [
        (n.conversion_id, n.state)
        for n in h.notes
        if n.state in (ConversionState.START, ConversionState.DONE)
    ]
    expected = []
    for i in order:
        expected += [(i, ConversionState.START), (i, ConversionState.DONE)]
    assert events == expected
    starts = {n.conversion_id: n.at for n in h.notes if n.state is ConversionState.START}
    dones = {n.conversion_id: n.at for n in h.notes if n.state is ConversionState.DONE}
    for before, after in itertools.pairwise(order):
        assert dones[before] <= starts[after]
    assert await (await client.get("/bpm-async/conversions")).json() == []
    for i, fmt in zip(ids, FIVE, strict=True):
        made = root / h.of(i)[-1].target_path
        assert await compare(root / BIG, DiskFormat.RAW, made, fmt) == "Images are identical."


async def test_progress_is_told_as_it_goes(slow: tuple[Harness, Client, Path], root: Path) -> None:
    h, _, _ = slow
    # qemu-img's throttle lets a second's worth through at once: twice that, and the rest
    # comes 2 MiB (12.5%) every quarter of a second.
    await asyncio.to_thread(write_random, root / "1/t/bigger.raw", 16 * MIB)
    await h.ask("c-1", "1/t/bigger.raw", DiskFormat.RAW, DiskFormat.QCOW2_SPARSE)
    await h.ended("c-1")
    progress = [n.progress for n in h.of("c-1") if n.state is ConversionState.PROGRESS]
    assert len(progress) >= 3
    assert progress == sorted(progress)
    assert 0 < progress[0] < progress[-1] <= 100
    # Throttled: never closer than progress_interval (0.1 s).
    times = [n.at for n in h.of("c-1") if n.state is ConversionState.PROGRESS]
    assert all((b - a).total_seconds() >= 0.09 for a, b in itertools.pairwise(times))


async def test_cancelling_a_queued_request_takes_it_out_of_the_queue(
    slow: tuple[Harness, Client, Path], root: Path
) -> None:
    h, client, _ = slow
    await h.ask("c-1", BIG, DiskFormat.RAW, DiskFormat.QCOW2_SPARSE)
    await h.ask("c-2", BIG, DiskFormat.RAW, DiskFormat.VDI_SPARSE)
    answer = await client.delete("/bpm-async/conversions/c-2")
    assert answer.status == 204
    assert (await h.ended("c-2")).state is ConversionState.CANCELLED
    listed = await (await client.get("/bpm-async/conversions")).json()
    assert [c["id"] for c in listed] == ["c-1"]
    assert (await h.ended("c-1")).state is ConversionState.DONE
    assert h.states("c-2") == ["QUEUED", "CANCELLED"]
    assert not (root / "1/t/formats/VDI_SPARSE").exists()
    # Its outcome stays visible; cancelling it again is a conflict.
    one = await (await client.get("/bpm-async/conversions/c-2")).json()
    assert (one["state"], one["position"]) == ("CANCELLED", None)
    again = await client.delete("/bpm-async/conversions/c-2")
    assert again.status == 409
    assert (await again.json())["code"] == "BPM-ENDED"


async def test_cancelling_the_running_one_kills_qemu_img_and_removes_its_files(
    slow: tuple[Harness, Client, Path], root: Path
) -> None:
    h, _, pids = slow
    await h.ask("c-1", BIG, DiskFormat.RAW, DiskFormat.QCOW2_SPARSE)
    await h.ask("c-2", BIG, DiskFormat.RAW, DiskFormat.VHD_FLAT)
    await h.reached("c-1", ConversionState.PROGRESS)
    directory = root / "1/t/formats/QCOW2_SPARSE"
    assert len(temporaries(directory)) == 1
    running = pids_in(pids)[-1]
    assert alive(running)
    await h.bus.request(CancelConversion(conversion_id="c-1"), timeout=10)
    # Killed, and its files gone, by the time the cancel returns.
    assert not alive(running)
    assert (await h.ended("c-1")).state is ConversionState.CANCELLED
    assert list(directory.iterdir()) == []
    # The next one runs.
    assert (await h.ended("c-2")).state is ConversionState.DONE
    # A cancel delivered again is nothing to do; one of nothing is not found.
    await h.bus.request(CancelConversion(conversion_id="c-1"), timeout=10)
    with pytest.raises(NotFound):
        await h.bus.request(CancelConversion(conversion_id="nobody"), timeout=10)


async def test_cancelling_one_of_two_joined_requests_keeps_the_conversion(
    slow: tuple[Harness, Client, Path], root: Path
) -> None:
    h, client, _ = slow
    await h.ask("c-1", BIG, DiskFormat.RAW, DiskFormat.VMDK_STREAM_OPTIMIZED)
    await h.ask("c-2", BIG, DiskFormat.RAW, DiskFormat.VMDK_STREAM_OPTIMIZED)
    listed = await (await client.get("/bpm-async/conversions")).json()
    assert len(listed) == 1
    assert listed[0]["requests"] == ["c-1", "c-2"]
    assert (await client.delete("/bpm-async/conversions/c-1")).status == 204
    assert (await h.ended("c-1")).state is ConversionState.CANCELLED
    done = await h.ended("c-2")
    assert done.state is ConversionState.DONE
    assert (root / done.target_path).is_file()


async def test_http_answers_what_it_does_not_know(slow: tuple[Harness, Client, Path]) -> None:
    _, client, _ = slow
    for answer in (
        await client.get("/bpm-async/conversions/nobody"),
        await client.delete("/bpm-async/conversions/nobody"),
    ):
        assert answer.status == 404
        assert (await answer.json())["code"] == "BPM-NO-CONVERSION"
    check = await client.get("/bpm-async/check")
    assert (check.status, await check.text()) == (200, "dc-test")
