"""Every message between central and a datacenter, and on the datacenter's bus.

The envelope they share is in envelope.py; VM jobs and their notifications in jobs.py.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

import msgspec

from abiquo_dc.protocol.definitions import Credentials, HypervisorType
from abiquo_dc.protocol.envelope import M as M
from abiquo_dc.protocol.envelope import Message as Message
from abiquo_dc.protocol.envelope import stamped as stamped
from abiquo_dc.protocol.jobs import JobNotification, VirtualFactoryTask
from abiquo_dc.protocol.monitoring import (
    InvalidateVm,
    ListMonitoredHosts,
    ListSubscriptions,
    MonitoredHosts,
    MonitorHost,
    MonitoringDone,
    MonitoringStateLost,
    RepublishVm,
    StopMonitoringHost,
    Subscribe,
    Subscriptions,
    Unsubscribe,
    VmStateChanged,
)
from abiquo_dc.protocol.templates import (
    AnnounceTemplates,
    CancelConversion,
    ConversionStateChanged,
    ConvertTemplateDisk,
    RepositoryUsage,
    TemplateStatusChanged,
)


class ServiceState(StrEnum):
    """A subsystem's lifecycle state, as it is reported to central."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


class Heartbeat(Message, tag="heartbeat", frozen=True, kw_only=True):
    """Sent by each datacenter every few seconds: central's proof that it is alive."""

    outbound_queue: ClassVar[str | None] = "abiquo.datacenter.heartbeats"

    dc_uuid: str
    name: str
    # Counts from 1 at each start of the process; `started_at` tells one run from another.
    sequence: int
    started_at: datetime
    sent_at: datetime
    # The base URL of the datacenter's HTTP port (the remote services' /check and the rest).
    http_url: str
    # Each remote service by its Abiquo path name ("virtualfactory", "am", ...) and state.
    services: dict[str, ServiceState]


class SubsystemStateChanged(Message, tag="subsystem_state_changed", frozen=True, kw_only=True):
    """A notification: one of the datacenter's remote services changed state."""

    outbound_queue: ClassVar[str | None] = "abiquo.datacenter.notifications"

    dc_uuid: str
    service: str
    state: ServiceState
    reason: str = ""
    at: datetime


class CheckServices(Message, tag="check_services", frozen=True, kw_only=True):
    """A request from central: the state of each remote service right now."""

    dc_uuid: str


class ServicesStatus(Message, tag="services_status", frozen=True, kw_only=True):
    """The reply to CheckServices."""

    dc_uuid: str
    services: dict[str, ServiceState]


class RequestFailed(Message, tag="request_failed", frozen=True, kw_only=True):
    """The reply to any request whose handler failed: a stable code and a message."""

    code: str
    message: str
    temporary: bool = False


# -- discovery (the nodecollector) ----------------------------------------------------


class DiscoveredNic(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    mac: str
    address: str = ""


class DiscoveredDatastore(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    path: str
    device: str
    type: str
    total_bytes: int
    free_bytes: int
    uuid: str = ""


class DiscoveredHost(msgspec.Struct, frozen=True, kw_only=True):
    """What a hypervisor host reports of itself, found at `address`."""

    address: str
    name: str
    hypervisor_type: HypervisorType
    version: str
    cpu_cores: int
    cpu_sockets: int
    ram_bytes: int
    nics: list[DiscoveredNic] = msgspec.field(default_factory=list)
    datastores: list[DiscoveredDatastore] = msgspec.field(default_factory=list)
    initiator_iqn: str = ""


class DiscoveryFailure(msgspec.Struct, frozen=True, kw_only=True):
    """An address that gave no host: the error's stable code and its message."""

    address: str
    code: str
    message: str


class DiscoverHosts(Message, tag="discover_hosts", frozen=True, kw_only=True):
    """A request from central: the hosts of one hypervisor type at these addresses.

    Either `addresses`, or the inclusive range `ip_from`..`ip_to` (both, and they add up).
    """

    dc_uuid: str = ""
    hypervisor: HypervisorType
    addresses: list[str] = msgspec.field(default_factory=list)
    ip_from: str = ""
    ip_to: str = ""
    # 0: the type's usual port.
    port: int = 0
    credentials: Credentials = msgspec.field(default_factory=Credentials)


class HostsDiscovered(Message, tag="hosts_discovered", frozen=True, kw_only=True):
    """The reply to DiscoverHosts: one entry per address, in `hosts` or in `errors`."""

    hosts: list[DiscoveredHost] = msgspec.field(default_factory=list)
    errors: list[DiscoveryFailure] = msgspec.field(default_factory=list)


class DetectHypervisor(Message, tag="detect_hypervisor", frozen=True, kw_only=True):
    """A request from central: which hypervisor type answers at `address`."""

    dc_uuid: str = ""
    address: str


class HypervisorDetected(Message, tag="hypervisor_detected", frozen=True, kw_only=True):
    """The reply to DetectHypervisor: None when nothing answered in time."""

    address: str
    hypervisor: HypervisorType | None = None


# What a datacenter accepts on its request queues, and what central reads from its queues.
Inbound = (
    CheckServices
    | DiscoverHosts
    | DetectHypervisor
    | VirtualFactoryTask
    | MonitorHost
    | StopMonitoringHost
    | ListMonitoredHosts
    | Subscribe
    | Unsubscribe
    | ListSubscriptions
    | RepublishVm
    | InvalidateVm
    | ConvertTemplateDisk
    | CancelConversion
    | AnnounceTemplates
)
Outbound = (
    Heartbeat
    | SubsystemStateChanged
    | JobNotification
    | VmStateChanged
    | MonitoringStateLost
    | TemplateStatusChanged
    | ConversionStateChanged
    | RepositoryUsage
)
Reply = (
    ServicesStatus
    | RequestFailed
    | HostsDiscovered
    | HypervisorDetected
    | MonitoredHosts
    | Subscriptions
    | MonitoringDone
)
