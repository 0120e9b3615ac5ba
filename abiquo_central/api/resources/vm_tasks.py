"""A VM's asynchronous actions and their tasks:

- POST .../virtualmachines/{vm}/action/deploy, .../action/undeploy, .../action/reset;
- POST .../virtualmachines/{vm}/action/instance with virtualmachineinstance
  {instanceName}: the powered-off VM's disk copied back to the repository as a new
  template (a SNAPSHOT task; tasks/instances.py);
- PUT .../virtualmachines/{vm}/state with virtualmachinestate {state: ON|OFF|PAUSED};
- GET .../virtualmachines/{vm}/tasks[/{taskId}];
- POST .../virtualappliances/{va}/action/deploy and .../action/undeploy: one task per VM
  of the appliance that can take it (the others are left as they are);
- POST .../virtualmachines/{vm}/action/recover?outcome=done|failed|retry: an
  administrator's verdict on a task that never finished (the VM is LOCKED no more), or
  the task sent to its datacenter again.

Each action answers 202 with an acceptedrequest whose `status` link is the task. What
the task does to the VM, and when, is abiquo_central.tasks.lifecycle's: the VM is LOCKED
from now until the datacenter's job notifications finish the task.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import msgspec
from aiohttp import web
from sqlalchemy import select

from abiquo_central.api.auth import actor
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, QueryParam, endpoint
from abiquo_central.api.keys import CLOCK, ENGINE, ON_QUEUED, SECRETS, SETTINGS
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import AcceptedRequest, Collection, Entity
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_page
from abiquo_central.api.resources.vdcs import scope
from abiquo_central.api.resources.vms import (
    TASK_MEDIA,
    VirtualMachineState,
    accepted_task,
    vm_path,
)
from abiquo_central.cloud import vapps, vms
from abiquo_central.cloud.states import VmState
from abiquo_central.db import tables
from abiquo_central.tasks import queries
from abiquo_central.tasks.lifecycle import start_task
from abiquo_central.tasks.plans import PLANS, TaskType
from abiquo_central.tasks.reconcile import retry_by_hand, settle_by_hand
from abiquo_central.tenants.privileges import (
    ENTERPRISE_ADMINISTER_ALL,
    VAPP_CREATE_INSTANCE,
    VAPP_DEPLOY_UNDEPLOY,
    VAPP_PERFORM_ACTIONS,
    VDC_ENUMERATE,
)
from abiquo_runtime.errors import (
    AbiquoError,
    Conflict,
    InvalidInput,
    LimitExceeded,
    TemporaryError,
)


class Job(Entity, kw_only=True):
    media = Media.of("job")

    id: str
    parent_task_id: str
    type: str
    state: str
    rollback_state: str
    description: str = ""
    timestamp: datetime


class Task(Entity, kw_only=True):
    media = TASK_MEDIA

    task_id: str
    owner_id: str
    user_id: str = ""
    type: str
    state: str
    timestamp: datetime
    jobs: Collection[Job] = msgspec.field(default_factory=Collection.empty)


class VirtualMachineTask(Entity, kw_only=True):
    """The options of a deploy or undeploy (both optional in the body)."""

    media = Media.of("virtualmachinetask")

    force_enterprise_soft_limits: bool = False
    force_undeploy: bool = False


class VirtualMachineInstance(Entity, kw_only=True):
    """What an instance's template is called."""

    media = Media.of("virtualmachineinstance")

    instance_name: str = ""


def _where(request: web.Request) -> tuple[int, int, int]:
    return path_id(request, "vdc"), path_id(request, "va"), path_id(request, "vm")


def task_model(
    task: queries.TaskView, vm_uuid: str, here: tuple[str | int, ...], hrefs: Hrefs
) -> Task:
    href = (*here, "tasks", task.id)
    return Task(
        task_id=task.id,
        owner_id=vm_uuid,
        user_id=str(task.user_id) if task.user_id is not None else "",
        type=task.type,
        state=task.state,
        timestamp=task.created_at,
        jobs=Collection(
            collection=[
                Job(
                    id=j.id,
                    parent_task_id=task.id,
                    type=j.type,
                    state=j.state,
                    rollback_state=j.rollback_state,
                    description=j.description,
                    timestamp=j.updated_at,
                )
                for j in task.jobs
            ]
        ),
        links=[
            hrefs.link("self", *href, media=Task.media.one),
            hrefs.link("parent", *here),
        ],
    )


