"""A 2 GiB upload streams through an AM whose memory stays small and whose loop never
stalls.

How it is measured: the AM runs in a process of its own (tests/dc/am/serve.py), which
reports its resident set (VmRSS) and its peak since start (VmHWM, the kernel's high-water
mark of resident memory) from /proc/self/status, and, when it stops, every loop callback
that ran longer than 100 ms (the tests' loop guard, installed there). This process is the
client: it sends the disk from a generator, 1 MiB at a time, mostly zeros with a random
MiB every 64 MiB (a sparse-ish disk), so neither side ever holds the body.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.dc.am.harness import in_thread, need_qemu_img, repository_dir

SIZE = 2 * 1024**3
CHUNK = 1024 * 1024
DATA_EVERY = 64
LIMIT_KB = 200 * 1024


class Served:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self, prefix: str) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(60):
            while True:
                raw = await self.process.stdout.readline()
                assert raw, "the AM process ended"
                text = raw.decode().strip()
                if text.startswith(prefix + " "):
                    return text[len(prefix) + 1 :]

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()

    async def memory(self) -> tuple[int, int]:
        await self.send("rss")
        rss, peak = (await self.line("rss")).split()
        return int(rss), int(peak)


def blocks(marks: dict[int, bytes]) -> AsyncIterator[bytes]:
    zeros = bytes(CHUNK)

    async def generate() -> AsyncIterator[bytes]:
        for n in range(SIZE // CHUNK):
            yield marks.get(n, zeros)

    return generate()


async def test_a_2_gib_upload_streams_in_little_memory(tmp_path: Path) -> None:
    need_qemu_img()
    root = await repository_dir(tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.dc.am.serve",
        str(root),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[3],
    )
    served = Served(process)
    try:
        port = int(await served.line("port"))
        before, _ = await served.memory()
        marks = await in_thread(
            lambda: {n: os.urandom(CHUNK) for n in range(0, SIZE // CHUNK, DATA_EVERY)}
        )
        writer = aiohttp.MultipartWriter("form-data")
        writer.append_json({"name": "big", "disk_format": "RAW"}).set_content_disposition(
            "form-data", name="diskInfo"
        )
        writer.append(
            blocks(marks), {"Content-Type": "application/octet-stream"}
        ).set_content_disposition("form-data", name="diskFile", filename="big.img")
        started = time.monotonic()
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/am/erepos/1/templates", data=writer) as response,
        ):
            body = await response.text()
            assert response.status == 201, body
        took = time.monotonic() - started
        after, peak = await served.memory()
        state = json.loads(body)
        template = state["template"]
        assert template["disk_format"] == "RAW"
        assert template["disk_file_size"] == SIZE and template["virtual_size"] == SIZE
        disk = root / template["disk_path"]

        def check_disk() -> tuple[int, bool]:
            with disk.open("rb") as f:
                ok = True
                for n in (0, DATA_EVERY, SIZE // CHUNK - DATA_EVERY):
                    f.seek(n * CHUNK)
                    ok = ok and f.read(CHUNK) == marks[n]
                f.seek(CHUNK)
                ok = ok and f.read(CHUNK) == bytes(CHUNK)
            return disk.stat().st_blocks * 512, ok

        allocated, same = await in_thread(check_disk)
        assert same, "the disk on the repository is not what was sent"
        # Stored sparse: the zeros take no space.
        assert allocated < 2 * len(marks) * CHUNK
        print(
            f"\n2 GiB upload: {took:.1f} s ({SIZE / took / 1e6:.0f} MB/s); AM resident "
            f"{before / 1024:.0f} MB before, {after / 1024:.0f} MB after, peak {peak / 1024:.0f} MB"
        )
        assert peak < LIMIT_KB, f"the AM's resident memory peaked at {peak / 1024:.0f} MB"
        assert peak - before < 64 * 1024, (before, peak)
    finally:
        await served.send("quit")
        blocked = json.loads(await served.line("blocked"))
        async with asyncio.timeout(30):
            await process.wait()
    assert blocked == [], f"the AM's loop was blocked: {blocked}"
