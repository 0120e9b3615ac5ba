"""Absolute hrefs, built the way the client sees this server.

The base is settings.http.public_url when it is set (the site's root, under which the
API lives at /api); otherwise the request's scheme and host, as a reverse proxy reports
them in X-Forwarded-Proto, X-Forwarded-Host and X-Forwarded-Prefix.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web

from abiquo_central.api.keys import SETTINGS
from abiquo_central.api.media import Format, MediaName
from abiquo_central.api.model import Link

# Where the composition root mounts the API application.
API_PREFIX = "/api"

# What a forwarded host may look like: a name or address with an optional port. Anything
# else is ignored rather than copied into every link of the response.
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~\-]+)+$")


def _first(value: str | None) -> str | None:
    # A header set by several proxies lists them all: the first is the client's side.
    if not value:
        return None
    return value.split(",")[0].strip() or None


def base_url(request: web.Request) -> str:
    """scheme://host[/prefix], with no trailing slash and without /api."""
    public = request.config_dict[SETTINGS].http.public_url
    if public:
        return public.rstrip("/")
    proto = _first(request.headers.get("X-Forwarded-Proto"))
    if proto is not None:
        proto = proto.lower()
    scheme = proto if proto in ("http", "https") else request.scheme
    forwarded_host = _first(request.headers.get("X-Forwarded-Host"))
    host = forwarded_host if forwarded_host and _HOST.match(forwarded_host) else request.host
    prefix = (_first(request.headers.get("X-Forwarded-Prefix")) or "").rstrip("/")
    if prefix and not _PREFIX.match(prefix):
        prefix = ""
    return f"{scheme}://{host}{prefix}"


class Hrefs:
    """Builds absolute hrefs and links under the API root of one request."""

    def __init__(self, api_root: str) -> None:
        self.api_root = api_root.rstrip("/")

    @classmethod
    def of(cls, request: web.Request) -> Hrefs:
        return cls(base_url(request) + API_PREFIX)

    def __call__(self, *segments: str | int) -> str:
        """`hrefs("admin", "datacenters", 3)` → `http://host/api/admin/datacenters/3`."""
        path = "/".join(quote(str(s), safe="") for s in segments)
        return f"{self.api_root}/{path}"

    def link(
        self,
        rel: str,
        *segments: str | int,
        media: MediaName | None = None,
        title: str | None = None,
    ) -> Link:
        """A link to the path `segments`; `media` gives its type (in JSON: XML renders
        rewrite it to +xml)."""
        return Link(
            rel=rel,
            href=self(*segments),
            type=media.content_type(Format.JSON) if media is not None else None,
            title=title,
        )
