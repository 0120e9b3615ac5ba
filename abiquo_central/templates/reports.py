"""What the datacenters report about templates: their status in an enterprise's
repository (the Appliance Manager's TemplateStatusChanged) and their disks' conversions
(the BPM's ConversionStateChanged).

Messages may be redelivered and may arrive out of order, so applying one is idempotent
and never moves a template back:
- a message sent before the template's row was created (`at` earlier than created_at,
  which is the `at` of the message that created it) is ignored;
- once DOWNLOAD, a DOWNLOADING is an old one; while DOWNLOADING, a lower progress is;
- a DOWNLOAD that arrives again refreshes what the disk is (path, format, size) but not
  what users may have changed since (name, description, requirements, category, icon).
The table keeps no time of the last status (only created_at), so between ERROR and
DOWNLOAD in either order the later arrival wins: the AM does report ERROR for a template
that was there (a rescan finds it broken) and DOWNLOADING after ERROR (a retry), so
neither can be ranked. A `status_at` column would settle every case.

NOT_DOWNLOAD (the template left the repository) deletes its row, as Abiquo removed the
templates a repository no longer held, unless a virtual machine still uses it: then it
stays, marked NOT_DOWNLOAD, so that the VM keeps its template.

An unknown datacenter or enterprise is a PermanentError: the link dead-letters the
message rather than retrying it forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Row, and_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.retry import deadlocked
from abiquo_central.templates.common import default_category_id, ensure_category, ovf_key
from abiquo_dc.protocol.templates import (
    ConversionState,
    ConversionStateChanged,
    TemplateDefinition,
    TemplateStatus,
    TemplateStatusChanged,
)
from abiquo_runtime.errors import PermanentError

_tpl = tables.virtual_machine_template
_conv = tables.template_conversion
_log = structlog.get_logger("abiquo.central.templates")

NAME_MAX = 255


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def datacenter_id_of(conn: AsyncConnection, dc_uuid: str) -> int:
    dc = tables.datacenter
    found = (await conn.execute(select(dc.c.id).where(dc.c.uuid == dc_uuid))).scalar_one_or_none()
    if found is None:
        raise PermanentError(f"no datacenter has the uuid {dc_uuid[:64]!r}")
    return int(found)


async def _enterprise_id_of(conn: AsyncConnection, text: str) -> int:
    ent = tables.enterprise
    try:
        wanted = int(text)
    except ValueError:
        wanted = -1
    found = (await conn.execute(select(ent.c.id).where(ent.c.id == wanted))).scalar_one_or_none()
    if found is None:
        raise PermanentError(f"no enterprise has the id {text[:64]!r}")
    return int(found)


def _name_from(ovf_id: str) -> str:
    # Until the envelope is read, a template is known by its file's name.
    last = ovf_id.rstrip("/").rsplit("/", 1)[-1] or ovf_id
    if last.lower().endswith(".ovf"):
        last = last[:-4]
    return (last or "template")[:NAME_MAX]


def _progress(value: float) -> int:
    return max(0, min(100, round(value)))


def _is_older(row: Row[Any], message: TemplateStatusChanged) -> bool:
    if _aware(message.at) < _aware(row.created_at):
        return True
    if message.status is TemplateStatus.DOWNLOADING:
        if row.state == TemplateStatus.DOWNLOAD:
            return True
        if row.state == TemplateStatus.DOWNLOADING and _progress(message.progress) < row.progress:
            return True
    return False


def _disk(definition: TemplateDefinition) -> dict[str, Any]:
    return {
        "disk_path": definition.disk_path[:1024],
        "disk_format": definition.disk_format.value,
        "disk_file_size": definition.disk_file_size,
    }


def _described(definition: TemplateDefinition, category_id: int | None) -> dict[str, Any]:
    return {
        "name": (definition.name.strip() or _name_from(definition.ovf_id))[:NAME_MAX],
        "description": definition.description,
        "hd_required": definition.hd_bytes or definition.virtual_size,
        "cpu_required": max(1, definition.cpu),
        "ram_required": max(1, definition.ram_mb),
        "icon_url": definition.icon_url[:1024],
        "category_id": category_id,
    }


async def _in_use(conn: AsyncConnection, template_id: int) -> bool:
    vm = tables.virtual_machine
    return (
        await conn.execute(select(vm.c.id).where(vm.c.template_id == template_id).limit(1))
    ).first() is not None


async def remove_template_row(conn: AsyncConnection, template_id: int) -> None:
    # template_conversion cascades in the schema, but SQLite only honours that with
    # foreign keys switched on: delete explicitly to behave the same everywhere.
    await conn.execute(_conv.delete().where(_conv.c.template_id == template_id))
    # Its instances stay, masterless (the schema's ON DELETE SET NULL, likewise).
    await conn.execute(_tpl.update().where(_tpl.c.master_id == template_id).values(master_id=None))
    await conn.execute(_tpl.delete().where(_tpl.c.id == template_id))


# How often a report is applied again after a concurrent one made it fail.
ATTEMPTS = 3


async def record_template_status(engine: AsyncEngine, message: TemplateStatusChanged) -> None:
    """Apply what an Appliance Manager reports about one template (see the module).

    Two central processes applying reports of a template not recorded yet both find no
    row: one inserts, the other fails on the unique key (or is a deadlock's victim on
    MariaDB) and, tried again, finds the row.
    """
    definition = message.template if message.status is TemplateStatus.DOWNLOAD else None
    category_id: int | None = None
    if definition is not None:
        category_id = await ensure_category(engine, definition.category)
    for attempt in range(ATTEMPTS):
        try:
            await _record_status(engine, message, definition, category_id)
            return
        except (IntegrityError, OperationalError) as exc:
            retry = isinstance(exc, IntegrityError) or deadlocked(exc)
            if not retry or attempt == ATTEMPTS - 1:
                raise


async def _record_status(
    engine: AsyncEngine,
    message: TemplateStatusChanged,
    definition: TemplateDefinition | None,
    category_id: int | None,
) -> None:
    async with engine.begin() as conn:
        dc_id = await datacenter_id_of(conn, message.dc_uuid)
        ent_id = await _enterprise_id_of(conn, message.enterprise_id)
        where = and_(
            _tpl.c.enterprise_id == ent_id,
            _tpl.c.datacenter_id == dc_id,
            _tpl.c.ovf_key == ovf_key(message.ovf_id),
        )
        row = (await conn.execute(select(_tpl).where(where).with_for_update())).one_or_none()
        if row is not None and _is_older(row, message):
            return
        if message.status is TemplateStatus.NOT_DOWNLOAD:
            if row is None:
                return
            if await _in_use(conn, row.id):
                await conn.execute(
                    _tpl.update()
                    .where(_tpl.c.id == row.id)
                    .values(state=message.status.value, progress=0)
                )
            else:
                await remove_template_row(conn, row.id)
            return
        values: dict[str, Any] = {"state": message.status.value}
        if message.status is TemplateStatus.DOWNLOADING:
            values.update(progress=_progress(message.progress), error="")
        elif message.status is TemplateStatus.ERROR:
            values.update(error=message.error or "the Appliance Manager reported an error")
        elif message.status is TemplateStatus.DOWNLOAD:
            values.update(progress=100, error="")
            if definition is not None:
                values.update(_disk(definition))
                if row is None or row.state != TemplateStatus.DOWNLOAD:
                    values.update(_described(definition, category_id))
        if row is None:
            values.setdefault("name", _name_from(message.ovf_id))
            if values.get("category_id") is None:
                values["category_id"] = await default_category_id(conn)
            await conn.execute(
                _tpl.insert().values(
                    enterprise_id=ent_id,
                    datacenter_id=dc_id,
                    ovf_id=message.ovf_id[:1024],
                    ovf_key=ovf_key(message.ovf_id),
                    created_at=_aware(message.at),
                    **values,
                )
            )
        else:
            await conn.execute(_tpl.update().where(_tpl.c.id == row.id).values(**values))


async def reconcile_repository(
    engine: AsyncEngine,
    dc_uuid: str,
    enterprise_id: int,
    listed: Sequence[tuple[str, TemplateStatus, float, str, TemplateDefinition | None]],
    *,
    now: datetime,
) -> None:
    """Make the enterprise's templates in the datacenter what the AM `listed` (ovf id,
    status, progress, error, definition): each applied as a report made `now`, and the
    ones central holds but the AM does not removed (NOT_DOWNLOAD). What a report lost on
    the way (a DC heard before it was registered) is caught up so."""
    for ovf_id, status, progress, error, definition in listed:
        await record_template_status(
            engine,
            TemplateStatusChanged(
                dc_uuid=dc_uuid,
                enterprise_id=str(enterprise_id),
                ovf_id=ovf_id,
                status=status,
                progress=progress,
                error=error,
                template=definition,
                at=now,
            ),
        )
    there = {ovf_key(ovf_id) for ovf_id, *_ in listed}
    dc = tables.datacenter
    async with engine.connect() as conn:
        held = (
            await conn.execute(
                select(_tpl.c.ovf_id, _tpl.c.ovf_key)
                .join(dc, dc.c.id == _tpl.c.datacenter_id)
                .where(_tpl.c.enterprise_id == enterprise_id, dc.c.uuid == dc_uuid)
            )
        ).all()
    for row in held:
        if row.ovf_key not in there:
            await record_template_status(
                engine,
                TemplateStatusChanged(
                    dc_uuid=dc_uuid,
                    enterprise_id=str(enterprise_id),
                    ovf_id=row.ovf_id,
                    status=TemplateStatus.NOT_DOWNLOAD,
                    at=now,
                ),
            )


def conversion_id_of(text: str) -> int | None:
    """The template_conversion row a ConvertTemplateDisk's conversion_id names."""
    return int(text) if text.isdigit() and len(text) < 10 else None


async def record_conversion_state(engine: AsyncEngine, message: ConversionStateChanged) -> None:
    """Apply what a BPM reports about a conversion it was asked for. A conversion central
    does not know (its template was deleted meanwhile) is ignored; a state sent before
    the one stored is too."""
    conversion_id = conversion_id_of(message.conversion_id)
    async with engine.begin() as conn:
        dc_id = await datacenter_id_of(conn, message.dc_uuid)
        if conversion_id is None:
            raise PermanentError(f"{message.conversion_id[:64]!r} is no conversion of central's")
        row = (
            await conn.execute(
                select(_conv)
                .join(_tpl, _tpl.c.id == _conv.c.template_id)
                .where(_conv.c.id == conversion_id, _tpl.c.datacenter_id == dc_id)
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            _log.info("conversion of no template", conversion=message.conversion_id)
            return
        if _aware(message.at) < _aware(row.updated_at):
            return
        values: dict[str, Any] = {"state": message.state.value, "updated_at": _aware(message.at)}
        if message.state is ConversionState.DONE and message.target_path:
            values["path"] = message.target_path[:1024]
        await conn.execute(_conv.update().where(_conv.c.id == conversion_id).values(**values))
