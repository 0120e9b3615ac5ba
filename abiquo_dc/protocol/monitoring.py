"""The Virtual System Monitor's messages: what central asks it to watch, what it reports.

Central tells a datacenter which hosts to monitor (`MonitorHost`, `StopMonitoringHost`)
and which VMs it cares about (`Subscribe`, `Unsubscribe`), as requests on the DC's rpc
queue. The DC reports every change of a subscribed VM as a `VmStateChanged` on
abiquo.datacenter.events, and, when its monitoring state was lost (Redis flushed or
restarted empty), says so with `MonitoringStateLost`: central answers by sending again
what it wants monitored.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

import msgspec

from abiquo_dc.protocol.definitions import Credentials, HypervisorType
from abiquo_dc.protocol.envelope import Message
from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.queues import EVENTS, NOTIFICATIONS


class MonitoredHost(msgspec.Struct, frozen=True, kw_only=True):
    """A host to watch; its address is its id within the datacenter."""

    address: str
    type: HypervisorType
    # 0: the type's usual port.
    port: int = 0
    credentials: Credentials = msgspec.field(default_factory=Credentials)


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """A VM central wants to hear about, on the host it believes the VM is on."""

    vm_uuid: str
    vm_name: str = ""
    host: str
    # What central believes the VM's state is: the first event is sent only when the
    # host says otherwise. None: whatever the host says is sent.
    state: ObservedState | None = None


class VmEventKind(StrEnum):
    POWER_ON = "POWER_ON"
    POWER_OFF = "POWER_OFF"
    PAUSED = "PAUSED"
    RESUMED = "RESUMED"
    DESTROYED = "DESTROYED"
    # The VM is on another host than it was: `previous_host` says which.
    MOVED = "MOVED"
    # Its host has not answered for longer than the grace period.
    UNKNOWN = "UNKNOWN"


class VmStateChanged(Message, tag="vm_state_changed", frozen=True, kw_only=True):
    outbound_queue: ClassVar[str | None] = EVENTS

    dc_uuid: str
    vm_uuid: str
    vm_name: str = ""
    host: str
    event: VmEventKind
    # The VM's state after the event.
    state: ObservedState
    previous_host: str = ""
    # When the change was seen (by the host where it says, else by the DC).
    observed_at: datetime
    # Increases with every event of this DC: central orders a VM's events by it.
    sequence: int


class MonitoringStateLost(Message, tag="monitoring_state_lost", frozen=True, kw_only=True):
    """The DC's hosts and subscriptions are gone (Redis emptied): central sends them again."""

    outbound_queue: ClassVar[str | None] = NOTIFICATIONS

    dc_uuid: str
    at: datetime


# -- requests from central (rpc) and their replies -------------------------------------


class MonitorHost(Message, tag="monitor_host", frozen=True, kw_only=True):
    host: MonitoredHost


class StopMonitoringHost(Message, tag="stop_monitoring_host", frozen=True, kw_only=True):
    address: str


class ListMonitoredHosts(Message, tag="list_monitored_hosts", frozen=True, kw_only=True):
    pass


class MonitoredHosts(Message, tag="monitored_hosts", frozen=True, kw_only=True):
    # Credentials are never sent back.
    hosts: list[MonitoredHost]


class Subscribe(Message, tag="subscribe", frozen=True, kw_only=True):
    subscriptions: list[Subscription]


class Unsubscribe(Message, tag="unsubscribe", frozen=True, kw_only=True):
    vm_uuids: list[str]


class ListSubscriptions(Message, tag="list_subscriptions", frozen=True, kw_only=True):
    pass


class Subscriptions(Message, tag="subscriptions", frozen=True, kw_only=True):
    subscriptions: list[Subscription]


class RepublishVm(Message, tag="republish_vm", frozen=True, kw_only=True):
    """Send the VM's current state again, changed or not."""

    host: str
    vm_name: str


class InvalidateVm(Message, tag="invalidate_vm", frozen=True, kw_only=True):
    """Forget what is known of the VM: its next observed state is sent as news."""

    host: str
    vm_name: str


class MonitoringDone(Message, tag="monitoring_done", frozen=True, kw_only=True):
    """The reply to the requests above that change something."""

    count: int = 0
