"""Upload and download throughput of the Appliance Manager, against a plain copy.

One disk file of random data (1 GiB by default: incompressible, with no zeros for the AM
to leave out as holes) is, in each round:

- copied with `cp` and the copy fsynced (`sync FILE`): the baseline, the same bytes
  through the same file system, with the same durability the AM gives a template;
- uploaded to the AM over HTTP as multipart by `curl` (a client that costs little):
  timed from the request to the AM's 201, which it answers once the disk is on disk,
  fsynced, read by qemu-img, its envelope written and the template moved into place;
- downloaded by the AM as an OVF package from a file server in another process
  (aiohttp's static files: sendfile), timed from the POST of the envelope's URL to the
  template's DOWNLOAD; with `--manifest`, the package has a SHA-256 manifest, whose check
  (the disk read again and hashed) is then part of the time.

The AM runs in this process, on uvloop as abiquo-dc runs it, over a repository in a
temporary directory (`--dir` to choose where: the same file system for all three). The
figures are the medians over `--rounds` rounds, each kind as MB/s and as a ratio to the
copy's MB/s in the same run (the machines are shared and noisy).

    .venv/bin/python bench/am.py [--size-mib N] [--rounds N] [--manifest] [--dir PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from aiohttp import web

from abiquo_dc.am.ovf import OvfDisk, OvfFile, render_envelope, safe_relative
from abiquo_dc.am.service import ApplianceManager
from abiquo_dc.am.status import MemoryStatusStore
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import TemplateStatus, TemplateStatusChanged
from abiquo_dc.settings import AmSettings, RepositorySettings
from abiquo_runtime.logs import configure_logging
from abiquo_runtime.settings import LogSettings

MARK = ".abiquo_repository"
FILE_SERVER = """
import asyncio, sys
from aiohttp import web

async def main():
    app = web.Application()
    app.router.add_static("/", sys.argv[1])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()

