"""A VM as the datacenter's Virtualization Manager wants it, read from central's tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from abiquo_central.db import tables
from abiquo_dc.protocol.definitions import (
    Credentials,
    DiskFormat,
    HypervisorConnection,
    HypervisorType,
    Nic,
    RemoteDisplay,
    RepositoryDisk,
    VirtualMachineDefinition,
)
from abiquo_runtime.errors import Conflict
from abiquo_runtime.secrets import SecretBox

NOT_PLACED = "VM-5"


@dataclass(frozen=True, slots=True)
class Placed:
    """A VM with where it runs: what a job needs, and where its messages go."""

    dc_uuid: str
    connection: HypervisorConnection
    definition: VirtualMachineDefinition


def _directory(root: str, directory: str) -> str:
    return f"{root.rstrip('/')}/{directory.strip('/')}" if directory else root


async def placed(conn: AsyncConnection, vm: Any, secrets: SecretBox) -> Placed:
    """`vm` (a virtual_machine row) on its machine and datastore; Conflict when it has
    none (it is not allocated)."""
    v, m, ds = tables.virtual_machine, tables.machine, tables.datastore
    dc, t = tables.datacenter, tables.virtual_machine_template
    where = (
        await conn.execute(
            select(
                m.c.ip,
                m.c.type,
                m.c.port,
                m.c.user,
                m.c.password_secret,
                m.c.virtual_switch,
                ds.c.root_path,
                ds.c.directory,
                dc.c.uuid,
                t.c.disk_path,
                t.c.disk_format,
                t.c.hd_required,
            )
            .select_from(v)
            .join(m, m.c.id == v.c.machine_id)
            .join(dc, dc.c.id == m.c.datacenter_id)
            .join(ds, ds.c.id == v.c.datastore_id)
            .join(t, t.c.id == v.c.template_id)
            .where(v.c.id == vm.id)
        )
    ).one_or_none()
    if where is None or where.uuid is None:
        raise Conflict(f"virtual machine {vm.id} is not placed on a machine", code=NOT_PLACED)
    ip, vlan = tables.ip, tables.vlan
    nics = (
        await conn.execute(
            select(ip.c.ip, ip.c.mac, vlan.c.tag, vlan.c.name)
            .join(vlan, vlan.c.id == ip.c.vlan_id)
            .where(ip.c.virtual_machine_id == vm.id)
            .order_by(ip.c.nic_order, ip.c.id)
        )
    ).all()
    definition = VirtualMachineDefinition(
        uuid=vm.uuid,
        name=vm.name,
        cpu=vm.cpu,
        ram_mb=vm.ram,
        disks=[
            RepositoryDisk(
                repository_path=where.disk_path,
                datastore=_directory(where.root_path, where.directory),
                format=DiskFormat(where.disk_format),
                size_bytes=vm.hd_bytes or where.hd_required,
            )
        ],
        nics=[
            Nic(
                mac=n.mac,
                ip=n.ip,
                vlan_tag=n.tag,
                network_name=n.name,
                virtual_switch=where.virtual_switch or "",
            )
            for n in nics
        ],
        display=RemoteDisplay(port=vm.vdrp_port, password=vm.password),
    )
    connection = HypervisorConnection(
        type=HypervisorType(where.type),
        address=where.ip,
        port=where.port,
        credentials=Credentials(user=where.user, password=secrets.decrypt(where.password_secret)),
    )
    return Placed(dc_uuid=where.uuid, connection=connection, definition=definition)
