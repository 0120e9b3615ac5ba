"""What each task is made of, from which VM states, and where it leaves the VM.

API.md's rules: deploy needs NOT_ALLOCATED and is CONFIGURE then POWER_ON; undeploy is
POWER_OFF (when the VM is on or paused) then DECONFIGURE; a state change needs the VM to
exist on the hypervisor; anything else answers 409. While a task runs the VM is LOCKED.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from abiquo_central.cloud.states import VmState
from abiquo_dc.protocol.jobs import JobType

__all__ = [
    "FINISHED",
    "PLANS",
    "JobState",
    "Plan",
    "TaskState",
    "TaskType",
    "VmState",
    "jobs_for",
    "moves_forward",
]


class TaskType(StrEnum):
    DEPLOY = "DEPLOY"
    UNDEPLOY = "UNDEPLOY"
    RECONFIGURE = "RECONFIGURE"
    POWER_ON = "POWER_ON"
    POWER_OFF = "POWER_OFF"
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    RESET = "RESET"
    SNAPSHOT = "SNAPSHOT"
    REFRESH = "REFRESH"


class TaskState(StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    FINISHED_SUCCESSFULLY = "FINISHED_SUCCESSFULLY"
    FINISHED_UNSUCCESSFULLY = "FINISHED_UNSUCCESSFULLY"
    ABORTED = "ABORTED"


FINISHED = frozenset(
    {TaskState.FINISHED_SUCCESSFULLY, TaskState.FINISHED_UNSUCCESSFULLY, TaskState.ABORTED}
)


class JobState(StrEnum):
    """A job's state as the API shows it (the DC's JobState is mapped onto it)."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    DONE = "DONE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    ROLLBACK_STARTED = "ROLLBACK_STARTED"
    ROLLBACK_DONE = "ROLLBACK_DONE"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class Plan:
    # The states the VM may be in for the task to start.
    from_states: frozenset[VmState]
    # Where the VM is once the task succeeded.
    success: VmState
    # The VM's resources are given back when it succeeded (undeploy) or failed (deploy).
    release_on_success: bool = False
    release_on_failure: bool = False


_ON = frozenset({VmState.ON})
PLANS: Mapping[TaskType, Plan] = MappingProxyType(
    {
        TaskType.DEPLOY: Plan(
            frozenset({VmState.NOT_ALLOCATED}), VmState.ON, release_on_failure=True
        ),
        TaskType.UNDEPLOY: Plan(
            frozenset(
                {VmState.ON, VmState.OFF, VmState.PAUSED, VmState.CONFIGURED, VmState.UNKNOWN}
            ),
            VmState.NOT_ALLOCATED,
            release_on_success=True,
        ),
        # API.md: a reconfigured VM is CONFIGURED (powered off, its definition new).
        TaskType.RECONFIGURE: Plan(frozenset({VmState.OFF}), VmState.CONFIGURED),
        TaskType.POWER_ON: Plan(frozenset({VmState.OFF, VmState.CONFIGURED}), VmState.ON),
        TaskType.POWER_OFF: Plan(frozenset({VmState.ON, VmState.PAUSED}), VmState.OFF),
        TaskType.PAUSE: Plan(_ON, VmState.PAUSED),
        TaskType.RESUME: Plan(frozenset({VmState.PAUSED}), VmState.ON),
        TaskType.RESET: Plan(_ON, VmState.ON),
        TaskType.SNAPSHOT: Plan(frozenset({VmState.OFF}), VmState.OFF),
    }
)


def jobs_for(task: TaskType, state: VmState) -> list[JobType]:
    """The jobs of `task` for a VM in `state`, in order."""
    if task is TaskType.DEPLOY:
        return [JobType.CONFIGURE, JobType.POWER_ON]
    if task is TaskType.UNDEPLOY:
        on = state in (VmState.ON, VmState.PAUSED, VmState.UNKNOWN)
        return [JobType.POWER_OFF, JobType.DECONFIGURE] if on else [JobType.DECONFIGURE]
    return [JobType(task.value)]


# The API's job state for each state a DC reports (on the job, or on its rollback).
_RANK = {
    JobState.PENDING: 0,
    JobState.STARTED: 1,
    JobState.DONE: 2,
    JobState.FAILED: 2,
    JobState.SKIPPED: 2,
}


def moves_forward(current: str, new: JobState) -> bool:
    """Whether a job in `current` may go to `new` (a late or repeated report may not)."""
    return _RANK.get(JobState(current), 2) < _RANK.get(new, 2)
