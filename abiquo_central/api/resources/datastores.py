"""/api/admin/datacenters/{dc}/racks/{rack}/machines/{machine}/datastores[/{ds}]: where
a machine keeps VM disks.

Reading needs PHYS_DC_ENUMERATE; adding, changing and removing need
PHYS_DC_ALLOW_MODIFY_SERVERS (they are part of managing the server). A PUT changes the
name, directory and enabled flag; size, usedSize, rootPath and datastoreUUID are the
host's facts and stay as they are.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from abiquo_central.api.auth import actor
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import endpoint
from abiquo_central.api.keys import ENGINE
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_collection
from abiquo_central.infrastructure import datastores as domain
from abiquo_central.tenants.privileges import PHYS_DC_ALLOW_MODIFY_SERVERS, PHYS_DC_ENUMERATE


class Datastore(Entity, kw_only=True):
    media = Media.of("datastore")

    # Absent from the body of a POST: the server assigns it.
    id: int | None = None
    name: str
    # Where it is mounted on the host; disks go to `directory` under it.
    root_path: str = ""
    directory: str = ""
    # Bytes.
    size: int = 0
    used_size: int = 0
    # Only enabled datastores receive VM disks.
    enabled: bool = False
    datastore_uuid: str = msgspec.field(default="", name="datastoreUUID")


def machine_path(dc_id: int, rack_id: int, machine_id: int) -> tuple[str | int, ...]:
    return ("admin", "datacenters", dc_id, "racks", rack_id, "machines", machine_id)


def to_model(
    item: domain.Datastore, hrefs: Hrefs | None = None, *, where: tuple[int, int] | None = None
) -> Datastore:
    """The datastore; with `hrefs` and `where` (its machine's datacenter and rack), with
    its links (nested in a machine it needs none: the machine's link leads there)."""
    links = []
    if hrefs is not None and where is not None:
        owner = machine_path(*where, item.machine_id)
        links = [
            hrefs.link(
                "edit",
                *owner,
                "datastores",
                item.id,
                media=Datastore.media.one,
                title=item.spec.name,
            ),
            hrefs.link("machine", *owner),
        ]
    spec = item.spec
    return Datastore(
        id=item.id,
        name=spec.name,
        root_path=spec.root_path,
        directory=spec.directory,
        size=spec.size,
        used_size=spec.used_size,
        enabled=spec.enabled,
        datastore_uuid=spec.datastore_uuid,
        links=links,
    )


def to_spec(body: Datastore) -> domain.DatastoreSpec:
    return domain.DatastoreSpec(
        name=body.name,
        root_path=body.root_path,
        directory=body.directory,
        size=body.size,
        used_size=body.used_size,
        enabled=body.enabled,
        datastore_uuid=body.datastore_uuid,
    )


def _where(request: web.Request) -> tuple[int, int, int]:
    return path_id(request, "dc"), path_id(request, "rack"), path_id(request, "machine")


@endpoint(produces=Datastore.media.many, privileges=[PHYS_DC_ENUMERATE])
async def list_datastores(request: web.Request) -> web.Response:
    dc_id, rack_id, machine_id = _where(request)
    found = await domain.list_datastores(request.config_dict[ENGINE], dc_id, rack_id, machine_id)
    hrefs = Hrefs.of(request)
    return render_collection(
        request,
        [to_model(d, hrefs, where=(dc_id, rack_id)) for d in found],
        media=Datastore.media,
    )


@endpoint(produces=Datastore.media.one, privileges=[PHYS_DC_ENUMERATE])
async def get_datastore(request: web.Request) -> web.Response:
    dc_id, rack_id, machine_id = _where(request)
    found = await domain.get_datastore(
        request.config_dict[ENGINE], dc_id, rack_id, machine_id, path_id(request, "ds")
    )
    return render(request, to_model(found, Hrefs.of(request), where=(dc_id, rack_id)))


@endpoint(
    produces=Datastore.media.one, consumes=Datastore, privileges=[PHYS_DC_ALLOW_MODIFY_SERVERS]
)
async def create_datastore(request: web.Request) -> web.Response:
    dc_id, rack_id, machine_id = _where(request)
    body = await read_entity(request, Datastore)
    created = await domain.create_datastore(
        request.config_dict[ENGINE],
        dc_id,
        rack_id,
        machine_id,
        to_spec(body),
        actor=actor(request),
    )
    hrefs = Hrefs.of(request)
    return render(
        request,
        to_model(created, hrefs, where=(dc_id, rack_id)),
        status=201,
        headers={
            "Location": hrefs(*machine_path(dc_id, rack_id, machine_id), "datastores", created.id)
        },
    )


@endpoint(
    produces=Datastore.media.one, consumes=Datastore, privileges=[PHYS_DC_ALLOW_MODIFY_SERVERS]
)
async def update_datastore(request: web.Request) -> web.Response:
    dc_id, rack_id, machine_id = _where(request)
    datastore_id = path_id(request, "ds")
    body = await read_entity(request, Datastore)
    changed = await domain.update_datastore(
        request.config_dict[ENGINE],
        dc_id,
        rack_id,
        machine_id,
        datastore_id,
        domain.DatastoreChange(name=body.name, directory=body.directory, enabled=body.enabled),
        actor=actor(request),
    )
    return render(request, to_model(changed, Hrefs.of(request), where=(dc_id, rack_id)))


@endpoint(privileges=[PHYS_DC_ALLOW_MODIFY_SERVERS])
async def delete_datastore(request: web.Request) -> web.Response:
    dc_id, rack_id, machine_id = _where(request)
    await domain.delete_datastore(
        request.config_dict[ENGINE],
        dc_id,
        rack_id,
        machine_id,
        path_id(request, "ds"),
        actor=actor(request),
    )
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    base = r"/admin/datacenters/{dc:\d+}/racks/{rack:\d+}/machines/{machine:\d+}/datastores"
    router.add_get(base, list_datastores, name="datastores")
    router.add_post(base, create_datastore)
    router.add_get(base + r"/{ds:\d+}", get_datastore, name="datastore")
    router.add_put(base + r"/{ds:\d+}", update_datastore)
    router.add_delete(base + r"/{ds:\d+}", delete_datastore)
