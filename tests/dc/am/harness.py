"""An Appliance Manager over a repository in a temporary directory, a remote HTTP server
that serves OVF packages and catalogues (and can cut a transfer off), and packages made
with the real qemu-img, for tests."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from abiquo_dc.am.catalogue import CatalogueEntry, render_catalogue
from abiquo_dc.am.ovf import OvfDisk, OvfFile, render_envelope, safe_relative
from abiquo_dc.am.redis_status import RedisStatusStore
from abiquo_dc.am.service import ApplianceManager
from abiquo_dc.am.status import MemoryStatusStore, StatusStore
from abiquo_dc.bus import Bus
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import RepositoryUsage, TemplateStatus, TemplateStatusChanged
from abiquo_dc.settings import AmSettings, RepositorySettings
from abiquo_runtime.backoff import Backoff
from tests import services

REDIS_URL = "redis://127.0.0.1:6379/0"
DC = "dc-am-test"
MARK = ".abiquo_repository"
FAST = AmSettings(
    max_upload_bytes=256 * 1024**2,
    max_document_bytes=256 * 1024,
    max_downloads=2,
    download_attempts=3,
    download_timeout=5.0,
)

Client = TestClient[web.Request, web.Application]


def need_qemu_img() -> str:
    """qemu-img's path; skipped (failed with CI=true) when it is not installed."""
    return services.require_tool("qemu-img", "qemu-utils")


