"""/api/admin/enterprises/{ent}/datacenterrepositories/{dc}/virtualmachinetemplates[/{t}]:
the templates of an enterprise's repository in a datacenter, and their conversions.

Who may do what:
- APPLIB_VIEW reads the repository's templates: the enterprise's own and those other
  enterprises share. Another enterprise's repository is 404 unless the caller holds
  ENTERPRISE_ADMINISTER_ALL (repositories.py).
- APPLIB_ALLOW_MODIFY changes (PUT) and deletes the enterprise's own templates (a shared
  template of another enterprise is read-only: 404 to PUT or DELETE), and asks for
  conversions of their disks.
- APPLIB_DOWNLOAD_IMAGE starts a download from a catalogue: POST a
  `virtualmachinetemplaterequest` naming the OVF envelope's URL, as `{"ovfUrl": URL}` or
  as a link `{"links": [{"rel": "templateDefinition", "href": URL}]}`. The Appliance
  Manager downloads it; the answer is 202 and the template appears in the listing as
  the Appliance Manager reports its progress. Uploads go to the Appliance Manager
  itself, at the repository's `upload` link (APPLIB_UPLOAD_IMAGE is the client's to
  check: central does not see them until the AM reports them).

Deleting a template asks the datacenter's Appliance Manager to remove it first (503
when the datacenter is away); a template virtual machines use is 409.

`?hypervisorTypeName=KVM` lists the templates whose disk format that hypervisor boots
without conversion; `?categoryName=` those of one category.

A template made from a virtual machine's disk (an instance: the VM's action/instance)
links to its `master`, the template the VM was made from; a template's
`.../action/instances` lists the instances made of its virtual machines.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from abiquo_central.api.auth import actor
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import PAGING, QueryParam, endpoint
from abiquo_central.api.keys import CLOCK, ENGINE, HTTP_CLIENT, LINK, SETTINGS
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import AcceptedRequest, Entity, Link
from abiquo_central.api.paging import parse_page
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_collection
from abiquo_central.api.resources.repositories import REPOSITORY, repository_of
from abiquo_central.api.resources.repositories import here as repository_path
from abiquo_central.api.resources.roles import referenced_id
from abiquo_central.config.hypervisor_types import hypervisor_type
from abiquo_central.db.paging import Page, PageRequest
from abiquo_central.infrastructure.datacenters import Datacenter, reachable_datacenter
from abiquo_central.templates import appliance_manager as am
from abiquo_central.templates import conversions as conv
from abiquo_central.templates import templates as domain
from abiquo_central.templates.common import INVALID_DOWNLOAD
from abiquo_central.templates.repositories import Repository
from abiquo_central.tenants.privileges import (
    APPLIB_ALLOW_MODIFY,
    APPLIB_DOWNLOAD_IMAGE,
    APPLIB_VIEW,
)
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_runtime.errors import InvalidInput, NotFound

URL_MAX = 1024


class VirtualMachineTemplate(Entity, kw_only=True):
    media = Media.of("virtualmachinetemplate", xml="virtualMachineTemplate")

    id: int | None = None
    name: str
    description: str = ""
    # The disk, relative to the datacenter's repository.
    path: str = ""
    disk_format_type: str = DiskFormat.UNKNOWN.value
    disk_file_size: int = 0
    cpu_required: int = 1
    # MB.
    ram_required: int = 256
    # Bytes.
    hd_required: int = 0
    shared: bool = False
    cost_code: int = 0
    creation_date: datetime | None = None
    creation_user: str = ""
    icon_url: str = ""
    # The Appliance Manager's: DOWNLOADING, DOWNLOAD, ERROR, NOT_DOWNLOAD.
    state: str = ""


class VirtualMachineTemplateRequest(Entity, kw_only=True):
    """What to download: an OVF envelope's URL, here or as a templateDefinition link."""

    media = Media.of("virtualmachinetemplaterequest", xml="virtualMachineTemplateRequest")

    ovf_url: str | None = None


class Conversion(Entity, kw_only=True):
    media = Media.of("conversion")

    target_format: str
    source_format: str = ""
    source_path: str = ""
    target_path: str = ""
    # QUEUED, START, PROGRESS, DONE, FAILED, CANCELLED.
    state: str = ""
    start_timestamp: datetime | None = None
    target_size_in_bytes: int = 0


