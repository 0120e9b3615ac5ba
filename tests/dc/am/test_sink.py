"""Streams written to files: whole, sparse where they are zeros, bounded, resumable."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from abiquo_dc.am.errors import TooBig
from abiquo_dc.am.sink import BLOCK, FileSink


async def write_all(sink: FileSink, chunks: list[bytes]) -> None:
    for chunk in chunks:
        await sink.write(chunk)


async def test_what_is_written_is_what_came_and_zeros_take_no_space(tmp_path: Path) -> None:
    path = tmp_path / "disk"
    data = os.urandom(3 * BLOCK + 123)
    zeros = bytes(8 * BLOCK)
    chunks = [data[i : i + 70_000] for i in range(0, len(data), 70_000)]
    chunks += [zeros[i : i + 300_000] for i in range(0, len(zeros), 300_000)]
    sink = await FileSink.open(path)
    await write_all(sink, chunks)
    await sink.close()
    assert sink.size == len(data) + len(zeros)
    content = await asyncio.to_thread(path.read_bytes)
    assert content == data + zeros
    # The trailing zeros are a hole.
    assert path.stat().st_blocks * 512 < len(data) + 2 * BLOCK


async def test_a_limit_stops_the_stream(tmp_path: Path) -> None:
    sink = await FileSink.open(tmp_path / "disk", limit=BLOCK, what="the disk")
    with pytest.raises(TooBig, match="the disk"):
        await write_all(sink, [b"x" * 1000] * (BLOCK // 1000 + 1))
    await sink.abort()


async def test_an_aborted_stream_keeps_what_came_and_resumes_after_it(tmp_path: Path) -> None:
    path = tmp_path / "disk"
    data = os.urandom(2 * BLOCK + 5000)
    sink = await FileSink.open(path)
    await sink.write(data[: BLOCK + 4000])
    await sink.abort()
    await sink.abort()  # twice is harmless
    kept = path.stat().st_size
    assert kept == BLOCK + 4000
    sink = await FileSink.open(path, offset=kept)
    await sink.write(data[kept:])
    await sink.close()
    assert await asyncio.to_thread(path.read_bytes) == data