async def run(*argv: str) -> None:
    """A command, as a subprocess the event loop does not wait on."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"{argv}: {err.decode()}{out.decode()}"


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    """Wait until `predicate()` (which may be a coroutine function) is true."""
    async with asyncio.timeout(timeout):
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.02)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def make_disk(
    path: Path, *, fmt: str = "qcow2", data_mib: int = 4, size: str = "64M"
) -> Path:
    """A disk image in `fmt` holding `data_mib` MiB of random data at its start."""
    raw = path.with_name(path.name + ".src")
    await in_thread(_random_file, raw, data_mib * 1024 * 1024)
    await run("qemu-img", "resize", "-q", "-f", "raw", str(raw), size)
    if fmt == "raw":
        await in_thread(os.rename, raw, path)
    else:
        options = ["-o", "subformat=streamOptimized"] if fmt == "vmdk" else []
        await run(
            "qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, *options, str(raw), str(path)
        )
        await in_thread(raw.unlink)
    return path


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.write(os.urandom(size))


# -- the remote server ---------------------------------------------------------------------


@dataclass
class Remote:
    """An HTTP server over `root`: Range and If-Range as aiohttp's FileResponse does them;
    `cut[path] = n` sends the next request for `path` only its first n bytes and drops
    the connection; `hold[path] = n` sends n bytes then waits until `release()`;
    `fail[path] = status` answers every other request for `path` with that status;
    paths in `chunked` are sent without a length."""

    root: Path
    server: TestServer | None = None
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    cut: dict[str, int] = field(default_factory=dict)
    hold: dict[str, int] = field(default_factory=dict)
    fail: dict[str, int] = field(default_factory=dict)
    chunked: set[str] = field(default_factory=set)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    holding: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/"))

    def url(self, path: str) -> str:
        return self.base + path

    def release(self) -> None:
        self.released.set()

    def got(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.requests.append((path, dict(request.headers)))
        file = self.root / path
        partial = self.cut.pop(path, None)
        held = self.hold.pop(path, None)
        if partial is None and held is None:
            if path in self.fail:
                return web.Response(status=self.fail[path])
            if not file.is_file():
                return web.Response(status=404)
            if path in self.chunked:
                return await self._chunked(request, file)
            return web.FileResponse(file)
        count = partial if partial is not None else held
        assert count is not None
        st = file.stat()
        response = web.StreamResponse(
            headers={
                "Content-Length": str(st.st_size),
                "ETag": f'"{st.st_mtime_ns:x}-{st.st_size:x}"',
                "Content-Type": "application/octet-stream",
            }
        )
        await response.prepare(request)
        with file.open("rb") as f:
            await response.write(f.read(count))
        if held is not None:
            self.holding.set()
            async with asyncio.timeout(30):
                await self.released.wait()
        assert request.transport is not None
        request.transport.close()
        return response

    async def _chunked(self, request: web.Request, file: Path) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        data = await in_thread(file.read_bytes)
        for start in range(0, len(data), 256 * 1024):
            await response.write(data[start : start + 256 * 1024])
        await response.write_eof()
        return response


@dataclass
class Package:
    """An OVF package the remote serves: `<name>/<name>.ovf`, its disk and manifest."""

    name: str
    envelope: Path
    disk: Path
    url: str


async def make_package(
    remote: Remote,
    name: str,
    *,
    fmt: str = "qcow2",
    declared: DiskFormat | None = DiskFormat.QCOW2_SPARSE,
    data_mib: int = 4,
    manifest: bool = True,
    declared_size: int | str | None = "real",
    href: str | None = None,
    cpu: int | None = 2,
    ram_mb: int | None = 512,
    envelope_stem: str | None = None,
) -> Package:
    directory = remote.root / name
    await in_thread(lambda: directory.mkdir(parents=True, exist_ok=True))
    disk_name = f"{name}-disk1.{'img' if fmt == 'raw' else fmt}"
    disk = await make_disk(directory / disk_name, fmt=fmt, data_mib=data_mib)
    size = disk.stat().st_size if declared_size == "real" else declared_size
    assert size is None or isinstance(size, int)
    reference = href or disk_name
    document = render_envelope(
        name=f"{name} template",
        description=f"the {name} appliance",
        files=[OvfFile(id="file1", href=disk_name, path=safe_relative(disk_name), size=size)],
        disks=[
            OvfDisk(disk_id="disk1", file_id="file1", capacity_bytes=64 * 1024**2, format=declared)
        ],
        cpu=cpu,
        ram_mb=ram_mb,
        icon_url="http://icons.example/icon.png",
        category="Linux",
    )
    if reference != disk_name:
        document = document.replace(
            f'ovf:href="{disk_name}"'.encode(), f'ovf:href="{reference}"'.encode()
        )
    stem = envelope_stem or name
    envelope = directory / f"{stem}.ovf"
    await in_thread(envelope.write_bytes, document)
    if manifest:
        lines = [
            f"SHA256({envelope.name})= {await in_thread(sha256, envelope)}",
            f"SHA256({disk_name})= {await in_thread(sha256, disk)}",
        ]
        await in_thread((directory / f"{stem}.mf").write_text, "\n".join(lines) + "\n")
    return Package(name, envelope, disk, remote.url(f"{name}/{quote(stem)}.ovf"))


async def write_catalogue(remote: Remote, packages: list[Package]) -> str:
    entries = [
        CatalogueEntry(
            ovf_url=p.url,
            name=f"{p.name} template",
            description=f"the {p.name} appliance",
            category="Linux",
            icon_url="http://icons.example/icon.png",
            disk_format=DiskFormat.QCOW2_SPARSE,
            disk_size=64,
            cpu=2,
            ram_mb=512,
        )
        for p in packages
    ]
    document = render_catalogue("test catalogue", entries)
    await in_thread((remote.root / "ovfindex.xml").write_bytes, document)
    return remote.url("ovfindex.xml")


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[Remote]:
    root = tmp_path / "remote"
    root.mkdir()
    served = Remote(root)
    app = web.Application()
    app.add_routes([web.get("/{path:.+}", served.handle)])
    served.server = TestServer(app)
    await served.server.start_server()
    try:
        yield served
    finally:
        served.release()
        await served.server.close()


# -- the AM ----------------------------------------------------------------------------------


@dataclass
class Am:
    service: ApplianceManager
    client: Client
    repository: Path
    store: StatusStore
    messages: list[TemplateStatusChanged]
    # What it told central of the repository's file system.
    usages: list[RepositoryUsage] = field(default_factory=list)

    def statuses(self, ovf_id: str) -> list[TemplateStatus]:
        return [m.status for m in self.messages if m.ovf_id == ovf_id]

    async def wait_status(
        self, enterprise: str, ovf_id: str, *wanted: TemplateStatus, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Poll the template over HTTP until it is in one of `wanted`; its JSON."""
        from urllib.parse import quote

        async with asyncio.timeout(timeout):
            while True:
                response = await self.client.get(
                    f"/am/erepos/{enterprise}/templates/{quote(ovf_id, safe='')}"
                )
                if response.status == 200:
                    body: dict[str, Any] = await response.json()
                    if body["status"] in wanted:
                        return body
                await asyncio.sleep(0.02)

    def incoming(self, enterprise: str = "1") -> list[str]:
        directory = self.repository / enterprise / ".incoming"
        return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []

    def template_dirs(self, enterprise: str = "1") -> list[str]:
        directory = self.repository / enterprise
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def fast_backoff() -> Backoff:
    return Backoff(initial=0.02, maximum=0.1)


