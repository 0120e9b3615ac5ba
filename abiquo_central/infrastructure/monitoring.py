"""What a datacenter's VSM must watch, sent again when it says it lost it.

A DC keeps the hosts it watches in Redis (or in its process, for the all-in-one). When
that is emptied — Redis flushed or restarted without its data, the DC started afresh —
the DC says so (MonitoringStateLost) and central, which holds the truth, tells it again
about every machine of that datacenter. Hosts are sent a few at a time; a host the DC
refuses (its credentials no longer open, say) is logged and the others go on; a DC that
does not answer makes the whole message fail for now, so that it is delivered again.
The VMs deployed there are subscribed again after the hosts.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.infrastructure.discovery import DatacenterCalls
from abiquo_central.tasks.observations import subscriptions_of
from abiquo_dc.protocol.definitions import Credentials, HypervisorType
from abiquo_dc.protocol.monitoring import MonitoredHost
from abiquo_runtime.errors import AbiquoError, TemporaryError
from abiquo_runtime.secrets import SecretBox, UnreadableSecret

# MonitorHost requests in flight at once toward one datacenter.
CONCURRENCY = 16
# VMs per Subscribe request.
SUBSCRIPTIONS_AT_ONCE = 500

_log = structlog.get_logger("abiquo.central.monitoring")


async def monitored_hosts(
    engine: AsyncEngine, dc_uuid: str, secrets: SecretBox
) -> list[MonitoredHost]:
    """Every machine of the datacenter whose process has this uuid, as the VSM wants it."""
    m, dc = tables.machine, tables.datacenter
    query = (
        select(m.c.ip, m.c.type, m.c.port, m.c.user, m.c.password_secret)
        .join(dc, dc.c.id == m.c.datacenter_id)
        .where(dc.c.uuid == dc_uuid)
        .order_by(m.c.id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    hosts = []
    for row in rows:
        try:
            password = secrets.decrypt(row.password_secret)
        except UnreadableSecret:
            _log.error("a machine's password does not open with this key", address=row.ip)
            password = ""
        hosts.append(
            MonitoredHost(
                address=row.ip,
                type=HypervisorType(row.type),
                port=row.port,
                credentials=Credentials(user=row.user, password=password),
            )
        )
    return hosts


async def restore_monitoring(
    engine: AsyncEngine, calls: DatacenterCalls, secrets: SecretBox, dc_uuid: str
) -> int:
    """Tell the datacenter again to watch each of its machines; how many it took.

    TemporaryError when the datacenter did not take them all for a reason that may pass
    (it does not answer): the caller tries again later.
    """
    hosts = await monitored_hosts(engine, dc_uuid, secrets)
    bound = asyncio.Semaphore(CONCURRENCY)
    unreachable: list[str] = []

    async def one(host: MonitoredHost) -> bool:
        async with bound:
            try:
                await calls.monitor(dc_uuid, host)
            except TemporaryError:
                unreachable.append(host.address)
                return False
            except AbiquoError as exc:
                _log.warning("the datacenter refused a host", address=host.address, error=exc)
                return False
            return True

    taken = sum(await asyncio.gather(*(one(h) for h in hosts)))
    if unreachable:
        raise TemporaryError(
            f"datacenter {dc_uuid} did not take {len(unreachable)} of its hosts back"
        )
    # Then the VMs deployed there, as central believes them to be.
    subscriptions = await subscriptions_of(engine, dc_uuid)
    for start in range(0, len(subscriptions), SUBSCRIPTIONS_AT_ONCE):
        await calls.subscribe(dc_uuid, subscriptions[start : start + SUBSCRIPTIONS_AT_ONCE])
    _log.info("monitoring restored", dc=dc_uuid, hosts=taken, vms=len(subscriptions))
    return taken
