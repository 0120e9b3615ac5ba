"""Datacenters: what is registered, and what central last heard from each."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Executable, Row, Select, and_, case, or_, select
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id
from abiquo_central.infrastructure.remote_services import RemoteService, remote_services
from abiquo_runtime.errors import Conflict, NotFound, TemporaryError

DATACENTER_NOT_FOUND = "DC-0"
DATACENTER_UNAVAILABLE = "DC-1"
DATACENTER_UNLINKED = "DC-2"


class DatacenterAway(TemporaryError):
    """The datacenter is registered but central has not heard from it lately (503)."""

    code = DATACENTER_UNAVAILABLE


class DatacenterUnlinked(Conflict):
    """The datacenter has no VIRTUAL_FACTORY remote service yet, so central does not
    know which datacenter process it is (409: register the remote services first)."""

    code = DATACENTER_UNLINKED


_dc = tables.datacenter
_live = tables.datacenter_liveness

# The fields a listing may be sorted by, by their API names.
SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _dc.c.id, "name": _dc.c.name, "uuid": _dc.c.uuid, "location": _dc.c.location}
)


@dataclass(frozen=True, slots=True)
class Datacenter:
    id: int
    # None until a VIRTUAL_FACTORY remote service told central which DC process it is.
    uuid: str | None
    name: str
    location: str
    available: bool
    # When central last heard from it (None: never).
    last_heartbeat: datetime | None
    remote_services: tuple[RemoteService, ...]


@dataclass(frozen=True, slots=True)
class Liveness:
    dc_uuid: str
    name: str
    started_at: datetime
    sequence: int
    last_seen: datetime
    http_url: str
    services: Mapping[str, str]


def _select() -> Select[Any]:
    return select(
        _dc.c.id,
        _dc.c.uuid,
        _dc.c.name,
        _dc.c.location,
        _live.c.last_seen,
        _live.c.http_url,
        _live.c.services,
    ).select_from(_dc.outerjoin(_live, _live.c.dc_uuid == _dc.c.uuid))


def _datacenter(row: Row[Any], *, now: datetime, liveness_timeout: float) -> Datacenter:
    last_seen: datetime | None = row.last_seen
    available = last_seen is not None and now - last_seen <= timedelta(seconds=liveness_timeout)
    return Datacenter(
        id=row.id,
        uuid=row.uuid,
        name=row.name,
        location=row.location,
        available=available,
        last_heartbeat=last_seen,
        remote_services=remote_services(row.http_url, row.services, available=available),
    )


async def list_datacenters(
    engine: AsyncEngine, *, page: PageRequest, now: datetime, liveness_timeout: float
) -> Page[Datacenter]:
    async with engine.connect() as conn:
        rows, total = await fetch_page(
            conn,
            _select(),
            page,
            sortable=SORTABLE,
            default_sort="id",
            tiebreaker=_dc.c.id,
            name=_dc.c.name,
        )
    return Page(
        items=[_datacenter(r, now=now, liveness_timeout=liveness_timeout) for r in rows],
        total=total,
    )


async def get_datacenter(
    engine: AsyncEngine, dc_id: int, *, now: datetime, liveness_timeout: float
) -> Datacenter:
    async with engine.connect() as conn:
        row = (await conn.execute(_select().where(_dc.c.id == dc_id))).one_or_none()
    if row is None:
        raise NotFound("The requested datacenter does not exist", code=DATACENTER_NOT_FOUND)
    return _datacenter(row, now=now, liveness_timeout=liveness_timeout)


async def reachable_datacenter(
    engine: AsyncEngine, dc_id: int, *, now: datetime, liveness_timeout: float
) -> Datacenter:
    """The datacenter, when a request to it can be answered: NotFound when it does not
    exist, DatacenterUnlinked when central does not know its process yet, DatacenterAway
    when that process has not been heard from within `liveness_timeout`.

    Checked before anything is sent, so that a caller learns at once (503) what a
    request over the link would only tell it after its timeout.
    """
    dc = await get_datacenter(engine, dc_id, now=now, liveness_timeout=liveness_timeout)
    if dc.uuid is None:
        raise DatacenterUnlinked(
            f"Datacenter {dc.name} has no VIRTUAL_FACTORY remote service: register it first"
        )
    if not dc.available:
        raise DatacenterAway(f"Datacenter {dc.name} is unavailable: its heartbeats stopped")
    return dc


async def ensure_datacenter(
    engine: AsyncEngine, *, uuid: str, name: str, location: str, now: datetime | None = None
) -> int:
    """The id of the datacenter with this uuid, registered when absent (for seeding)."""
    query = select(_dc.c.id).where(_dc.c.uuid == uuid)
    async with engine.connect() as conn:
        found = (await conn.execute(query)).scalar_one_or_none()
    if found is not None:
        return int(found)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                _dc.insert().values(
                    uuid=uuid,
                    name=name,
                    location=location,
                    created_at=now if now is not None else datetime.now(UTC),
                )
            )
            return inserted_id(result)
    except IntegrityError as exc:
        # Either another process registered it meanwhile, or another datacenter has
        # the name already: only the second is a real conflict.
        async with engine.connect() as conn:
            found = (await conn.execute(query)).scalar_one_or_none()
        if found is None:
            raise Conflict(f"another datacenter is named {name}") from exc
        return int(found)


def _plain(services: Mapping[str, Any]) -> dict[str, str]:
    # ServiceState is a str Enum, whose str() is "ServiceState.RUNNING": keep the value.
    return {
        str(path): state.value if isinstance(state, Enum) else str(state)
        for path, state in services.items()
    }


def _newer(stored: Any, incoming: Any) -> ColumnElement[bool]:
    # A heartbeat is newer when it comes from a later run of the DC process, or from
    # later in the same run.
    return or_(
        incoming.started_at > stored.started_at,
        and_(incoming.started_at == stored.started_at, incoming.sequence > stored.sequence),
    )


def _upsert(dialect: str, row: dict[str, Any]) -> Executable:
    """One atomic statement: insert the row, or update it only if this one is newer.

    A single compare-and-set statement, not a read then a write: two central processes
    consuming the same datacenter's heartbeats can never move it backwards, and there is
    no window for InnoDB to deadlock an update against a concurrent first insert.
    """
    if dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(_live).values(**row)
        newer = _newer(_live.c, stmt.inserted)
        # MySQL applies these assignments left to right, each one seeing the values
        # assigned before it. The columns the condition reads go last so that the others
        # are decided on the stored values. sequence goes before started_at: once
        # sequence is assigned, the condition still holds for a newer run (started_at
        # grows) and, for the same run, started_at would not change anyway.
        others = [c for c in row if c not in ("dc_uuid", "sequence", "started_at")]
        return stmt.on_duplicate_key_update(
            [
                (c, case((newer, stmt.inserted[c]), else_=_live.c[c]))
                for c in [*others, "sequence", "started_at"]
            ]
        )
    if dialect == "sqlite":
        stmt_sqlite = sqlite.insert(_live).values(**row)
        return stmt_sqlite.on_conflict_do_update(
            index_elements=[_live.c.dc_uuid],
            set_={c: stmt_sqlite.excluded[c] for c in row if c != "dc_uuid"},
            where=_newer(_live.c, stmt_sqlite.excluded),
        )
    raise NotImplementedError(f"no heartbeat upsert for the {dialect} database")


async def record_heartbeat(
    engine: AsyncEngine,
    *,
    dc_uuid: str,
    name: str,
    sequence: int,
    started_at: datetime,
    sent_at: datetime,
    http_url: str,
    services: Mapping[str, str],
    received_at: datetime | None = None,
) -> None:
    """Remember a datacenter's heartbeat, unless a newer one is stored already.

    last_seen is when it was sent, but never later than when it arrived (`received_at`,
    when given): a DC whose clock runs ahead cannot make itself look alive for longer.
    A redelivered or late heartbeat changes nothing.
    """
    row: dict[str, Any] = {
        "dc_uuid": dc_uuid,
        "name": name,
        "started_at": started_at,
        "sequence": sequence,
        "last_seen": sent_at if received_at is None else min(sent_at, received_at),
        "http_url": http_url,
        "services": _plain(services),
    }
    async with engine.begin() as conn:
        await conn.execute(_upsert(engine.dialect.name, row))


async def get_liveness(engine: AsyncEngine, dc_uuid: str) -> Liveness | None:
    """What central last heard from the datacenter with this uuid, if anything."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(_live).where(_live.c.dc_uuid == dc_uuid))).one_or_none()
    if row is None:
        return None
    return Liveness(
        dc_uuid=row.dc_uuid,
        name=row.name,
        started_at=row.started_at,
        sequence=row.sequence,
        last_seen=row.last_seen,
        http_url=row.http_url,
        services=row.services,
    )