async def forget_redis(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def repository_dir(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    await in_thread(lambda: root.mkdir(exist_ok=True))
    await in_thread((root / MARK).touch)
    return root


class AmRunner:
    """Starts (and restarts) AMs over one repository and one store."""

    def __init__(self, root: Path, store: Callable[[], StatusStore], settings: AmSettings) -> None:
        self.root = root
        self.make_store = store
        self.settings = settings
        self.running: list[tuple[ApplianceManager, Bus, Client]] = []

    async def start(self, settings: AmSettings | None = None) -> Am:
        bus = Bus(name="test.bus")
        messages: list[TemplateStatusChanged] = []

        async def collect(message: TemplateStatusChanged) -> None:
            messages.append(message)

        bus.subscribe(TemplateStatusChanged, collect)
        usages: list[RepositoryUsage] = []

        async def collect_usage(message: RepositoryUsage) -> None:
            usages.append(message)

        bus.subscribe(RepositoryUsage, collect_usage)
        store = self.make_store()
        service = ApplianceManager(
            bus=bus,
            dc_uuid=DC,
            repository=RepositorySettings(path=str(self.root), mark_file=MARK),
            settings=settings or self.settings,
            store=lambda: store,
            backoff=fast_backoff,
        )
        await service.start()
        await service.wait_running(10)
        app = web.Application()
        app.add_routes(service.all_routes())
        client: Client = TestClient(TestServer(app))
        await client.start_server()
        self.running.append((service, bus, client))
        return Am(service, client, self.root, store, messages, usages)

    async def stop(self, am: Am) -> None:
        for entry in list(self.running):
            if entry[0] is am.service:
                self.running.remove(entry)
                await self._stop(*entry)

    async def _stop(self, service: ApplianceManager, bus: Bus, client: Client) -> None:
        await client.close()
        await service.stop()
        await bus.drain(5)
        await bus.close()

    async def close(self) -> None:
        while self.running:
            await self._stop(*self.running.pop())


@pytest.fixture(params=["memory", "redis"])
async def store_kind(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], StatusStore]]:
    """The in-process store, then the real Redis (under this run's prefix)."""
    if request.param == "memory":
        memory = MemoryStatusStore()
        yield lambda: memory
        return
    prefix: str = request.getfixturevalue("redis_prefix") + f"am-{os.urandom(4).hex()}:"
    try:
        yield lambda: RedisStatusStore(REDIS_URL, prefix=prefix, dc_uuid=DC)
    finally:
        await forget_redis(prefix)


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[AmRunner]:
    """AMs over a memory store that outlives them (as Redis would)."""
    need_qemu_img()
    memory = MemoryStatusStore()
    started = AmRunner(await repository_dir(tmp_path), lambda: memory, FAST)
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
async def am(runner: AmRunner) -> Am:
    return await runner.start()
