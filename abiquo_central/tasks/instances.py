"""Instances: a powered-off VM's disk copied back to its datacenter's repository as a new
template of the VM's enterprise (API.md's `action/instance`, a SNAPSHOT task).

Central chooses where the copy goes: a directory of the task's own in the enterprise's
repository, <enterprise>/instance-<task id>/disk, so that the datacenter can tell a copy
it finds there after a crash is its own. The datacenter copies the disk, has its
Appliance Manager make a template of it, and says which in the SNAPSHOT job's DONE.

That DONE records the template here (as the AM's own report of it would: whichever
arrives first creates the row, the other changes nothing) and links it to its master,
the template the VM was made from; so does the AM's report, for a DONE that never came.
The instance asks for the CPU and RAM the VM had, and takes its master's description,
category and icon.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tasks.definitions import Placed
from abiquo_central.tasks.plans import TaskType
from abiquo_central.templates.common import ovf_key
from abiquo_central.templates.reports import NAME_MAX, datacenter_id_of, record_template_status
from abiquo_dc.protocol import jobs as dc
from abiquo_dc.protocol.templates import (
    TemplateDefinition,
    TemplateStatus,
    TemplateStatusChanged,
)
from abiquo_runtime.errors import InvalidInput

INVALID_INSTANCE = "VM-6"

_tpl = tables.virtual_machine_template


def instance_name(text: str) -> str:
    """The new template's name, trimmed; InvalidInput when empty or too long."""
    name = text.strip()
    if not name:
        raise InvalidInput("an instance needs a name (instanceName)", code=INVALID_INSTANCE)
    if len(name) > NAME_MAX:
        raise InvalidInput(
            f"an instance's name has at most {NAME_MAX} characters", code=INVALID_INSTANCE
        )
    return name


def _directory(enterprise_id: int, task_id: str) -> str:
    return f"{enterprise_id}/instance-{task_id}/"


def destination(vm: Any, where: Placed, task_id: str, name: str) -> dc.Snapshot:
    """Where the SNAPSHOT task `task_id` copies `vm`'s disk (`where` it is placed), and
    what the template made of it is called."""
    if not where.definition.disks:
        raise InvalidInput(f"virtual machine {vm.label} has no disk to copy")
    return dc.Snapshot(
        repository_path=f"{_directory(vm.enterprise_id, task_id)}disk",
        disk_index=0,
        enterprise_id=str(vm.enterprise_id),
        template_name=name,
    )


async def record_instance(engine: AsyncEngine, n: dc.JobNotification) -> None:
    """A SNAPSHOT's DONE named the template its copy became: record it, a template of
    the VM's enterprise in the datacenter, with the VM's template as its master.

    Idempotent (a redelivered DONE finds it all there). A template that is not in the
    task's own directory is not this task's and is left alone."""
    if n.template is not None:
        await _record_and_link(engine, n.task_id, n.dc_uuid, n.template, n.at)


# An instance's template id in its enterprise's repository: <directory>/<envelope>, the
# directory named after the SNAPSHOT task (see `destination`).
_INSTANCE_OVF = re.compile(
    r"^instance-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/"
)


async def link_reported_instance(engine: AsyncEngine, report: TemplateStatusChanged) -> None:
    """The Appliance Manager's own report of an instance's template (recorded already
    by the caller) links it to its master too, as the SNAPSHOT's DONE would: the DONE
    may have been lost, or the task settled without it (a stale one)."""
    found = _INSTANCE_OVF.match(report.ovf_id)
    if report.status is not TemplateStatus.DOWNLOAD or report.template is None or not found:
        return
    await _record_and_link(engine, found.group(1), report.dc_uuid, report.template, report.at)


async def _record_and_link(
    engine: AsyncEngine, task_id: str, dc_uuid: str, template: TemplateDefinition, at: datetime
) -> None:
    task, vm, user = tables.task, tables.virtual_machine, tables.user
    master = _tpl.alias("master")
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    task.c.type,
                    task.c.enterprise_id,
                    vm.c.template_id,
                    vm.c.cpu,
                    vm.c.ram,
                    user.c.nick,
                    master.c.description,
                    master.c.category_id,
                    master.c.icon_url,
                )
                .join(vm, vm.c.id == task.c.virtual_machine_id)
                .join(master, master.c.id == vm.c.template_id)
                .outerjoin(user, user.c.id == task.c.user_id)
                .where(task.c.id == task_id)
            )
        ).one_or_none()
    if row is None or row.type != TaskType.SNAPSHOT.value:
        return
    if not template.disk_path.startswith(_directory(row.enterprise_id, task_id)):
        return
    await record_template_status(
        engine,
        TemplateStatusChanged(
            dc_uuid=dc_uuid,
            enterprise_id=str(row.enterprise_id),
            ovf_id=template.ovf_id,
            status=TemplateStatus.DOWNLOAD,
            template=template,
            at=at,
        ),
    )
    async with engine.begin() as conn:
        dc_id = await datacenter_id_of(conn, dc_uuid)
        await conn.execute(
            _tpl.update()
            .where(
                _tpl.c.enterprise_id == row.enterprise_id,
                _tpl.c.datacenter_id == dc_id,
                _tpl.c.ovf_key == ovf_key(template.ovf_id),
                _tpl.c.master_id.is_(None),
            )
            # Once, when linked: what the VM was when copied, and what its master says of
            # itself; users may change them afterwards.
            .values(
                master_id=row.template_id,
                creation_user=(row.nick or "")[:128],
                cpu_required=row.cpu,
                ram_required=row.ram,
                description=row.description,
                category_id=row.category_id,
                icon_url=row.icon_url,
            )
        )
