"""Racks: the groups of machines of a datacenter, and the VLAN tags their networks get.

A rack gives its VDC networks VLAN tags between vlan_id_min and vlan_id_max, except the
ones in vlans_id_avoided (written as Abiquo writes them: "5, 10-20"). Names are unique
within a datacenter; a rack that still holds machines is not removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id, taken
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_central.infrastructure.datacenters import DATACENTER_NOT_FOUND
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound

RACK_NOT_FOUND = "RACK-0"
DUPLICATED_NAME = "RACK-1"
INVALID_VLANS = "RACK-2"
RACK_IN_USE = "RACK-3"
INVALID_RACK = "RACK-4"
# Here rather than in machines.py: looking a machine up is looking in its rack.
MACHINE_NOT_FOUND = "MACHINE-0"

VLAN_MIN = 0
VLAN_MAX = 4094
DEFAULT_VLAN_ID_MIN = 2
DEFAULT_VLAN_ID_MAX = 4094

NAME_MAX = 255
SHORT_DESCRIPTION_MAX = 255
LONG_DESCRIPTION_MAX = 1024
AVOIDED_MAX = 1024
_INT_MAX = 2**31 - 1

_rack = tables.rack
_dc = tables.datacenter

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _rack.c.id, "name": _rack.c.name}
)


@dataclass(frozen=True, slots=True)
class RackSpec:
    """What a caller sets on a rack, creating or replacing it."""

    name: str
    short_description: str = ""
    long_description: str = ""
    vlan_id_min: int = DEFAULT_VLAN_ID_MIN
    vlan_id_max: int = DEFAULT_VLAN_ID_MAX
    vlans_id_avoided: str = ""
    vlan_per_vdc_reserved: int = 1
    # The percentage of tags kept back ("network reserve security quotient").
    nrsq: int = 10
    ha_enabled: bool = False


@dataclass(frozen=True, slots=True)
class Rack:
    id: int
    datacenter_id: int
    spec: RackSpec


def _ranges(text: str) -> list[tuple[int, int]]:
    """The ranges in an avoided-VLANs text; InvalidInput for anything malformed."""
    found: list[tuple[int, int]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        low, dash, high = item.partition("-")
        low, high = low.strip(), high.strip()
        if not low.isdigit() or (dash and not high.isdigit()) or len(low) > 5 or len(high) > 5:
            raise InvalidInput(
                f"vlansIdAvoided: '{item}' is neither a VLAN tag nor a range like 10-20",
                code=INVALID_VLANS,
            )
        first = int(low)
        last = int(high) if dash else first
        if last < first:
            raise InvalidInput(
                f"vlansIdAvoided: the range {item} ends before it starts", code=INVALID_VLANS
            )
        found.append((first, last))
    return found


def normalise_avoided(text: str, vlan_id_min: int, vlan_id_max: int) -> str:
    """`text` ("10-20,5, 7") sorted and merged ("5, 7, 10-20"), each tag checked to be
    within vlan_id_min..vlan_id_max; InvalidInput saying what is wrong otherwise."""
    merged: list[list[int]] = []
    for first, last in sorted(_ranges(text)):
        if first < vlan_id_min or last > vlan_id_max:
            raise InvalidInput(
                f"vlansIdAvoided: {first if first == last else f'{first}-{last}'} is outside "
                f"the rack's VLAN range {vlan_id_min}-{vlan_id_max}",
                code=INVALID_VLANS,
            )
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in merged)


def validate(spec: RackSpec) -> RackSpec:
    """`spec` with its name trimmed and its avoided VLANs normalised; InvalidInput
    saying what is wrong otherwise."""
    name = spec.name.strip()
    if not name:
        raise InvalidInput("a rack needs a name", code=INVALID_RACK)
    if len(name) > NAME_MAX:
        raise InvalidInput(f"a rack's name has at most {NAME_MAX} characters", code=INVALID_RACK)
    if len(spec.short_description) > SHORT_DESCRIPTION_MAX:
        raise InvalidInput(
            f"shortDescription has at most {SHORT_DESCRIPTION_MAX} characters", code=INVALID_RACK
        )
    if len(spec.long_description) > LONG_DESCRIPTION_MAX:
        raise InvalidInput(
            f"longDescription has at most {LONG_DESCRIPTION_MAX} characters", code=INVALID_RACK
        )
    if not VLAN_MIN <= spec.vlan_id_min <= spec.vlan_id_max <= VLAN_MAX:
        raise InvalidInput(
            f"the VLAN range {spec.vlan_id_min}-{spec.vlan_id_max} must satisfy "
            f"{VLAN_MIN} <= vlanIdMin <= vlanIdMax <= {VLAN_MAX}",
            code=INVALID_VLANS,
        )
    if not 0 <= spec.vlan_per_vdc_reserved <= _INT_MAX:
        raise InvalidInput("vlanPerVdcReserved must be 0 or more", code=INVALID_VLANS)
    if not 0 <= spec.nrsq <= 100:
        raise InvalidInput("nrsq is a percentage: between 0 and 100", code=INVALID_VLANS)
    if len(spec.vlans_id_avoided) > AVOIDED_MAX:
        raise InvalidInput(
            f"vlansIdAvoided has at most {AVOIDED_MAX} characters", code=INVALID_VLANS
        )
    avoided = normalise_avoided(spec.vlans_id_avoided, spec.vlan_id_min, spec.vlan_id_max)
    if len(avoided) > AVOIDED_MAX:
        raise InvalidInput(
            f"vlansIdAvoided has at most {AVOIDED_MAX} characters", code=INVALID_VLANS
        )
    return replace(spec, name=name, vlans_id_avoided=avoided)


def _rack_of(row: Row[Any]) -> Rack:
    return Rack(
        id=row.id,
        datacenter_id=row.datacenter_id,
        spec=RackSpec(
            name=row.name,
            short_description=row.short_description,
            long_description=row.long_description,
            vlan_id_min=row.vlan_id_min,
            vlan_id_max=row.vlan_id_max,
            vlans_id_avoided=row.vlans_id_avoided,
            vlan_per_vdc_reserved=row.vlan_per_vdc_reserved,
            nrsq=row.nrsq,
            ha_enabled=bool(row.ha_enabled),
        ),
    )


def _values(spec: RackSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "short_description": spec.short_description,
        "long_description": spec.long_description,
        "vlan_id_min": spec.vlan_id_min,
        "vlan_id_max": spec.vlan_id_max,
        "vlans_id_avoided": spec.vlans_id_avoided,
        "vlan_per_vdc_reserved": spec.vlan_per_vdc_reserved,
        "nrsq": spec.nrsq,
        "ha_enabled": spec.ha_enabled,
    }


def rack_not_found() -> NotFound:
    return NotFound("The requested rack does not exist", code=RACK_NOT_FOUND)


def _duplicated(name: str) -> Conflict:
    return Conflict(
        f"There is already a rack named {name} in this datacenter", code=DUPLICATED_NAME
    )


async def require_datacenter(conn: AsyncConnection, dc_id: int) -> None:
    """NotFound (DC-0) unless the datacenter exists."""
    found = (await conn.execute(select(_dc.c.id).where(_dc.c.id == dc_id))).first()
    if found is None:
        raise NotFound("The requested datacenter does not exist", code=DATACENTER_NOT_FOUND)


async def fetch_rack(conn: AsyncConnection, dc_id: int, rack_id: int) -> Rack:
    """The rack `rack_id` of datacenter `dc_id`; NotFound for the datacenter (DC-0) or
    the rack (RACK-0) when either is missing, or the rack is another datacenter's."""
    row = (
        await conn.execute(
            select(_rack).where(_rack.c.id == rack_id, _rack.c.datacenter_id == dc_id)
        )
    ).one_or_none()
    if row is None:
        await require_datacenter(conn, dc_id)
        raise rack_not_found()
    return _rack_of(row)


