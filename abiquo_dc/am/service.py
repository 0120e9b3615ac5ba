"""Appliance Manager: the template repository, OVF packages, uploads and downloads.

Pieces, each in its module: the repository on disk (repository.py), the templates'
statuses (status.py: Redis, or in this process for the all-in-one), downloads of OVF
packages (downloads.py), uploads (uploads.py), the checks a package passes before it is
taken (packages.py), qemu-img (qemu.py) and the HTTP routes (http.py).

Templates arrive three ways: downloaded from a URL (an OVF package, often listed by a
remote catalogue), uploaded (metadata and a disk), or registered from a VM's disk that
vfactory copied back into the repository (an instance, `register_instance`, which
vfactory asks for on the bus with RegisterInstance). Every change of a template's status
is recorded in the store and published on the bus as a `TemplateStatusChanged` (which
the link forwards to central); download progress at most once a second or every 5%.
How full the repository's file system is goes out as `RepositoryUsage` (usage.py): at
start, every `usage_interval`, and soon after a template arrives, leaves or fails.

A download goes on in the background, at most `max_downloads` at once. Stopped (the DC
stops, or its attempts are spent on a dropped connection), its partial files stay in
the staging area and it resumes from there: by itself at the next start for one still
DOWNLOADING, when asked again for one in ERROR. A permanent failure deletes them.

With no repository configured (`repository=None`), the AM runs but every repository
operation answers that there is none (AM-REPOSITORY, HTTP 503).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TypeVar

import aiohttp
from aiohttp import web

from abiquo_dc.am.catalogue import CatalogueEntry, parse_catalogue
from abiquo_dc.am.downloads import PackageDownload, check_url, fetch_document
from abiquo_dc.am.errors import (
    AmNotRunning,
    CatalogueNotAllowed,
    DiskFormatMismatch,
    RepositoryUnavailable,
    TemplateConflict,
    TemplateNotFound,
    TooBig,
)
from abiquo_dc.am.ovf import parse_envelope
from abiquo_dc.am.packages import (
    definition,
    describe_disk,
    envelope_for_disk,
    same_format,
    verify_package,
)
from abiquo_dc.am.repository import (
    Repository,
    Usage,
    check_enterprise,
    download_dir_name,
    download_key,
    new_dir_name,
    slug,
    upload_key,
)
from abiquo_dc.am.status import MemoryStatusStore, StatusStore, TemplateState
from abiquo_dc.am.uploads import Upload, read_info, receive_disk
from abiquo_dc.am.usage import UsageReporter
from abiquo_dc.bus import Bus, Unsubscribe
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.jobs import InstanceRegistered, RegisterInstance
from abiquo_dc.protocol.templates import (
    AnnounceTemplates,
    TemplateDefinition,
    TemplateStatus,
    TemplateStatusChanged,
)
from abiquo_dc.settings import AmSettings, RepositorySettings
from abiquo_dc.subsystem import Subsystem
from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import AbiquoError, InvalidInput, TemporaryError

# Progress goes out when this much time passed or this many points were gained.
PROGRESS_INTERVAL = 1.0
PROGRESS_STEP = 5.0

Key = tuple[str, str]
T = TypeVar("T")


def is_download(ovf_id: str) -> bool:
    return ovf_id.startswith(("http://", "https://"))


@dataclass(frozen=True)
class CatalogueItem:
    entry: CatalogueEntry
    status: TemplateStatus


@dataclass(frozen=True)
class Catalogue:
    url: str
    name: str
    items: list[CatalogueItem]


@dataclass(frozen=True)
class FormatView:
    """A template's disk in one format: its own, or a conversion under formats/."""

    state: TemplateState
    format: DiskFormat
    disk_path: str
    disk_file_size: int


