"""What the Appliance Manager and the BPM report, recorded: idempotent, in order, and
refused (PermanentError) for a datacenter or enterprise central does not know."""

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
from abiquo_central.templates.common import ovf_key
from abiquo_central.templates.reports import record_conversion_state, record_template_status
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import (
    ConversionState,
    ConversionStateChanged,
    TemplateDefinition,
    TemplateStatus,
    TemplateStatusChanged,
)
from abiquo_runtime.errors import PermanentError
from abiquo_runtime.secrets import SecretBox
from tests.central.conftest import T0, Seeded

DC_UUID = "5d2e1b1c-0000-4000-8000-0000000000a1"
OVF = "http://catalogue.example/ubuntu/ubuntu.ovf"
_tpl = tables.virtual_machine_template


def definition(**changes: Any) -> TemplateDefinition:
    values: dict[str, Any] = {
        "ovf_id": OVF,
        "name": "Ubuntu 24.04",
        "description": "a server",
        "disk_format": DiskFormat.QCOW2_SPARSE,
        "disk_path": "1/ubuntu/ubuntu.qcow2",
        "disk_file_size": 1000,
        "virtual_size": 5000,
        "cpu": 2,
        "ram_mb": 1024,
        "hd_bytes": 4000,
        "category": "Linux",
    }
    values.update(changes)
    return TemplateDefinition(**values)


def status(
    enterprise_id: int,
    state: TemplateStatus,
    *,
    seconds: float = 0,
    progress: float = 0,
    error: str = "",
    template: TemplateDefinition | None = None,
    ovf_id: str = OVF,
    dc_uuid: str = DC_UUID,
) -> TemplateStatusChanged:
    return TemplateStatusChanged(
        dc_uuid=dc_uuid,
        enterprise_id=str(enterprise_id),
        ovf_id=ovf_id,
        status=state,
        progress=progress,
        error=error,
        template=template,
        at=T0 + timedelta(seconds=seconds),
    )


async def rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(_tpl).order_by(_tpl.c.id))).all())


@pytest.fixture
async def dc(engine: AsyncEngine, seeded: Seeded) -> int:
    return await ensure_datacenter(engine, uuid=DC_UUID, name="Repo DC", location="ES", now=T0)


async def test_a_download_creates_the_template_and_redelivery_changes_nothing(
    engine: AsyncEngine, seeded: Seeded, dc: int
) -> None:
    ent = seeded.enterprise_id
    await record_template_status(engine, status(ent, TemplateStatus.DOWNLOADING, progress=10))
    (row,) = await rows(engine)
    assert (row.state, row.progress, row.datacenter_id, row.enterprise_id) == (
        "DOWNLOADING",
        10,
        dc,
        ent,
    )
    assert row.name == "ubuntu" and row.ovf_key == ovf_key(OVF)
    assert row.created_at == T0
    await record_template_status(
        engine, status(ent, TemplateStatus.DOWNLOADING, seconds=1, progress=55.4)
    )
    done = status(ent, TemplateStatus.DOWNLOAD, seconds=2, template=definition())
    await record_template_status(engine, done)
    (row,) = await rows(engine)
    assert row.state == "DOWNLOAD" and row.progress == 100
    assert (row.name, row.disk_path, row.disk_format, row.disk_file_size) == (
        "Ubuntu 24.04",
        "1/ubuntu/ubuntu.qcow2",
        "QCOW2_SPARSE",
        1000,
    )
    assert (row.cpu_required, row.ram_required, row.hd_required) == (2, 1024, 4000)
    async with engine.connect() as conn:
        category = (
            await conn.execute(
                select(tables.category.c.name).where(tables.category.c.id == row.category_id)
            )
        ).scalar_one()
    assert category == "Linux"
    # Redelivered: the same row, unchanged.
    await record_template_status(engine, done)
    assert await rows(engine) == [row]


async def test_an_older_status_is_ignored(engine: AsyncEngine, seeded: Seeded, dc: int) -> None:
    ent = seeded.enterprise_id
    await record_template_status(engine, status(ent, TemplateStatus.DOWNLOADING, seconds=5))
    await record_template_status(
        engine, status(ent, TemplateStatus.DOWNLOADING, seconds=7, progress=60)
    )
    # Sent before the row's first message, and a lower progress: both older.
    await record_template_status(
        engine, status(ent, TemplateStatus.ERROR, seconds=1, error="old failure")
    )
    await record_template_status(
        engine, status(ent, TemplateStatus.DOWNLOADING, seconds=6, progress=30)
    )
    (row,) = await rows(engine)
    assert (row.state, row.progress, row.error) == ("DOWNLOADING", 60, "")
    await record_template_status(
        engine, status(ent, TemplateStatus.DOWNLOAD, seconds=9, template=definition())
    )
    # A DOWNLOADING that arrives after the DOWNLOAD was sent before it.
    await record_template_status(
        engine, status(ent, TemplateStatus.DOWNLOADING, seconds=8, progress=99)
    )
    (row,) = await rows(engine)
    assert row.state == "DOWNLOAD"