async def list_racks(engine: AsyncEngine, dc_id: int, *, page: PageRequest) -> Page[Rack]:
    """A page of the datacenter's racks (`has` filters on the name)."""
    async with engine.connect() as conn:
        await require_datacenter(conn, dc_id)
        rows, total = await fetch_page(
            conn,
            select(_rack).where(_rack.c.datacenter_id == dc_id),
            page,
            sortable=SORTABLE,
            default_sort="id",
            tiebreaker=_rack.c.id,
            name=_rack.c.name,
        )
    return Page(items=[_rack_of(r) for r in rows], total=total)


async def get_rack(engine: AsyncEngine, dc_id: int, rack_id: int) -> Rack:
    async with engine.connect() as conn:
        return await fetch_rack(conn, dc_id, rack_id)


async def _name_taken(conn: AsyncConnection, dc_id: int, name: str, but: int | None = None) -> bool:
    return await taken(conn, _rack, _rack.c.datacenter_id == dc_id, _rack.c.name == name, but=but)


async def _record(
    conn: AsyncConnection, actor: Actor, action: Action, rack: Rack, message: str
) -> None:
    await record_action(
        conn,
        actor,
        component=Component.RACK,
        action=action,
        target=f"/admin/datacenters/{rack.datacenter_id}/racks/{rack.id}",
        message=message,
        datacenter_id=rack.datacenter_id,
    )


