"""Virtual machines of an appliance, before they are deployed: made from a template,
reconfigured and removed while NOT_ALLOCATED.

A new VM gets its first NIC from an available address of its VDC's default network,
claimed with a compare-and-set (`UPDATE ... WHERE virtual_machine_id IS NULL`) in the
transaction that makes the VM, so that two concurrent creations never share an address.
"""

from __future__ import annotations

import random
import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.cloud.access import Scope, fetch_vdc_row
from abiquo_central.cloud.networks import Address, address_of
from abiquo_central.cloud.states import VmState
from abiquo_central.cloud.vapps import fetch_vapp_row
from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import by_primary_key, inserted_id
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound

VM_NOT_FOUND = "VM-0"
INVALID_VM = "VM-1"
TEMPLATE_REQUIRED = "VM-2"
TEMPLATE_NOT_FOUND = "VM-3"
VM_STATE = "VM-4"
NO_FREE_ADDRESS = "VM-5"
TEMPLATE_ELSEWHERE = "VM-6"
TEMPLATE_UNUSABLE = "VM-7"

# The Appliance Manager's status of a template whose disk is in the repository.
TEMPLATE_READY = "DOWNLOAD"
LABEL_MAX = 255
DESCRIPTION_MAX = 65_535
PASSWORD_MAX = 255
_INT_MAX = 2**31 - 1
_BIGINT_MAX = 2**63 - 1
# How many available addresses one creation tries before it gives up: each one a
# concurrent creation took first costs a try.
CLAIM_CANDIDATES = 64

_vm = tables.virtual_machine
_tpl = tables.virtual_machine_template
_ip = tables.ip
_vlan = tables.vlan

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _vm.c.id, "name": _vm.c.label, "label": _vm.c.label, "state": _vm.c.state}
)

_TEMPLATE_HREF = re.compile(
    r"/admin/enterprises/(\d{1,10})/datacenterrepositories/(\d{1,10})"
    r"/virtualmachinetemplates/(\d{1,10})/?$"
)


@dataclass(frozen=True, slots=True)
class TemplateRef:
    enterprise_id: int
    datacenter_id: int
    template_id: int


def parse_template_href(href: str) -> TemplateRef:
    """The template an href names; InvalidInput (VM-2) when it names none."""
    found = _TEMPLATE_HREF.search(href.split("?", 1)[0])
    if found is None:
        raise InvalidInput(
            "the virtualmachinetemplate link must point at .../admin/enterprises/{e}/"
            "datacenterrepositories/{dc}/virtualmachinetemplates/{t}",
            code=TEMPLATE_REQUIRED,
        )
    ent, dc, tpl = (int(g) for g in found.groups())
    if max(ent, dc, tpl) > _INT_MAX:
        raise NotFound("The requested template does not exist", code=TEMPLATE_NOT_FOUND)
    return TemplateRef(enterprise_id=ent, datacenter_id=dc, template_id=tpl)


@dataclass(frozen=True, slots=True)
class VmSpec:
    """What a caller sets on a VM; None keeps the current value (the template's on
    creation)."""

    label: str | None = None
    description: str | None = None
    cpu: int | None = None
    ram: int | None = None
    hd_bytes: int | None = None
    password: str | None = None
    high_disponibility: bool | None = None


@dataclass(frozen=True, slots=True)
class VirtualMachine:
    id: int
    uuid: str
    vapp_id: int
    vdc_id: int
    enterprise_id: int
    template_id: int
    template_enterprise_id: int
    template_datacenter_id: int
    name: str
    label: str
    description: str
    cpu: int
    ram: int
    hd_bytes: int
    state: VmState
    machine_id: int | None
    # Where its machine is (its rack, in its datacenter), when it has one.
    machine_rack_id: int | None
    machine_datacenter_id: int | None
    vdrp_ip: str
    vdrp_port: int
    password: str
    high_disponibility: bool


