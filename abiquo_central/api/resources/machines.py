"""/api/admin/datacenters/{dc}/racks/{rack}/machines[/{machine}]: the hypervisor hosts.

Who may do what: reading needs PHYS_DC_ENUMERATE; adding, changing and removing a
machine PHYS_DC_ALLOW_MODIFY_SERVERS; `GET .../{machine}/action/checkstate` (which asks
the datacenter and stores the state it finds) PHYS_DC_RETRIEVE_DETAILS.

A machine is posted as discovery returned it (`.../action/discoversingle`), with one
virtualSwitch kept, the datastores to use enabled and its `password`: write-only, read
from bodies and never rendered. `DELETE ...?force=true` removes a machine also when its
datacenter cannot be told to stop watching it.

checkstate answers a `machinestate` `{state}` (MANAGED, STOPPED, NOT_MANAGED, ...) with
a link to the machine.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from aiohttp import web

from abiquo_central.api.auth import actor
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, QueryParam, endpoint
from abiquo_central.api.keys import CLOCK, ENGINE, LINK, SECRETS, SETTINGS
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Collection, Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.api.resources import datastores
from abiquo_central.api.resources.datastores import Datastore, machine_path
from abiquo_central.infrastructure import machines as domain
from abiquo_central.infrastructure.discovery import DatacenterCalls, parse_hypervisor
from abiquo_central.tenants.privileges import (
    PHYS_DC_ALLOW_MODIFY_SERVERS,
    PHYS_DC_ENUMERATE,
    PHYS_DC_RETRIEVE_DETAILS,
)
from abiquo_runtime.errors import InvalidInput


class Machine(Entity, kw_only=True):
    media = Media.of("machine")

    # Absent from the body of a POST: the server assigns it.
    id: int | None = None
    name: str
    description: str = ""
    # Where the hypervisor answers, and where the datacenter's services reach it.
    ip: str = ""
    ip_service: str = ""
    # The hypervisor type's name: KVM, XEN_3, VMX_04, XENSERVER, HYPERV_301, VBOX.
    type: str = ""
    # 0: the type's usual port.
    port: int | None = None
    user: str = ""
    # MachineState: what the last check found (read-only).
    state: str = domain.MachineState.MANAGED.value
    # Virtual CPUs and RAM (MB); what of them VMs use is the allocator's (read-only).
    cpu: int = 0
    ram: int = 0
    cpu_used: int = 0
    ram_used: int = 0
    # The NIC the VMs' networks are made on (discovery offers them all, comma-separated).
    virtual_switch: str = ""
    initiator_iqn: str = msgspec.field(default="", name="initiatorIQN")
    datastores: Collection[Datastore] = msgspec.field(default_factory=Collection.empty)
    # Whether its datacenter is heard from (read-only).
    available: bool = False


class MachineBody(Machine, kw_only=True):
    """A machine as it is posted or put: with its password, which is never rendered."""

    password: str | None = None


class MachineStatus(Entity, kw_only=True):
    media = Media.of("machinestate")

    state: str


def calls(request: web.Request) -> DatacenterCalls:
    """The requests this API makes of datacenters about hosts."""
    app = request.config_dict
    return DatacenterCalls(
        link=app[LINK], request_timeout=app[SETTINGS].datacenters.request_timeout
    )


def liveness(request: web.Request) -> tuple[datetime, float]:
    """Now, and how long a datacenter may stay silent and still be available."""
    app = request.config_dict
    return app[CLOCK](), app[SETTINGS].datacenters.liveness_timeout


def to_model(machine: domain.Machine, hrefs: Hrefs) -> Machine:
    here = machine_path(machine.datacenter_id, machine.rack_id, machine.id)
    links = [
        hrefs.link("edit", *here, media=Machine.media.one, title=machine.name),
        hrefs.link(
            "rack",
            "admin",
            "datacenters",
            machine.datacenter_id,
            "racks",
            machine.rack_id,
            media=Media.of("rack").one,
        ),
        hrefs.link(
            "datacenter",
            "admin",
            "datacenters",
            machine.datacenter_id,
            media=Media.of("datacenter").one,
        ),
        hrefs.link("datastores", *here, "datastores", media=Datastore.media.many),
        hrefs.link("checkstate", *here, "action", "checkstate", media=MachineStatus.media.one),
    ]
    if machine.reserved_enterprise_id is not None:
        links.append(
            hrefs.link(
                "enterprise",
                "admin",
                "enterprises",
                machine.reserved_enterprise_id,
                media=Media.of("enterprise").one,
            )
        )
    return Machine(
        id=machine.id,
        name=machine.name,
        description=machine.description,
        ip=machine.ip,
        ip_service=machine.ip_service,
        type=machine.type,
        port=machine.port,
        user=machine.user,
        state=machine.state,
        cpu=machine.cpu,
        ram=machine.ram,
        cpu_used=machine.cpu_used,
        ram_used=machine.ram_used,
        virtual_switch=machine.virtual_switch,
        initiator_iqn=machine.initiator_iqn,
        datastores=Collection(collection=[datastores.to_model(d) for d in machine.datastores]),
        available=machine.available,
        links=links,
    )


def spec_model(spec: domain.MachineSpec) -> Machine:
    """A machine that is not saved (a discovered one): no id, no links."""
    return Machine(
        name=spec.name,
        description=spec.description,
        ip=spec.ip,
        ip_service=spec.ip_service,
        type=spec.type.value,
        port=spec.port,
        user=spec.user,
        state=spec.state.value,
        cpu=spec.cpu,
        ram=spec.ram,
        virtual_switch=spec.virtual_switch,
        initiator_iqn=spec.initiator_iqn,
        datastores=Collection(
            collection=[
                Datastore(
                    name=d.name,
                    root_path=d.root_path,
                    directory=d.directory,
                    size=d.size,
                    used_size=d.used_size,
                    enabled=d.enabled,
                    datastore_uuid=d.datastore_uuid,
                )
                for d in spec.datastores
            ]
        ),
        available=True,
    )


def to_spec(body: MachineBody) -> domain.MachineSpec:
    if not body.type.strip():
        raise InvalidInput("a machine needs its hypervisor type", code=domain.INVALID_MACHINE)
    return domain.MachineSpec(
        name=body.name,
        description=body.description,
        ip=body.ip,
        ip_service=body.ip_service,
        type=parse_hypervisor(body.type),
        port=body.port or 0,
        user=body.user,
        password=body.password,
        cpu=body.cpu,
        ram=body.ram,
        virtual_switch=body.virtual_switch,
        initiator_iqn=body.initiator_iqn,
        datastores=tuple(datastores.to_spec(d) for d in body.datastores.collection),
    )


def to_change(body: MachineBody) -> domain.MachineChange:
    return domain.MachineChange(
        name=body.name,
        description=body.description,
        ip_service=body.ip_service,
        user=body.user,
        password=body.password,
        virtual_switch=body.virtual_switch,
        initiator_iqn=body.initiator_iqn,
        cpu=body.cpu,
        ram=body.ram,
        datastores=tuple(
            domain.DatastoreToggle(id=d.id, name=d.name, enabled=d.enabled, directory=d.directory)
            for d in body.datastores.collection
        ),
        ip=body.ip,
        type=body.type,
        port=body.port,
    )


def _where(request: web.Request) -> tuple[int, int, int]:
    return path_id(request, "dc"), path_id(request, "rack"), path_id(request, "machine")


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").strip().lower()
    if raw not in ("true", "false"):
        raise InvalidInput(f"'{name}' must be true or false, not '{raw}'")
    return raw == "true"


@endpoint(produces=Machine.media.many, privileges=[PHYS_DC_ENUMERATE], query=PAGING)
async def list_machines(request: web.Request) -> web.Response:
    page = parse_page(request)
    now, timeout = liveness(request)
    found = await domain.list_machines(
        request.config_dict[ENGINE],
        path_id(request, "dc"),
        path_id(request, "rack"),
        page=page,
        now=now,
        liveness_timeout=timeout,
    )
    return render_page(request, found, page, to_model, media=Machine.media)


@endpoint(produces=Machine.media.one, privileges=[PHYS_DC_ENUMERATE])
async def get_machine(request: web.Request) -> web.Response:
    now, timeout = liveness(request)
    machine = await domain.get_machine(
        request.config_dict[ENGINE], *_where(request), now=now, liveness_timeout=timeout
    )
    return render(request, to_model(machine, Hrefs.of(request)))


@endpoint(
    produces=Machine.media.one, consumes=MachineBody, privileges=[PHYS_DC_ALLOW_MODIFY_SERVERS]
)
async def create_machine(request: web.Request) -> web.Response:
    dc_id, rack_id = path_id(request, "dc"), path_id(request, "rack")
    body = await read_entity(request, MachineBody)
    now, timeout = liveness(request)
    machine = await domain.create_machine(
        request.config_dict[ENGINE],
        calls(request),
        dc_id,
        rack_id,
        to_spec(body),
        actor=actor(request),
        secrets=request.config_dict[SECRETS],
        now=now,
        liveness_timeout=timeout,
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(machine, hrefs),
        status=201,
        headers={"Location": hrefs(*machine_path(dc_id, rack_id, machine.id))},
    )


@endpoint(
    produces=Machine.media.one, consumes=MachineBody, privileges=[PHYS_DC_ALLOW_MODIFY_SERVERS]
)
async def update_machine(request: web.Request) -> web.Response:
    where = _where(request)
    body = await read_entity(request, MachineBody)
    now, timeout = liveness(request)
    machine = await domain.update_machine(
        request.config_dict[ENGINE],
        calls(request),
        *where,
        to_change(body),
        actor=actor(request),
        secrets=request.config_dict[SECRETS],
        now=now,
        liveness_timeout=timeout,
    )
    return render(request, to_model(machine, Hrefs.of(request)))


@endpoint(
    privileges=[PHYS_DC_ALLOW_MODIFY_SERVERS],
    query=[
        QueryParam(
            "force",
            bool,
            "Remove it also when its datacenter cannot be told to stop watching it",
        )
    ],
)
async def delete_machine(request: web.Request) -> web.Response:
    force = _flag(request, "force")
    now, timeout = liveness(request)
    await domain.delete_machine(
        request.config_dict[ENGINE],
        calls(request),
        *_where(request),
        actor=actor(request),
        secrets=request.config_dict[SECRETS],
        now=now,
        liveness_timeout=timeout,
        force=force,
    )
    return web.Response(status=204)


@endpoint(produces=MachineStatus.media.one, privileges=[PHYS_DC_RETRIEVE_DETAILS])
async def check_machine(request: web.Request) -> web.Response:
    where = _where(request)
    now, timeout = liveness(request)
    state = await domain.check_machine(
        request.config_dict[ENGINE],
        calls(request),
        *where,
        actor=actor(request),
        secrets=request.config_dict[SECRETS],
        now=now,
        liveness_timeout=timeout,
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        MachineStatus(
            state=state.value,
            links=[hrefs.link("machine", *machine_path(*where), media=Machine.media.one)],
        ),
    )


def add_routes(router: web.UrlDispatcher) -> None:
    base = r"/admin/datacenters/{dc:\d+}/racks/{rack:\d+}/machines"
    one = base + r"/{machine:\d+}"
    router.add_get(base, list_machines, name="machines")
    router.add_post(base, create_machine)
    router.add_get(one, get_machine, name="machine")
    router.add_put(one, update_machine)
    router.add_delete(one, delete_machine)
    router.add_get(one + "/action/checkstate", check_machine, name="machine-checkstate")
