"""The limits a deploy must stay within: the enterprise's, its limits in the VDC's
datacenter, and the VDC's own, on CPUs, RAM (MB) and disk (bytes); 0 is unlimited.

Checked in the transaction that starts the deploy, once the VM is allocated (so it
counts itself), with the enterprise's row locked: two deploys of one enterprise are
checked one after the other, and together they never pass a hard limit. Past a hard
limit the deploy is refused (409 LIMIT-7); past a soft one it is refused too (409
LIMIT-8) unless the caller forces it (`forceEnterpriseSoftLimits`), and then a warning
is recorded.

A private network counts against the VLAN limits of the same three scopes when it is
made (its VDC's default one included), checked the same way under the same lock; there
is no forcing a network, so past a soft VLAN limit it is made and a warning recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from abiquo_central.db import tables
from abiquo_runtime.errors import LimitExceeded

HARD_LIMIT = "LIMIT-7"
SOFT_LIMIT = "LIMIT-8"

_vm, _vdc, _ent, _lim = (
    tables.virtual_machine,
    tables.virtual_datacenter,
    tables.enterprise,
    tables.enterprise_limit,
)
# Resource, the VM's column holding its share of it, and the unit it is told in.
RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("cpu", "cpu", "CPUs"),
    ("ram", "ram", "MB of RAM"),
    ("hd", "hd_bytes", "bytes of disk"),
)


@dataclass(frozen=True, slots=True)
class Crossed:
    """A soft limit the deploy goes past (allowed because it was forced)."""

    scope: str
    resource: str
    used: int
    limit: int

    def __str__(self) -> str:
        return f"{self.scope}'s {self.resource} soft limit {self.limit} ({self.used} in use)"


async def _used(conn: AsyncConnection, *where: Any) -> dict[str, int]:
    """What the allocated VMs matching `where` hold, by resource."""
    row = (
        await conn.execute(
            select(
                *(
                    func.coalesce(func.sum(_vm.c[column]), 0).label(name)
                    for name, column, _ in RESOURCES
                )
            )
            .select_from(_vm.join(_vdc, _vdc.c.id == _vm.c.vdc_id))
            .where(_vm.c.machine_id.is_not(None), *where)
        )
    ).one()
    return {name: int(getattr(row, name)) for name, _, _ in RESOURCES}


async def lock_enterprise(conn: AsyncConnection, enterprise_id: int) -> Any:
    """The enterprise's row, locked for the transaction (None when there is none): what
    checks against its limits are serialised on."""
    return (
        await conn.execute(select(_ent).where(_ent.c.id == enterprise_id).with_for_update())
    ).one_or_none()


def _check(
    scope: str,
    limits: Any,
    used: dict[str, int],
    force_soft: bool,
    *,
    resources: tuple[tuple[str, str, str], ...] = RESOURCES,
    adding: str = "this virtual machine",
) -> list[Crossed]:
    crossed = []
    for name, _, unit in resources:
        soft, hard = getattr(limits, f"{name}_soft"), getattr(limits, f"{name}_hard")
        if hard and used[name] > hard:
            raise LimitExceeded(
                f"The {scope}'s hard limit of {hard} {unit} would be passed "
                f"({used[name]} with {adding})",
                code=HARD_LIMIT,
            )
        if soft and used[name] > soft:
            if not force_soft:
                raise LimitExceeded(
                    f"The {scope}'s soft limit of {soft} {unit} would be passed "
                    f"({used[name]} with {adding}): force it to go on",
                    code=SOFT_LIMIT,
                )
            crossed.append(Crossed(scope, unit, used[name], soft))
    return crossed


async def _scopes(conn: AsyncConnection, vdc: Any) -> list[tuple[str, Any, tuple[Any, ...]]]:
    """The scopes whose limits bind what `vdc` (a virtual_datacenter row) takes: each
    named, with its limits (None where the enterprise has none in the datacenter) and
    the condition on virtual_datacenter that selects the VDCs it counts. The
    enterprise's row is locked first: checks of one enterprise go one after the other."""
    enterprise = await lock_enterprise(conn, vdc.enterprise_id)
    in_dc = (
        await conn.execute(
            select(_lim).where(
                _lim.c.enterprise_id == vdc.enterprise_id,
                _lim.c.datacenter_id == vdc.datacenter_id,
            )
        )
    ).one_or_none()
    of_enterprise = _vdc.c.enterprise_id == vdc.enterprise_id
    in_datacenter = _vdc.c.datacenter_id == vdc.datacenter_id
    return [
        ("enterprise", enterprise, (of_enterprise,)),
        ("enterprise's datacenter", in_dc, (of_enterprise, in_datacenter)),
        ("virtual datacenter", vdc, (_vdc.c.id == vdc.id,)),
    ]


def _limited(limits: Any, resources: tuple[tuple[str, str, str], ...]) -> bool:
    """Whether `limits` set any of `resources`: only then is their use counted (a scope
    without any, the usual VDC and often the enterprise, costs no query)."""
    return limits is not None and any(
        getattr(limits, f"{name}_soft") or getattr(limits, f"{name}_hard")
        for name, _, _ in resources
    )


async def check_deploy_limits(
    conn: AsyncConnection, vm_id: int, *, force_soft: bool
) -> list[Crossed]:
    """LimitExceeded when the (allocated) VM takes its enterprise, its enterprise in its
    datacenter, or its VDC past a limit; the soft limits passed when forced."""
    vdc = (
        await conn.execute(
            select(_vdc).join(_vm, _vm.c.vdc_id == _vdc.c.id).where(_vm.c.id == vm_id)
        )
    ).one()
    crossed: list[Crossed] = []
    for scope, limits, where in await _scopes(conn, vdc):
        if _limited(limits, RESOURCES):
            crossed += _check(scope, limits, await _used(conn, *where), force_soft)
    return crossed


_VLANS = (("vlans", "", "VLANs"),)


async def _vlans(conn: AsyncConnection, *where: Any) -> int:
    """How many private networks the VDCs matching `where` have."""
    count = (
        await conn.execute(
            select(func.count())
            .select_from(tables.vlan.join(_vdc, _vdc.c.id == tables.vlan.c.vdc_id))
            .where(*where)
        )
    ).scalar_one()
    return int(count)


async def check_vlan_limits(conn: AsyncConnection, vdc_id: int) -> list[Crossed]:
    """Before a private network is made in the VDC: LimitExceeded when one more passes a
    hard VLAN limit of its enterprise, of its enterprise in its datacenter, or its own;
    the soft limits it passes."""
    vdc = (await conn.execute(select(_vdc).where(_vdc.c.id == vdc_id))).one()
    crossed: list[Crossed] = []
    for scope, limits, where in await _scopes(conn, vdc):
        if _limited(limits, _VLANS):
            one_more = {"vlans": await _vlans(conn, *where) + 1}
            crossed += _check(
                scope, limits, one_more, True, resources=_VLANS, adding="this network"
            )
    return crossed
