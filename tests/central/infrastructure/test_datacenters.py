from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import PageRequest
from abiquo_central.infrastructure import datacenters, remote_services
from abiquo_dc.protocol.messages import ServiceState
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound
from tests.central.conftest import T0

RUN_1 = T0 - timedelta(hours=1)
RUN_2 = T0 - timedelta(minutes=5)


async def _beat(
    engine: AsyncEngine,
    *,
    sequence: int,
    started_at: datetime = RUN_1,
    sent_at: datetime | None = None,
    dc_uuid: str = "dc-uuid-1",
    state: str = "RUNNING",
    received_at: datetime | None = None,
) -> None:
    await datacenters.record_heartbeat(
        engine,
        dc_uuid=dc_uuid,
        name="dc one",
        sequence=sequence,
        started_at=started_at,
        sent_at=sent_at if sent_at is not None else started_at + timedelta(seconds=sequence),
        http_url="http://dc1:8009",
        services={"virtualfactory": state, "am": "RUNNING"},
        received_at=received_at,
    )


async def _seq(engine: AsyncEngine, dc_uuid: str = "dc-uuid-1") -> tuple[datetime, int]:
    live = await datacenters.get_liveness(engine, dc_uuid)
    assert live is not None
    return live.started_at, live.sequence


async def test_first_heartbeat_is_stored(engine: AsyncEngine) -> None:
    assert await datacenters.get_liveness(engine, "dc-uuid-1") is None
    await _beat(engine, sequence=1)
    live = await datacenters.get_liveness(engine, "dc-uuid-1")
    assert live is not None
    assert (live.name, live.sequence, live.started_at) == ("dc one", 1, RUN_1)
    assert live.last_seen == RUN_1 + timedelta(seconds=1)
    assert live.services == {"virtualfactory": "RUNNING", "am": "RUNNING"}
    assert live.http_url == "http://dc1:8009"


async def test_heartbeats_only_move_forward(engine: AsyncEngine) -> None:
    await _beat(engine, sequence=5)
    await _beat(engine, sequence=3)  # late: same run, earlier
    assert await _seq(engine) == (RUN_1, 5)
    await _beat(engine, sequence=5, state="FAILED")  # redelivered: changes nothing
    live = await datacenters.get_liveness(engine, "dc-uuid-1")
    assert live is not None and live.services["virtualfactory"] == "RUNNING"
    await _beat(engine, sequence=6)
    assert await _seq(engine) == (RUN_1, 6)
    await _beat(engine, sequence=1, started_at=RUN_2)  # the DC restarted
    assert await _seq(engine) == (RUN_2, 1)
    await _beat(engine, sequence=99, started_at=RUN_1)  # a straggler from the old run
    assert await _seq(engine) == (RUN_2, 1)


async def test_concurrent_heartbeats_leave_the_newest(engine: AsyncEngine) -> None:
    order = [(RUN_1, n) for n in range(1, 9)] + [(RUN_2, n) for n in range(1, 9)]
    random.Random(7).shuffle(order)
    await asyncio.gather(*(_beat(engine, sequence=n, started_at=run) for run, n in order))
    assert await _seq(engine) == (RUN_2, 8)


async def test_last_seen_is_never_later_than_arrival(engine: AsyncEngine) -> None:
    # A datacenter whose clock runs a minute ahead.
    await _beat(engine, sequence=1, sent_at=T0 + timedelta(minutes=1), received_at=T0)
    live = await datacenters.get_liveness(engine, "dc-uuid-1")
    assert live is not None and live.last_seen == T0


async def test_enum_states_are_stored_by_value(engine: AsyncEngine) -> None:
    await datacenters.record_heartbeat(
        engine,
        dc_uuid="dc-uuid-1",
        name="dc one",
        sequence=1,
        started_at=RUN_1,
        sent_at=RUN_1,
        http_url="http://dc1:8009",
        services={"vsm": ServiceState.RUNNING, "ssm": ServiceState.RETRYING},
    )
    live = await datacenters.get_liveness(engine, "dc-uuid-1")
    assert live is not None and live.services == {"vsm": "RUNNING", "ssm": "RETRYING"}


