"""Datacenters: what is registered, and what central last heard from each.

An administrator creates a datacenter with its remote services in one go (as Abiquo's
clients do); their checks tell central which datacenter process it is (remote_services.py).
Its liveness comes from the heartbeats that process sends, stored by its UUID.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Executable, Row, Select, and_, case, func, or_, select
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id
from abiquo_central.events import Action, Actor
from abiquo_central.infrastructure.checks import Probe, check_services
from abiquo_central.infrastructure.remote_services import (
    DATACENTER_NOT_FOUND,
    INVALID_TYPE,
    Checker,
    RemoteService,
    ServiceType,
    admit,
    alive,
    datacenter_not_found,
    insert_service,
    parse_type,
    record,
    services_of,
    shown_services,
    target_of,
    uri_free,
    validate_uri,
)
from abiquo_runtime.errors import Conflict, InvalidInput, TemporaryError

__all__ = [
    "DATACENTER_NOT_FOUND",
    "DATACENTER_UNAVAILABLE",
    "DATACENTER_UNLINKED",
    "Datacenter",
    "DatacenterAway",
    "DatacenterSpec",
    "DatacenterUnlinked",
    "create_datacenter",
    "delete_datacenter",
    "ensure_datacenter",
    "get_datacenter",
    "get_liveness",
    "list_datacenters",
    "reachable_datacenter",
    "record_heartbeat",
    "update_datacenter",
]

DATACENTER_UNAVAILABLE = "DC-1"
DATACENTER_UNLINKED = "DC-2"
DUPLICATED_NAME = "DC-3"
DATACENTER_IN_USE = "DC-4"

# The columns' length: longer values are refused rather than cut.
NAME_MAX = 255
LOCATION_MAX = 255


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


@dataclass(frozen=True, slots=True)
class DatacenterSpec:
    """What a caller sets on a datacenter: its name and location, and (creating it) its
    remote services as (type, URI) pairs."""

    name: str
    location: str = ""
    remote_services: Sequence[tuple[str, str]] = ()


def validate(spec: DatacenterSpec) -> DatacenterSpec:
    """`spec` trimmed, its services' types and URIs checked; InvalidInput otherwise."""
    name, location = spec.name.strip(), spec.location.strip()
    if not name:
        raise InvalidInput("a datacenter needs a name")
    if len(name) > NAME_MAX:
        raise InvalidInput(f"a datacenter's name has at most {NAME_MAX} characters")
    if len(location) > LOCATION_MAX:
        raise InvalidInput(f"a datacenter's location has at most {LOCATION_MAX} characters")
    services: dict[ServiceType, str] = {}
    for kind_name, uri in spec.remote_services:
        kind = parse_type(kind_name)
        if kind in services:
            raise InvalidInput(f"the {kind.value} is given twice", code=INVALID_TYPE)
        services[kind] = validate_uri(kind, uri)
    # In Abiquo's order: the VIRTUAL_FACTORY, which names the datacenter, first.
    ordered = sorted(services.items(), key=lambda item: list(ServiceType).index(item[0]))
    return DatacenterSpec(name=name, location=location, remote_services=tuple(ordered))


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


