"""Running one task: its jobs in order, each journaled and notified, undone on failure.

For each job: START is journaled and confirmed by the broker before the job acts; DONE or
FAILED after. When a job of a dependent task fails, the jobs after it are not run
(FAILED, VF-NOT-RUN) and, if the task asks for it, the done ones are undone in reverse
order (ROLLBACK_START, then ROLLBACK_DONE or ROLLBACK_FAILED).

The same code resumes a task after a crash, from the states in the journal: a job that
had started is first looked for on the hypervisor (operations.in_effect) and reported
DONE if its effect is there, or run again; an interrupted undo is run again (undos are
idempotent); what was finished is skipped.

A SNAPSHOT whose snapshot names a template (an instance) is DONE once the Appliance
Manager made a template of the copy, and its DONE says which. Run again after a crash,
it finds its copy there (operations.perform keeps it) and asks again, which the AM
answers with what it registered the first time.

Errors: a TemporaryError (the host did not answer, the BPM or the AM is not there yet)
is retried with backoff up to `attempts` times (retry.py); anything else fails the job
at once with its code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import msgspec
import structlog

from abiquo_dc.bus import Bus, NoHandler
from abiquo_dc.hypervisors.base import Driver, DriverFailure, HostUnreachable
from abiquo_dc.hypervisors.pool import DriverPool
from abiquo_dc.protocol.definitions import RepositoryDisk, VirtualMachineDefinition
from abiquo_dc.protocol.envelope import stamped
from abiquo_dc.protocol.jobs import (
    ConvertDisk,
    DhcpReservationRequested,
    DiskConverted,
    InstanceRegistered,
    Job,
    JobNotification,
    JobState,
    JobType,
    ObservedState,
    RegisterInstance,
)
from abiquo_dc.protocol.templates import TemplateDefinition
from abiquo_dc.vfactory import operations
from abiquo_dc.vfactory.journal import JobJournal, Pending, Phase, TaskRecord
from abiquo_dc.vfactory.limits import HostSlots, VmLocks
from abiquo_dc.vfactory.retry import RetryPolicy, retrying
from abiquo_runtime.correlation import correlation
from abiquo_runtime.errors import AbiquoError, TemporaryError

log = structlog.get_logger("abiquo.dc.vfactory")

T = TypeVar("T")
# Publishes a message toward central and returns once the broker confirmed it.
Publish = Callable[[JobNotification], Awaitable[None]]

_ROLLED_BACK = frozenset({JobState.ROLLBACK_DONE, JobState.ROLLBACK_FAILED})
_DONE = frozenset({JobState.DONE, JobState.ROLLBACK_START}) | _ROLLED_BACK


class ConversionUnavailable(TemporaryError):
    code = "VF-BPM-UNAVAILABLE"


class RegistrationUnavailable(TemporaryError):
    """Nothing serves RegisterInstance: the Appliance Manager is not running.

    For now, as long as the retries last: after a restart vfactory resumes its tasks
    while the AM may still be starting (its repository not mounted yet, its store not
    open), and a resumed instance reaches its registration at once."""

    code = "VF-AM-UNAVAILABLE"


def describe(exc: BaseException) -> tuple[str, str]:
    """A failure's stable code and message, as the notification carries them."""
    if isinstance(exc, AbiquoError):
        return exc.code, exc.message
    return "VF-INTERNAL", f"{type(exc).__name__}: {exc}"