async def test_ensure_datacenter_is_idempotent(engine: AsyncEngine) -> None:
    first = await datacenters.ensure_datacenter(engine, uuid="u-1", name="one", location="BCN")
    again = await datacenters.ensure_datacenter(engine, uuid="u-1", name="one", location="BCN")
    assert first == again
    together = await asyncio.gather(
        *(
            datacenters.ensure_datacenter(engine, uuid="u-2", name="two", location="")
            for _ in range(4)
        )
    )
    assert len(set(together)) == 1
    with pytest.raises(Conflict):
        await datacenters.ensure_datacenter(engine, uuid="u-3", name="one", location="")


async def _services(engine: AsyncEngine, dc_id: int, *paths: str) -> None:
    """Registered services that their last check found up."""
    async with engine.begin() as conn:
        for path in paths:
            kind = next(k for k, p in remote_services.DC_PATHS.items() if p == path)
            await conn.execute(
                tables.remote_service.insert().values(
                    datacenter_id=dc_id, type=kind.value, uri=f"http://dc1:8009/{path}", status=1
                )
            )


async def test_liveness_follows_the_clock(engine: AsyncEngine) -> None:
    dc_id = await datacenters.ensure_datacenter(engine, uuid="dc-uuid-1", name="one", location="")
    dc = await datacenters.get_datacenter(engine, dc_id, now=T0, liveness_timeout=15)
    assert (dc.available, dc.last_heartbeat, dc.remote_services) == (False, None, ())
    await _services(engine, dc_id, "am", "virtualfactory")
    await _beat(engine, sequence=1, sent_at=T0, state="RETRYING")
    dc = await datacenters.get_datacenter(
        engine, dc_id, now=T0 + timedelta(seconds=15), liveness_timeout=15
    )
    assert dc.available and dc.last_heartbeat == T0
    assert {rs.type: rs.status for rs in dc.remote_services} == {
        "VIRTUAL_FACTORY": 0,
        "APPLIANCE_MANAGER": 1,
    }
    dc = await datacenters.get_datacenter(
        engine, dc_id, now=T0 + timedelta(seconds=16), liveness_timeout=15
    )
    assert not dc.available
    assert {rs.status for rs in dc.remote_services} == {0}


async def test_heard_before_registered(engine: AsyncEngine) -> None:
    await _beat(engine, sequence=1, sent_at=T0, dc_uuid="early")
    page = await datacenters.list_datacenters(
        engine, page=PageRequest(), now=T0, liveness_timeout=15
    )
    assert page.total == 0
    dc_id = await datacenters.ensure_datacenter(engine, uuid="early", name="early", location="")
    dc = await datacenters.get_datacenter(engine, dc_id, now=T0, liveness_timeout=15)
    assert dc.available


async def test_unknown_datacenter(engine: AsyncEngine) -> None:
    with pytest.raises(NotFound) as caught:
        await datacenters.get_datacenter(engine, 424242, now=T0, liveness_timeout=15)
    assert caught.value.code == "DC-0"


async def test_listing_pages_sorts_and_filters(engine: AsyncEngine) -> None:
    for n, name in enumerate(["delta", "alpha", "charlie", "bravo", "echo"]):
        await datacenters.ensure_datacenter(engine, uuid=f"u-{n}", name=name, location=f"L{4 - n}")

    async def names(**kwargs: object) -> tuple[list[str], int]:
        page = await datacenters.list_datacenters(
            engine,
            page=PageRequest(**kwargs),
            now=T0,
            liveness_timeout=15,  # type: ignore[arg-type]
        )
        return [dc.name for dc in page.items], page.total

    assert await names() == (["delta", "alpha", "charlie", "bravo", "echo"], 5)
    assert await names(by="name", limit=2) == (["alpha", "bravo"], 5)
    assert await names(by="name", limit=2, startwith=2) == (["charlie", "delta"], 5)
    assert await names(by="name", asc=False, startwith=4) == (["alpha"], 5)
    assert await names(by="location") == (["echo", "bravo", "charlie", "alpha", "delta"], 5)
    assert await names(has="LT", by="name") == (["delta"], 1)  # case-insensitive substring
    assert await names(has="%") == ([], 0)  # a wildcard is a plain character
    with pytest.raises(InvalidInput, match="cannot sort by 'password'"):
        await names(by="password")


