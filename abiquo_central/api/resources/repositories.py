"""/api/admin/enterprises/{ent}/datacenterrepositories[/{dc}]: an enterprise's template
repository in each datacenter it may use.

Reading needs APPLIB_VIEW, for one's own enterprise; with ENTERPRISE_ADMINISTER_ALL for
any enterprise, and in every datacenter (without it, only those the enterprise has
limits in). Central learns every change of a repository from its Appliance Manager's
reports; `PUT .../{dc}/actions/refresh` has the AM look at the repository again and makes
central's templates what it lists, catching up on anything a report missed (204).
`repositoryCapacityMb` and `repositoryRemainingMb` are the repository's file system as
the AM last reported it (0 until it has).

Uploading a template is a multipart POST straight to the Appliance Manager, at the
repository's `upload` link (its /am/erepos/{ent}/templates): central links to it rather
than relaying bodies of many gigabytes. The new template appears in
`virtualmachinetemplates` as the Appliance Manager reports it.
"""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.auth import principal
from abiquo_central.api.endpoint import endpoint
from abiquo_central.api.keys import CLOCK, ENGINE, HTTP_CLIENT, SETTINGS
from abiquo_central.api.links import Hrefs
from abiquo_central.api.media import Media
from abiquo_central.api.model import Entity, Link
from abiquo_central.api.params import path_id
from abiquo_central.api.render import render, render_collection
from abiquo_central.infrastructure.datacenters import reachable_datacenter
from abiquo_central.templates import appliance_manager as am
from abiquo_central.templates import repositories as domain
from abiquo_central.templates.reports import reconcile_repository
from abiquo_central.tenants.privileges import APPLIB_VIEW, ENTERPRISE_ADMINISTER_ALL

TEMPLATES_MEDIA = Media.of("virtualmachinetemplate", xml="virtualMachineTemplate")


class DatacenterRepository(Entity, kw_only=True):
    media = Media.of(
        "datacenterrepository",
        xml="datacenterRepository",
        plural="datacenterrepositories",
        xml_plural="datacenterRepositories",
    )

    # The datacenter's id: an enterprise has one repository per datacenter.
    id: int
    name: str
    # The Appliance Manager's URI ("" when the datacenter has none registered).
    repository_location: str = ""
    repository_capacity_mb: int = 0
    repository_remaining_mb: int = 0


def here(repo: domain.Repository) -> tuple[str | int, ...]:
    return (
        "admin",
        "enterprises",
        repo.enterprise_id,
        "datacenterrepositories",
        repo.datacenter_id,
    )


def to_model(repo: domain.Repository, hrefs: Hrefs) -> DatacenterRepository:
    links = [
        hrefs.link(
            "edit", *here(repo), media=DatacenterRepository.media.one, title=repo.datacenter_name
        ),
        hrefs.link("datacenter", "admin", "datacenters", repo.datacenter_id),
        hrefs.link("enterprise", "admin", "enterprises", repo.enterprise_id),
        hrefs.link(
            "virtualmachinetemplates",
            *here(repo),
            "virtualmachinetemplates",
            media=TEMPLATES_MEDIA.many,
        ),
        hrefs.link("refresh", *here(repo), "actions", "refresh"),
    ]
    if repo.am_uri:
        links.append(Link(rel="upload", href=am.templates_url(repo.am_uri, repo.enterprise_id)))
    return DatacenterRepository(
        id=repo.datacenter_id,
        name=repo.datacenter_name,
        repository_location=repo.am_uri or "",
        repository_capacity_mb=repo.capacity_mb,
        repository_remaining_mb=repo.remaining_mb,
        links=links,
    )


def visible_to(request: web.Request) -> int | None:
    """The only enterprise whose repositories the caller may see; None for all."""
    caller = principal(request)
    return None if caller.holds(ENTERPRISE_ADMINISTER_ALL) else caller.enterprise_id


async def repository_of(request: web.Request) -> domain.Repository:
    """The repository the path names ({ent} and {dc}), as the caller may see it."""
    return await domain.get_repository(
        request.config_dict[ENGINE],
        path_id(request, "ent"),
        path_id(request, "dc"),
        visible_to=visible_to(request),
        any_datacenter=principal(request).holds(ENTERPRISE_ADMINISTER_ALL),
    )


@endpoint(produces=DatacenterRepository.media.many, privileges=[APPLIB_VIEW])
async def list_repositories(request: web.Request) -> web.Response:
    found = await domain.list_repositories(
        request.config_dict[ENGINE],
        path_id(request, "ent"),
        visible_to=visible_to(request),
        any_datacenter=principal(request).holds(ENTERPRISE_ADMINISTER_ALL),
    )
    hrefs = Hrefs.of(request)
    return render_collection(
        request,
        [to_model(r, hrefs) for r in found],
        media=DatacenterRepository.media,
        total=len(found),
    )


@endpoint(produces=DatacenterRepository.media.one, privileges=[APPLIB_VIEW])
async def get_repository(request: web.Request) -> web.Response:
    return render(request, to_model(await repository_of(request), Hrefs.of(request)))


@endpoint(privileges=[APPLIB_VIEW])
async def refresh_repository(request: web.Request) -> web.Response:
    app = request.config_dict
    repo = await repository_of(request)
    dc = await reachable_datacenter(
        app[ENGINE],
        repo.datacenter_id,
        now=app[CLOCK](),
        liveness_timeout=app[SETTINGS].datacenters.liveness_timeout,
    )
    listed = await am.rescan(
        app[HTTP_CLIENT],
        repo.appliance_manager(),
        repo.enterprise_id,
        timeout=app[SETTINGS].datacenters.request_timeout,
    )
    await reconcile_repository(
        app[ENGINE],
        str(dc.uuid),  # reachable: its uuid is known
        repo.enterprise_id,
        [(t.ovf_id, t.status, t.progress, t.error, t.template) for t in listed],
        now=app[CLOCK](),
    )
    return web.Response(status=204)


REPOSITORIES = r"/admin/enterprises/{ent:\d+}/datacenterrepositories"
REPOSITORY = REPOSITORIES + r"/{dc:\d+}"


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(REPOSITORIES, list_repositories, name="datacenterrepositories")
    router.add_get(REPOSITORY, get_repository, name="datacenterrepository")
    router.add_put(REPOSITORY + "/actions/refresh", refresh_repository)