asyncio.run(main())
"""


def make_disk(path: Path, size: int) -> None:
    block = 4 * 1024 * 1024
    with path.open("wb") as f:
        left = size
        while left:
            f.write(os.urandom(min(block, left)))
            left -= min(block, left)


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


async def run(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {err.decode()}{out.decode()}")


async def timed_copy(source: Path, target: Path) -> float:
    started = time.perf_counter()
    await run("cp", str(source), str(target))
    await run("sync", str(target))
    took = time.perf_counter() - started
    await asyncio.to_thread(target.unlink)
    await settle()
    return took


async def settle() -> None:
    """Commit what the last run left (a deleted gigabyte is work for the file system's
    journal), so that the next one is not charged for it."""
    await run("sync")


class Bench:
    def __init__(self, work: Path, size: int, manifest: bool) -> None:
        self.work = work
        self.size = size
        self.manifest = manifest
        self.repository = work / "repository"
        self.remote = work / "remote"
        self.disk = self.remote / "pkg" / "disk.img"
        self.bus = Bus(name="bench.bus")
        self.done: dict[str, asyncio.Future[TemplateStatusChanged]] = {}
        self.am = ApplianceManager(
            bus=self.bus,
            dc_uuid="bench",
            repository=RepositorySettings(path=str(self.repository), mark_file=MARK),
            settings=AmSettings(max_upload_bytes=size * 2, max_downloads=1),
            store=MemoryStatusStore,
        )
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.server: asyncio.subprocess.Process | None = None
        self.server_port = 0

    async def start(self) -> None:
        def prepare() -> None:
            self.repository.mkdir(parents=True)
            (self.repository / MARK).touch()
            self.disk.parent.mkdir(parents=True)
            make_disk(self.disk, self.size)

        await asyncio.to_thread(prepare)
        self.bus.subscribe(TemplateStatusChanged, self._changed)
        await self.am.start()
        await self.am.wait_running(10)
        app = web.Application(client_max_size=1024**2)
        app.add_routes(self.am.all_routes())
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        self.server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            FILE_SERVER,
            str(self.remote),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.server.stdout is not None
        self.server_port = int(await self.server.stdout.readline())
        await self._write_package()

    async def _write_package(self) -> None:
        document = render_envelope(
            name="bench",
            files=[
                OvfFile(id="f", href="disk.img", path=safe_relative("disk.img"), size=self.size)
            ],
            disks=[
                OvfDisk(disk_id="d", file_id="f", capacity_bytes=self.size, format=DiskFormat.RAW)
            ],
        )
        envelope = self.disk.with_name("pkg.ovf")
        await asyncio.to_thread(envelope.write_bytes, document)
        if self.manifest:
            digest = await asyncio.to_thread(sha256, self.disk)
            text = f"SHA256(pkg.ovf)= {hashlib.sha256(document).hexdigest()}\n"
            text += f"SHA256(disk.img)= {digest}\n"
            await asyncio.to_thread(self.disk.with_name("pkg.mf").write_text, text)

    async def _changed(self, message: TemplateStatusChanged) -> None:
        waiter = self.done.get(message.ovf_id)
        finished = message.status in (TemplateStatus.DOWNLOAD, TemplateStatus.ERROR)
        if waiter is not None and not waiter.done() and finished:
            waiter.set_result(message)

    async def upload(self) -> float:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-F",
            'diskInfo={"name": "bench", "disk_format": "RAW"};type=application/json',
            "-F",
            f"diskFile=@{self.disk};type=application/octet-stream",
            f"http://127.0.0.1:{self.port}/am/erepos/1/templates",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        took = time.perf_counter() - started
        if out.decode() != "201":
            raise SystemExit(f"the upload failed: HTTP {out.decode()} {err.decode()}")
        for state in await self.am.templates("1"):
            await self.am.delete("1", state.ovf_id)
        await settle()
        return took

    async def download(self) -> float:
        url = f"http://127.0.0.1:{self.server_port}/pkg/pkg.ovf"
        waiter = self.done[url] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await self.am.download("1", url)
        message = await waiter
        del self.done[url]
        took = time.perf_counter() - started
        if message.status is not TemplateStatus.DOWNLOAD:
            raise SystemExit(f"the download failed: {message.error}")
        await self.am.delete("1", url)
        await settle()
        return took

    async def close(self) -> None:
        if self.server is not None:
            assert self.server.stdin is not None
            self.server.stdin.close()
            await self.server.wait()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.am.stop()
        await self.bus.close()


async def main(arguments: argparse.Namespace) -> None:
    size = arguments.size_mib * 1024 * 1024
    for tool in ("cp", "sync", "curl", "qemu-img"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install coreutils curl qemu-utils)")
    base = Path(arguments.dir) if arguments.dir else None
    with tempfile.TemporaryDirectory(prefix="bench-am-", dir=base) as directory:
        bench = Bench(Path(directory), size, arguments.manifest)
        try:
            await bench.start()
            await settle()
            copies, uploads, downloads = [], [], []
            for _ in range(arguments.rounds):
                copies.append(await timed_copy(bench.disk, bench.work / "copy.img"))
                uploads.append(await bench.upload())
                downloads.append(await bench.download())
        finally:
            await bench.close()
    mb = size / 1e6
    copy = mb / statistics.median(copies)
    kind = "download (SHA-256 manifest checked)" if arguments.manifest else "download"
    print(f"{arguments.size_mib} MiB of random data, median of {arguments.rounds} rounds")
    print(f"  cp + fsync (baseline)       {copy:8.0f} MB/s")
    for name, times in (("upload (multipart, curl)", uploads), (kind, downloads)):
        rate = mb / statistics.median(times)
        print(f"  {name:<28}{rate:8.0f} MB/s   {rate / copy:5.2f} x cp")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--manifest", action="store_true")
    parser.add_argument("--dir", default="")
    configure_logging(LogSettings(level="warning"), program="bench-am")
    uvloop.run(main(parser.parse_args()))
