"""Datastores: where a machine keeps VM disks. Discovered with the machine, or added by
hand; only the enabled ones receive disks.

Sizes are the host's facts (bytes); an administrator chooses which datastores are
enabled, the directory disks go to under the root path, and the name shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.rows import inserted_id, taken
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_central.infrastructure.racks import fetch_machine_row
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound

DATASTORE_NOT_FOUND = "DATASTORE-0"
DUPLICATED_NAME = "DATASTORE-1"
INVALID_DATASTORE = "DATASTORE-2"

NAME_MAX = 255
PATH_MAX = 1024
UUID_MAX = 255
_BIGINT_MAX = 2**63 - 1

_ds = tables.datastore


@dataclass(frozen=True, slots=True)
class DatastoreSpec:
    name: str
    root_path: str
    directory: str = ""
    size: int = 0
    used_size: int = 0
    enabled: bool = False
    # Shared storage shows the same uuid on every host that mounts it.
    datastore_uuid: str = ""


@dataclass(frozen=True, slots=True)
class Datastore:
    id: int
    machine_id: int
    spec: DatastoreSpec


def validate(spec: DatastoreSpec) -> DatastoreSpec:
    """`spec` with its name and paths trimmed; InvalidInput saying what is wrong."""
    name = spec.name.strip()
    root = spec.root_path.strip()
    if not name:
        raise InvalidInput("a datastore needs a name", code=INVALID_DATASTORE)
    if len(name) > NAME_MAX:
        raise InvalidInput(
            f"a datastore's name has at most {NAME_MAX} characters", code=INVALID_DATASTORE
        )
    if not root:
        raise InvalidInput(f"datastore {name} needs a rootPath", code=INVALID_DATASTORE)
    if len(root) > PATH_MAX or len(spec.directory) > PATH_MAX:
        raise InvalidInput(
            f"datastore {name}: rootPath and directory have at most {PATH_MAX} characters",
            code=INVALID_DATASTORE,
        )
    if len(spec.datastore_uuid) > UUID_MAX:
        raise InvalidInput(
            f"datastore {name}: datastoreUUID has at most {UUID_MAX} characters",
            code=INVALID_DATASTORE,
        )
    if not (0 <= spec.size <= _BIGINT_MAX and 0 <= spec.used_size <= _BIGINT_MAX):
        raise InvalidInput(
            f"datastore {name}: size and usedSize are bytes, 0 or more", code=INVALID_DATASTORE
        )
    if spec.used_size > spec.size:
        raise InvalidInput(
            f"datastore {name}: usedSize {spec.used_size} is above its size {spec.size}",
            code=INVALID_DATASTORE,
        )
    return replace(
        spec,
        name=name,
        root_path=root,
        directory=spec.directory.strip(),
        datastore_uuid=spec.datastore_uuid.strip(),
    )


def validate_all(specs: Iterable[DatastoreSpec]) -> tuple[DatastoreSpec, ...]:
    """Each one validated, and no name twice."""
    checked = tuple(validate(s) for s in specs)
    names = [s.name for s in checked]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(
            f"datastore names must differ within a machine: {', '.join(twice)}",
            code=DUPLICATED_NAME,
        )
    return checked


def values(spec: DatastoreSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "root_path": spec.root_path,
        "directory": spec.directory,
        "size": spec.size,
        "used_size": spec.used_size,
        "enabled": spec.enabled,
        "datastore_uuid": spec.datastore_uuid,
    }


def datastore_of(row: Row[Any]) -> Datastore:
    return Datastore(
        id=row.id,
        machine_id=row.machine_id,
        spec=DatastoreSpec(
            name=row.name,
            root_path=row.root_path,
            directory=row.directory,
            size=int(row.size),
            used_size=int(row.used_size),
            enabled=bool(row.enabled),
            datastore_uuid=row.datastore_uuid,
        ),
    )


async def datastores_of(
    conn: AsyncConnection, machine_ids: Sequence[int]
) -> dict[int, list[Datastore]]:
    """The datastores of these machines, by machine, in one query."""
    found: dict[int, list[Datastore]] = {m: [] for m in machine_ids}
    if not machine_ids:
        return found
    rows = await conn.execute(
        select(_ds).where(_ds.c.machine_id.in_(machine_ids)).order_by(_ds.c.machine_id, _ds.c.id)
    )
    for row in rows:
        found[row.machine_id].append(datastore_of(row))
    return found


def _not_found() -> NotFound:
    return NotFound("The requested datastore does not exist", code=DATASTORE_NOT_FOUND)


def _duplicated(name: str) -> Conflict:
    return Conflict(f"The machine has a datastore named {name} already", code=DUPLICATED_NAME)


async def _require_machine(conn: AsyncConnection, dc_id: int, rack_id: int, machine_id: int) -> str:
    row = await fetch_machine_row(conn, dc_id, rack_id, machine_id)
    return str(row.name)


async def _fetch(conn: AsyncConnection, machine_id: int, datastore_id: int) -> Datastore:
    row = (
        await conn.execute(
            select(_ds).where(_ds.c.id == datastore_id, _ds.c.machine_id == machine_id)
        )
    ).one_or_none()
    if row is None:
        raise _not_found()
    return datastore_of(row)


async def _record(
    conn: AsyncConnection,
    actor: Actor,
    action: Action,
    where: tuple[int, int, int],
    ds: Datastore,
    message: str,
) -> None:
    dc_id, rack_id, machine_id = where
    await record_action(
        conn,
        actor,
        component=Component.MACHINE,
        action=action,
        target=(
            f"/admin/datacenters/{dc_id}/racks/{rack_id}/machines/{machine_id}/datastores/{ds.id}"
        ),
        message=message,
        datacenter_id=dc_id,
    )


async def list_datastores(
    engine: AsyncEngine, dc_id: int, rack_id: int, machine_id: int
) -> list[Datastore]:
    """Every datastore of the machine (a machine has a handful: no paging)."""
    async with engine.connect() as conn:
        await _require_machine(conn, dc_id, rack_id, machine_id)
        return (await datastores_of(conn, [machine_id]))[machine_id]


async def get_datastore(
    engine: AsyncEngine, dc_id: int, rack_id: int, machine_id: int, datastore_id: int
) -> Datastore:
    async with engine.connect() as conn:
        await _require_machine(conn, dc_id, rack_id, machine_id)
        return await _fetch(conn, machine_id, datastore_id)


async def _name_taken(
    conn: AsyncConnection, machine_id: int, name: str, but: int | None = None
) -> bool:
    return await taken(conn, _ds, _ds.c.machine_id == machine_id, _ds.c.name == name, but=but)


async def create_datastore(
    engine: AsyncEngine,
    dc_id: int,
    rack_id: int,
    machine_id: int,
    spec: DatastoreSpec,
    *,
    actor: Actor,
) -> Datastore:
    """A datastore added by hand to the machine; Conflict when the name is taken."""
    spec = validate(spec)
    try:
        async with engine.begin() as conn:
            machine_name = await _require_machine(conn, dc_id, rack_id, machine_id)
            if await _name_taken(conn, machine_id, spec.name):
                raise _duplicated(spec.name)
            ds_id = inserted_id(
                await conn.execute(_ds.insert().values(machine_id=machine_id, **values(spec)))
            )
            ds = Datastore(id=ds_id, machine_id=machine_id, spec=spec)
            await _record(
                conn,
                actor,
                Action.DATASTORE_CREATE,
                (dc_id, rack_id, machine_id),
                ds,
                f"Datastore {spec.name} added to machine {machine_name}",
            )
    except IntegrityError:
        raise _duplicated(spec.name) from None
    return ds


@dataclass(frozen=True, slots=True)
class DatastoreChange:
    """What an administrator may change of a datastore; the rest is the host's."""

    name: str
    directory: str
    enabled: bool