class ApplianceManager(Subsystem):
    name = "am"
    path = "am"

    def __init__(
        self,
        *,
        bus: Bus,
        dc_uuid: str,
        repository: RepositorySettings | None = None,
        settings: AmSettings | None = None,
        store: Callable[[], StatusStore] | None = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        super().__init__(bus=bus, dc_uuid=dc_uuid, backoff=backoff)
        self.settings = settings or AmSettings()
        self.repository_settings = repository
        self._make_store: Callable[[], StatusStore] = store or MemoryStatusStore
        self._make_backoff = backoff
        self.repository: Repository | None = None
        self.store: StatusStore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(max(1, self.settings.max_downloads))
        # Templates being downloaded or uploaded: the download's task, or None while an
        # upload (or the start of a download) runs in an HTTP request.
        self._jobs: dict[Key, asyncio.Task[None] | None] = {}
        # When each template's progress was last sent, and at what percentage.
        self._sent: dict[Key, tuple[float, float]] = {}
        self._unserve: list[Unsubscribe] = []
        self._usage: UsageReporter | None = None
        self._reporting: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def setup(self) -> None:
        # Its own threads: a repository on a hung NFS server holds these, not the
        # threads everything else in the process shares.
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.max_downloads + 4, thread_name_prefix="am"
        )
        if self.repository_settings is not None:
            repository = Repository(self.repository_settings, executor=self._executor)
            await repository.check_mounted()
            self.repository = repository
        store = self._make_store()
        await store.open()
        self.store = store
        timeout = self.settings.download_timeout
        self._session = aiohttp.ClientSession(
            # No bound on a whole download (a disk takes as long as it is big): on each
            # connect and each read.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
            auto_decompress=False,
            headers={"User-Agent": "abiquo-am"},
        )
        if self.repository is not None:
            await self._resume_downloads()
            self.tasks.spawn(self._scan_all(), name="scan")
        # Served without a repository too: vfactory then hears that there is none, and
        # central's AnnounceTemplates is taken with nothing to tell rather than requeued
        # for a handler that never comes.
        self._unserve.append(self.bus.serve(RegisterInstance, self.on_register_instance))
        self._unserve.append(self.bus.serve(AnnounceTemplates, self.on_announce_templates))
        if self.repository is not None:
            # Last: nothing after it can fail and leave it running on a torn-down AM.
            self._usage = UsageReporter(
                bus=self.bus,
                dc_uuid=self.dc_uuid,
                root=self.repository.root,
                executor=self._executor,
                interval=self.settings.usage_interval,
                debounce=self.settings.usage_debounce,
                log=self.log,
            )
            self._reporting = self.tasks.spawn(self._usage.run(), name="usage", forever=True)

    async def teardown(self) -> None:
        reporting, self._reporting, self._usage = self._reporting, None, None
        if reporting is not None:
            reporting.cancel()
        while self._unserve:
            self._unserve.pop()()
        self._jobs.clear()
        self._sent.clear()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        store, self.store = self.store, None
        if store is not None:
            await store.close()
        self.repository = None
        executor, self._executor = self._executor, None
        if executor is not None:
            # A thread stuck on the file system must not hold the shutdown.
            executor.shutdown(wait=False, cancel_futures=True)

    def routes(self) -> list[web.RouteDef]:
        from abiquo_dc.am.http import am_routes

        return am_routes(self)

    async def _resume_downloads(self) -> None:
        """Downloads a stop cut short go on; uploads it cut short are in ERROR."""
        repository, store = self._parts()
        resumable: dict[str, set[str]] = {}
        for enterprise_id in await store.enterprises():
            for state in await store.all(enterprise_id):
                if is_download(state.ovf_id) and state.status in (
                    TemplateStatus.DOWNLOADING,
                    TemplateStatus.ERROR,
                ):
                    resumable.setdefault(enterprise_id, set()).add(download_key(state.ovf_id))
                if state.status is not TemplateStatus.DOWNLOADING:
                    continue
                if is_download(state.ovf_id):
                    self._start_download(enterprise_id, state.ovf_id, state.dir_name, None)
                else:
                    await self._record(
                        enterprise_id,
                        _error(state, "the upload was cut off by a restart of the datacenter"),
                    )
        for enterprise_id in await repository.enterprises():
            keep = resumable.get(enterprise_id, set())
            await repository.clean_staging(enterprise_id, keep=keep.__contains__)

    async def _scan_all(self) -> None:
        """What is on disk, told to central: the all-in-one's store starts empty, and an
        operator may have put templates in by hand."""
        repository, _ = self._parts()
        for enterprise_id in await repository.enterprises():
            try:
                await self.rescan(enterprise_id)
            except AbiquoError as exc:
                self.log.warning("scan failed", enterprise=enterprise_id, error=exc.message)

    # -- the parts ---------------------------------------------------------------------

    def _parts(self) -> tuple[Repository, StatusStore]:
        if self.store is None or self._session is None:
            raise AmNotRunning(f"the appliance manager is {self.state.value}")
        if self.repository is None:
            raise RepositoryUnavailable("no template repository is configured")
        return self.repository, self.store

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise AmNotRunning(f"the appliance manager is {self.state.value}")
        return self._session

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        """A document of up to max_document_bytes takes a parser long enough to stall the
        loop: it is read in the AM's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    # -- statuses ----------------------------------------------------------------------

    async def _record(self, enterprise_id: str, state: TemplateState) -> None:
        _, store = self._parts()
        await store.put(enterprise_id, state)
        await self._announce(enterprise_id, state)

    async def _announce(self, enterprise_id: str, state: TemplateState) -> None:
        # A template arrived, left, or failed (its partial files may be gone): the space
        # the repository takes changed. A download's progress is left to the interval.
        if self._usage is not None and state.status is not TemplateStatus.DOWNLOADING:
            self._usage.changed()
        await self._publish_state(enterprise_id, state)

    async def _publish_state(self, enterprise_id: str, state: TemplateState) -> None:
        await self.bus.publish(
            TemplateStatusChanged(
                dc_uuid=self.dc_uuid,
                enterprise_id=enterprise_id,
                ovf_id=state.ovf_id,
                status=state.status,
                progress=state.progress,
                error=state.error,
                template=state.template,
                at=datetime.now(UTC),
            )
        )

    async def _started(self, enterprise_id: str, state: TemplateState) -> None:
        self._sent[(enterprise_id, state.ovf_id)] = (time.monotonic(), state.progress)
        await self._record(enterprise_id, state)

    async def _progress(
        self, enterprise_id: str, ovf_id: str, dir_name: str, done: int, total: int | None
    ) -> None:
        if not total:
            return
        # 100 is for a template that is there, verified: not for its last byte.
        percent = min(99.9, round(100.0 * done / total, 1))
        key = (enterprise_id, ovf_id)
        now = time.monotonic()
        last_time, last_percent = self._sent.get(key, (0.0, -PROGRESS_STEP))
        if now - last_time < PROGRESS_INTERVAL and percent - last_percent < PROGRESS_STEP:
            return
        self._sent[key] = (now, percent)
        await self._record(
            enterprise_id,
            TemplateState(
                ovf_id=ovf_id,
                status=TemplateStatus.DOWNLOADING,
                progress=percent,
                dir_name=dir_name,
            ),
        )

    # -- reading -----------------------------------------------------------------------

    async def enterprises(self) -> list[tuple[str, Usage]]:
        repository, _ = self._parts()
        return [(e, await repository.usage(e)) for e in await repository.enterprises()]

    async def usage(self, enterprise_id: str) -> Usage:
        repository, _ = self._parts()
        return await repository.usage(check_enterprise(enterprise_id))

    async def templates(
        self, enterprise_id: str, status: TemplateStatus | None = None
    ) -> list[TemplateState]:
        _, store = self._parts()
        states = await store.all(check_enterprise(enterprise_id))
        return [s for s in states if status is None or s.status is status]

    async def template(self, enterprise_id: str, ovf_id: str) -> TemplateState:
        _, store = self._parts()
        state = await store.get(check_enterprise(enterprise_id), ovf_id)
        if state is None:
            raise TemplateNotFound(f"enterprise {enterprise_id} has no template {ovf_id!r}")
        return state

    async def template_format(self, enterprise_id: str, ovf_id: str, fmt: DiskFormat) -> FormatView:
        """The template's disk in format `fmt`: its own, or the conversion the BPM made."""
        repository, _ = self._parts()
        state = await self.template(enterprise_id, ovf_id)
        template = state.template
        if state.status is not TemplateStatus.DOWNLOAD or template is None:
            raise TemplateNotFound(f"{ovf_id!r} is {state.status.value}, not in the repository")
        if fmt is template.disk_format:
            return FormatView(state, fmt, template.disk_path, template.disk_file_size)
        directory = repository.template_dir(enterprise_id, state.dir_name)
        converted = await repository.conversion(directory, fmt.value)
        size = None if converted is None else await repository.file_size(converted)
        if converted is None or size is None:
            raise TemplateNotFound(f"{ovf_id!r} has no disk in {fmt.value}")
        return FormatView(state, fmt, repository.relative(converted), size)

    async def catalogue(self, enterprise_id: str, url: str) -> Catalogue:
        """A remote catalogue (ovfindex.xml), each entry with its status here."""
        _, store = self._parts()
        check_enterprise(enterprise_id)
        url = check_url(url)
        allowed = self.settings.allowed_catalogues
        if allowed and not any(url.startswith(prefix) for prefix in allowed):
            raise CatalogueNotAllowed(f"catalogues are not taken from {url[:200]}")
        limit = self.settings.max_document_bytes
        data = await fetch_document(self._client(), url, limit=limit)
        name, entries = await self._off_loop(
            partial(parse_catalogue, data, base_url=url, max_bytes=limit)
        )
        states = {s.ovf_id: s.status for s in await store.all(enterprise_id)}
        items = [
            CatalogueItem(e, states.get(e.ovf_url, TemplateStatus.NOT_DOWNLOAD)) for e in entries
        ]
        return Catalogue(url=url, name=name, items=items)

    # -- downloads ---------------------------------------------------------------------

    async def download(self, enterprise_id: str, url: str) -> tuple[TemplateState, bool]:
        """Start downloading the package at `url`; (its state, whether it started now).

        The envelope is fetched and read here, so that a bad one is answered at once; the
        files come in the background. Asking again for one being downloaded, or there,
        changes nothing.
        """
        _, store = self._parts()
        check_enterprise(enterprise_id)
        url = check_url(url)
        key = (enterprise_id, url)
        if key in self._jobs:
            return await self._current(enterprise_id, url), False
        existing = await store.get(enterprise_id, url)
        if existing is not None and existing.status is TemplateStatus.DOWNLOAD:
            return existing, False
        dir_name = download_dir_name(url)
        self._jobs[key] = None
        try:
            limit = self.settings.max_document_bytes
            try:
                data = await fetch_document(self._client(), url, limit=limit)
                await self._off_loop(partial(parse_envelope, data, max_bytes=limit, base_url=url))
            except AbiquoError as exc:
                await self._record(
                    enterprise_id,
                    TemplateState(
                        ovf_id=url,
                        status=TemplateStatus.ERROR,
                        error=exc.message,
                        dir_name=dir_name,
                    ),
                )
                raise
            state = TemplateState(
                ovf_id=url, status=TemplateStatus.DOWNLOADING, progress=0.0, dir_name=dir_name
            )
            await self._started(enterprise_id, state)
        except BaseException:
            self._jobs.pop(key, None)
            raise
        self._start_download(enterprise_id, url, dir_name, data)
        return state, True

    async def _current(self, enterprise_id: str, ovf_id: str) -> TemplateState:
        _, store = self._parts()
        state = await store.get(enterprise_id, ovf_id)
        return state or TemplateState(ovf_id=ovf_id, status=TemplateStatus.DOWNLOADING)

    def _start_download(
        self, enterprise_id: str, url: str, dir_name: str, envelope: bytes | None
    ) -> None:
        key = (enterprise_id, url)
        self._jobs[key] = self.tasks.spawn(
            self._download(enterprise_id, url, dir_name or download_dir_name(url), envelope),
            name=f"download:{enterprise_id}:{dir_name}",
        )

    async def _download(
        self, enterprise_id: str, url: str, dir_name: str, envelope: bytes | None
    ) -> None:
        repository, _ = self._parts()
        staging = repository.staging_dir(enterprise_id, download_key(url))
        failed = TemplateState(ovf_id=url, status=TemplateStatus.ERROR, dir_name=dir_name)
        try:
            async with self._slots:
                await repository.prepare_staging(enterprise_id, download_key(url), fresh=False)
                package = await PackageDownload(
                    session=self._client(),
                    url=url,
                    staging=staging,
                    settings=self.settings,
                    run=repository.run,
                    executor=self._executor,
                    progress=lambda done, total: self._progress(
                        enterprise_id, url, dir_name, done, total
                    ),
                    backoff=self._make_backoff(),
                    envelope_data=envelope,
                ).run()
                facts = await verify_package(
                    directory=staging,
                    envelope=package.envelope,
                    manifest=package.manifest,
                    envelope_name=package.envelope_name,
                    max_file_bytes=self.settings.max_upload_bytes,
                    run=repository.run,
                )
                disk = package.envelope.disks[0]
                file = package.envelope.disk_file(disk)
                template = definition(
                    ovf_id=url,
                    envelope=package.envelope,
                    disk=disk,
                    facts=facts[file.id],
                    disk_path=f"{enterprise_id}/{dir_name}/{file.path.as_posix()}",
                )
                await repository.write_metadata(staging, template)
                await repository.commit(staging, repository.template_dir(enterprise_id, dir_name))
            await self._record(enterprise_id, _there(url, dir_name, template))
            self.log.info("template downloaded", enterprise=enterprise_id, ovf_id=url)
        except TemporaryError as exc:
            # What came in is kept: asking again resumes from there.
            self.log.warning("download stopped", ovf_id=url, error=exc.message)
            reason = f"{exc.message}; asking for it again resumes it"
            await self._record(enterprise_id, _error(failed, reason))
        except AbiquoError as exc:
            self.log.warning("download failed", ovf_id=url, error=exc.message)
            await repository.remove(staging)
            await self._record(enterprise_id, _error(failed, exc.message))
        except Exception as exc:
            self.log.exception("download failed", ovf_id=url)
            await repository.remove(staging)
            await self._record(enterprise_id, _error(failed, f"{type(exc).__name__}: {exc}"))
        finally:
            self._jobs.pop((enterprise_id, url), None)
            self._sent.pop((enterprise_id, url), None)

    # -- uploads -----------------------------------------------------------------------

    async def upload(self, enterprise_id: str, upload: Upload) -> TemplateState:
        """A template uploaded as multipart (see uploads.py), in the repository on return."""
        repository, _ = self._parts()
        check_enterprise(enterprise_id)
        content_length = upload.length
        if content_length is not None and content_length > self.settings.max_upload_bytes:
            raise TooBig(f"the upload is over the {self.settings.max_upload_bytes} bytes taken")
        info = await read_info(upload)
        dir_name = new_dir_name(info.name)
        envelope_name = f"{slug(info.name)}.ovf"
        ovf_id = f"{dir_name}/{envelope_name}"
        key = (enterprise_id, ovf_id)
        staging = await repository.prepare_staging(enterprise_id, upload_key(), fresh=True)
        self._jobs[key] = None
        try:
            state = TemplateState(
                ovf_id=ovf_id, status=TemplateStatus.DOWNLOADING, dir_name=dir_name
            )
            await self._started(enterprise_id, state)
            disk = await receive_disk(
                upload,
                staging,
                limit=self.settings.max_upload_bytes,
                executor=self._executor,
                progress=lambda done: self._progress(
                    enterprise_id, ovf_id, dir_name, done, content_length
                ),
            )
            facts = await describe_disk(disk, run=repository.run)
            if info.disk_format is not None and not same_format(info.disk_format, facts.format):
                raise DiskFormatMismatch(
                    f"the disk was declared {info.disk_format.value} but is {facts.format.value}"
                )
            envelope = envelope_for_disk(
                name=info.name,
                description=info.description,
                disk_name=disk.name,
                facts=facts,
                cpu=info.cpu,
                ram_mb=info.ram_mb,
                hd_bytes=info.hd_bytes,
                icon_url=info.icon_url,
                category=info.category,
            )
            await repository.write_file(staging / envelope_name, envelope)
            template = TemplateDefinition(
                ovf_id=ovf_id,
                name=info.name,
                description=info.description,
                disk_format=facts.format,
                disk_path=f"{enterprise_id}/{dir_name}/{disk.name}",
                disk_file_size=facts.file_size,
                virtual_size=facts.virtual_size,
                cpu=info.cpu or 1,
                ram_mb=info.ram_mb or 256,
                hd_bytes=max(info.hd_bytes or 0, facts.virtual_size),
                icon_url=info.icon_url,
                category=info.category,
            )
            await repository.write_metadata(staging, template)
            await repository.commit(staging, repository.template_dir(enterprise_id, dir_name))
        except BaseException as exc:
            # Run to its end even when the request is being cancelled: the removal is one
            # call in the executor, which a cancel does not interrupt once started.
            await repository.remove(staging)
            if isinstance(exc, AbiquoError):
                reason = exc.message
            elif isinstance(exc, asyncio.CancelledError):
                # aiohttp cancels the handler of a request whose client went away.
                reason = "the upload broke off: the connection was closed"
            else:
                reason = f"the upload broke off: {type(exc).__name__}: {exc}".rstrip(": ")
            failed = TemplateState(
                ovf_id=ovf_id, status=TemplateStatus.ERROR, error=reason, dir_name=dir_name
            )
            await self._record(enterprise_id, failed)
            raise
        finally:
            self._jobs.pop(key, None)
            self._sent.pop(key, None)
        state = _there(ovf_id, dir_name, template)
        await self._record(enterprise_id, state)
        self.log.info("template uploaded", enterprise=enterprise_id, ovf_id=ovf_id)
        return state

    # -- instances ---------------------------------------------------------------------

    async def register_instance(
        self, enterprise_id: str, disk_path: str, name: str, *, description: str = ""
    ) -> TemplateState:
        """Make a template of a VM's disk already in the repository (an instance).

        `disk_path` is relative to the repository (or absolute inside it) and names a
        file in a template directory of the enterprise: <enterprise>/<dir>/<file>. An
        envelope is written beside it, and the template is recorded as DOWNLOAD. Asked
        again for the same disk, it answers what it recorded.
        """
        repository, store = self._parts()
        check_enterprise(enterprise_id)
        if not name.strip():
            raise InvalidInput("an instance needs a name")
        given = PurePosixPath(disk_path)
        if given.is_absolute():
            try:
                given = PurePosixPath(Path(disk_path).relative_to(repository.root).as_posix())
            except ValueError:
                raise InvalidInput(f"{disk_path!r} is not in the repository") from None
        parts = given.parts
        if (
            len(parts) != 3
            or parts[0] != enterprise_id
            or any(p.startswith(".") or p in ("", "..") for p in parts)
        ):
            raise InvalidInput(
                f"{disk_path!r} is not a file of a template directory of enterprise "
                f"{enterprise_id} (<enterprise>/<dir>/<file>)"
            )
        _, dir_name, file_name = parts
        directory = repository.template_dir(enterprise_id, dir_name)
        envelope_name = f"{slug(PurePosixPath(file_name).stem, default='disk')}.ovf"
        if envelope_name == file_name:
            envelope_name = f"instance-{envelope_name}"
        ovf_id = f"{dir_name}/{envelope_name}"
        existing = await store.get(enterprise_id, ovf_id)
        if existing is not None and existing.status is TemplateStatus.DOWNLOAD:
            return existing
        key = (enterprise_id, ovf_id)
        if key in self._jobs:
            raise TemplateConflict(f"{ovf_id!r} is being registered already")
        # Claimed: a rescan meanwhile leaves this directory to it.
        self._jobs[key] = None
        try:
            facts = await describe_disk(directory / file_name, run=repository.run)
            envelope = envelope_for_disk(
                name=name,
                description=description,
                disk_name=file_name,
                facts=facts,
                cpu=None,
                ram_mb=None,
                hd_bytes=None,
                icon_url="",
                category="",
            )
            template = TemplateDefinition(
                ovf_id=ovf_id,
                name=name,
                description=description,
                disk_format=facts.format,
                disk_path=f"{enterprise_id}/{dir_name}/{file_name}",
                disk_file_size=facts.file_size,
                virtual_size=facts.virtual_size,
                hd_bytes=facts.virtual_size,
            )
            await repository.write_file(directory / envelope_name, envelope)
            await repository.write_metadata(directory, template)
            state = _there(ovf_id, dir_name, template)
            await self._record(enterprise_id, state)
        finally:
            self._jobs.pop(key, None)
        return state

    async def on_register_instance(self, message: RegisterInstance) -> InstanceRegistered:
        state = await self.register_instance(
            message.enterprise_id,
            message.disk_path,
            message.name,
            description=message.description,
        )
        # register_instance answers only DOWNLOAD states, which carry their definition.
        assert state.template is not None
        return InstanceRegistered(template=state.template)

    async def on_announce_templates(self, message: AnnounceTemplates) -> None:
        """Tell central every template's state again, as the store has it: central asks
        once it knows this DC, having dropped what the AM told it before. No rescan (that
        is `rescan`'s, asked by an operator): the store is what the AM knows."""
        if self.repository is None:
            return
        _, store = self._parts()
        count = 0
        for enterprise_id in await store.enterprises():
            for state in await store.all(enterprise_id):
                # Not `_announce`, which measures the usage after each change.
                await self._publish_state(enterprise_id, state)
                count += 1
        # Central dropped the usage reports too while it did not know this DC: one
        # more now rather than at the next interval.
        if self._usage is not None:
            self._usage.changed()
        self.log.info("templates announced again", count=count)

    # -- rescanning and deleting -------------------------------------------------------

    async def rescan(self, enterprise_id: str) -> list[TemplateState]:
        """Make the statuses say what is on disk (an operator may have added or removed
        templates by hand); every change goes to central."""
        repository, store = self._parts()
        check_enterprise(enterprise_id)
        known = {s.ovf_id: s for s in await store.all(enterprise_id)}
        on_disk: dict[str, TemplateState] = {}
        for found in await repository.scan(enterprise_id):
            if found.definition is not None:
                on_disk[found.definition.ovf_id] = _there(
                    found.definition.ovf_id, found.dir_name, found.definition
                )
            elif found.envelopes:
                state = await self._inspect(enterprise_id, found.dir_name, found.envelopes[0])
                on_disk[state.ovf_id] = state
        for ovf_id, state in on_disk.items():
            if (enterprise_id, ovf_id) in self._jobs:
                continue
            if known.get(ovf_id) != state:
                await self._record(enterprise_id, state)
        for ovf_id, old in known.items():
            if ovf_id in on_disk or (enterprise_id, ovf_id) in self._jobs:
                continue
            if old.status is TemplateStatus.DOWNLOAD:
                await store.remove(enterprise_id, ovf_id)
                await self._announce(
                    enterprise_id, TemplateState(ovf_id=ovf_id, status=TemplateStatus.NOT_DOWNLOAD)
                )
            elif old.status is TemplateStatus.DOWNLOADING:
                await self._record(enterprise_id, _error(old, "the transfer stopped unfinished"))
        return await store.all(enterprise_id)

    async def _inspect(
        self, enterprise_id: str, dir_name: str, envelope_name: str
    ) -> TemplateState:
        """A template directory put in by hand: checked as a download would be."""
        repository, _ = self._parts()
        directory = repository.template_dir(enterprise_id, dir_name)
        ovf_id = f"{dir_name}/{envelope_name}"
        try:
            limit = self.settings.max_document_bytes
            data = await repository.read_bytes(directory / envelope_name, limit)
            envelope = await self._off_loop(partial(parse_envelope, data, max_bytes=limit))
            facts = await verify_package(
                directory=directory,
                envelope=envelope,
                manifest=None,
                envelope_name=envelope_name,
                max_file_bytes=self.settings.max_upload_bytes,
                run=repository.run,
            )
        except AbiquoError as exc:
            return TemplateState(
                ovf_id=ovf_id, status=TemplateStatus.ERROR, error=exc.message, dir_name=dir_name
            )
        disk = envelope.disks[0]
        file = envelope.disk_file(disk)
        template = definition(
            ovf_id=ovf_id,
            envelope=envelope,
            disk=disk,
            facts=facts[file.id],
            disk_path=f"{enterprise_id}/{dir_name}/{file.path.as_posix()}",
        )
        # Recorded beside it: the next scan need not run qemu-img again.
        await repository.write_metadata(directory, template)
        return _there(ovf_id, dir_name, template)

    async def delete(self, enterprise_id: str, ovf_id: str) -> None:
        """Remove a template (stopping its download first) and forget it."""
        repository, store = self._parts()
        check_enterprise(enterprise_id)
        key = (enterprise_id, ovf_id)
        job = self._jobs.get(key)
        if key in self._jobs and job is None:
            raise TemplateConflict(f"{ovf_id!r} is being received; delete it once that ends")
        if job is not None:
            job.cancel()
            await asyncio.wait({job})
        state = await store.get(enterprise_id, ovf_id)
        removed = False
        if is_download(ovf_id):
            removed = await repository.remove(
                repository.staging_dir(enterprise_id, download_key(ovf_id))
            )
        dir_name = state.dir_name if state is not None and state.dir_name else _dir_of(ovf_id)
        if dir_name:
            directory = repository.template_dir(enterprise_id, dir_name)
            recorded = await repository.read_definition(directory)
            # Only this template's own directory (a name taken by another stays): the one
            # its record names, or, for one put in by hand that was never recorded (its
            # check failed), the one holding its envelope.
            own = recorded is not None and recorded.ovf_id == ovf_id
            if recorded is None and _dir_of(ovf_id) == dir_name:
                envelope = directory / PurePosixPath(ovf_id).name
                own = await repository.file_size(envelope) is not None
            if own:
                removed = await repository.remove(directory) or removed
        forgotten = await store.remove(enterprise_id, ovf_id)
        if state is None and not removed and not forgotten:
            raise TemplateNotFound(f"enterprise {enterprise_id} has no template {ovf_id!r}")
        await self._announce(
            enterprise_id, TemplateState(ovf_id=ovf_id, status=TemplateStatus.NOT_DOWNLOAD)
        )
        self.log.info("template deleted", enterprise=enterprise_id, ovf_id=ovf_id)

    async def servable_file(self, relative: str) -> Path:
        """A file of the repository served over HTTP (NotFound outside the templates)."""
        repository, _ = self._parts()
        return await repository.servable(relative)


def _there(ovf_id: str, dir_name: str, template: TemplateDefinition) -> TemplateState:
    return TemplateState(
        ovf_id=ovf_id,
        status=TemplateStatus.DOWNLOAD,
        progress=100.0,
        dir_name=dir_name,
        template=template,
    )


def _error(state: TemplateState, reason: str) -> TemplateState:
    return TemplateState(
        ovf_id=state.ovf_id, status=TemplateStatus.ERROR, error=reason, dir_name=state.dir_name
    )


def _dir_of(ovf_id: str) -> str:
    if is_download(ovf_id):
        return download_dir_name(ovf_id)
    # "<dir>/<envelope>.ovf": an upload, an instance, or a template put in by hand.
    parts = PurePosixPath(ovf_id).parts
    if len(parts) != 2 or not parts[1].endswith(".ovf"):
        return ""
    return parts[0] if all(slug(p, default="") == p for p in parts) else ""
