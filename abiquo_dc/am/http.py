"""The AM's HTTP routes, as Abiquo's Appliance Manager answered them.

Enterprise repositories:

- `GET /am/erepos`: every enterprise's repository, a JSON list of `{"id", "location",
  "capacity_mb", "used_mb", "remaining_mb", "templates"}`.
- `GET /am/erepos/{ent}`: one of them.
- `POST /am/erepos/{ent}`: rescan its directory (templates added or removed by hand);
  answers its templates as below.

Templates (`{ovfId}` is URL-encoded: for a download it is the envelope's URL):

- `GET /am/erepos/{ent}/templates[?state=DOWNLOAD]`: a JSON list of `{"ovf_id",
  "status", "progress", "error", "dir_name", "template"}` (`template`, once DOWNLOAD, is
  the TemplateDefinition central receives).
- `GET /am/erepos/{ent}/templates?catalogue=URL`: the remote catalogue (ovfindex.xml)
  at URL, each entry with its status here: `{"url", "name", "templates": [...]}`.
- `POST /am/erepos/{ent}/templates`: with a `text/plain` body, the URL of an OVF
  envelope to download (201, or 200 when it is being downloaded or there already);
  with a `multipart/form-data` body, an upload (uploads.py; 201 once it is in). Either
  way with `Location: /am/erepos/{ent}/templates/{ovfId}` and the template's status.
- `HEAD /am/erepos/{ent}/templates/{ovfId}`: the status in `X-Abiquo-Status` and the
  progress (0-100) in `X-Abiquo-Progress` (an error: its status, and its code in
  `X-Abiquo-Error`, a HEAD answer having no body).
- `GET /am/erepos/{ent}/templates/{ovfId}[?format=QCOW2_SPARSE]`: its status; with
  `format`, the disk in that format (its own, or a conversion under formats/):
  `{"ovf_id", "format", "disk_path", "disk_file_size", "url"}`.
- `DELETE /am/erepos/{ent}/templates/{ovfId}`: stop its download if any and remove it
  (204).

Files: `GET /am/files/<path relative to the repository>` serves a template's file to
hypervisors that fetch over HTTP, with sendfile and Range (aiohttp's FileResponse).

Errors are JSON `{"code", "message"}`: 400 malformed input (a bad URL, enterprise id,
query, multipart body), 404 not found, 409 conflict, 413 over a size limit, 415 a body
neither text/plain nor multipart, 422 a package that is not what it claims (a bad OVF
or catalogue, a reference escaping the template, a missing disk, a size, digest or
format that does not match, a disk that is no usable image, a remote 4xx), 502 the
remote server failed, 503 the AM is not running or has no repository, 500 anything
else (with the correlation id, and its traceback logged).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

import msgspec
from aiohttp import hdrs, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError

from abiquo_dc.am.catalogue import CatalogueError
from abiquo_dc.am.errors import BadPackage, BadUpload, DownloadInterrupted, RemoteRefused, TooBig
from abiquo_dc.am.ovf import OvfError
from abiquo_dc.am.repository import Usage
from abiquo_dc.am.service import ApplianceManager, Catalogue, FormatView
from abiquo_dc.am.status import TemplateState
from abiquo_dc.am.uploads import Upload
from abiquo_dc.jsonhttp import (
    Statuses,
    answering,
    error_response,
    json_response,
    parse_choice,
    status_for,
)
from abiquo_dc.protocol.definitions import DiskFormat
from abiquo_dc.protocol.templates import TemplateStatus
from abiquo_runtime.errors import (
    AbiquoError,
    InvalidInput,
    LimitExceeded,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS_HEADER = "X-Abiquo-Status"
PROGRESS_HEADER = "X-Abiquo-Progress"
MAX_URL_BODY = 8 * 1024
_MB = 1024 * 1024


# -- what the routes write ---------------------------------------------------------------


class RepositoryView(msgspec.Struct, kw_only=True):
    id: str
    location: str
    capacity_mb: int
    used_mb: int
    remaining_mb: int
    templates: int


class CatalogueTemplateView(msgspec.Struct, kw_only=True):
    ovf_url: str
    name: str
    description: str
    category: str
    icon_url: str
    disk_format: DiskFormat | None
    disk_size: int | None
    cpu: int | None
    ram_mb: int | None
    status: TemplateStatus


class CatalogueView(msgspec.Struct, kw_only=True):
    url: str
    name: str
    templates: list[CatalogueTemplateView]


class FormatDiskView(msgspec.Struct, kw_only=True):
    ovf_id: str
    format: DiskFormat
    disk_path: str
    disk_file_size: int
    url: str


def repository_view(am: ApplianceManager, enterprise_id: str, usage: Usage) -> RepositoryView:
    location = str(am.repository.root / enterprise_id) if am.repository else ""
    return RepositoryView(
        id=enterprise_id,
        location=location,
        capacity_mb=usage.capacity_bytes // _MB,
        used_mb=usage.used_bytes // _MB,
        remaining_mb=usage.free_bytes // _MB,
        templates=usage.templates,
    )


def catalogue_view(catalogue: Catalogue) -> CatalogueView:
    return CatalogueView(
        url=catalogue.url,
        name=catalogue.name,
        templates=[
            CatalogueTemplateView(
                ovf_url=i.entry.ovf_url,
                name=i.entry.name,
                description=i.entry.description,
                category=i.entry.category,
                icon_url=i.entry.icon_url,
                disk_format=i.entry.disk_format,
                disk_size=i.entry.disk_size,
                cpu=i.entry.cpu,
                ram_mb=i.entry.ram_mb,
                status=i.status,
            )
            for i in catalogue.items
        ],
    )


def format_view(am: ApplianceManager, found: FormatView) -> FormatDiskView:
    return FormatDiskView(
        ovf_id=found.state.ovf_id,
        format=found.format,
        disk_path=found.disk_path,
        disk_file_size=found.disk_file_size,
        url=f"/{am.path}/files/{quote(found.disk_path)}",
    )


# -- answers and errors ------------------------------------------------------------------


# The AM's own statuses: what arrived and is not what it claims is unprocessable; a
# limit passed is too large; a download the server cut off is a bad gateway.
_STATUSES: Statuses = (
    (BadPackage, 422),
    (OvfError, 422),
    (CatalogueError, 422),
    (RemoteRefused, 422),
    (LimitExceeded, 413),
    (DownloadInterrupted, 502),
)


def status_of(exc: AbiquoError) -> int:
    return status_for(exc, _STATUSES)


def _answering(handler: Handler) -> Handler:
    return answering(handler, extra=_STATUSES)


def _location(am: ApplianceManager, enterprise_id: str, ovf_id: str) -> str:
    return f"/{am.path}/erepos/{enterprise_id}/templates/{quote(ovf_id, safe='')}"


def _parse_status(text: str) -> TemplateStatus:
    return parse_choice(TemplateStatus, text, "template state")


def _parse_format(text: str) -> DiskFormat:
    return parse_choice(DiskFormat, text, "disk format")


async def _url_body(request: web.Request) -> str:
    if request.content_length is not None and request.content_length > MAX_URL_BODY:
        raise TooBig(f"a URL to download is at most {MAX_URL_BODY} bytes")
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > MAX_URL_BODY:
            raise TooBig(f"a URL to download is at most {MAX_URL_BODY} bytes")
    try:
        return body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidInput("the URL to download is not UTF-8 text") from None


# -- the routes --------------------------------------------------------------------------


def am_routes(am: ApplianceManager) -> list[web.RouteDef]:
    erepos = f"/{am.path}/erepos"
    templates_path = f"{erepos}/{{ent}}/templates"
    template_path = f"{templates_path}/{{ovf_id:.+}}"

    async def list_repositories(request: web.Request) -> web.Response:
        return json_response([repository_view(am, e, u) for e, u in await am.enterprises()])

    async def repository(request: web.Request) -> web.Response:
        enterprise_id = request.match_info["ent"]
        return json_response(repository_view(am, enterprise_id, await am.usage(enterprise_id)))

    async def rescan(request: web.Request) -> web.Response:
        return json_response(await am.rescan(request.match_info["ent"]))

    async def list_templates(request: web.Request) -> web.Response:
        enterprise_id = request.match_info["ent"]
        if "catalogue" in request.query:
            catalogue = await am.catalogue(enterprise_id, request.query["catalogue"])
            return json_response(catalogue_view(catalogue))
        wanted = request.query.get("state")
        status = _parse_status(wanted) if wanted else None
        return json_response(await am.templates(enterprise_id, status))

    async def add_template(request: web.Request) -> web.Response:
        enterprise_id = request.match_info["ent"]
        kind = request.content_type
        state: TemplateState
        if kind in ("text/plain", "text/uri-list"):
            state, started = await am.download(enterprise_id, await _url_body(request))
            status = 201 if started else 200
        elif kind == "multipart/form-data":
            try:
                reader = await request.multipart()
            except (ValueError, AssertionError, LookupError, HttpProcessingError) as exc:
                raise BadUpload(f"the multipart body is malformed: {exc}") from None
            boundary = parse_mimetype(request.headers[hdrs.CONTENT_TYPE]).parameters["boundary"]
            upload = Upload(
                reader=reader,
                content=request.content,
                boundary=boundary.encode(),
                length=request.content_length,
            )
            state = await am.upload(enterprise_id, upload)
            status = 201
        else:
            return error_response(
                415,
                "AM-MEDIA-TYPE",
                "send a text/plain URL to download or a multipart/form-data upload",
            )
        location = _location(am, enterprise_id, state.ovf_id)
        return json_response(state, status=status, headers={"Location": location})

    async def template_progress(request: web.Request) -> web.StreamResponse:
        try:
            state = await am.template(request.match_info["ent"], request.match_info["ovf_id"])
        except AbiquoError as exc:
            return web.Response(status=status_of(exc), headers={"X-Abiquo-Error": exc.code})
        return web.Response(
            status=200,
            headers={STATUS_HEADER: state.status.value, PROGRESS_HEADER: f"{state.progress:g}"},
        )

    async def template(request: web.Request) -> web.Response:
        enterprise_id, ovf_id = request.match_info["ent"], request.match_info["ovf_id"]
        wanted = request.query.get("format")
        if wanted:
            found = await am.template_format(enterprise_id, ovf_id, _parse_format(wanted))
            return json_response(format_view(am, found))
        return json_response(await am.template(enterprise_id, ovf_id))

    async def delete_template(request: web.Request) -> web.Response:
        await am.delete(request.match_info["ent"], request.match_info["ovf_id"])
        return web.Response(status=204)

    async def serve_file(request: web.Request) -> web.StreamResponse:
        path = await am.servable_file(request.match_info["path"])
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    return [
        web.get(erepos, _answering(list_repositories)),
        web.get(f"{erepos}/{{ent}}", _answering(repository)),
        web.post(f"{erepos}/{{ent}}", _answering(rescan)),
        web.get(templates_path, _answering(list_templates)),
        web.post(templates_path, _answering(add_template)),
        web.head(template_path, _answering(template_progress)),
        web.get(template_path, _answering(template), allow_head=False),
        web.delete(template_path, _answering(delete_template)),
        web.get(f"/{am.path}/files/{{path:.+}}", _answering(serve_file)),
    ]