async def _start(request: web.Request, kind: TaskType | None = None) -> web.Response:
    app = request.config_dict
    vdc_id, vapp_id, vm_id = _where(request)
    vm = await vms.get_vm(app[ENGINE], vdc_id, vapp_id, vm_id, scope(request))
    options = VirtualMachineTask()
    instance = ""
    if kind is None:
        body = await read_entity(request, VirtualMachineState)
        kind = _state_change(vm.state, body.state)
    elif kind is TaskType.SNAPSHOT:
        instance = (await read_entity(request, VirtualMachineInstance)).instance_name
    elif request.can_read_body:
        options = await read_entity(request, VirtualMachineTask)
    started = await start_task(
        app[ENGINE],
        vm.id,
        kind,
        actor=actor(request),
        secrets=app[SECRETS],
        now=app[CLOCK](),
        liveness_timeout=app[SETTINGS].datacenters.liveness_timeout,
        force_soft_limits=options.force_enterprise_soft_limits,
        instance=instance,
    )
    app[ON_QUEUED]()
    return accepted_task(request, vdc_id, vapp_id, vm.id, started.task_id)


def _state_change(current: VmState, wanted: str) -> TaskType:
    """The task that takes a VM in `current` to `wanted` (ON, OFF or PAUSED)."""
    target = wanted.strip().upper()
    if target not in ("ON", "OFF", "PAUSED"):
        raise InvalidInput(
            f"a virtual machine's state may be set to ON, OFF or PAUSED, not {wanted!r}"
        )
    if target == "ON":
        return TaskType.RESUME if current is VmState.PAUSED else TaskType.POWER_ON
    if target == "OFF":
        return TaskType.POWER_OFF
    if current is not VmState.ON:
        raise Conflict(
            f"the virtual machine is {current.value}: only an ON one is paused", code="VM-4"
        )
    return TaskType.PAUSE


@endpoint(
    produces=AcceptedRequest.media.one,
    consumes=VirtualMachineTask,
    privileges=[VAPP_DEPLOY_UNDEPLOY],
)
async def deploy(request: web.Request) -> web.Response:
    return await _start(request, TaskType.DEPLOY)


@endpoint(
    produces=AcceptedRequest.media.one,
    consumes=VirtualMachineTask,
    privileges=[VAPP_DEPLOY_UNDEPLOY],
)
async def undeploy(request: web.Request) -> web.Response:
    return await _start(request, TaskType.UNDEPLOY)


@endpoint(produces=AcceptedRequest.media.one, privileges=[VAPP_PERFORM_ACTIONS])
async def reset(request: web.Request) -> web.Response:
    return await _start(request, TaskType.RESET)


@endpoint(
    produces=AcceptedRequest.media.one,
    consumes=VirtualMachineInstance,
    privileges=[VAPP_CREATE_INSTANCE],
)
async def instance(request: web.Request) -> web.Response:
    return await _start(request, TaskType.SNAPSHOT)


@endpoint(
    produces=AcceptedRequest.media.one,
    consumes=VirtualMachineState,
    privileges=[VAPP_PERFORM_ACTIONS],
)
async def change_state(request: web.Request) -> web.Response:
    return await _start(request)


@endpoint(produces=Task.media.many, privileges=[VDC_ENUMERATE], query=PAGING)
async def list_tasks(request: web.Request) -> web.Response:
    app = request.config_dict
    vdc_id, vapp_id, vm_id = _where(request)
    vm = await vms.get_vm(app[ENGINE], vdc_id, vapp_id, vm_id, scope(request))
    page = parse_page(request)
    if "asc" not in request.query:
        page = dataclasses.replace(page, asc=False)
    found = await queries.list_tasks(app[ENGINE], vm.id, page=page)
    here = vm_path(vdc_id, vapp_id, vm.id)
    return render_page(
        request, found, page, lambda t, hrefs: task_model(t, vm.uuid, here, hrefs), media=Task.media
    )


@endpoint(produces=Task.media.one, privileges=[VDC_ENUMERATE])
async def get_task(request: web.Request) -> web.Response:
    app = request.config_dict
    vdc_id, vapp_id, vm_id = _where(request)
    vm = await vms.get_vm(app[ENGINE], vdc_id, vapp_id, vm_id, scope(request))
    task = await queries.get_task(app[ENGINE], vm.id, request.match_info["task"])
    here = vm_path(vdc_id, vapp_id, vm.id)
    return render(request, task_model(task, vm.uuid, here, Hrefs.of(request)))


RECOVER_QUERY = (
    QueryParam(
        "outcome",
        str,
        "done or failed: how the VM's unfinished task ended; retry: send it again",
        True,
    ),
)


