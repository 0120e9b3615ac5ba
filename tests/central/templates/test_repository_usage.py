"""What an Appliance Manager reports of its repository's file system, recorded on the
datacenter: the latest measure wins whatever the order of arrival, and the report of a
datacenter central does not know is dropped."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.link import NoLink
from abiquo_central.notifications import message_handler
from abiquo_central.templates.repository_usage import record_repository_usage
from abiquo_dc.protocol.templates import RepositoryUsage
from abiquo_runtime.secrets import SecretBox
from tests.central.conftest import T0, Seeded

DC_UUID = "5d2e1b1c-0000-4000-8000-0000000000c3"
GIB = 1024**3


def usage(
    capacity: int, free: int, *, seconds: float = 0, dc_uuid: str = DC_UUID
) -> RepositoryUsage:
    return RepositoryUsage(
        dc_uuid=dc_uuid,
        capacity_bytes=capacity,
        free_bytes=free,
        at=T0 + timedelta(seconds=seconds),
    )


async def stored(engine: AsyncEngine, dc_id: int) -> tuple[Any, ...]:
    dc = tables.datacenter
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    dc.c.repository_capacity_bytes,
                    dc.c.repository_free_bytes,
                    dc.c.repository_usage_at,
                ).where(dc.c.id == dc_id)
            )
        ).one()
    return tuple(row)


@pytest.fixture
async def dc(engine: AsyncEngine, seeded: Seeded) -> int:
    return await ensure_datacenter(engine, uuid=DC_UUID, name="Usage DC", location="ES", now=T0)


async def test_the_latest_measure_wins_whatever_the_order(engine: AsyncEngine, dc: int) -> None:
    # Never reported: nothing known.
    assert await stored(engine, dc) == (0, 0, None)

    await record_repository_usage(engine, usage(2000 * GIB, 1500 * GIB, seconds=10))
    assert await stored(engine, dc) == (2000 * GIB, 1500 * GIB, T0 + timedelta(seconds=10))
    # Redelivered: the same.
    await record_repository_usage(engine, usage(2000 * GIB, 1500 * GIB, seconds=10))
    assert await stored(engine, dc) == (2000 * GIB, 1500 * GIB, T0 + timedelta(seconds=10))
    # Measured before, arrived after: changes nothing.
    await record_repository_usage(engine, usage(2000 * GIB, 1900 * GIB, seconds=5))
    assert await stored(engine, dc) == (2000 * GIB, 1500 * GIB, T0 + timedelta(seconds=10))
    # Measured later: taken.
    await record_repository_usage(engine, usage(2000 * GIB, 1200 * GIB, seconds=20))
    assert await stored(engine, dc) == (2000 * GIB, 1200 * GIB, T0 + timedelta(seconds=20))


async def test_an_unknown_datacenter_is_dropped(engine: AsyncEngine, dc: int) -> None:
    await record_repository_usage(engine, usage(GIB, GIB, dc_uuid="nope"))
    assert await stored(engine, dc) == (0, 0, None)


async def test_the_notification_handler_records_it(
    engine: AsyncEngine, dc: int, secrets: SecretBox
) -> None:
    handle = message_handler(engine=engine, link=NoLink(), secrets=secrets, request_timeout=5.0)
    await handle(usage(100 * GIB, 40 * GIB, seconds=1))
    assert await stored(engine, dc) == (100 * GIB, 40 * GIB, T0 + timedelta(seconds=1))
    # Not dead-lettered: nothing raised.
    await handle(usage(GIB, GIB, seconds=2, dc_uuid="nope"))
    assert await stored(engine, dc) == (100 * GIB, 40 * GIB, T0 + timedelta(seconds=1))