# -- creating, changing and removing -----------------------------------------------------


async def _actions(engine: AsyncEngine) -> list[tuple[str, int | None, str]]:
    ev = tables.event
    async with engine.connect() as conn:
        rows = await conn.execute(select(ev.c.action, ev.c.datacenter_id, ev.c.message))
        return [(r.action, r.datacenter_id, r.message) for r in rows]


async def test_create_update_delete(engine: AsyncEngine) -> None:
    spec = datacenters.DatacenterSpec(name="  Barcelona ", location=" BCN ")
    dc_id = await datacenters.create_datacenter(engine, spec, checker=None, actor=None, now=T0)
    dc = await datacenters.get_datacenter(engine, dc_id, now=T0, liveness_timeout=15)
    assert (dc.name, dc.location, dc.uuid, dc.remote_services) == ("Barcelona", "BCN", None, ())
    with pytest.raises(Conflict) as caught:
        await datacenters.create_datacenter(
            engine, datacenters.DatacenterSpec(name="Barcelona"), checker=None, actor=None
        )
    assert caught.value.code == "DC-3"
    other = await datacenters.create_datacenter(
        engine, datacenters.DatacenterSpec(name="Madrid"), checker=None, actor=None
    )
    with pytest.raises(Conflict):
        await datacenters.update_datacenter(
            engine, other, datacenters.DatacenterSpec(name="Barcelona"), actor=None
        )
    await datacenters.update_datacenter(
        engine, dc_id, datacenters.DatacenterSpec(name="BCN-1", location="Sant Cugat"), actor=None
    )
    dc = await datacenters.get_datacenter(engine, dc_id, now=T0, liveness_timeout=15)
    assert (dc.name, dc.location) == ("BCN-1", "Sant Cugat")
    await _services(engine, dc_id, "am")
    await datacenters.delete_datacenter(engine, dc_id, actor=None)
    with pytest.raises(NotFound):
        await datacenters.delete_datacenter(engine, dc_id, actor=None)
    async with engine.connect() as conn:
        left = (await conn.execute(select(tables.remote_service.c.id))).all()
    assert left == []
    assert [(a, d) for a, d, _ in await _actions(engine)] == [
        ("DC_CREATE", dc_id),
        ("DC_CREATE", other),
        ("DC_MODIFY", dc_id),
        ("DC_DELETE", dc_id),
    ]


async def test_a_datacenter_with_racks_stays(engine: AsyncEngine) -> None:
    dc_id = await datacenters.ensure_datacenter(engine, uuid="u-1", name="one", location="")
    async with engine.begin() as conn:
        await conn.execute(
            tables.rack.insert().values(
                datacenter_id=dc_id, name="r1", vlan_id_min=2, vlan_id_max=4094, created_at=T0
            )
        )
    with pytest.raises(Conflict) as caught:
        await datacenters.delete_datacenter(engine, dc_id, actor=None)
    assert caught.value.code == "DC-4" and "1 rack" in caught.value.message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (datacenters.DatacenterSpec(name=" "), "needs a name"),
        (datacenters.DatacenterSpec(name="x" * 256), "at most 255"),
        (datacenters.DatacenterSpec(name="x", location="y" * 256), "location has at most 255"),
        (
            datacenters.DatacenterSpec(
                name="x", remote_services=[("AM", "http://a/am"), ("am", "http://b/am")]
            ),
            "given twice",
        ),
        (datacenters.DatacenterSpec(name="x", remote_services=[("AM", "gopher://a")]), "scheme"),
    ],
)
def test_validation(spec: datacenters.DatacenterSpec, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        datacenters.validate(spec)