async def test_a_new_download_keeps_what_users_changed(
    engine: AsyncEngine, seeded: Seeded, dc: int
) -> None:
    ent = seeded.enterprise_id
    await record_template_status(
        engine, status(ent, TemplateStatus.DOWNLOAD, template=definition())
    )
    async with engine.begin() as conn:
        await conn.execute(_tpl.update().values(name="renamed"))
    await record_template_status(
        engine,
        status(ent, TemplateStatus.DOWNLOAD, seconds=3, template=definition(disk_file_size=2000)),
    )
    (row,) = await rows(engine)
    assert (row.name, row.disk_file_size) == ("renamed", 2000)


async def test_errors_and_removal(engine: AsyncEngine, seeded: Seeded, dc: int) -> None:
    ent = seeded.enterprise_id
    await record_template_status(engine, status(ent, TemplateStatus.DOWNLOADING))
    await record_template_status(
        engine, status(ent, TemplateStatus.ERROR, seconds=1, error="AM-3: bad digest")
    )
    (row,) = await rows(engine)
    assert (row.state, row.error) == ("ERROR", "AM-3: bad digest")
    # The template without a default's category is filed under the default one.
    async with engine.connect() as conn:
        default = (
            await conn.execute(
                select(tables.category.c.id).where(tables.category.c.is_default.is_(True))
            )
        ).scalar_one()
    assert row.category_id == default
    await record_template_status(engine, status(ent, TemplateStatus.NOT_DOWNLOAD, seconds=2))
    assert await rows(engine) == []
    # Removing what is not there is nothing.
    await record_template_status(engine, status(ent, TemplateStatus.NOT_DOWNLOAD, seconds=3))
    assert await rows(engine) == []


async def test_unknown_datacenters_and_enterprises_are_refused(
    engine: AsyncEngine, seeded: Seeded, dc: int
) -> None:
    with pytest.raises(PermanentError):
        await record_template_status(
            engine, status(seeded.enterprise_id, TemplateStatus.DOWNLOADING, dc_uuid="nope")
        )
    for ent in (999_999, "x1"):
        with pytest.raises(PermanentError):
            await record_template_status(
                engine,
                TemplateStatusChanged(
                    dc_uuid=DC_UUID,
                    enterprise_id=str(ent),
                    ovf_id=OVF,
                    status=TemplateStatus.DOWNLOADING,
                    at=T0,
                ),
            )
    assert await rows(engine) == []


async def test_the_notification_handler_records_both_messages(
    engine: AsyncEngine, seeded: Seeded, dc: int, secrets: SecretBox
) -> None:
    handle = message_handler(engine=engine, link=NoLink(), secrets=secrets, request_timeout=5.0)
    await handle(status(seeded.enterprise_id, TemplateStatus.DOWNLOAD, template=definition()))
    (row,) = await rows(engine)
    conv = tables.template_conversion
    async with engine.begin() as conn:
        result = await conn.execute(
            conv.insert().values(
                template_id=row.id, target_format="VMDK_FLAT", state="QUEUED", updated_at=T0
            )
        )
        assert result.inserted_primary_key is not None
        conversion_id = result.inserted_primary_key[0]

    def changed(state: ConversionState, seconds: float, **more: Any) -> ConversionStateChanged:
        return ConversionStateChanged(
            dc_uuid=DC_UUID,
            conversion_id=str(conversion_id),
            state=state,
            at=T0 + timedelta(seconds=seconds),
            **more,
        )

    await handle(changed(ConversionState.START, 1))
    await handle(changed(ConversionState.DONE, 3, target_path="1/ubuntu/formats/VMDK_FLAT/d"))
    # Late and redelivered: ignored.
    await handle(changed(ConversionState.PROGRESS, 2, progress=50))
    await record_conversion_state(
        engine, changed(ConversionState.DONE, 3, target_path="1/ubuntu/formats/VMDK_FLAT/d")
    )
    async with engine.connect() as conn:
        found = (await conn.execute(select(conv))).one()
    assert (found.state, found.path) == ("DONE", "1/ubuntu/formats/VMDK_FLAT/d")
    # A conversion of a deleted template is nothing; a malformed id or DC is refused.
    await record_conversion_state(
        engine,
        ConversionStateChanged(
            dc_uuid=DC_UUID, conversion_id="424242", state=ConversionState.DONE, at=T0
        ),
    )
    with pytest.raises(PermanentError):
        await record_conversion_state(
            engine,
            ConversionStateChanged(
                dc_uuid=DC_UUID, conversion_id="abc", state=ConversionState.DONE, at=T0
            ),
        )
    with pytest.raises(PermanentError):
        await record_conversion_state(
            engine,
            ConversionStateChanged(
                dc_uuid="nope", conversion_id="1", state=ConversionState.DONE, at=T0
            ),
        )