# -- representations ---------------------------------------------------------------------


def _template_path(repo: Repository, template_id: int) -> tuple[str | int, ...]:
    return (*repository_path(repo), "virtualmachinetemplates", template_id)


def to_model(repo: Repository, template: domain.Template, hrefs: Hrefs) -> VirtualMachineTemplate:
    here = _template_path(repo, template.id)
    links = [
        hrefs.link("edit", *here, media=VirtualMachineTemplate.media.one, title=template.name),
        hrefs.link("datacenterrepository", *repository_path(repo)),
        hrefs.link("enterprise", "admin", "enterprises", template.enterprise_id),
        hrefs.link("conversions", *here, "conversions", media=Conversion.media.many),
        hrefs.link(
            "instances", *here, "action", "instances", media=VirtualMachineTemplate.media.many
        ),
    ]
    if template.master_id is not None:
        links.append(
            hrefs.link(
                "master",
                *_template_path(repo, template.master_id),
                media=VirtualMachineTemplate.media.one,
            )
        )
    if template.category_id is not None:
        links.append(
            hrefs.link(
                "category",
                "config",
                "categories",
                template.category_id,
                title=template.category_name,
            )
        )
    if repo.am_uri and template.disk_path:
        links.append(Link(rel="diskfile", href=am.file_url(repo.am_uri, template.disk_path)))
    return VirtualMachineTemplate(
        id=template.id,
        name=template.name,
        description=template.description,
        path=template.disk_path,
        disk_format_type=template.disk_format,
        disk_file_size=template.disk_file_size,
        cpu_required=template.cpu_required,
        ram_required=template.ram_required,
        hd_required=template.hd_required,
        shared=template.shared,
        cost_code=template.cost_code,
        creation_date=template.created_at,
        creation_user=template.creation_user,
        icon_url=template.icon_url,
        state=template.state,
        links=links,
    )


def conversion_model(
    repo: Repository, template: domain.Template, found: conv.Conversion, hrefs: Hrefs
) -> Conversion:
    here = (*_template_path(repo, template.id), "conversions", found.target_format)
    return Conversion(
        target_format=found.target_format,
        source_format=found.source_format,
        source_path=found.source_path,
        target_path=found.target_path,
        state=found.state,
        start_timestamp=found.updated_at,
        target_size_in_bytes=found.target_size,
        links=[
            hrefs.link("edit", *here, media=Conversion.media.one),
            hrefs.link(
                "virtualmachinetemplate",
                *_template_path(repo, template.id),
                media=VirtualMachineTemplate.media.one,
            ),
        ],
    )


def _accepted(request: web.Request, status_href: str) -> web.Response:
    accepted = AcceptedRequest(links=[Link(rel="status", href=status_href)])
    return render(request, accepted, status=202)


# -- parsing -----------------------------------------------------------------------------


def _formats(request: web.Request) -> tuple[DiskFormat, ...] | None:
    name = request.query.get("hypervisorTypeName")
    if not name:
        return None
    try:
        return hypervisor_type(name).compatibility
    except NotFound as exc:
        raise InvalidInput(exc.message, code=exc.code) from None


def _spec(body: VirtualMachineTemplate) -> domain.TemplateSpec:
    link = body.link("category")
    return domain.TemplateSpec(
        name=body.name,
        description=body.description,
        cpu_required=body.cpu_required,
        ram_required=body.ram_required,
        hd_required=body.hd_required,
        category_id=referenced_id(link, "categories") if link is not None else None,
        icon_url=body.icon_url,
        cost_code=body.cost_code,
        shared=body.shared,
    )


def _ovf_url(body: VirtualMachineTemplateRequest) -> str:
    link = body.link("templateDefinition") or body.link("templatedefinition")
    url = (body.ovf_url or (link.href if link is not None else "")).strip()
    if not url:
        raise InvalidInput(
            "name the OVF envelope to download as ovfUrl or as a templateDefinition link",
            code=INVALID_DOWNLOAD,
        )
    if len(url) > URL_MAX or not url.lower().startswith(("http://", "https://")):
        raise InvalidInput(
            f"the OVF envelope's URL must be http(s) and at most {URL_MAX} characters",
            code=INVALID_DOWNLOAD,
        )
    return url


