"""Conversions of a template's disk into other formats, done by the datacenter's BPM.

Requesting one records it (QUEUED) and returns the ConvertTemplateDisk to send; its
conversion_id is the row's id, by which the BPM's ConversionStateChanged find it again
(reports.py). A conversion that is queued, running or done is not asked again; a failed
or cancelled one is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.rows import inserted_id
from abiquo_central.templates.common import (
    CONVERSION_NOT_FOUND,
    INVALID_CONVERSION,
    TEMPLATE_NOT_READY,
)
from abiquo_central.templates.templates import Template
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import ConversionState, ConvertTemplateDisk, TemplateStatus
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound

_conv = tables.template_conversion

# Asked again when requested again; the others are under way or there already.
_RETRIABLE = frozenset({ConversionState.FAILED.value, ConversionState.CANCELLED.value})
# What no hypervisor boots or no converter writes.
_NO_TARGET = frozenset(
    {DiskFormat.UNKNOWN, DiskFormat.INCOMPATIBLE, DiskFormat.VMDK_STREAM_OPTIMIZED}
)


@dataclass(frozen=True, slots=True)
class Conversion:
    id: int
    template_id: int
    source_format: str
    source_path: str
    target_format: str
    state: str
    target_path: str
    target_size: int
    updated_at: datetime


def _conversion(row: Row[Any], template: Template) -> Conversion:
    return Conversion(
        id=row.id,
        template_id=template.id,
        source_format=template.disk_format,
        source_path=template.disk_path,
        target_format=row.target_format,
        state=row.state,
        target_path=row.path or "",
        target_size=int(row.size),
        updated_at=row.updated_at,
    )


def parse_format(text: str) -> DiskFormat:
    """A disk format by name (any case); InvalidInput naming the valid ones otherwise."""
    try:
        return DiskFormat(text.strip().upper())
    except ValueError:
        known = ", ".join(f.value for f in DiskFormat)
        raise InvalidInput(
            f"{text[:64]!r} is no disk format; use one of: {known}", code=INVALID_CONVERSION
        ) from None


async def list_conversions(engine: AsyncEngine, template: Template) -> list[Conversion]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(_conv).where(_conv.c.template_id == template.id).order_by(_conv.c.id)
            )
        ).all()
    return [_conversion(r, template) for r in rows]


async def get_conversion(engine: AsyncEngine, template: Template, fmt: DiskFormat) -> Conversion:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(_conv).where(
                    _conv.c.template_id == template.id, _conv.c.target_format == fmt.value
                )
            )
        ).one_or_none()
    if row is None:
        raise NotFound(
            f"Template {template.name} has no conversion to {fmt.value}", code=CONVERSION_NOT_FOUND
        )
    return _conversion(row, template)


async def request_conversion(
    engine: AsyncEngine, template: Template, fmt: DiskFormat, *, now: datetime
) -> tuple[Conversion, ConvertTemplateDisk | None]:
    """The conversion of `template` into `fmt`, and the request to send for it (None
    when it is under way or done already)."""
    if fmt in _NO_TARGET:
        raise InvalidInput(f"A disk cannot be converted to {fmt.value}", code=INVALID_CONVERSION)
    if template.state != TemplateStatus.DOWNLOAD or not template.disk_path:
        raise Conflict(
            f"Template {template.name} is not in the repository yet ({template.state})",
            code=TEMPLATE_NOT_READY,
        )
    if fmt.value == template.disk_format:
        raise InvalidInput(
            f"Template {template.name}'s disk is {fmt.value} already", code=INVALID_CONVERSION
        )
    queued = {"state": ConversionState.QUEUED.value, "path": "", "size": 0, "updated_at": now}
    send = True
    try:
        async with engine.begin() as conn:
            row = (
                await conn.execute(
                    select(_conv)
                    .where(_conv.c.template_id == template.id, _conv.c.target_format == fmt.value)
                    .with_for_update()
                )
            ).one_or_none()
            if row is None:
                conversion_id = inserted_id(
                    await conn.execute(
                        _conv.insert().values(
                            template_id=template.id, target_format=fmt.value, **queued
                        )
                    )
                )
            elif row.state in _RETRIABLE:
                conversion_id = row.id
                await conn.execute(_conv.update().where(_conv.c.id == row.id).values(**queued))
            else:
                conversion_id, send = row.id, False
    except IntegrityError:
        # The same conversion was asked at the same time: that request sends it.
        send = False
    found = await get_conversion(engine, template, fmt)
    if not send:
        return found, None
    return found, ConvertTemplateDisk(
        conversion_id=str(conversion_id),
        source_path=template.disk_path,
        source_format=DiskFormat(template.disk_format),
        target_format=fmt,
    )


async def conversion_failed(engine: AsyncEngine, conversion: Conversion, *, now: datetime) -> None:
    """Mark a conversion whose request could not be sent, so that it may be asked again."""
    async with engine.begin() as conn:
        await conn.execute(
            _conv.update()
            .where(_conv.c.id == conversion.id)
            .values(state=ConversionState.FAILED.value, updated_at=now)
        )
