"""What central does with each message a datacenter sends it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.api.keys import utc_now
from abiquo_central.infrastructure.datacenters import Liveness, get_liveness, record_heartbeat
from abiquo_central.infrastructure.discovery import DatacenterCalls
from abiquo_central.infrastructure.monitoring import restore_monitoring
from abiquo_central.link import DatacenterRequests, OnMessage
from abiquo_central.tasks.instances import link_reported_instance
from abiquo_central.tasks.lifecycle import apply_notification
from abiquo_central.tasks.observations import apply_vm_event, resubscribe_all
from abiquo_central.templates.reports import record_conversion_state, record_template_status
from abiquo_central.templates.repository_usage import record_repository_usage
from abiquo_dc.protocol.jobs import JobNotification
from abiquo_dc.protocol.messages import Heartbeat, Message, SubsystemStateChanged
from abiquo_dc.protocol.monitoring import MonitoringStateLost, VmStateChanged
from abiquo_dc.protocol.templates import (
    ConversionStateChanged,
    RepositoryUsage,
    TemplateStatusChanged,
)
from abiquo_runtime.secrets import SecretBox


def _came_back(before: Liveness, beat: Heartbeat, liveness_timeout: float) -> bool:
    """Whether this heartbeat ends an absence: another run of the DC process, or the
    first one heard after longer than the liveness timeout."""
    if beat.started_at != before.started_at:
        return beat.started_at > before.started_at
    return beat.sent_at - before.last_seen > timedelta(seconds=liveness_timeout)


def message_handler(
    *,
    engine: AsyncEngine,
    link: DatacenterRequests,
    secrets: SecretBox,
    request_timeout: float,
    liveness_timeout: float = 15.0,
    clock: Callable[[], datetime] = utc_now,
) -> OnMessage:
    """What to do with each message; `link` is for what a message asks central to send
    back (a datacenter that lost its monitoring state gets its hosts again)."""
    log = structlog.get_logger("abiquo.central.notifications")
    calls = DatacenterCalls(link=link, request_timeout=request_timeout)

    async def handle(message: Message) -> None:
        match message:
            case Heartbeat():
                before = await get_liveness(engine, message.dc_uuid)
                await record_heartbeat(
                    engine,
                    dc_uuid=message.dc_uuid,
                    name=message.name,
                    sequence=message.sequence,
                    started_at=message.started_at,
                    sent_at=message.sent_at,
                    http_url=message.http_url,
                    services={k: v.value for k, v in message.services.items()},
                )
                if before is not None and _came_back(before, message, liveness_timeout):
                    count = await resubscribe_all(engine, message.dc_uuid, now=clock())
                    log.info("datacenter back: its VMs reconciled", dc=message.dc_uuid, vms=count)
            case SubsystemStateChanged():
                log.info(
                    "datacenter service state",
                    dc=message.dc_uuid,
                    service=message.service,
                    state=message.state.value,
                    reason=message.reason or None,
                )
            case JobNotification():
                await apply_notification(engine, message, now=clock())
            case VmStateChanged():
                await apply_vm_event(engine, message, now=clock())
            case MonitoringStateLost():
                await restore_monitoring(engine, calls, secrets, message.dc_uuid)
            case TemplateStatusChanged():
                await record_template_status(engine, message)
                await link_reported_instance(engine, message)
            case ConversionStateChanged():
                await record_conversion_state(engine, message)
            case RepositoryUsage():
                await record_repository_usage(engine, message)
            case _:
                log.warning("message of no interest", message_type=type(message).__name__)

    return handle