def validate(spec: VmSpec) -> VmSpec:
    problems: list[str] = []
    if spec.label is not None and not 1 <= len(spec.label.strip()) <= LABEL_MAX:
        problems.append(f"label has 1 to {LABEL_MAX} characters")
    if spec.description is not None and len(spec.description) > DESCRIPTION_MAX:
        problems.append(f"description has at most {DESCRIPTION_MAX} characters")
    if spec.cpu is not None and not 1 <= spec.cpu <= _INT_MAX:
        problems.append("cpu is at least 1")
    if spec.ram is not None and not 1 <= spec.ram <= _INT_MAX:
        problems.append("ram is at least 1 (MB)")
    if spec.hd_bytes is not None and not 0 <= spec.hd_bytes <= _BIGINT_MAX:
        problems.append("hdInBytes is 0 or more")
    if spec.password is not None and len(spec.password) > PASSWORD_MAX:
        problems.append(f"password has at most {PASSWORD_MAX} characters")
    if problems:
        raise InvalidInput("; ".join(problems), code=INVALID_VM)
    return spec


def _select() -> Any:
    m = tables.machine
    return (
        select(
            _vm,
            _tpl.c.enterprise_id.label("template_enterprise_id"),
            _tpl.c.datacenter_id.label("template_datacenter_id"),
            m.c.rack_id.label("machine_rack_id"),
            m.c.datacenter_id.label("machine_datacenter_id"),
        )
        .join(_tpl, _tpl.c.id == _vm.c.template_id)
        .outerjoin(m, m.c.id == _vm.c.machine_id)
    )


def _state(raw: str) -> VmState:
    try:
        return VmState(raw)
    except ValueError:
        return VmState.UNKNOWN


def _vm_of(row: Row[Any]) -> VirtualMachine:
    return VirtualMachine(
        id=row.id,
        uuid=row.uuid,
        vapp_id=row.vapp_id,
        vdc_id=row.vdc_id,
        enterprise_id=row.enterprise_id,
        template_id=row.template_id,
        template_enterprise_id=row.template_enterprise_id,
        template_datacenter_id=row.template_datacenter_id,
        name=row.name,
        label=row.label,
        description=row.description,
        cpu=row.cpu,
        ram=row.ram,
        hd_bytes=int(row.hd_bytes),
        state=_state(row.state),
        machine_id=row.machine_id,
        machine_rack_id=row.machine_rack_id,
        machine_datacenter_id=row.machine_datacenter_id,
        vdrp_ip=row.vdrp_ip,
        vdrp_port=row.vdrp_port,
        password=row.password,
        high_disponibility=bool(row.high_disponibility),
    )


def _not_found() -> NotFound:
    return NotFound("The requested virtual machine does not exist", code=VM_NOT_FOUND)


async def _reach(conn: AsyncConnection, vdc_id: int, vapp_id: int, scope: Scope) -> Row[Any]:
    """The VDC's row, once the VDC is in reach and the appliance is in it."""
    vdc = await fetch_vdc_row(conn, vdc_id, scope)
    await fetch_vapp_row(conn, vdc_id, vapp_id)
    return vdc


async def _get(conn: AsyncConnection, vapp_id: int, vm_id: int) -> VirtualMachine:
    row = (
        await conn.execute(_select().where(_vm.c.id == vm_id, _vm.c.vapp_id == vapp_id))
    ).one_or_none()
    if row is None:
        raise _not_found()
    return _vm_of(row)


async def list_vms(
    engine: AsyncEngine, vdc_id: int, vapp_id: int, scope: Scope, *, page: PageRequest
) -> Page[VirtualMachine]:
    async with engine.connect() as conn:
        await _reach(conn, vdc_id, vapp_id, scope)
        rows, total = await fetch_page(
            conn,
            _select().where(_vm.c.vapp_id == vapp_id),
            page,
            sortable=SORTABLE,
            default_sort="id",
            tiebreaker=_vm.c.id,
            name=_vm.c.label,
        )
    return Page(items=[_vm_of(r) for r in rows], total=total)


async def get_vm(
    engine: AsyncEngine, vdc_id: int, vapp_id: int, vm_id: int, scope: Scope
) -> VirtualMachine:
    """The VM, within its appliance within a VDC in `scope`'s reach; NotFound (of the
    VDC, the appliance or the VM, whichever is missing) otherwise."""
    va, vdc = tables.virtual_appliance, tables.virtual_datacenter
    async with engine.connect() as conn:
        # Every action and poll of a VM starts here: the usual case in one query, the
        # three lookups only to say which of them is missing.
        found = (
            await conn.execute(
                _select()
                .join(va, va.c.id == _vm.c.vapp_id)
                .join(vdc, vdc.c.id == va.c.vdc_id)
                .where(
                    _vm.c.id == vm_id,
                    _vm.c.vapp_id == vapp_id,
                    va.c.vdc_id == vdc_id,
                    scope.condition(),
                )
            )
        ).one_or_none()
        if found is not None:
            return _vm_of(found)
        await _reach(conn, vdc_id, vapp_id, scope)
        return await _get(conn, vapp_id, vm_id)


