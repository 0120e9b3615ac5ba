"""/api/cloud/virtualdatacenters/{vdc}/virtualappliances/{va}/virtualmachines[/{vm}],
.../{vm}/state and .../{vm}/network/nics: virtual machines before they are deployed.

VDC_ENUMERATE reads, VDC_MANAGE_VAPP creates, reconfigures and deletes; the VDC must be
in the caller's reach (see vdcs.py). A VM is made from the template its
`virtualmachinetemplate` link names.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from abiquo_central.api.auth import actor
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, endpoint
from abiquo_central.api.keys import CLOCK, ENGINE, ON_QUEUED, SECRETS
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import AcceptedRequest, Entity, Link
from abiquo_central.api.negotiation import accepts
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_collection, render_page
from abiquo_central.api.resources.networks import Vlan, network_path
from abiquo_central.api.resources.vapps import vapp_path
from abiquo_central.api.resources.vdcs import scope, vdc_path
from abiquo_central.cloud import vms as domain
from abiquo_central.cloud.networks import Address
from abiquo_central.cloud.states import VmState
from abiquo_central.tasks.lifecycle import start_reconfigure
from abiquo_central.tenants.privileges import VDC_ENUMERATE, VDC_MANAGE_VAPP
from abiquo_runtime.errors import Conflict, InvalidInput

# Abiquo's numeric ids of the states, as idState shows them.
_STATE_IDS = {state: i for i, state in enumerate(VmState, start=1)}


# A VM's task (vm_tasks.Task): named here, for a reconfigure answers with one too.
TASK_MEDIA = Media.of("task")


class VirtualMachine(Entity, kw_only=True):
    media = Media.of("virtualmachine", xml="virtualMachine")

    # The server assigns or derives these; in a request body they are ignored.
    id: int | None = None
    uuid: str | None = None
    name: str | None = None
    # Left out of a POST: the template's name, cpu, ram and disk size.
    label: str | None = None
    description: str | None = None
    cpu: int | None = None
    ram: int | None = None
    hd_in_bytes: int | None = None
    state: str | None = None
    id_state: int | None = None
    vdrp_ip: str | None = msgspec.field(default=None, name="vdrpIP")
    vdrp_port: int | None = None
    password: str | None = None
    high_disponibility: bool | None = None
    node_id: int | None = None


class VirtualMachineState(Entity, kw_only=True):
    media = Media.of("virtualmachinestate")

    state: str


class Nic(Entity, kw_only=True):
    media = Media.of("nic")

    id: int
    ip: str
    mac: str
    order: int


def vm_path(vdc_id: int, vapp_id: int, vm_id: int) -> tuple[str | int, ...]:
    return (*vapp_path(vdc_id, vapp_id), "virtualmachines", vm_id)


def to_model(vm: domain.VirtualMachine, hrefs: Hrefs) -> VirtualMachine:
    here = vm_path(vm.vdc_id, vm.vapp_id, vm.id)
    template = (
        "admin",
        "enterprises",
        vm.template_enterprise_id,
        "datacenterrepositories",
        vm.template_datacenter_id,
        "virtualmachinetemplates",
        vm.template_id,
    )
    return VirtualMachine(
        id=vm.id,
        uuid=vm.uuid,
        name=vm.name,
        label=vm.label,
        description=vm.description,
        cpu=vm.cpu,
        ram=vm.ram,
        hd_in_bytes=vm.hd_bytes,
        state=vm.state.value,
        id_state=_STATE_IDS[vm.state],
        vdrp_ip=vm.vdrp_ip,
        vdrp_port=vm.vdrp_port,
        password=vm.password,
        high_disponibility=vm.high_disponibility,
        node_id=None,
        links=[
            hrefs.link("edit", *here, media=VirtualMachine.media.one, title=vm.label),
            hrefs.link("virtualmachinetemplate", *template),
            hrefs.link("virtualappliance", *vapp_path(vm.vdc_id, vm.vapp_id)),
            hrefs.link("virtualdatacenter", *vdc_path(vm.vdc_id)),
            hrefs.link("enterprise", "admin", "enterprises", vm.enterprise_id),
            hrefs.link("deploy", *here, "action", "deploy"),
            hrefs.link("undeploy", *here, "action", "undeploy"),
            hrefs.link("reset", *here, "action", "reset"),
            hrefs.link("instance", *here, "action", "instance"),
            hrefs.link("state", *here, "state", media=VirtualMachineState.media.one),
            hrefs.link("tasks", *here, "tasks"),
            hrefs.link("nics", *here, "network", "nics", media=Nic.media.many),
            *_machine_link(vm, hrefs),
        ],
    )


def _machine_link(vm: domain.VirtualMachine, hrefs: Hrefs) -> list[Link]:
    """Once deployed: the machine it runs on."""
    if vm.machine_id is None or vm.machine_rack_id is None:
        return []
    return [
        hrefs.link(
            "machine",
            "admin",
            "datacenters",
            vm.machine_datacenter_id or 0,
            "racks",
            vm.machine_rack_id,
            "machines",
            vm.machine_id,
        )
    ]


def nic_to_model(found: Address, hrefs: Hrefs) -> Nic:
    return Nic(
        id=found.id,
        ip=found.ip,
        mac=found.mac,
        order=found.nic_order if found.nic_order is not None else 0,
        links=[
            hrefs.link(
                "privatenetwork",
                *network_path(found.vdc_id, found.vlan_id),
                media=Vlan.media.one,
            )
        ],
    )


def _spec(body: VirtualMachine) -> domain.VmSpec:
    return domain.VmSpec(
        label=body.label,
        description=body.description,
        cpu=body.cpu,
        ram=body.ram,
        hd_bytes=body.hd_in_bytes,
        password=body.password,
        high_disponibility=body.high_disponibility,
    )


def _ids(request: web.Request) -> tuple[int, int]:
    return path_id(request, "vdc"), path_id(request, "va")


@endpoint(produces=VirtualMachine.media.many, privileges=[VDC_ENUMERATE], query=PAGING)
async def list_vms(request: web.Request) -> web.Response:
    page = parse_page(request)
    vdc_id, vapp_id = _ids(request)
    found = await domain.list_vms(
        request.config_dict[ENGINE], vdc_id, vapp_id, scope(request), page=page
    )
    return render_page(request, found, page, to_model, media=VirtualMachine.media)


@endpoint(produces=VirtualMachine.media.one, privileges=[VDC_ENUMERATE])
async def get_vm(request: web.Request) -> web.Response:
    vdc_id, vapp_id = _ids(request)
    vm = await domain.get_vm(
        request.config_dict[ENGINE], vdc_id, vapp_id, path_id(request, "vm"), scope(request)
    )
    return render(request, to_model(vm, Hrefs.of(request)))


@endpoint(produces=VirtualMachineState.media.one, privileges=[VDC_ENUMERATE])
async def get_vm_state(request: web.Request) -> web.Response:
    vdc_id, vapp_id = _ids(request)
    vm = await domain.get_vm(
        request.config_dict[ENGINE], vdc_id, vapp_id, path_id(request, "vm"), scope(request)
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        VirtualMachineState(
            state=vm.state.value,
            links=[hrefs.link("virtualmachine", *vm_path(vdc_id, vapp_id, vm.id))],
        ),
    )


@endpoint(produces=Nic.media.many, privileges=[VDC_ENUMERATE])
async def list_nics(request: web.Request) -> web.Response:
    vdc_id, vapp_id = _ids(request)
    found = await domain.list_nics(
        request.config_dict[ENGINE], vdc_id, vapp_id, path_id(request, "vm"), scope(request)
    )
    hrefs = Hrefs.of(request)
    return render_collection(
        request, [nic_to_model(n, hrefs) for n in found], media=Nic.media, total=len(found)
    )


@endpoint(
    produces=VirtualMachine.media.one,
    consumes=VirtualMachine,
    privileges=[VDC_ENUMERATE, VDC_MANAGE_VAPP],
)
async def create_vm(request: web.Request) -> web.Response:
    vdc_id, vapp_id = _ids(request)
    body = await read_entity(request, VirtualMachine)
    link = body.link("virtualmachinetemplate")
    if link is None:
        raise InvalidInput(
            "a virtual machine needs a 'virtualmachinetemplate' link to its template",
            code=domain.TEMPLATE_REQUIRED,
        )
    vm = await domain.create_vm(
        request.config_dict[ENGINE],
        vdc_id,
        vapp_id,
        domain.parse_template_href(link.href),
        _spec(body),
        scope(request),
        actor=actor(request),
        now=request.config_dict[CLOCK](),
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(vm, hrefs),
        status=201,
        headers={"Location": hrefs(*vm_path(vdc_id, vapp_id, vm.id))},
    )


@endpoint(
    produces=VirtualMachine.media.one,
    accepted=AcceptedRequest.media.one,
    consumes=VirtualMachine,
    privileges=[VDC_ENUMERATE, VDC_MANAGE_VAPP],
)
async def update_vm(request: web.Request) -> web.Response:
    """Reconfigure: at once while NOT_ALLOCATED (200, or 204 to a client that accepts
    only an acceptedrequest, as Abiquo's clients do); a deployed VM, powered off,
    through a RECONFIGURE task (202, as Abiquo answers)."""
    vdc_id, vapp_id = _ids(request)
    body = await read_entity(request, VirtualMachine)
    app = request.config_dict
    current = await domain.get_vm(
        app[ENGINE], vdc_id, vapp_id, path_id(request, "vm"), scope(request)
    )
    if current.state is VmState.OFF:
        return await _reconfigure_deployed(request, current, domain.validate(_spec(body)))
    vm = await domain.update_vm(
        request.config_dict[ENGINE],
        vdc_id,
        vapp_id,
        path_id(request, "vm"),
        _spec(body),
        scope(request),
        actor=actor(request),
        now=request.config_dict[CLOCK](),
    )
    if not accepts(request, VirtualMachine.media.one):
        return web.Response(status=204)
    return render(request, to_model(vm, Hrefs.of(request)))


async def _reconfigure_deployed(
    request: web.Request, vm: domain.VirtualMachine, spec: domain.VmSpec
) -> web.Response:
    if spec.hd_bytes is not None and spec.hd_bytes != vm.hd_bytes:
        raise Conflict("a deployed virtual machine's disk size cannot change", code=domain.VM_STATE)
    changes = {
        column: value
        for column, value in (
            ("label", spec.label.strip() if spec.label is not None else None),
            ("description", spec.description),
            ("cpu", spec.cpu),
            ("ram", spec.ram),
            ("password", spec.password),
            ("high_disponibility", spec.high_disponibility),
        )
        if value is not None
    }
    app = request.config_dict
    started = await start_reconfigure(
        app[ENGINE],
        vm.id,
        changes,
        actor=actor(request),
        secrets=app[SECRETS],
        now=app[CLOCK](),
    )
    app[ON_QUEUED]()
    vdc_id, vapp_id = _ids(request)
    return accepted_task(request, vdc_id, vapp_id, vm.id, started.task_id)


def accepted_task(
    request: web.Request, vdc_id: int, vapp_id: int, vm_id: int, task_id: str
) -> web.Response:
    """202 with an acceptedrequest whose `status` link is the VM's task `task_id`."""
    hrefs = Hrefs.of(request)
    status = (*vm_path(vdc_id, vapp_id, vm_id), "tasks", task_id)
    return render(
        request,
        AcceptedRequest(links=[hrefs.link("status", *status, media=TASK_MEDIA.one)]),
        status=202,
    )


@endpoint(privileges=[VDC_ENUMERATE, VDC_MANAGE_VAPP])
async def delete_vm(request: web.Request) -> web.Response:
    vdc_id, vapp_id = _ids(request)
    await domain.delete_vm(
        request.config_dict[ENGINE],
        vdc_id,
        vapp_id,
        path_id(request, "vm"),
        scope(request),
        actor=actor(request),
    )
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    base = r"/cloud/virtualdatacenters/{vdc:\d+}/virtualappliances/{va:\d+}/virtualmachines"
    router.add_get(base, list_vms, name="virtualmachines")
    router.add_post(base, create_vm)
    one = rf"{base}/{{vm:\d+}}"
    router.add_get(one, get_vm, name="virtualmachine")
    router.add_put(one, update_vm)
    router.add_delete(one, delete_vm)
    router.add_get(f"{one}/state", get_vm_state, name="virtualmachine-state")
    router.add_get(f"{one}/network/nics", list_nics, name="virtualmachine-nics")
