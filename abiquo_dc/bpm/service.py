"""Business Process Manager: disk format conversions, one at a time per repository.

Requests:
- `ConvertTemplateDisk` from central (abiquo.datacenter.requests.<dc>.bpm): answered with
  `ConversionStateChanged` notifications on the bus, which the link sends to central:
  QUEUED once journaled (only then is the delivery acknowledged), START, PROGRESS (at
  most one a `progress_interval`), then DONE (with the converted disk's path), FAILED
  (with "<code>: <message>") or CANCELLED. A bad request (unknown format, a path out of
  the repository, a missing disk, a declared format that is not the disk's) is answered
  FAILED at once; a repository not mounted is a TemporaryError, and the delivery goes
  back to the queue after `not_mounted_hold`.
- `ConvertDisk` from vfactory, on the bus: answered with `DiskConverted` once the disk
  exists in the first of the requested formats the BPM makes (at once when the disk is
  in one of them already, or its conversion was made before); errors are raised.
- `CancelConversion`, and `DELETE /bpm-async/conversions/{id}`: a waiting conversion
  leaves the queue, a running one is killed and its temporary files removed; the request
  is told CANCELLED. `GET /bpm-async/conversions` lists the queue (http.py).

The same disk asked in the same format while it waits or runs joins that conversion.
A request delivered again while it waits or runs is the same request; after it ended,
it is answered with its outcome again.

Crash safety: requests are journaled (journal.py) in the DC's state directory. At start,
the temporary files left in the formats/ directories of unfinished requests are removed;
a request a crash interrupted mid-conversion is tried once more, and fails
"interrupted twice" if that is interrupted too; the others are queued again in order.
An orderly stop kills the running qemu-img, removes its files and does not count as an
interruption. With unfinished requests and the repository not mounted, the BPM retries
its start until it is mounted.

Constructed without `state_dir` (the composition root's older call), the BPM journals
nothing: it works the same, but a restart forgets what was queued.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from abiquo_dc.bpm import formats
from abiquo_dc.bpm.conversions import Asker, Conversion, ConversionQueue, Done
from abiquo_dc.bpm.errors import BadFormat, BpmStopped, Cancelled, Interrupted, QemuImgMissing
from abiquo_dc.bpm.images import Images
from abiquo_dc.bpm.journal import ConversionJournal, Outcome, Request
from abiquo_dc.bpm.notices import Notices
from abiquo_dc.bpm.qemu import QemuImg
from abiquo_dc.bpm.repository import Repository
from abiquo_dc.bpm.runner import ConversionRunner, abandon, failed
from abiquo_dc.bus import Bus, Unsubscribe
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.jobs import ConvertDisk, DiskConverted
from abiquo_dc.protocol.templates import CancelConversion, ConversionState, ConvertTemplateDisk
from abiquo_dc.settings import BpmSettings, RepositorySettings
from abiquo_dc.subsystem import Subsystem
from abiquo_runtime.backoff import Backoff
from abiquo_runtime.errors import AbiquoError, Conflict, NotFound, TemporaryError

JOURNAL_FILE = "bpm-journal.sqlite"
# Threads for the repository's file operations: a hung NFS mount holds these, not the
# loop and not the default executor the rest of the process shares.
FILE_THREADS = 2


class ConversionView(msgspec.Struct, kw_only=True):
    """A conversion as GET /bpm-async/conversions shows it."""

    id: str
    state: ConversionState
    progress: float
    # 0: running; 1, 2, ...: waiting, in order; None: ended.
    position: int | None
    source_path: str = ""
    target_format: DiskFormat
    target_path: str = ""
    error: str = ""
    # Every request this conversion answers (the same disk and format asked again).
    requests: list[str] = msgspec.field(default_factory=list)
    retried: bool = False


@dataclass(frozen=True)
class _Parts:
    """What the BPM runs with, from setup to teardown."""

    queue: ConversionQueue
    journal: ConversionJournal
    images: Images
    runner: ConversionRunner
    notices: Notices


class BusinessProcessManager(Subsystem):
    name = "bpm"
    path = "bpm-async"
    check_answers_uuid = True

    def __init__(
        self,
        *,
        bus: Bus,
        dc_uuid: str,
        repository: RepositorySettings | None = None,
        settings: BpmSettings | None = None,
        state_dir: Path | None = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        super().__init__(bus=bus, dc_uuid=dc_uuid, backoff=backoff)
        self.repository_settings = repository or RepositorySettings()
        self.settings = settings or BpmSettings()
        # None: nothing journaled (see the module's docstring).
        self.journal_path = state_dir / JOURNAL_FILE if state_dir is not None else None
        # At most one PROGRESS notification per request this often (seconds; read at
        # each start).
        self.progress_interval = 1.0
        # How long a ConvertTemplateDisk waits before it is given back to its queue when
        # the repository is not mounted: given back at once, RabbitMQ would hand it
        # straight back, in a loop, for as long as the mount is away.
        self.not_mounted_hold = 1.0
        self.parts: _Parts | None = None
        self._files: ThreadPoolExecutor | None = None
        self._unserve: list[Unsubscribe] = []

    # -- lifecycle -----------------------------------------------------------------------

    async def setup(self) -> None:
        self._files = ThreadPoolExecutor(max_workers=FILE_THREADS, thread_name_prefix="bpm-fs")
        executable = await self._blocking(shutil.which, self.settings.qemu_img)
        if executable is None:
            raise QemuImgMissing(
                f"{self.settings.qemu_img} is not installed (apt-get install qemu-utils)"
            )
        images = Images(
            repository=Repository(self.repository_settings),
            qemu=QemuImg(executable),
            blocking=self._blocking,
        )
        journal = ConversionJournal(self.journal_path)
        await journal.open()
        notices = Notices(bus=self.bus, dc_uuid=self.dc_uuid)
        runner = ConversionRunner(
            journal=journal,
            images=images,
            notices=notices,
            blocking=self._blocking,
            timeout=self.settings.conversion_timeout,
            progress_interval=self.progress_interval,
        )
        queue = ConversionQueue(run=runner.run, tasks=self.tasks, name="repository")
        self.parts = _Parts(queue, journal, images, runner, notices)
        await self._recover()
        self._unserve.append(self.bus.serve(ConvertTemplateDisk, self.on_convert_template_disk))
        self._unserve.append(self.bus.serve(CancelConversion, self.on_cancel_conversion))
        self._unserve.append(self.bus.serve(ConvertDisk, self.on_convert_disk))

    async def teardown(self) -> None:
        while self._unserve:
            self._unserve.pop()()
        parts, self.parts = self.parts, None
        try:
            if parts is not None:
                await parts.queue.close()
                for conversion in parts.queue:
                    abandon(conversion)
                await parts.journal.close()
        finally:
            if self._files is not None:
                # Not waited for: a thread stuck on a hung mount must not hold the stop.
                self._files.shutdown(wait=False, cancel_futures=True)
                self._files = None

    async def _blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._files is None:
            raise BpmStopped("the BPM is not running")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._files, lambda: fn(*args, **kwargs))

    def _parts(self) -> _Parts:
        if self.parts is None:
            raise BpmStopped("the BPM is not running")
        return self.parts

    async def _recover(self) -> None:
        """Take back what the journal holds unfinished (see the module's docstring)."""
        parts = self._parts()
        repository = parts.images.repository
        unfinished, parts.journal.unfinished = parts.journal.unfinished, []
        if unfinished:
            self.log.info("taking back unfinished conversions", count=len(unfinished))
        for item in unfinished:
            request = item.request
            try:
                target = formats.target(request.target_format)
                source = await self._blocking(repository.open_source, request.source_path)
                placement = await self._blocking(repository.placement, source, target)
                removed = await self._blocking(Repository.sweep, placement.directory)
            except TemporaryError:
                # The repository is not there: the BPM starts again (the journal read
                # anew) once it is.
                raise
            except AbiquoError as exc:
                await parts.runner.end([Asker(request)], failed(exc, request.target_format))
                continue
            if removed:
                self.log.info(
                    "removed what an interrupted conversion left",
                    conversion=request.id,
                    files=removed,
                )
            if item.attempts >= 2:
                await parts.runner.end(
                    [Asker(request)],
                    failed(
                        Interrupted(
                            f"interrupted twice converting {request.source_path} to "
                            f"{request.target_format.value}: not tried again"
                        ),
                        request.target_format,
                    ),
                )
                continue
            self._enqueue(parts.queue, Asker(request), retried=item.attempts == 1)
            if item.attempts == 1:
                self.log.warning("retrying a conversion a crash interrupted", conversion=request.id)

    # -- the bus -------------------------------------------------------------------------

    async def on_convert_template_disk(self, message: ConvertTemplateDisk) -> None:
        parts = self._parts()
        request_id = message.conversion_id
        if not request_id:
            raise BadFormat("a conversion needs an id")
        if parts.queue.asked(request_id) is not None:
            self.log.info("conversion asked again while it is queued", conversion=request_id)
            return
        ended = parts.journal.outcomes.get(request_id)
        if ended is not None:
            self.log.info("conversion asked again after it ended", conversion=request_id)
            await parts.notices.outcome(request_id, ended)
            return
        request = Request(
            id=request_id,
            source_path=message.source_path,
            source_format=message.source_format,
            target_format=message.target_format,
            notify=True,
        )
        try:
            plan = await parts.images.plan(
                message.source_path, message.source_format, message.target_format
            )
        except TemporaryError:
            await asyncio.sleep(self.not_mounted_hold)
            raise
        except AbiquoError as exc:
            self.log.info("conversion refused", conversion=request_id, error=exc.message)
            await parts.runner.end([Asker(request)], failed(exc, message.target_format))
            return
        if plan.done is not None:
            await parts.runner.end(
                [Asker(request)], Outcome(ConversionState.DONE, plan.done.path, plan.done.format)
            )
            return
        await self._accept(msgspec.structs.replace(request, source_path=plan.source.file.rel), None)

    async def on_convert_disk(self, message: ConvertDisk) -> DiskConverted:
        if not message.target_formats:
            raise BadFormat("a conversion needs at least one target format")
        producible = [f for f in message.target_formats if f in formats.SUPPORTED]
        plan = await self._parts().images.plan(
            message.repository_path,
            message.source_format,
            producible[0] if producible else DiskFormat.RAW,
        )
        for fmt in message.target_formats:
            if plan.source.is_in(fmt):
                return DiskConverted(repository_path=plan.source.file.rel, format=fmt)
        if not producible:
            raise BadFormat(
                "the BPM makes none of "
                + ", ".join(f.value for f in message.target_formats)
                + f" (for {message.hypervisor.value})"
            )
        if plan.done is not None:
            return DiskConverted(repository_path=plan.done.path, format=plan.done.format)
        answer: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        # vfactory may stop waiting (its timeout); the outcome then goes unread.
        answer.add_done_callback(_consume)
        request = Request(
            id=f"vf-{uuid.uuid4().hex[:16]}",
            source_path=plan.source.file.rel,
            source_format=message.source_format,
            target_format=producible[0],
            notify=False,
        )
        await self._accept(request, answer)
        # Shielded: vfactory giving up does not cancel the conversion; asked again, it
        # joins it or finds it made.
        done = await asyncio.shield(answer)
        return DiskConverted(repository_path=done.path, format=done.format)

    async def on_cancel_conversion(self, message: CancelConversion) -> None:
        try:
            await self.cancel(message.conversion_id)
        except Conflict as exc:
            # Delivered again after it was done, or it ended meanwhile: nothing to do.
            self.log.info(
                "cancel of an ended conversion",
                conversion=message.conversion_id,
                error=exc.message,
            )

    # -- the operations (bus and HTTP) ---------------------------------------------------

    def conversions(self) -> list[ConversionView]:
        """The running conversion, then the waiting ones in their order."""
        return [self._view(c, i) for i, c in enumerate(self._parts().queue)]

    def conversion(self, request_id: str) -> ConversionView:
        """A conversion by any of its requests' ids, running, waiting or ended."""
        parts = self._parts()
        found = parts.queue.asked(request_id)
        if found is not None:
            return self._view(found, parts.queue.position(found))
        ended = parts.journal.outcomes.get(request_id)
        if ended is None:
            raise NotFound(f"no conversion {request_id}", code="BPM-NO-CONVERSION")
        return ConversionView(
            id=request_id,
            state=ended.state,
            progress=100.0 if ended.state is ConversionState.DONE else 0.0,
            position=None,
            target_format=ended.target_format,
            target_path=ended.detail if ended.state is ConversionState.DONE else "",
            error=ended.detail if ended.state is ConversionState.FAILED else "",
            requests=[request_id],
        )

    async def cancel(self, request_id: str) -> None:
        """Cancel one request. Its conversion stops only when no other request awaits it:
        a waiting one leaves the queue, a running one is killed (and its files removed
        before this returns)."""
        parts = self._parts()
        conversion = parts.queue.asked(request_id)
        if conversion is None:
            ended = parts.journal.outcomes.get(request_id)
            if ended is not None:
                raise Conflict(
                    f"conversion {request_id} has already ended ({ended.state.value})",
                    code="BPM-ENDED",
                )
            raise NotFound(f"no conversion {request_id}", code="BPM-NO-CONVERSION")
        asker = conversion.askers.pop(request_id)
        if not conversion.askers and not parts.queue.withdraw(conversion):
            conversion.cancellation.cancel()
            await conversion.ended.wait()
        self.log.info("conversion cancelled", conversion=request_id)
        await parts.runner.end(
            [asker],
            Outcome(ConversionState.CANCELLED, "", conversion.target_format),
            error=Cancelled(f"conversion {request_id} was cancelled"),
        )

    # -- accepting -----------------------------------------------------------------------

    async def _accept(self, request: Request, answer: asyncio.Future[Done] | None) -> None:
        """Journal the request, then queue it or join it to the same conversion."""
        parts = self._parts()
        await parts.journal.accepted(request)
        conversion, joined = self._enqueue(parts.queue, Asker(request, answer))
        if joined:
            self.log.info(
                "conversion joins the same one", conversion=request.id, joins=conversion.id
            )
        if conversion.running:
            # It counts as started: a crash now interrupts it as it does the others.
            await parts.journal.started([request.id])
        if request.notify:
            await parts.notices.send(request.id, ConversionState.QUEUED, conversion.target_format)
            if conversion.running:
                await parts.notices.send(
                    request.id,
                    ConversionState.START,
                    conversion.target_format,
                    progress=conversion.progress,
                )

    def _enqueue(
        self, queue: ConversionQueue, asker: Asker, *, retried: bool = False
    ) -> tuple[Conversion, bool]:
        request = asker.request
        key = (request.source_path, request.target_format)
        conversion = queue.find(key)
        if conversion is not None:
            conversion.askers[request.id] = asker
            conversion.retried = conversion.retried or retried
            return conversion, True
        conversion = Conversion(
            key=key,
            source_path=request.source_path,
            source_format=request.source_format,
            target_format=request.target_format,
            retried=retried,
        )
        conversion.askers[request.id] = asker
        queue.add(conversion)
        return conversion, False

    def _view(self, conversion: Conversion, position: int) -> ConversionView:
        return ConversionView(
            id=conversion.id,
            state=conversion.state,
            progress=round(conversion.progress, 2),
            position=position,
            source_path=conversion.source_path,
            target_format=conversion.target_format,
            requests=list(conversion.askers),
            retried=conversion.retried,
        )

    # -- HTTP ----------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        from abiquo_dc.bpm.http import bpm_routes

        return bpm_routes(self)


def _consume(future: asyncio.Future[Done]) -> None:
    if not future.cancelled():
        future.exception()
