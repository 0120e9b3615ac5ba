"""What central asks a datacenter's Appliance Manager over HTTP (abiquo_dc/am/http.py):
to download a template from an OVF envelope's URL, and to delete a template.

The AM's URI is its APPLIANCE_MANAGER remote service's (…/am). Its refusals of what the
caller sent (400, 404 on a download, 413, 415, 422) are the caller's mistake, passed on
as InvalidInput; anything else (unreachable, 5xx) is a TemporaryError (503).
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
import msgspec

from abiquo_central.templates.common import APPLIANCE_MANAGER_FAILED, INVALID_DOWNLOAD
from abiquo_dc.protocol.templates import TemplateDefinition, TemplateStatus
from abiquo_runtime.errors import InvalidInput, TemporaryError


def templates_url(am_uri: str, enterprise_id: int) -> str:
    """Where the enterprise's templates are listed, downloaded and uploaded."""
    return f"{am_uri.rstrip('/')}/erepos/{enterprise_id}/templates"


class ReportedTemplate(msgspec.Struct, kw_only=True):
    """One template as the AM lists it when it rescans an enterprise's repository."""

    ovf_id: str
    status: TemplateStatus
    progress: float = 0.0
    error: str = ""
    template: TemplateDefinition | None = None


def rescan_url(am_uri: str, enterprise_id: int) -> str:
    return f"{am_uri.rstrip('/')}/erepos/{enterprise_id}"


def template_url(am_uri: str, enterprise_id: int, ovf_id: str) -> str:
    return f"{templates_url(am_uri, enterprise_id)}/{quote(ovf_id, safe='')}"


def file_url(am_uri: str, disk_path: str) -> str:
    """Where hypervisors and clients fetch a template's disk."""
    return f"{am_uri.rstrip('/')}/files/{quote(disk_path)}"


async def _message(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return str(body["message"])[:512]
    except (ValueError, aiohttp.ClientError):
        pass
    return f"the Appliance Manager answered {response.status}"


def _unreachable(exc: BaseException) -> TemporaryError:
    return TemporaryError(
        f"The Appliance Manager cannot be reached: {exc}", code=APPLIANCE_MANAGER_FAILED
    )


async def download(
    session: aiohttp.ClientSession, am_uri: str, enterprise_id: int, ovf_url: str, *, timeout: float
) -> str:
    """Ask the AM to download the template whose envelope is at `ovf_url`; its id there."""
    try:
        async with session.post(
            templates_url(am_uri, enterprise_id),
            data=ovf_url.encode("utf-8"),
            headers={"Content-Type": "text/plain"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            if response.status in (200, 201):
                body = await response.json(content_type=None)
                ovf_id = body.get("ovf_id") if isinstance(body, dict) else None
                return str(ovf_id) if ovf_id else ovf_url
            message = await _message(response)
            if 400 <= response.status < 500:
                raise InvalidInput(message, code=INVALID_DOWNLOAD)
            raise TemporaryError(message, code=APPLIANCE_MANAGER_FAILED)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise _unreachable(exc) from None


async def delete(
    session: aiohttp.ClientSession, am_uri: str, enterprise_id: int, ovf_id: str, *, timeout: float
) -> None:
    """Ask the AM to remove a template; one it does not hold is gone already."""
    try:
        async with session.delete(
            template_url(am_uri, enterprise_id, ovf_id),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            if response.status in (200, 204, 404):
                return
            raise TemporaryError(await _message(response), code=APPLIANCE_MANAGER_FAILED)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _unreachable(exc) from None


async def rescan(
    session: aiohttp.ClientSession, am_uri: str, enterprise_id: int, *, timeout: float
) -> list[ReportedTemplate]:
    """Have the AM look at the enterprise's repository again; every template it holds."""
    try:
        async with session.post(
            rescan_url(am_uri, enterprise_id), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            if response.status != 200:
                raise TemporaryError(await _message(response), code=APPLIANCE_MANAGER_FAILED)
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _unreachable(exc) from None
    try:
        return msgspec.json.decode(body, type=list[ReportedTemplate])
    except msgspec.DecodeError as exc:
        raise TemporaryError(
            f"the Appliance Manager's listing does not read: {exc}", code=APPLIANCE_MANAGER_FAILED
        ) from None
