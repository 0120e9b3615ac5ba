"""Instances: a powered-off VM's disk copied back to its datacenter's repository as a new
template of the VM's enterprise (API.md's `action/instance`, a SNAPSHOT task).

Central chooses where the copy goes: a directory of the task's own in the enterprise's
repository, <enterprise>/instance-<task id>/disk, so that the datacenter can tell a copy
it finds there after a crash is its own. The datacenter copies the disk, has its
Appliance Manager make a template of it, and says which in the SNAPSHOT job's DONE.

That DONE records the template here (as the AM's own report of it would: whichever
arrives first creates the row, the other changes nothing) and links it to its master,
the template the VM was made from. The instance asks for the CPU and RAM the VM had,
and takes its master's description, category and icon.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tasks.definitions import Placed
from abiquo_central.tasks.plans import TaskType
from abiquo_central.templates.common import ovf_key
from abiquo_central.templates.reports import NAME_MAX, datacenter_id_of, record_template_status
from abiquo_dc.protocol import jobs as dc
from abiquo_dc.protocol.templates import TemplateStatus, TemplateStatusChanged
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
    if n.template is None:
        return
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
                .where(task.c.id == n.task_id)
            )
        ).one_or_none()
    if row is None or row.type != TaskType.SNAPSHOT.value:
        return
    if not n.template.disk_path.startswith(_directory(row.enterprise_id, n.task_id)):
        return
    await record_template_status(
        engine,
        TemplateStatusChanged(
            dc_uuid=n.dc_uuid,
            enterprise_id=str(row.enterprise_id),
            ovf_id=n.template.ovf_id,
            status=TemplateStatus.DOWNLOAD,
            template=n.template,
            at=n.at,
        ),
    )
    async with engine.begin() as conn:
        dc_id = await datacenter_id_of(conn, n.dc_uuid)
        await conn.execute(
            _tpl.update()
            .where(
                _tpl.c.enterprise_id == row.enterprise_id,
                _tpl.c.datacenter_id == dc_id,
                _tpl.c.ovf_key == ovf_key(n.template.ovf_id),
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