async def _template(conn: AsyncConnection, ref: TemplateRef, vdc: Row[Any]) -> Row[Any]:
    """The template, when the VDC's enterprise may use it (its own or shared), it is in
    the VDC's datacenter and its disk is in the repository."""
    row = (
        await conn.execute(
            select(_tpl).where(
                _tpl.c.id == ref.template_id,
                _tpl.c.enterprise_id == ref.enterprise_id,
                _tpl.c.datacenter_id == ref.datacenter_id,
            )
        )
    ).one_or_none()
    if row is None or (row.enterprise_id != vdc.enterprise_id and not row.shared):
        raise NotFound("The requested template does not exist", code=TEMPLATE_NOT_FOUND)
    if row.datacenter_id != vdc.datacenter_id:
        raise Conflict(
            "The template is in another datacenter than the virtual datacenter",
            code=TEMPLATE_ELSEWHERE,
        )
    if row.state != TEMPLATE_READY:
        raise Conflict(
            f"The template cannot be used yet: its state is {row.state}", code=TEMPLATE_UNUSABLE
        )
    return row


async def _claim_address(conn: AsyncConnection, vdc_id: int, vm_id: int) -> None:
    """Give the VM an available address of the VDC's default network as its NIC 0."""
    candidates = (
        (
            await conn.execute(
                select(_ip.c.id)
                .join(_vlan, _vlan.c.id == _ip.c.vlan_id)
                .where(
                    _vlan.c.vdc_id == vdc_id,
                    _vlan.c.is_default,
                    _ip.c.virtual_machine_id.is_(None),
                    _ip.c.quarantine.is_(False),
                )
                .order_by(_ip.c.id)
                .limit(CLAIM_CANDIDATES)
            )
        )
        .scalars()
        .all()
    )
    # The lowest first, so that addresses go in order while nobody competes. Once that
    # one is lost, the rest in any order: in order, this creation would wait on the
    # next lowest, which every creation started since is claiming too, lose it again,
    # and go on so until its candidates ran out in a network with plenty left.
    rest = list(candidates[1:])
    random.shuffle(rest)
    for ip_id in [*candidates[:1], *rest]:
        claimed = await conn.execute(
            _ip.update()
            .where(_ip.c.id == ip_id, _ip.c.virtual_machine_id.is_(None))
            .values(virtual_machine_id=vm_id, nic_order=0)
        )
        if claimed.rowcount == 1:
            return
    raise Conflict(
        "The virtual datacenter's default network has no available address left",
        code=NO_FREE_ADDRESS,
    )


async def _record(
    conn: AsyncConnection, actor: Actor, action: Action, vm: VirtualMachine, dc_id: int, verb: str
) -> None:
    await record_action(
        conn,
        actor,
        component=Component.VIRTUAL_MACHINE,
        action=action,
        target=f"/cloud/virtualdatacenters/{vm.vdc_id}/virtualappliances/{vm.vapp_id}"
        f"/virtualmachines/{vm.id}",
        message=f"Virtual machine {vm.label} ({vm.name}) {verb}",
        datacenter_id=dc_id,
    )