def _template_id(request: web.Request) -> int:
    return path_id(request, "t")


async def _reachable(request: web.Request, repo: Repository) -> Datacenter:
    app = request.config_dict
    return await reachable_datacenter(
        app[ENGINE],
        repo.datacenter_id,
        now=app[CLOCK](),
        liveness_timeout=app[SETTINGS].datacenters.liveness_timeout,
    )


# -- templates ---------------------------------------------------------------------------


def _page_of(
    request: web.Request, repo: Repository, found: Page[domain.Template], page: PageRequest
) -> web.Response:
    hrefs = Hrefs.of(request)
    return render_collection(
        request,
        [to_model(repo, t, hrefs) for t in found.items],
        media=VirtualMachineTemplate.media,
        total=found.total,
        page=page,
    )


@endpoint(
    produces=VirtualMachineTemplate.media.many,
    privileges=[APPLIB_VIEW],
    query=[
        *PAGING,
        QueryParam("hypervisorTypeName", str, "Only templates this hypervisor type boots"),
        QueryParam("categoryName", str, "Only templates of this category"),
    ],
)
async def list_templates(request: web.Request) -> web.Response:
    page = parse_page(request)
    formats = _formats(request)
    repo = await repository_of(request)
    found = await domain.list_templates(
        request.config_dict[ENGINE],
        repo.enterprise_id,
        repo.datacenter_id,
        page=page,
        formats=formats,
        category=request.query.get("categoryName") or None,
    )
    return _page_of(request, repo, found, page)


@endpoint(produces=VirtualMachineTemplate.media.many, privileges=[APPLIB_VIEW], query=PAGING)
async def list_instances(request: web.Request) -> web.Response:
    page = parse_page(request)
    repo = await repository_of(request)
    engine = request.config_dict[ENGINE]
    master = await domain.get_template(
        engine, repo.enterprise_id, repo.datacenter_id, _template_id(request)
    )
    found = await domain.list_templates(
        engine, repo.enterprise_id, repo.datacenter_id, page=page, master_id=master.id
    )
    return _page_of(request, repo, found, page)


@endpoint(produces=VirtualMachineTemplate.media.one, privileges=[APPLIB_VIEW])
async def get_template(request: web.Request) -> web.Response:
    repo = await repository_of(request)
    found = await domain.get_template(
        request.config_dict[ENGINE], repo.enterprise_id, repo.datacenter_id, _template_id(request)
    )
    return render(request, to_model(repo, found, Hrefs.of(request)))


@endpoint(
    produces=VirtualMachineTemplate.media.one,
    consumes=VirtualMachineTemplate,
    privileges=[APPLIB_VIEW, APPLIB_ALLOW_MODIFY],
)
async def update_template(request: web.Request) -> web.Response:
    repo, template = await _own_template(request)
    body = await read_entity(request, VirtualMachineTemplate)
    found = await domain.update_template(
        request.config_dict[ENGINE],
        repo.enterprise_id,
        repo.datacenter_id,
        template.id,
        _spec(body),
        actor=actor(request),
    )
    return render(request, to_model(repo, found, Hrefs.of(request)))


@endpoint(privileges=[APPLIB_VIEW, APPLIB_ALLOW_MODIFY])
async def delete_template(request: web.Request) -> web.Response:
    app = request.config_dict
    repo = await repository_of(request)
    found = await domain.deletable_template(
        app[ENGINE], repo.enterprise_id, repo.datacenter_id, _template_id(request)
    )
    await _reachable(request, repo)
    await am.delete(
        app[HTTP_CLIENT],
        repo.appliance_manager(),
        repo.enterprise_id,
        found.ovf_id,
        timeout=app[SETTINGS].datacenters.request_timeout,
    )
    await domain.delete_template(app[ENGINE], found, actor=actor(request))
    return web.Response(status=204)


@endpoint(
    produces=AcceptedRequest.media.one,
    consumes=VirtualMachineTemplateRequest,
    privileges=[APPLIB_VIEW, APPLIB_DOWNLOAD_IMAGE],
)
async def download_template(request: web.Request) -> web.Response:
    app = request.config_dict
    repo = await repository_of(request)
    url = _ovf_url(await read_entity(request, VirtualMachineTemplateRequest))
    await _reachable(request, repo)
    am_uri = repo.appliance_manager()
    ovf_id = await am.download(
        app[HTTP_CLIENT],
        am_uri,
        repo.enterprise_id,
        url,
        timeout=app[SETTINGS].datacenters.request_timeout,
    )
    return _accepted(request, am.template_url(am_uri, repo.enterprise_id, ovf_id))