class TaskRunner:
    def __init__(
        self,
        *,
        dc_uuid: str,
        journal: JobJournal,
        pool: DriverPool,
        publish: Publish,
        bus: Bus,
        slots: HostSlots,
        retry: RetryPolicy | None = None,
        conversion_timeout: float = 3600.0,
        registration_timeout: float = 300.0,
    ) -> None:
        self.dc_uuid = dc_uuid
        self.journal = journal
        self.pool = pool
        self.publish = publish
        self.bus = bus
        self.slots = slots
        self.retry = retry or RetryPolicy()
        self.conversion_timeout = conversion_timeout
        # The AM reads the copy's facts with qemu-img and writes its envelope: a while
        # on a slow NFS repository, never hours.
        self.registration_timeout = registration_timeout
        self.vm_locks = VmLocks()

    # -- a task --------------------------------------------------------------------------

    async def run(self, record: TaskRecord) -> None:
        task = record.task
        with correlation(task.correlation_id or None):
            async with self.vm_locks.hold(job.definition.uuid for job in task.jobs):
                await self._run_jobs(record)
                await self.journal.set_phase(record, Phase.FINISHED)

    async def _run_jobs(self, record: TaskRecord) -> None:
        task = record.task
        done: list[Job] = []
        failed: Job | None = None
        for job in task.jobs:
            state = record.state(job.id)
            if state in _DONE:
                done.append(job)
            elif state is JobState.FAILED:
                failed = failed or job
            elif failed is not None and task.dependent:
                await self.notify(
                    record,
                    job,
                    JobState.FAILED,
                    error_code="VF-NOT-RUN",
                    error_message=f"not run: job {failed.id} of the task failed",
                )
            elif await self._run_job(record, job, resumed=state is JobState.START):
                done.append(job)
            else:
                failed = failed or job
        if failed is None or not (task.dependent and task.rollback):
            return
        if record.phase is not Phase.ROLLING_BACK:
            await self.journal.set_phase(record, Phase.ROLLING_BACK)
        for job in reversed(done):
            state = record.state(job.id)
            if state not in _ROLLED_BACK and operations.undoable(job):
                await self._undo_job(record, job, resumed=state is JobState.ROLLBACK_START)

    # -- a job ---------------------------------------------------------------------------

    async def _run_job(self, record: TaskRecord, job: Job, *, resumed: bool) -> bool:
        bound = log.bind(task=record.task.task_id, job=job.id, type=job.type.value)
        if not resumed:
            await self.notify(record, job, JobState.START)
        observed: ObservedState | None = None
        template: TemplateDefinition | None = None
        try:
            if resumed and await self._on_host(job, lambda d: operations.in_effect(d, job)):
                bound.info("job had taken effect before the restart")
            else:
                observed = await self._on_host(
                    job, lambda d: operations.perform(d, job, self._prepare)
                )
            template = await self._register(job)
        except Exception as exc:
            code, message = describe(exc)
            if not isinstance(exc, AbiquoError):
                bound.exception("job failed unexpectedly")
            else:
                bound.warning("job failed", code=code, error=message)
            await self.notify(record, job, JobState.FAILED, error_code=code, error_message=message)
            return False
        await self.notify(record, job, JobState.DONE, observed=observed, template=template)
        return True

    async def _undo_job(self, record: TaskRecord, job: Job, *, resumed: bool) -> None:
        if not resumed:
            await self.notify(record, job, JobState.ROLLBACK_START)
        try:
            await self._on_host(job, lambda d: operations.undo(d, job))
        except Exception as exc:
            code, message = describe(exc)
            log.warning("rollback failed", task=record.task.task_id, job=job.id, code=code)
            await self.notify(
                record, job, JobState.ROLLBACK_FAILED, error_code=code, error_message=message
            )
            return
        await self.notify(record, job, JobState.ROLLBACK_DONE)

    async def _on_host(self, job: Job, action: Callable[[Driver], Awaitable[T]]) -> T:
        """`action` on the job's host within the limits, retried while failing for now."""

        async def attempt() -> T:
            try:
                async with self.slots.slot(job.connection.address):
                    driver = await self.pool.get(job.connection)
                    return await action(driver)
            except HostUnreachable:
                await self.pool.discard(job.connection)
                raise

        return await retrying(attempt, self.retry, job=job.id, peer="host")

    # -- CONFIGURE's preparations ----------------------------------------------------------

    async def _prepare(self, job: Job, driver: Driver) -> VirtualMachineDefinition:
        """The definition with its disks in formats the hypervisor boots, and the DHCP
        reservations asked for."""
        definition = job.definition
        accepted = driver.capabilities.disk_formats
        disks = []
        for disk in definition.disks:
            if isinstance(disk, RepositoryDisk) and accepted and disk.format not in accepted:
                disk = await self._convert(disk, job, driver)
            disks.append(disk)
        for nic in definition.nics:
            if nic.ip:
                # The DHCP service answers on its own time; nobody waits for it here.
                await self.bus.publish(
                    DhcpReservationRequested(
                        vm_uuid=definition.uuid,
                        hostname=definition.name,
                        mac=nic.mac,
                        ip=nic.ip,
                        vlan_tag=nic.vlan_tag,
                        network_name=nic.network_name,
                    )
                )
        return msgspec.structs.replace(definition, disks=disks)

    async def _convert(self, disk: RepositoryDisk, job: Job, driver: Driver) -> RepositoryDisk:
        request = ConvertDisk(
            repository_path=disk.repository_path,
            source_format=disk.format,
            target_formats=sorted(driver.capabilities.disk_formats),
            hypervisor=job.connection.type,
        )
        try:
            reply = await self.bus.request(request, timeout=self.conversion_timeout)
        except NoHandler:
            raise ConversionUnavailable(
                f"{disk.repository_path} is {disk.format}, which {job.connection.type} does not"
                " boot, and the BPM that converts disks is not running"
            ) from None
        if not isinstance(reply, DiskConverted):
            raise DriverFailure(f"the BPM answered {type(reply).__name__} to a conversion")
        return msgspec.structs.replace(
            disk, repository_path=reply.repository_path, format=reply.format
        )

    # -- SNAPSHOT's template ---------------------------------------------------------------

    async def _register(self, job: Job) -> TemplateDefinition | None:
        """The template the AM made of a SNAPSHOT's copy, when the job asks for one."""
        snapshot = job.snapshot
        if job.type is not JobType.SNAPSHOT or snapshot is None or not snapshot.template_name:
            return None
        request = RegisterInstance(
            enterprise_id=snapshot.enterprise_id,
            disk_path=snapshot.repository_path,
            name=snapshot.template_name,
            description=snapshot.template_description,
        )

        async def attempt() -> TemplateDefinition:
            try:
                reply = await self.bus.request(request, timeout=self.registration_timeout)
            except NoHandler:
                raise RegistrationUnavailable(
                    f"{snapshot.repository_path} was copied, but the appliance manager that"
                    " makes a template of it is not running"
                ) from None
            if not isinstance(reply, InstanceRegistered):
                raise DriverFailure(f"the AM answered {type(reply).__name__} to a registration")
            return reply.template

        # Outside the host's slots: the host's part is done.
        return await retrying(attempt, self.retry, job=job.id, peer="am")

    # -- notifications ---------------------------------------------------------------------

    async def notify(
        self,
        record: TaskRecord,
        job: Job,
        state: JobState,
        *,
        error_code: str = "",
        error_message: str = "",
        observed: ObservedState | None = None,
        template: TemplateDefinition | None = None,
    ) -> None:
        """Journal the job's new state with its notification, then send it and wait for
        the broker's confirm: what is journaled and not confirmed is sent again at start."""
        notification = stamped(
            JobNotification(
                dc_uuid=self.dc_uuid,
                task_id=record.task.task_id,
                job_id=job.id,
                job_type=job.type,
                vm_uuid=job.definition.uuid,
                state=state,
                error_code=error_code,
                error_message=error_message,
                observed=observed,
                template=template,
                at=datetime.now(UTC),
            )
        )
        await self.send(await self.journal.record(record, notification))

    async def send(self, pending: Pending) -> None:
        await self.publish(pending.notification)
        self.journal.confirmed(pending)