async def create_vm(
    engine: AsyncEngine,
    vdc_id: int,
    vapp_id: int,
    template: TemplateRef,
    spec: VmSpec,
    scope: Scope,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> VirtualMachine:
    """A NOT_ALLOCATED VM from the template (whose cpu, ram and disk size are the
    defaults), with its first NIC."""
    spec = validate(spec)
    now = now if now is not None else datetime.now(UTC)
    async with engine.begin() as conn:
        vdc = await _reach(conn, vdc_id, vapp_id, scope)
        tpl = await _template(conn, template, vdc)
        vm_uuid = str(uuidlib.uuid4())
        label = spec.label.strip() if spec.label is not None else tpl.name[:LABEL_MAX]
        values = {
            "uuid": vm_uuid,
            "vapp_id": vapp_id,
            "vdc_id": vdc_id,
            "enterprise_id": vdc.enterprise_id,
            "template_id": tpl.id,
            "name": f"ABQ_{vm_uuid}",
            "label": label,
            "description": spec.description if spec.description is not None else "",
            "cpu": spec.cpu if spec.cpu is not None else tpl.cpu_required,
            "ram": spec.ram if spec.ram is not None else tpl.ram_required,
            "hd_bytes": spec.hd_bytes if spec.hd_bytes is not None else tpl.hd_required,
            "state": VmState.NOT_ALLOCATED.value,
            "password": spec.password if spec.password is not None else "",
            "high_disponibility": bool(spec.high_disponibility),
            "created_at": now,
            "updated_at": now,
        }
        vm_id = inserted_id(await conn.execute(_vm.insert().values(**values)))
        await _claim_address(conn, vdc_id, vm_id)
        vm = await _get(conn, vapp_id, vm_id)
        await _record(conn, actor, Action.VM_CREATE, vm, vdc.datacenter_id, "created")
    return vm


async def update_vm(
    engine: AsyncEngine,
    vdc_id: int,
    vapp_id: int,
    vm_id: int,
    spec: VmSpec,
    scope: Scope,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> VirtualMachine:
    """Reconfigure a NOT_ALLOCATED VM (Conflict VM-4 in any other state)."""
    spec = validate(spec)
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "label": spec.label.strip() if spec.label is not None else None,
            "description": spec.description,
            "cpu": spec.cpu,
            "ram": spec.ram,
            "hd_bytes": spec.hd_bytes,
            "password": spec.password,
            "high_disponibility": spec.high_disponibility,
        }.items()
        if v is not None
    }
    async with engine.begin() as conn:
        vdc = await _reach(conn, vdc_id, vapp_id, scope)
        found = await _get(conn, vapp_id, vm_id)
        done = await conn.execute(
            by_primary_key(
                _vm.update()
                .where(_vm.c.id == vm_id, _vm.c.state == VmState.NOT_ALLOCATED)
                .values(updated_at=now if now is not None else datetime.now(UTC), **changes)
            )
        )
        if done.rowcount != 1:
            raise Conflict(
                f"The virtual machine is {found.state}: it can only be reconfigured here "
                "while NOT_ALLOCATED",
                code=VM_STATE,
            )
        vm = await _get(conn, vapp_id, vm_id)
        await _record(conn, actor, Action.VM_RECONFIGURE, vm, vdc.datacenter_id, "reconfigured")
    return vm


async def delete_vm(
    engine: AsyncEngine, vdc_id: int, vapp_id: int, vm_id: int, scope: Scope, *, actor: Actor
) -> None:
    """Remove a NOT_ALLOCATED VM; its addresses become available."""
    async with engine.begin() as conn:
        vdc = await _reach(conn, vdc_id, vapp_id, scope)
        found = await _get(conn, vapp_id, vm_id)
        if found.state is not VmState.NOT_ALLOCATED:
            raise Conflict(
                f"The virtual machine is {found.state}: undeploy it first", code=VM_STATE
            )
        await conn.execute(
            _ip.update()
            .where(_ip.c.virtual_machine_id == vm_id)
            .values(virtual_machine_id=None, nic_order=None)
        )
        gone = await conn.execute(
            _vm.delete().where(_vm.c.id == vm_id, _vm.c.state == VmState.NOT_ALLOCATED)
        )
        if gone.rowcount != 1:
            raise Conflict("The virtual machine is being deployed", code=VM_STATE)
        await _record(conn, actor, Action.VM_DELETE, found, vdc.datacenter_id, "deleted")


async def list_nics(
    engine: AsyncEngine, vdc_id: int, vapp_id: int, vm_id: int, scope: Scope
) -> list[Address]:
    """The VM's NICs, in order."""
    async with engine.connect() as conn:
        await _reach(conn, vdc_id, vapp_id, scope)
        await _get(conn, vapp_id, vm_id)
        rows = (
            await conn.execute(
                select(_ip, _vlan.c.vdc_id)
                .join(_vlan, _vlan.c.id == _ip.c.vlan_id)
                .where(_ip.c.virtual_machine_id == vm_id)
                .order_by(_ip.c.nic_order, _ip.c.id)
            )
        ).all()
    return [address_of(r) for r in rows]
