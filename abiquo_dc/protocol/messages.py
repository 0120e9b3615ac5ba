"""Every message between central and a datacenter, and on the datacenter's bus.

A message is a msgspec Struct tagged by `type`, with a `version` (raised when a field
changes meaning; new optional fields keep the version and are ignored by older readers),
its own `message_id`, which consumers use to recognise a redelivery, and the
`correlation_id` of the work that caused it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, TypeVar

import msgspec

from abiquo_runtime.correlation import ensure_correlation_id, new_id


def _new_id() -> str:
    return new_id()


class Message(msgspec.Struct, kw_only=True, tag_field="type", frozen=True):
    """Base of every message; subclasses set `tag` to their wire name."""

    version: int = 1
    message_id: str = msgspec.field(default_factory=_new_id)
    correlation_id: str = ""

    # Where the datacenter's link sends a message of this type toward central, if anywhere.
    outbound_queue: ClassVar[str | None] = None


M = TypeVar("M", bound=Message)


def stamped(message: M) -> M:
    """`message` with the current correlation id (a new one outside any work) if it has none."""
    if message.correlation_id:
        return message
    return msgspec.structs.replace(message, correlation_id=ensure_correlation_id())


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


# What a datacenter accepts on its request queues, and what central reads from its queues.
Inbound = CheckServices
Outbound = Heartbeat | SubsystemStateChanged
Reply = ServicesStatus | RequestFailed