async def update_datastore(
    engine: AsyncEngine,
    dc_id: int,
    rack_id: int,
    machine_id: int,
    datastore_id: int,
    change: DatastoreChange,
    *,
    actor: Actor,
) -> Datastore:
    """Rename, enable or disable the datastore, or change its directory."""
    try:
        async with engine.begin() as conn:
            machine_name = await _require_machine(conn, dc_id, rack_id, machine_id)
            found = await _fetch(conn, machine_id, datastore_id)
            spec = validate(
                replace(
                    found.spec,
                    name=change.name,
                    directory=change.directory,
                    enabled=change.enabled,
                )
            )
            if await _name_taken(conn, machine_id, spec.name, but=datastore_id):
                raise _duplicated(spec.name)
            await conn.execute(
                _ds.update()
                .where(_ds.c.id == datastore_id)
                .values(name=spec.name, directory=spec.directory, enabled=spec.enabled)
            )
            ds = Datastore(id=datastore_id, machine_id=machine_id, spec=spec)
            await _record(
                conn,
                actor,
                Action.DATASTORE_MODIFY,
                (dc_id, rack_id, machine_id),
                ds,
                f"Datastore {spec.name} of machine {machine_name} modified",
            )
    except IntegrityError:
        raise _duplicated(change.name) from None
    return ds


async def delete_datastore(
    engine: AsyncEngine,
    dc_id: int,
    rack_id: int,
    machine_id: int,
    datastore_id: int,
    *,
    actor: Actor,
) -> None:
    async with engine.begin() as conn:
        machine_name = await _require_machine(conn, dc_id, rack_id, machine_id)
        found = await _fetch(conn, machine_id, datastore_id)
        await conn.execute(_ds.delete().where(_ds.c.id == datastore_id))
        await _record(
            conn,
            actor,
            Action.DATASTORE_DELETE,
            (dc_id, rack_id, machine_id),
            found,
            f"Datastore {found.spec.name} removed from machine {machine_name}",
        )