@endpoint(
    produces=Task.media.one,
    privileges=[VAPP_PERFORM_ACTIONS, ENTERPRISE_ADMINISTER_ALL],
    query=RECOVER_QUERY,
)
async def recover(request: web.Request) -> web.Response:
    app = request.config_dict
    outcome = request.query.get("outcome", "").strip().lower()
    if outcome not in ("done", "failed", "retry"):
        raise InvalidInput("'outcome' must be done, failed or retry")
    vdc_id, vapp_id, vm_id = _where(request)
    vm = await vms.get_vm(app[ENGINE], vdc_id, vapp_id, vm_id, scope(request))
    if outcome == "retry":
        task_id = await retry_by_hand(app[ENGINE], vm.id, secrets=app[SECRETS], now=app[CLOCK]())
    else:
        task_id = await settle_by_hand(
            app[ENGINE], vm.id, succeeded=outcome == "done", now=app[CLOCK]()
        )
    app[ON_QUEUED]()
    task = await queries.get_task(app[ENGINE], vm.id, task_id)
    here = vm_path(vdc_id, vapp_id, vm.id)
    return render(request, task_model(task, vm.uuid, here, Hrefs.of(request)))


async def _start_all(request: web.Request, kind: TaskType) -> web.Response:
    app = request.config_dict
    vdc_id, vapp_id = path_id(request, "vdc"), path_id(request, "va")
    await vapps.get_vapp(app[ENGINE], vdc_id, vapp_id, scope(request))
    options = VirtualMachineTask()
    if request.can_read_body:
        options = await read_entity(request, VirtualMachineTask)
    vm_table = tables.virtual_machine
    async with app[ENGINE].connect() as conn:
        rows = (
            await conn.execute(
                select(vm_table.c.id, vm_table.c.state)
                .where(vm_table.c.vapp_id == vapp_id)
                .order_by(vm_table.c.id)
            )
        ).all()
    eligible = [r.id for r in rows if VmState(r.state) in PLANS[kind].from_states]
    if not eligible:
        raise Conflict(
            f"no virtual machine of the appliance can take a {kind.value}", code="VAPP-3"
        )
    hrefs = Hrefs.of(request)
    links = []
    first_error: AbiquoError | None = None
    for vm_id in eligible:
        try:
            started = await start_task(
                app[ENGINE],
                vm_id,
                kind,
                actor=actor(request),
                secrets=app[SECRETS],
                now=app[CLOCK](),
                liveness_timeout=app[SETTINGS].datacenters.liveness_timeout,
                force_soft_limits=options.force_enterprise_soft_limits,
            )
        except (Conflict, LimitExceeded, TemporaryError) as exc:
            # One VM without room (or changed meanwhile) does not stop the others.
            first_error = first_error or exc
            continue
        status = (*vm_path(vdc_id, vapp_id, vm_id), "tasks", started.task_id)
        links.append(hrefs.link("status", *status, media=Task.media.one))
    if not links:
        assert first_error is not None
        raise first_error
    app[ON_QUEUED]()
    return render(request, AcceptedRequest(links=links), status=202)


@endpoint(
    produces=AcceptedRequest.media.one,
    consumes=VirtualMachineTask,
    privileges=[VAPP_DEPLOY_UNDEPLOY],
)
async def deploy_vapp(request: web.Request) -> web.Response:
    return await _start_all(request, TaskType.DEPLOY)


@endpoint(
    produces=AcceptedRequest.media.one,
    consumes=VirtualMachineTask,
    privileges=[VAPP_DEPLOY_UNDEPLOY],
)
async def undeploy_vapp(request: web.Request) -> web.Response:
    return await _start_all(request, TaskType.UNDEPLOY)


def add_routes(router: web.UrlDispatcher) -> None:
    one = (
        r"/cloud/virtualdatacenters/{vdc:\d+}/virtualappliances/{va:\d+}"
        r"/virtualmachines/{vm:\d+}"
    )
    router.add_post(f"{one}/action/deploy", deploy)
    router.add_post(f"{one}/action/undeploy", undeploy)
    router.add_post(f"{one}/action/reset", reset)
    router.add_post(f"{one}/action/instance", instance)
    router.add_post(f"{one}/action/recover", recover)
    router.add_put(f"{one}/state", change_state)
    router.add_get(f"{one}/tasks", list_tasks, name="virtualmachine-tasks")
    router.add_get(rf"{one}/tasks/{{task:[0-9a-f-]{{36}}}}", get_task, name="virtualmachine-task")
    vapp = r"/cloud/virtualdatacenters/{vdc:\d+}/virtualappliances/{va:\d+}"
    router.add_post(f"{vapp}/action/deploy", deploy_vapp)
    router.add_post(f"{vapp}/action/undeploy", undeploy_vapp)
