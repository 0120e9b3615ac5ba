"""The template repository's messages: templates' states (Appliance Manager) and disk
conversions (BPM).

Central learns every change of a template in an enterprise's repository from
`TemplateStatusChanged` (with the template's metadata once it is there), how full the
repository's file system is from `RepositoryUsage`, and asks the
BPM for disk conversions with `ConvertTemplateDisk` on abiquo.datacenter.requests.<dc>.bpm,
followed by `ConversionStateChanged` notifications (START, PROGRESS, DONE, FAILED).
`AnnounceTemplates`, on that same queue, asks the Appliance Manager to tell every
template's state again: central dropped what it announced before central knew the DC.
Inside the DC, vfactory asks the BPM with `ConvertDisk` on the bus (jobs.py).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

import msgspec

from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.envelope import Message
from abiquo_dc.protocol.queues import NOTIFICATIONS


class TemplateStatus(StrEnum):
    NOT_DOWNLOAD = "NOT_DOWNLOAD"
    DOWNLOADING = "DOWNLOADING"
    DOWNLOAD = "DOWNLOAD"
    ERROR = "ERROR"


class TemplateDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """What a template is, as its OVF envelope and `qemu-img info` tell."""

    # The template's id in its enterprise's repository: the OVF envelope's URL for a
    # downloaded one, else the path of its envelope relative to the enterprise's directory.
    ovf_id: str
    name: str
    description: str = ""
    # As qemu-img info finds it, not as the envelope declares it.
    disk_format: DiskFormat
    # The disk file, relative to the repository: <enterprise>/<template dir>/<file>.
    disk_path: str
    disk_file_size: int
    virtual_size: int
    cpu: int = 1
    ram_mb: int = 256
    hd_bytes: int = 0
    icon_url: str = ""
    category: str = ""


class TemplateStatusChanged(Message, tag="template_status_changed", frozen=True, kw_only=True):
    outbound_queue: ClassVar[str | None] = NOTIFICATIONS

    dc_uuid: str
    enterprise_id: str
    ovf_id: str
    status: TemplateStatus
    # 0 to 100 while DOWNLOADING.
    progress: float = 0.0
    error: str = ""
    # Once the template is there (DOWNLOAD).
    template: TemplateDefinition | None = None
    at: datetime


class RepositoryUsage(Message, tag="repository_usage", frozen=True, kw_only=True):
    """The file system the repository lives on (the NFS share), as the Appliance Manager
    measured it at `at`: sent at its start, periodically and after templates come or go.
    A figure of the whole share, which every enterprise's repository in the DC shares.

    A message type of its own (version 1): a central older than it dead-letters it as
    one it cannot decode, and goes on."""

    outbound_queue: ClassVar[str | None] = NOTIFICATIONS

    dc_uuid: str
    capacity_bytes: int
    # What an unprivileged writer (the AM) may still use: statvfs's f_bavail, not f_bfree.
    free_bytes: int
    at: datetime


class AnnounceTemplates(Message, tag="announce_templates", frozen=True, kw_only=True):
    """A request from central: a `TemplateStatusChanged` for every template of every
    enterprise, as the Appliance Manager knows it now (no rescan of the disk).

    Central sends it when it first learns the datacenter's UUID: what the AM announced
    before (at its start, while the DC was not registered yet) central could not place.
    Applying a state twice is harmless, so a repeated request is too."""

    dc_uuid: str


class ConversionState(StrEnum):
    QUEUED = "QUEUED"
    START = "START"
    PROGRESS = "PROGRESS"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class ConvertTemplateDisk(Message, tag="convert_template_disk", frozen=True, kw_only=True):
    """A request from central: a template's disk in another format, under its template's
    formats/<FORMAT>/ directory."""

    conversion_id: str
    # Relative to the repository.
    source_path: str
    source_format: DiskFormat
    target_format: DiskFormat


class CancelConversion(Message, tag="cancel_conversion", frozen=True, kw_only=True):
    conversion_id: str


class ConversionStateChanged(Message, tag="conversion_state_changed", frozen=True, kw_only=True):
    outbound_queue: ClassVar[str | None] = NOTIFICATIONS

    dc_uuid: str
    conversion_id: str
    state: ConversionState
    progress: float = 0.0
    # DONE: the converted disk, relative to the repository.
    target_path: str = ""
    target_format: DiskFormat | None = None
    error: str = ""
    at: datetime
