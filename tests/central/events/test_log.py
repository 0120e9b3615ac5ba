"""Recording events and querying them, on SQLite and on MariaDB."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from abiquo_central.db import tables
from abiquo_central.db.migrate import sync_url, upgrade
from abiquo_central.db.paging import PageRequest
from abiquo_central.events import (
    Action,
    Component,
    EventFilter,
    Ref,
    Severity,
    get_event,
    list_events,
    record_event,
)
from abiquo_central.tenants.authentication import authenticate
from abiquo_central.tenants.passwords import Passwords
from abiquo_runtime.errors import InvalidInput, NotFound
from tests.central.conftest import T0, USER_NICK, USER_PASSWORD, Seeded
from tests.central.events.conftest import Recorded, Tenants


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(tables.event))).scalar_one()
        )


class _Boom(Exception):
    pass


async def test_an_event_commits_and_rolls_back_with_its_transaction(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    async def change_and_record(fail: bool) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                tables.datacenter.insert().values(uuid="u-1", name="dc", location="", created_at=T0)
            )
            await record_event(
                conn,
                severity=Severity.INFO,
                component=Component.DATACENTER,
                action=Action.DC_CREATE,
                enterprise=Ref(seeded.enterprise_id, "Abiquo"),
                target="/api/admin/datacenters/1",
                now=T0,
            )
            if fail:
                raise _Boom

    with pytest.raises(_Boom):
        await change_and_record(fail=True)
    assert await _count(engine) == 0
    await change_and_record(fail=False)
    assert await _count(engine) == 1
    [event] = (await list_events(engine, page=PageRequest())).items
    assert (event.action, event.component, event.severity) == (
        Action.DC_CREATE,
        Component.DATACENTER,
        Severity.INFO,
    )
    assert event.timestamp == T0
    assert event.enterprise == Ref(seeded.enterprise_id, "Abiquo")
    assert event.user is None


async def test_long_names_are_clipped_to_their_columns(engine: AsyncEngine) -> None:
    event_id = await record_event(
        engine,
        severity=Severity.WARNING,
        component=Component.USER,
        action=Action.USER_LOGIN,
        user=Ref(None, "n" * 500),
        target="t" * 5000,
        now=T0,
    )
    event = await get_event(engine, event_id)
    assert event.user == Ref(None, "n" * 128)
    assert event.target == "t" * 1024


async def test_failed_logins_are_recorded(
    engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords
) -> None:
    assert await authenticate(engine, fast_passwords, nick=USER_NICK, password=USER_PASSWORD)
    assert not await authenticate(engine, fast_passwords, nick=USER_NICK, password="wrong")
    assert not await authenticate(engine, fast_passwords, nick="ghost", password="x")
    found = await list_events(
        engine, page=PageRequest(by="id"), where=EventFilter(action=Action.USER_LOGIN)
    )
    # The success is no login of its own: HTTP Basic authenticates every request.
    bad, ghost = found.items
    assert (bad.severity, bad.user, bad.component) == (
        Severity.WARNING,
        Ref(seeded.user_id, USER_NICK),
        Component.USER,
    )
    assert (ghost.severity, ghost.user, ghost.enterprise) == (
        Severity.WARNING,
        Ref(None, "ghost"),
        None,
    )


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (EventFilter(), [5, 4, 3, 2, 1, 0]),
        (EventFilter(severity=Severity.INFO), [5, 1, 0]),
        (EventFilter(component=Component.DATACENTER), [3]),
        (EventFilter(action=Action.VM_DEPLOY), [1, 0]),
        (EventFilter(user=USER_NICK), [5, 2, 0]),
        (EventFilter(enterprise="Other"), [4, 1]),
        (EventFilter(datacenter_id=3), [3]),
        (EventFilter(date_from=T0 + timedelta(minutes=4)), [5, 4]),
        (EventFilter(date_to=T0 + timedelta(minutes=1)), [1, 0]),
        (
            EventFilter(
                date_from=T0 + timedelta(minutes=1),
                date_to=T0 + timedelta(minutes=4),
                severity=Severity.INFO,
            ),
            [1],
        ),
    ],
)
async def test_filters(
    engine: AsyncEngine, history: Recorded, where: EventFilter, expected: list[int]
) -> None:
    everything = sorted(history.a + history.b)
    found = await list_events(engine, page=PageRequest(by="timestamp", asc=False), where=where)
    assert [e.id for e in found.items] == [everything[i] for i in expected]
    assert found.total == len(expected)


async def test_filters_by_id_and_visibility(
    engine: AsyncEngine, history: Recorded, tenants: Tenants, seeded: Seeded
) -> None:
    by_user = await list_events(engine, page=PageRequest(), where=EventFilter(user=seeded.user_id))
    assert {e.id for e in by_user.items} == {history.a[0], history.a[1], history.a[3]}
    by_ent = await list_events(engine, page=PageRequest(), where=EventFilter(enterprise=tenants.b))
    assert {e.id for e in by_ent.items} == set(history.b)
    only_b = await list_events(engine, page=PageRequest(), visible_to=tenants.b)
    assert {e.id for e in only_b.items} == set(history.b)
    assert (await get_event(engine, history.b[0], visible_to=tenants.b)).id == history.b[0]
    with pytest.raises(NotFound):
        await get_event(engine, history.a[0], visible_to=tenants.b)
    with pytest.raises(NotFound):
        await get_event(engine, 999_999)


async def test_paging_and_sorting(engine: AsyncEngine, history: Recorded) -> None:
    everything = sorted(history.a + history.b)
    page = await list_events(engine, page=PageRequest(startwith=2, limit=2, asc=False))
    assert [e.id for e in page.items] == [everything[3], everything[2]]
    assert page.total == 6
    by_severity = await list_events(engine, page=PageRequest(by="severity", limit=1))
    assert by_severity.items[0].severity == Severity.CRITICAL
    with pytest.raises(InvalidInput):
        await list_events(engine, page=PageRequest(by="nonsense"))


def _event_indexes(url: str) -> tuple[set[str], set[str]]:
    engine = create_sync_engine(sync_url(url), poolclass=NullPool)
    try:
        inspector = inspect(engine)
        return set(inspector.get_table_names()), {
            i["name"] or "" for i in inspector.get_indexes("event")
        }
    finally:
        engine.dispose()


async def test_the_migration_creates_the_event_table(db_url: str) -> None:
    # `db_url` is already at head (SQLite and MariaDB alike); upgrading again is a no-op.
    await asyncio.to_thread(upgrade, db_url)
    names, indexes = await asyncio.to_thread(_event_indexes, db_url)
    assert "event" in names
    assert {
        "ix_event_timestamp",
        "ix_event_severity",
        "ix_event_component",
        "ix_event_action",
        "ix_event_user_id",
        "ix_event_enterprise_id",
        "ix_event_datacenter_id",
    } <= indexes
