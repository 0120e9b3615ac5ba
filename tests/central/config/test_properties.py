"""System properties, on SQLite and on MariaDB."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.config import properties as props
from abiquo_central.db import tables
from abiquo_central.db.paging import PageRequest
from abiquo_central.events import Actor
from abiquo_runtime.errors import InvalidInput, NotFound
from tests.central.config import config_defaults
from tests.central.conftest import Seeded

BILLING = "client.main.billingUrl"


@pytest.fixture
async def actor(engine: AsyncEngine, seeded: Seeded) -> Actor:
    return Actor(user_id=seeded.user_id, nick="jdoe", enterprise_id=seeded.enterprise_id)


async def test_read_and_change_records_an_event(engine: AsyncEngine, actor: Actor) -> None:
    before = await props.get_property(engine, BILLING)
    assert before.value == "" and before.description
    changed = await props.set_property(engine, BILLING, "https://billing.example", actor=actor)
    assert changed == props.SystemProperty(BILLING, "https://billing.example", before.description)
    assert await props.get_property(engine, BILLING) == changed
    ev = tables.event
    async with engine.connect() as conn:
        rows = (await conn.execute(select(ev.c.component, ev.c.action, ev.c.target))).all()
    assert [tuple(r) for r in rows] == [
        ("PLATFORM", "SYSTEM_PROPERTY_MODIFY", f"/config/properties/{BILLING}")
    ]


async def test_only_existing_properties(engine: AsyncEngine, actor: Actor) -> None:
    for name in ("client.main.nothing", BILLING.upper(), "x" * 300):
        with pytest.raises(NotFound) as missing:
            await props.set_property(engine, name, "1", actor=actor)
        assert missing.value.code == props.PROPERTY_NOT_FOUND
        with pytest.raises(NotFound):
            await props.get_property(engine, name)


async def test_values_are_bounded(engine: AsyncEngine, actor: Actor) -> None:
    await props.set_property(engine, BILLING, "x" * props.VALUE_MAX, actor=actor)
    for bad in ("x" * (props.VALUE_MAX + 1), "a\x00b"):
        with pytest.raises(InvalidInput) as refused:
            await props.set_property(engine, BILLING, bad, actor=actor)
        assert refused.value.code == props.INVALID_VALUE


async def test_listing_by_component(engine: AsyncEngine, actor: Actor) -> None:
    every = await props.list_properties(engine, page=PageRequest(limit=100))
    assert every.total == len(config_defaults().PROPERTIES)
    assert [p.name for p in every.items] == sorted(p.name for p in every.items)
    main = await props.list_properties(engine, page=PageRequest(limit=100), component="client")
    assert main.total == every.total
    assert (await props.list_properties(engine, page=PageRequest(), component="server")).total == 0
    # The component is the name's prefix up to a dot, not any prefix, nor a pattern.
    assert (await props.list_properties(engine, page=PageRequest(), component="clie")).total == 0
    assert (await props.list_properties(engine, page=PageRequest(), component="%")).total == 0
    dashboard = await props.list_properties(
        engine, page=PageRequest(), component="client.dashboard"
    )
    assert [p.name for p in dashboard.items] == ["client.dashboard.showStartUpAlert"]
