"""/api/admin/enterprises/{ent}/reservedmachines[/{machine}]: the machines kept for one
enterprise's VMs.

Who may do what:
- Reading needs PHYS_DC_ENUMERATE; reserving and releasing PHYS_DC_ALLOW_MODIFY_ALLOCATION
  (a reservation changes where the allocator may place VMs).
- Without ENTERPRISE_ADMINISTER_ALL only one's own enterprise is visible: another
  enterprise's reservations are 404, as if it did not exist.

A machine is reserved by posting a `machine` whose links hold one with rel `machine`
(or, as a whole machine representation has it, `edit`) pointing at it:
`{"links": [{"rel": "machine", "href": ".../admin/datacenters/1/racks/2/machines/3"}]}`.
It answers 201 with the machine, Location being its place in the reserved machines.
`DELETE .../reservedmachines/{machine}` releases it (204).
"""

from __future__ import annotations

import re

from aiohttp import web
from yarl import URL

from abiquo_central.api.auth import actor, principal
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, endpoint
from abiquo_central.api.keys import ENGINE
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import MAX_ID, path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.api.resources.machines import Machine, liveness, to_model
from abiquo_central.infrastructure import reservations as domain
from abiquo_central.infrastructure.racks import MACHINE_NOT_FOUND
from abiquo_central.tenants.privileges import (
    ENTERPRISE_ADMINISTER_ALL,
    PHYS_DC_ALLOW_MODIFY_ALLOCATION,
    PHYS_DC_ENUMERATE,
)
from abiquo_runtime.errors import InvalidInput, NotFound

INVALID_REFERENCE = "MACHINE-7"

_MACHINE_PATH = re.compile(r"/admin/datacenters/(\d+)/racks/(\d+)/machines/(\d+)/?$")


class MachineReference(Entity, kw_only=True):
    """A `machine` body that only points at one: its links are read, the rest ignored."""

    media = Media.of("machine")


def machine_href(body: MachineReference) -> tuple[int, int, int]:
    """The datacenter, rack and machine ids the body's machine link names."""
    link = body.link("machine") or body.link("edit")
    if link is None:
        raise InvalidInput(
            "the body needs a link with rel 'machine' to the machine to reserve",
            code=INVALID_REFERENCE,
        )
    try:
        path = URL(link.href).path
    except ValueError:
        path = ""
    found = _MACHINE_PATH.search(path)
    if found is None:
        raise InvalidInput(
            f"{link.href!r} is not a machine's address "
            "(.../admin/datacenters/{dc}/racks/{rack}/machines/{machine})",
            code=INVALID_REFERENCE,
        )
    dc_id, rack_id, machine_id = (int(g) for g in found.groups())
    if max(dc_id, rack_id, machine_id) > MAX_ID:
        raise NotFound("The requested machine does not exist", code=MACHINE_NOT_FOUND)
    return dc_id, rack_id, machine_id


def visible_to(request: web.Request) -> int | None:
    """The only enterprise the caller may see; None when it may see them all."""
    caller = principal(request)
    return None if caller.holds(ENTERPRISE_ADMINISTER_ALL) else caller.enterprise_id


@endpoint(produces=Machine.media.many, privileges=[PHYS_DC_ENUMERATE], query=PAGING)
async def list_reserved(request: web.Request) -> web.Response:
    page = parse_page(request)
    now, timeout = liveness(request)
    found = await domain.list_reserved(
        request.config_dict[ENGINE],
        path_id(request, "ent"),
        page=page,
        now=now,
        liveness_timeout=timeout,
        visible_to=visible_to(request),
    )
    return render_page(request, found, page, to_model, media=Machine.media)


@endpoint(produces=Machine.media.one, privileges=[PHYS_DC_ENUMERATE])
async def get_reserved(request: web.Request) -> web.Response:
    now, timeout = liveness(request)
    machine = await domain.get_reserved(
        request.config_dict[ENGINE],
        path_id(request, "ent"),
        path_id(request, "machine"),
        now=now,
        liveness_timeout=timeout,
        visible_to=visible_to(request),
    )
    return render(request, to_model(machine, Hrefs.of(request)))


@endpoint(
    produces=Machine.media.one,
    consumes=MachineReference,
    privileges=[PHYS_DC_ALLOW_MODIFY_ALLOCATION],
)
async def reserve_machine(request: web.Request) -> web.Response:
    enterprise_id = path_id(request, "ent")
    body = await read_entity(request, MachineReference)
    dc_id, rack_id, machine_id = machine_href(body)
    now, timeout = liveness(request)
    machine = await domain.reserve_machine(
        request.config_dict[ENGINE],
        enterprise_id,
        machine_id,
        actor=actor(request),
        now=now,
        liveness_timeout=timeout,
        visible_to=visible_to(request),
        where=(dc_id, rack_id),
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(machine, hrefs),
        status=201,
        headers={
            "Location": hrefs("admin", "enterprises", enterprise_id, "reservedmachines", machine.id)
        },
    )


@endpoint(privileges=[PHYS_DC_ALLOW_MODIFY_ALLOCATION])
async def release_machine(request: web.Request) -> web.Response:
    await domain.release_machine(
        request.config_dict[ENGINE],
        path_id(request, "ent"),
        path_id(request, "machine"),
        actor=actor(request),
        visible_to=visible_to(request),
    )
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    base = r"/admin/enterprises/{ent:\d+}/reservedmachines"
    router.add_get(base, list_reserved, name="reservedmachines")
    router.add_post(base, reserve_machine)
    router.add_get(base + r"/{machine:\d+}", get_reserved, name="reservedmachine")
    router.add_delete(base + r"/{machine:\d+}", release_machine)