def _datacenter(
    row: Row[Any], services: Sequence[Row[Any]], *, now: datetime, liveness_timeout: float
) -> Datacenter:
    last_seen: datetime | None = row.last_seen
    available = alive(last_seen, now=now, liveness_timeout=liveness_timeout)
    return Datacenter(
        id=row.id,
        uuid=row.uuid,
        name=row.name,
        location=row.location,
        available=available,
        last_heartbeat=last_seen,
        remote_services=shown_services(services, alive=available, reported=row.services),
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
        services = await services_of(conn, [r.id for r in rows])
    return Page(
        items=[
            _datacenter(r, services[r.id], now=now, liveness_timeout=liveness_timeout) for r in rows
        ],
        total=total,
    )


async def get_datacenter(
    engine: AsyncEngine, dc_id: int, *, now: datetime, liveness_timeout: float
) -> Datacenter:
    async with engine.connect() as conn:
        row = (await conn.execute(_select().where(_dc.c.id == dc_id))).one_or_none()
        if row is None:
            raise datacenter_not_found()
        services = await services_of(conn, [row.id])
    return _datacenter(row, services[row.id], now=now, liveness_timeout=liveness_timeout)


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


def _duplicated(name: str) -> Conflict:
    return Conflict(f"There is already a datacenter named {name}", code=DUPLICATED_NAME)


async def _name_free(conn: AsyncConnection, name: str, but: int | None = None) -> None:
    query = select(_dc.c.id).where(_dc.c.name == name)
    if but is not None:
        query = query.where(_dc.c.id != but)
    if (await conn.execute(query)).first() is not None:
        raise _duplicated(name)


def _target(dc_id: int) -> str:
    return f"/admin/datacenters/{dc_id}"


async def create_datacenter(
    engine: AsyncEngine,
    spec: DatacenterSpec,
    *,
    checker: Checker | None,
    actor: Actor | None,
    now: datetime | None = None,
) -> int:
    """A new datacenter with its remote services, each checked first by `checker`; its id.

    Services that do not answer are registered all the same, down; its UUID stays
    unknown until its VIRTUAL_FACTORY answers. Conflict when the name or a URI is taken,
    or a service answers as another datacenter's: then nothing is created.
    """
    spec = validate(spec)
    now = now if now is not None else datetime.now(UTC)
    services = [(ServiceType(kind), uri) for kind, uri in spec.remote_services]
    # Refuse what is refused anyway before waiting for the checks.
    async with engine.connect() as conn:
        await _name_free(conn, spec.name)
        for _, uri in services:
            await uri_free(conn, uri)
    found: list[Probe] = []
    if services:
        if checker is None:
            raise ValueError("remote services cannot be registered unchecked")
        found = await check_services(
            checker.session,
            checker.link,
            [target_of(kind, uri) for kind, uri in services],
            dc_uuid=None,
            timeout=checker.timeout,
        )
    try:
        async with engine.begin() as conn:
            await _name_free(conn, spec.name)
            dc_id = inserted_id(
                await conn.execute(
                    _dc.insert().values(name=spec.name, location=spec.location, created_at=now)
                )
            )
            await record(
                conn,
                actor,
                Action.DC_CREATE,
                dc_id=dc_id,
                target=_target(dc_id),
                message=f"Datacenter {spec.name} created",
            )
            dc_uuid: str | None = None
            for (kind, uri), result in zip(services, found, strict=True):
                await uri_free(conn, uri)
                dc_uuid = await admit(
                    conn,
                    dc_id=dc_id,
                    dc_name=spec.name,
                    dc_uuid=dc_uuid,
                    kind=kind,
                    uri=uri,
                    found=result,
                    now=now,
                )
                await insert_service(
                    conn,
                    actor,
                    dc_id=dc_id,
                    dc_name=spec.name,
                    kind=kind,
                    uri=uri,
                    found=result,
                    now=now,
                )
    except IntegrityError:
        # Another request took the name, a URI or the UUID between the checks and now.
        raise Conflict(
            f"Datacenter {spec.name} conflicts with a concurrent change; try again",
            code=DUPLICATED_NAME,
        ) from None
    return dc_id


async def update_datacenter(
    engine: AsyncEngine, dc_id: int, spec: DatacenterSpec, *, actor: Actor | None
) -> None:
    """Rename and relocate a datacenter (its remote services have their own resource:
    `spec.remote_services` is not looked at)."""
    spec = validate(DatacenterSpec(name=spec.name, location=spec.location))
    try:
        async with engine.begin() as conn:
            found = (
                await conn.execute(select(_dc.c.name).where(_dc.c.id == dc_id))
            ).scalar_one_or_none()
            if found is None:
                raise datacenter_not_found()
            await _name_free(conn, spec.name, but=dc_id)
            await conn.execute(
                _dc.update().where(_dc.c.id == dc_id).values(name=spec.name, location=spec.location)
            )
            renamed = f" (was {found})" if found != spec.name else ""
            await record(
                conn,
                actor,
                Action.DC_MODIFY,
                dc_id=dc_id,
                target=_target(dc_id),
                message=f"Datacenter {spec.name}{renamed} modified",
            )
    except IntegrityError:
        raise _duplicated(spec.name) from None


async def delete_datacenter(engine: AsyncEngine, dc_id: int, *, actor: Actor | None) -> None:
    """Remove a datacenter and its remote services; Conflict while racks are in it (or
    anything else refers to it: enterprise limits, machines)."""
    in_use = Conflict(
        "The datacenter is still in use: delete its racks (and its enterprises' limits in it)"
        " first",
        code=DATACENTER_IN_USE,
    )
    try:
        async with engine.begin() as conn:
            name = (
                await conn.execute(select(_dc.c.name).where(_dc.c.id == dc_id))
            ).scalar_one_or_none()
            if name is None:
                raise datacenter_not_found()
            racks = (
                await conn.execute(
                    select(func.count())
                    .select_from(tables.rack)
                    .where(tables.rack.c.datacenter_id == dc_id)
                )
            ).scalar_one()
            if racks:
                raise Conflict(
                    f"Datacenter {name} still has {racks} rack(s): delete them first",
                    code=DATACENTER_IN_USE,
                )
            # The schema cascades, but deleting explicitly says what goes with it.
            rs = tables.remote_service
            await conn.execute(rs.delete().where(rs.c.datacenter_id == dc_id))
            await conn.execute(_dc.delete().where(_dc.c.id == dc_id))
            await record(
                conn,
                actor,
                Action.DC_DELETE,
                dc_id=dc_id,
                target=_target(dc_id),
                message=f"Datacenter {name} deleted",
            )
    except IntegrityError:
        raise in_use from None


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