async def create_rack(
    engine: AsyncEngine,
    dc_id: int,
    spec: RackSpec,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> Rack:
    """A new rack in the datacenter; Conflict when the datacenter has one of that name."""
    spec = validate(spec)
    try:
        async with engine.begin() as conn:
            await require_datacenter(conn, dc_id)
            if await _name_taken(conn, dc_id, spec.name):
                raise _duplicated(spec.name)
            rack_id = inserted_id(
                await conn.execute(
                    _rack.insert().values(
                        datacenter_id=dc_id,
                        created_at=now if now is not None else datetime.now(UTC),
                        **_values(spec),
                    )
                )
            )
            rack = Rack(id=rack_id, datacenter_id=dc_id, spec=spec)
            await _record(conn, actor, Action.RACK_CREATE, rack, f"Rack {spec.name} created")
    except IntegrityError:
        # Another request took the name (or removed the datacenter) meanwhile.
        raise _duplicated(spec.name) from None
    return rack


async def update_rack(
    engine: AsyncEngine, dc_id: int, rack_id: int, spec: RackSpec, *, actor: Actor
) -> Rack:
    """Replace the rack's fields with `spec`'s."""
    spec = validate(spec)
    try:
        async with engine.begin() as conn:
            await fetch_rack(conn, dc_id, rack_id)
            if await _name_taken(conn, dc_id, spec.name, but=rack_id):
                raise _duplicated(spec.name)
            await conn.execute(_rack.update().where(_rack.c.id == rack_id).values(**_values(spec)))
            rack = Rack(id=rack_id, datacenter_id=dc_id, spec=spec)
            await _record(conn, actor, Action.RACK_MODIFY, rack, f"Rack {spec.name} modified")
    except IntegrityError:
        raise _duplicated(spec.name) from None
    return rack


async def delete_rack(engine: AsyncEngine, dc_id: int, rack_id: int, *, actor: Actor) -> None:
    """Remove an empty rack; Conflict while machines are in it (remove them first: each
    one is also watched by the datacenter, which must be told)."""
    machine = tables.machine
    try:
        async with engine.begin() as conn:
            rack = await fetch_rack(conn, dc_id, rack_id)
            count = (
                await conn.execute(
                    select(func.count()).select_from(machine).where(machine.c.rack_id == rack_id)
                )
            ).scalar_one()
            if count:
                raise Conflict(
                    f"Rack {rack.spec.name} still holds {count} machine(s): remove them first",
                    code=RACK_IN_USE,
                )
            await conn.execute(_rack.delete().where(_rack.c.id == rack_id))
            await _record(conn, actor, Action.RACK_DELETE, rack, f"Rack {rack.spec.name} deleted")
    except IntegrityError:
        # A machine was added between the count and the delete.
        raise Conflict(
            "The rack still holds machines: remove them first", code=RACK_IN_USE
        ) from None


async def fetch_machine_row(
    conn: AsyncConnection, dc_id: int, rack_id: int, machine_id: int
) -> Row[Any]:
    """The machine's row, when it is in that rack of that datacenter; NotFound naming
    what is missing (DC-0, RACK-0 or MACHINE-0) otherwise."""
    machine = tables.machine
    row = (
        await conn.execute(
            select(machine).where(
                machine.c.id == machine_id,
                machine.c.rack_id == rack_id,
                machine.c.datacenter_id == dc_id,
            )
        )
    ).one_or_none()
    if row is None:
        await fetch_rack(conn, dc_id, rack_id)
        raise NotFound("The requested machine does not exist", code=MACHINE_NOT_FOUND)
    return row
