"""VM jobs from central to a datacenter's Virtualization Manager, and what it reports back.

Central sends a `VirtualFactoryTask` (a few jobs for a VM: deploy is CONFIGURE then
POWER_ON) to abiquo.datacenter.requests.<dc>.virtualfactory. The DC answers with one
`JobNotification` per change of a job's state, on abiquo.datacenter.notifications:

    START → DONE | FAILED
    and, for the done jobs of a task that failed: ROLLBACK_START → ROLLBACK_DONE | ROLLBACK_FAILED

Every job has an id central chose: the DC runs a job once however many times its task is
delivered, and a notification sent again (after a crash) keeps its `message_id`, so
central recognises the repeat.

On the DC's own bus, vfactory asks the BPM to convert a disk (`ConvertDisk`), asks for
a DHCP reservation (`DhcpReservationRequested`, which may go unanswered), and asks the
Appliance Manager to make a template of a disk a SNAPSHOT copied back (`RegisterInstance`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

import msgspec

from abiquo_dc.protocol.definitions import (
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    VirtualMachineDefinition,
)
from abiquo_dc.protocol.envelope import Message
from abiquo_dc.protocol.queues import NOTIFICATIONS
from abiquo_dc.protocol.templates import TemplateDefinition


class JobType(StrEnum):
    CONFIGURE = "CONFIGURE"
    POWER_ON = "POWER_ON"
    POWER_OFF = "POWER_OFF"
    SHUTDOWN = "SHUTDOWN"
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    RESET = "RESET"
    RECONFIGURE = "RECONFIGURE"
    DECONFIGURE = "DECONFIGURE"
    # A powered-off VM's disk copied back to the repository (an instance).
    SNAPSHOT = "SNAPSHOT"
    # Look at the VM and report its state, changing nothing.
    REFRESH = "REFRESH"


class JobState(StrEnum):
    START = "START"
    DONE = "DONE"
    FAILED = "FAILED"
    ROLLBACK_START = "ROLLBACK_START"
    ROLLBACK_DONE = "ROLLBACK_DONE"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"


# The states after which nothing more is said of a job.
FINAL_STATES = frozenset(
    {JobState.DONE, JobState.FAILED, JobState.ROLLBACK_DONE, JobState.ROLLBACK_FAILED}
)


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Where a SNAPSHOT job copies which disk: relative to the repository.

    With a `template_name`, the copy becomes a template of enterprise `enterprise_id`
    (an instance): `repository_path` is then <enterprise>/<directory>/<file>, in a
    directory of the task's own, so that a copy found there already is this job's
    (from a run a crash cut short) and is kept rather than made again.
    """

    repository_path: str
    disk_index: int = 0
    enterprise_id: str = ""
    template_name: str = ""
    template_description: str = ""


class Job(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: JobType
    connection: HypervisorConnection
    definition: VirtualMachineDefinition
    # RECONFIGURE: the definition before the change, to go back to on a rollback.
    previous: VirtualMachineDefinition | None = None
    # SNAPSHOT only.
    snapshot: Snapshot | None = None


class VirtualFactoryTask(Message, tag="virtualfactory_task", frozen=True, kw_only=True):
    """A request from central: run these jobs in order.

    `dependent`: a failed job stops the ones after it (they are reported FAILED with
    code VF-NOT-RUN); otherwise each job runs whatever became of the others.
    `rollback`: when a job of a dependent task fails, the done ones are undone in reverse.
    """

    long_running: ClassVar[bool] = True

    task_id: str
    jobs: list[Job]
    dependent: bool = True
    rollback: bool = True


class ObservedState(StrEnum):
    """What REFRESH saw of the VM (and what a reconciled job found)."""

    ON = "ON"
    OFF = "OFF"
    PAUSED = "PAUSED"
    UNKNOWN = "UNKNOWN"
    # The hypervisor has no such VM.
    ABSENT = "ABSENT"


class JobNotification(Message, tag="job_notification", frozen=True, kw_only=True):
    outbound_queue: ClassVar[str | None] = NOTIFICATIONS

    dc_uuid: str
    task_id: str
    job_id: str
    job_type: JobType
    vm_uuid: str
    state: JobState
    # FAILED and ROLLBACK_FAILED: a stable code (HV-UNREACHABLE, HV-INVALID, ...) and why.
    error_code: str = ""
    error_message: str = ""
    # REFRESH's DONE: the VM's power state as the hypervisor reports it.
    observed: ObservedState | None = None
    # SNAPSHOT's DONE, when the copy became a template: that template.
    template: TemplateDefinition | None = None
    at: datetime


# -- on the DC's bus -----------------------------------------------------------------


class ConvertDisk(Message, tag="convert_disk", frozen=True, kw_only=True):
    """vfactory → BPM: a repository disk in a format the target hypervisor can boot from.

    Answered with DiskConverted once the conversion exists in the repository (at once
    when it was made before)."""

    repository_path: str
    source_format: DiskFormat
    target_formats: list[DiskFormat]
    hypervisor: HypervisorType


class DiskConverted(Message, tag="disk_converted", frozen=True, kw_only=True):
    repository_path: str
    format: DiskFormat


class RegisterInstance(Message, tag="register_instance", frozen=True, kw_only=True):
    """vfactory → AM: make a template of a disk a SNAPSHOT copied into the repository.

    Answered with InstanceRegistered; asked again for the same disk, with what was
    registered the first time."""

    enterprise_id: str
    # Relative to the repository: <enterprise>/<directory>/<file>.
    disk_path: str
    name: str
    description: str = ""


class InstanceRegistered(Message, tag="instance_registered", frozen=True, kw_only=True):
    template: TemplateDefinition


class DhcpReservationRequested(
    Message, tag="dhcp_reservation_requested", frozen=True, kw_only=True
):
    """vfactory → the DHCP service: this MAC gets this address (published, not awaited)."""

    vm_uuid: str
    hostname: str
    mac: str
    ip: str
    vlan_tag: int = 0
    network_name: str = ""
