"""Queue names between central and the datacenters.

Commands go to queues named by the datacenter's UUID, so that each DC consumes only its
own; everything toward central goes to shared queues that any central process may
consume (central is stateless between requests).
"""

from __future__ import annotations

from abiquo_runtime.messaging.transport import QueueSpec

# The request queues each datacenter consumes, by service: VM jobs, the template
# repository's commands (disk conversions for the BPM, AnnounceTemplates for the AM), and
# request/reply calls (checks, discovery, monitor subscriptions) that want an answer.
SERVICES = ("virtualfactory", "bpm", "rpc")

NOTIFICATIONS = "abiquo.datacenter.notifications"
EVENTS = "abiquo.datacenter.events"
HEARTBEATS = "abiquo.datacenter.heartbeats"

# A heartbeat older than this is worthless: the broker drops it instead of piling them up
# while central is away.
HEARTBEAT_TTL_MS = 30_000
# An RPC request nobody took within this time has a caller that gave up long ago.
RPC_TTL_MS = 60_000


def requests_queue(dc_uuid: str, service: str) -> str:
    if service not in SERVICES:
        raise ValueError(f"unknown datacenter service {service!r}; expected one of {SERVICES}")
    return f"abiquo.datacenter.requests.{dc_uuid}.{service}"


# A reply names the request it answers in this header (the AMQP correlation-id property
# carries the tracing correlation id instead).
IN_REPLY_TO = "x-abiquo-in-reply-to"


def outbound_specs() -> list[QueueSpec]:
    """The queues toward central. Both ends declare them, with the very same arguments
    (RabbitMQ refuses a declaration whose arguments differ from the existing queue's)."""
    return [
        QueueSpec(NOTIFICATIONS),
        QueueSpec(EVENTS),
        # A stale heartbeat is worthless: dropped when it expires, not dead-lettered.
        QueueSpec(HEARTBEATS, message_ttl_ms=HEARTBEAT_TTL_MS, dead_letter=False),
    ]


def request_specs(dc_uuid: str) -> list[QueueSpec]:
    """The request queues of one datacenter, declared alike by the DC and by central."""
    return [
        # An RPC request past its caller's timeout is dropped, not dead-lettered; a
        # command stays until the DC takes it, however long it is away.
        QueueSpec(
            requests_queue(dc_uuid, service),
            message_ttl_ms=RPC_TTL_MS if service == "rpc" else None,
            dead_letter=service != "rpc",
        )
        for service in SERVICES
    ]
