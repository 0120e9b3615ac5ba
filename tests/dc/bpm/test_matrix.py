"""Every supported format converted to every other through the BPM, with the real
qemu-img: qemu-img compare (run by the test) calls each result identical to its source,
and each has the source's exact virtual size and the format asked for."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from abiquo_dc.bpm.formats import detect
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import ConversionState
from tests.dc.bpm.harness import (
    FORMATS,
    MADE_WITH,
    SIZE,
    compare,
    disk_name,
    driver,
    make,
    qemu_img,
    repository,
    running_bpm,
    temporaries,
    virtual_size,
    write_raw,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with the same disk in every format, one template directory each."""
    root = repository(tmp_path_factory.mktemp("matrix"))
    raw = write_raw(root / "RAW" / disk_name(DiskFormat.RAW))
    for fmt in FORMATS:
        if fmt is not DiskFormat.RAW:
            make(raw, fmt, root / fmt.value / disk_name(fmt))
    return root


async def _kind(path: Path, fmt: DiskFormat) -> frozenset[DiskFormat]:
    """What the file is, as the BPM's own detection reads it (tested in test_formats)."""
    process = await asyncio.create_subprocess_exec(
        qemu_img(),
        "info",
        "--output=json",
        "-f",
        driver(fmt),
        str(path),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    data = await asyncio.to_thread(path.read_bytes)
    return detect(json.loads(out), data[:512], data[-512:]).formats


@pytest.mark.parametrize("target", FORMATS, ids=lambda f: f"to-{f.value}")
@pytest.mark.parametrize("source", FORMATS, ids=lambda f: f"from-{f.value}")
async def test_a_conversion_is_identical_to_its_source(
    sources: Path, source: DiskFormat, target: DiskFormat
) -> None:
    rel = f"{source.value}/{disk_name(source)}"
    async with running_bpm(sources) as h:
        await h.ask("c-1", rel, source, target)
        note = await h.ended("c-1")
    assert note.state is ConversionState.DONE, note.error
    assert note.target_format is target
    if source is target:
        # Nothing to do: the disk itself is the answer.
        assert note.target_path == rel
        return
    assert note.target_path == f"{source.value}/formats/{target.value}/{disk_name(target)}"
    made = sources / note.target_path
    assert await compare(sources / rel, source, made, target) == "Images are identical."
    assert await virtual_size(made, target) == SIZE
    assert target in await _kind(made, target)
    assert temporaries(made.parent) == []
    if target is DiskFormat.VMDK_FLAT:
        assert (made.parent / "disk-flat.vmdk").stat().st_size == SIZE
    assert made.suffix == "." + MADE_WITH[target][2]
