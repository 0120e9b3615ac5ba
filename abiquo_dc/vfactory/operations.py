"""What each job type does on a driver, what undoes it, and how to tell it already happened.

Drivers make "reaching the state the VM is in already" a success (power_on of a running
VM, deconfigure of a VM that is gone), so a job run again after a crash or a
redelivery does no harm, with three exceptions handled here: CONFIGURE of a VM that
exists (the earlier run made it: success, nothing copied again), SNAPSHOT of an instance
whose copy is there (likewise) and RESET, which cannot be observed and is not repeated
once it may have happened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from abiquo_dc.hypervisors.base import (
    DiskInRepository,
    Driver,
    PowerState,
    VmAlreadyExists,
    VmNotFound,
)
from abiquo_dc.protocol.definitions import VirtualMachineDefinition
from abiquo_dc.protocol.jobs import Job, JobType, ObservedState
from abiquo_runtime.errors import InvalidInput

# CONFIGURE's disks made ready (converted, reservations asked for) before the driver
# creates the VM: given the job and its driver, the definition to create.
Prepare = Callable[[Job, Driver], Awaitable[VirtualMachineDefinition]]

_OBSERVED = {
    PowerState.ON: ObservedState.ON,
    PowerState.OFF: ObservedState.OFF,
    PowerState.PAUSED: ObservedState.PAUSED,
    PowerState.UNKNOWN: ObservedState.UNKNOWN,
}

# The power state a job leaves the VM in, where it leaves it in one.
_GOAL = {
    JobType.POWER_ON: PowerState.ON,
    JobType.RESUME: PowerState.ON,
    JobType.RESET: PowerState.ON,
    JobType.POWER_OFF: PowerState.OFF,
    JobType.SHUTDOWN: PowerState.OFF,
    JobType.PAUSE: PowerState.PAUSED,
}

# The job type whose effect undoes each job type's, for a rollback.
_UNDO = {
    JobType.CONFIGURE: JobType.DECONFIGURE,
    JobType.POWER_ON: JobType.POWER_OFF,
    JobType.RESUME: JobType.PAUSE,
    JobType.PAUSE: JobType.RESUME,
    JobType.POWER_OFF: JobType.POWER_ON,
    JobType.SHUTDOWN: JobType.POWER_ON,
}


def validate(job: Job) -> None:
    """What a job must carry beyond what decoding checks; InvalidInput if it does not."""
    if not job.id:
        raise InvalidInput("a job needs an id")
    if not job.definition.uuid:
        raise InvalidInput(f"job {job.id}: the VM needs a uuid")
    if job.type is JobType.SNAPSHOT:
        if job.snapshot is None:
            raise InvalidInput(f"SNAPSHOT job {job.id} says nowhere to copy the disk")
        if not 0 <= job.snapshot.disk_index < len(job.definition.disks):
            raise InvalidInput(f"SNAPSHOT job {job.id}: the VM has no such disk")
        if job.snapshot.template_name and not job.snapshot.enterprise_id:
            raise InvalidInput(f"SNAPSHOT job {job.id}: a template needs its enterprise")


async def observe(driver: Driver, uuid: str) -> ObservedState:
    try:
        vm = await driver.get_vm(uuid)
    except VmNotFound:
        return ObservedState.ABSENT
    return _OBSERVED[vm.power_state]


async def perform(driver: Driver, job: Job, prepare: Prepare) -> ObservedState | None:
    """Do what `job` says; returns what REFRESH saw (None for the other types)."""
    d = job.definition
    match job.type:
        case JobType.CONFIGURE:
            definition = await prepare(job, driver)
            # Exists already: the goal, this VM on this host (an earlier run made it).
            with contextlib.suppress(VmAlreadyExists):
                await driver.configure(definition)
        case JobType.RECONFIGURE:
            await driver.reconfigure(d)
        case JobType.DECONFIGURE:
            await driver.deconfigure(d)
        case JobType.POWER_ON:
            await driver.power_on(d.uuid)
        case JobType.POWER_OFF:
            await driver.power_off(d.uuid)
        case JobType.SHUTDOWN:
            await driver.shutdown(d.uuid)
        case JobType.RESET:
            await driver.reset(d.uuid)
        case JobType.PAUSE:
            await driver.pause(d.uuid)
        case JobType.RESUME:
            await driver.resume(d.uuid)
        case JobType.SNAPSHOT:
            snapshot = job.snapshot
            assert snapshot is not None  # validate() saw to it
            try:
                await driver.copy_disk_to_repository(
                    d, snapshot.disk_index, snapshot.repository_path
                )
            except DiskInRepository:
                # An instance's destination is in a directory of its task's own, and a
                # copy appears there only whole (the AIM writes a hidden temporary beside
                # it and links it in under its name once complete and synced; the
                # simulator stores it at once): a disk found there is this job's, from a
                # run a crash cut short. Without a template the path is anyone's: refused.
                if not snapshot.template_name:
                    raise
        case JobType.REFRESH:
            return await observe(driver, d.uuid)
    return None


def undoable(job: Job) -> bool:
    if job.type is JobType.RECONFIGURE:
        return job.previous is not None
    return job.type in _UNDO


async def undo(driver: Driver, job: Job) -> None:
    """Undo a done job's effect (see `undoable`)."""
    if job.type is JobType.RECONFIGURE:
        assert job.previous is not None
        await driver.reconfigure(job.previous)
        return
    await perform(
        driver,
        Job(id=job.id, type=_UNDO[job.type], connection=job.connection, definition=job.definition),
        _as_is,
    )


async def _as_is(job: Job, driver: Driver) -> VirtualMachineDefinition:
    return job.definition


async def in_effect(driver: Driver, job: Job) -> bool:
    """After a crash: whether the effect of a job that had started is already there.

    True means it is reported DONE without acting again. Only CONFIGURE and the jobs
    with a goal state can tell; the others are idempotent and simply run again."""
    if job.type is JobType.CONFIGURE:
        # The driver defines the VM last, once its disks are in place: a VM that exists
        # was made whole.
        return await observe(driver, job.definition.uuid) is not ObservedState.ABSENT
    goal = _GOAL.get(job.type)
    if goal is None:
        return False
    return await observe(driver, job.definition.uuid) is _OBSERVED[goal]