# -- conversions -------------------------------------------------------------------------


def _format(request: web.Request) -> DiskFormat:
    return conv.parse_format(request.match_info["format"])


@endpoint(produces=Conversion.media.many, privileges=[APPLIB_VIEW])
async def list_conversions(request: web.Request) -> web.Response:
    engine = request.config_dict[ENGINE]
    repo = await repository_of(request)
    template = await domain.get_template(
        engine, repo.enterprise_id, repo.datacenter_id, _template_id(request)
    )
    hrefs = Hrefs.of(request)
    found = await conv.list_conversions(engine, template)
    return render_collection(
        request,
        [conversion_model(repo, template, c, hrefs) for c in found],
        media=Conversion.media,
        total=len(found),
    )


@endpoint(produces=Conversion.media.one, privileges=[APPLIB_VIEW])
async def get_conversion(request: web.Request) -> web.Response:
    engine = request.config_dict[ENGINE]
    repo = await repository_of(request)
    template = await domain.get_template(
        engine, repo.enterprise_id, repo.datacenter_id, _template_id(request)
    )
    found = await conv.get_conversion(engine, template, _format(request))
    return render(request, conversion_model(repo, template, found, Hrefs.of(request)))


async def _own_template(request: web.Request) -> tuple[Repository, domain.Template]:
    repo = await repository_of(request)
    template = await domain.get_template(
        request.config_dict[ENGINE],
        repo.enterprise_id,
        repo.datacenter_id,
        _template_id(request),
        owned=True,
    )
    return repo, template


async def _convert(
    request: web.Request, repo: Repository, template: domain.Template, fmt: DiskFormat
) -> web.Response:
    app = request.config_dict
    engine = app[ENGINE]
    dc = await _reachable(request, repo)
    assert dc.uuid is not None  # reachable_datacenter refuses a DC without one
    found, message = await conv.request_conversion(engine, template, fmt, now=app[CLOCK]())
    if message is not None:
        try:
            await app[LINK].send(dc.uuid, "bpm", message)
        except BaseException:
            await conv.conversion_failed(engine, found, now=app[CLOCK]())
            raise
    hrefs = Hrefs.of(request)
    return _accepted(
        request,
        hrefs(*_template_path(repo, template.id), "conversions", found.target_format),
    )


@endpoint(produces=AcceptedRequest.media.one, privileges=[APPLIB_VIEW, APPLIB_ALLOW_MODIFY])
async def put_conversion(request: web.Request) -> web.Response:
    repo, template = await _own_template(request)
    return await _convert(request, repo, template, _format(request))


@endpoint(
    produces=AcceptedRequest.media.one,
    consumes=Conversion,
    privileges=[APPLIB_VIEW, APPLIB_ALLOW_MODIFY],
)
async def post_conversion(request: web.Request) -> web.Response:
    # What the path names is checked first: another enterprise's template is 404
    # whatever the body.
    repo, template = await _own_template(request)
    body = await read_entity(request, Conversion)
    return await _convert(request, repo, template, conv.parse_format(body.target_format))


TEMPLATES = REPOSITORY + "/virtualmachinetemplates"
TEMPLATE = TEMPLATES + r"/{t:\d+}"
CONVERSIONS = TEMPLATE + "/conversions"
CONVERSION = CONVERSIONS + r"/{format:[A-Za-z0-9_]+}"


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(TEMPLATES, list_templates, name="virtualmachinetemplates")
    router.add_post(TEMPLATES, download_template)
    router.add_get(TEMPLATE, get_template, name="virtualmachinetemplate")
    router.add_put(TEMPLATE, update_template)
    router.add_delete(TEMPLATE, delete_template)
    router.add_get(TEMPLATE + "/action/instances", list_instances, name="template-instances")
    router.add_get(CONVERSIONS, list_conversions, name="conversions")
    router.add_post(CONVERSIONS, post_conversion)
    router.add_get(CONVERSION, get_conversion, name="conversion")
    router.add_put(CONVERSION, put_conversion)
