"""The templates of an enterprise's repository in a datacenter, as central records them.

A repository lists its enterprise's own templates and the templates other enterprises
share (Abiquo's public templates) in the same datacenter. Only the owner changes or
deletes a template: to anyone else a shared template is read-only, and another
enterprise's template that is not shared does not exist.

Who may do what is the caller's business (the API decides); functions take the
repository (enterprise and datacenter) the caller may see, and the acting user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_central.templates.common import (
    INVALID_TEMPLATE,
    TEMPLATE_IN_USE,
    template_not_found,
)
from abiquo_central.templates.reports import remove_template_row
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_runtime.errors import Conflict, InvalidInput

_tpl = tables.virtual_machine_template
_cat = tables.category

NAME_MAX = 255
URL_MAX = 1024
_INT_MAX = 2**31 - 1
_BIGINT_MAX = 2**63 - 1

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {
        "id": _tpl.c.id,
        "name": _tpl.c.name,
        "creationDate": _tpl.c.created_at,
        "diskFileSize": _tpl.c.disk_file_size,
    }
)
DEFAULT_SORT = "name"


@dataclass(frozen=True, slots=True)
class Template:
    id: int
    enterprise_id: int
    datacenter_id: int
    ovf_id: str
    name: str
    description: str
    state: str
    progress: int
    error: str
    disk_path: str
    disk_format: str
    disk_file_size: int
    hd_required: int
    cpu_required: int
    ram_required: int
    category_id: int | None
    category_name: str | None
    icon_url: str
    cost_code: int
    shared: bool
    creation_user: str
    created_at: datetime
    # An instance's: the template the VM it was copied from was made from.
    master_id: int | None = None


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """What users change on a template (the rest is the Appliance Manager's)."""

    name: str
    description: str = ""
    cpu_required: int = 1
    ram_required: int = 256
    hd_required: int = 0
    # None: the default category.
    category_id: int | None = None
    icon_url: str = ""
    cost_code: int = 0
    shared: bool = False


def validate(spec: TemplateSpec) -> TemplateSpec:
    """`spec` with its name trimmed; InvalidInput listing every problem otherwise."""
    name = spec.name.strip()
    problems: list[str] = []
    if not name:
        problems.append("a template needs a name")
    elif len(name) > NAME_MAX:
        problems.append(f"a template's name has at most {NAME_MAX} characters")
    if not 1 <= spec.cpu_required <= _INT_MAX:
        problems.append(f"cpuRequired must be between 1 and {_INT_MAX}")
    if not 1 <= spec.ram_required <= _INT_MAX:
        problems.append(f"ramRequired must be between 1 and {_INT_MAX}")
    if not 0 <= spec.hd_required <= _BIGINT_MAX:
        problems.append(f"hdRequired must be between 0 and {_BIGINT_MAX}")
    if not 0 <= spec.cost_code <= _INT_MAX:
        problems.append(f"costCode must be between 0 and {_INT_MAX}")
    if len(spec.icon_url) > URL_MAX:
        problems.append(f"iconUrl has at most {URL_MAX} characters")
    if len(spec.description) > 65535:
        problems.append("the description has at most 65535 characters")
    if problems:
        raise InvalidInput("; ".join(problems), code=INVALID_TEMPLATE)
    return TemplateSpec(
        name=name,
        description=spec.description,
        cpu_required=spec.cpu_required,
        ram_required=spec.ram_required,
        hd_required=spec.hd_required,
        category_id=spec.category_id,
        icon_url=spec.icon_url.strip(),
        cost_code=spec.cost_code,
        shared=spec.shared,
    )


def _select() -> Select[Any]:
    return select(_tpl, _cat.c.name.label("category_name")).outerjoin(
        _cat, _cat.c.id == _tpl.c.category_id
    )


def _template(row: Row[Any]) -> Template:
    return Template(
        id=row.id,
        enterprise_id=row.enterprise_id,
        datacenter_id=row.datacenter_id,
        ovf_id=row.ovf_id,
        name=row.name,
        description=row.description or "",
        state=row.state,
        progress=int(row.progress),
        error=row.error or "",
        disk_path=row.disk_path or "",
        disk_format=row.disk_format,
        disk_file_size=int(row.disk_file_size),
        hd_required=int(row.hd_required),
        cpu_required=int(row.cpu_required),
        ram_required=int(row.ram_required),
        category_id=row.category_id,
        category_name=row.category_name,
        icon_url=row.icon_url or "",
        cost_code=int(row.cost_code),
        shared=bool(row.shared),
        creation_user=row.creation_user or "",
        created_at=row.created_at,
        master_id=row.master_id,
    )


def _visible(enterprise_id: int, dc_id: int) -> ColumnElement[bool]:
    return and_(
        _tpl.c.datacenter_id == dc_id,
        or_(_tpl.c.enterprise_id == enterprise_id, _tpl.c.shared.is_(True)),
    )


async def list_templates(
    engine: AsyncEngine,
    enterprise_id: int,
    dc_id: int,
    *,
    page: PageRequest,
    formats: tuple[DiskFormat, ...] | None = None,
    category: str | None = None,
    master_id: int | None = None,
) -> Page[Template]:
    """A page of the repository's templates: the enterprise's own and the shared ones;
    only those in `formats`, in the category named `category` and instances of
    `master_id` when given."""
    query = _select().where(_visible(enterprise_id, dc_id))
    if master_id is not None:
        query = query.where(_tpl.c.master_id == master_id)
    if formats is not None:
        query = query.where(_tpl.c.disk_format.in_([f.value for f in formats]))
    if category is not None:
        query = query.where(_cat.c.name == category)
    async with engine.connect() as conn:
        rows, total = await fetch_page(
            conn,
            query,
            page,
            sortable=SORTABLE,
            default_sort=DEFAULT_SORT,
            tiebreaker=_tpl.c.id,
            name=_tpl.c.name,
        )
    return Page(items=[_template(r) for r in rows], total=total)


async def _get(
    conn: AsyncConnection, enterprise_id: int, dc_id: int, template_id: int, *, owned: bool
) -> Template:
    where = (
        and_(_tpl.c.datacenter_id == dc_id, _tpl.c.enterprise_id == enterprise_id)
        if owned
        else _visible(enterprise_id, dc_id)
    )
    row = (await conn.execute(_select().where(_tpl.c.id == template_id, where))).one_or_none()
    if row is None:
        raise template_not_found()
    return _template(row)


async def get_template(
    engine: AsyncEngine, enterprise_id: int, dc_id: int, template_id: int, *, owned: bool = False
) -> Template:
    """One of the repository's templates (`owned`: only the enterprise's own)."""
    async with engine.connect() as conn:
        return await _get(conn, enterprise_id, dc_id, template_id, owned=owned)


async def _record(
    conn: AsyncConnection, actor: Actor, action: Action, found: Template, message: str
) -> None:
    await record_action(
        conn,
        actor,
        component=Component.APPLIANCE_MANAGER,
        action=action,
        target=(
            f"/admin/enterprises/{found.enterprise_id}/datacenterrepositories/"
            f"{found.datacenter_id}/virtualmachinetemplates/{found.id}"
        ),
        message=message,
        datacenter_id=found.datacenter_id,
    )


async def update_template(
    engine: AsyncEngine,
    enterprise_id: int,
    dc_id: int,
    template_id: int,
    spec: TemplateSpec,
    *,
    actor: Actor,
) -> Template:
    """Replace what users set on one of the enterprise's own templates."""
    spec = validate(spec)
    async with engine.begin() as conn:
        found = await _get(conn, enterprise_id, dc_id, template_id, owned=True)
        category_id = spec.category_id
        if category_id is None:
            category_id = (
                await conn.execute(select(_cat.c.id).where(_cat.c.is_default.is_(True)).limit(1))
            ).scalar_one_or_none()
        elif (
            await conn.execute(select(_cat.c.id).where(_cat.c.id == category_id))
        ).first() is None:
            raise InvalidInput(f"There is no category {category_id}", code=INVALID_TEMPLATE)
        await conn.execute(
            _tpl.update()
            .where(_tpl.c.id == template_id)
            .values(
                name=spec.name,
                description=spec.description,
                cpu_required=spec.cpu_required,
                ram_required=spec.ram_required,
                hd_required=spec.hd_required,
                category_id=category_id,
                icon_url=spec.icon_url,
                cost_code=spec.cost_code,
                shared=spec.shared,
            )
        )
        await _record(conn, actor, Action.TEMPLATE_MODIFY, found, f"Template {spec.name} modified")
        return await _get(conn, enterprise_id, dc_id, template_id, owned=True)


async def deletable_template(
    engine: AsyncEngine, enterprise_id: int, dc_id: int, template_id: int
) -> Template:
    """One of the enterprise's own templates that no virtual machine uses (Conflict)."""
    vm = tables.virtual_machine
    async with engine.connect() as conn:
        found = await _get(conn, enterprise_id, dc_id, template_id, owned=True)
        users = (
            await conn.execute(select(vm.c.id).where(vm.c.template_id == template_id).limit(1))
        ).first()
    if users is not None:
        raise Conflict(
            f"Template {found.name} is used by virtual machines: delete them first",
            code=TEMPLATE_IN_USE,
        )
    return found


async def delete_template(engine: AsyncEngine, found: Template, *, actor: Actor) -> None:
    """Forget a template (deletable_template found it), with its conversions."""
    try:
        async with engine.begin() as conn:
            await remove_template_row(conn, found.id)
            await _record(
                conn, actor, Action.TEMPLATE_DELETE, found, f"Template {found.name} deleted"
            )
    except IntegrityError:
        # A virtual machine was created from it between the check and the delete.
        raise Conflict(
            f"Template {found.name} is used by virtual machines: delete them first",
            code=TEMPLATE_IN_USE,
        ) from None
