from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from abiquo_central.api.keys import SETTINGS
from abiquo_central.api.links import Hrefs, base_url
from abiquo_central.api.media import MediaName
from abiquo_central.api.model import Link
from abiquo_central.settings import CentralSettings
from abiquo_runtime.settings import HttpSettings


def _request(headers: dict[str, str] | None = None, *, public_url: str = "") -> web.Request:
    app = web.Application()
    app[SETTINGS] = CentralSettings(http=HttpSettings(public_url=public_url))
    return make_mocked_request(
        "GET",
        "/api/admin/datacenters",
        headers={"Host": "central:8080", **(headers or {})},
        app=app,
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "http://central:8080"),
        (
            {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "cloud.example"},
            "https://cloud.example",
        ),
        ({"X-Forwarded-Host": "cloud.example:8443, proxy2"}, "http://cloud.example:8443"),
        ({"X-Forwarded-Host": "[2001:db8::1]:443"}, "http://[2001:db8::1]:443"),
        ({"X-Forwarded-Prefix": "/abiquo/"}, "http://central:8080/abiquo"),
        # Junk is not copied into links.
        ({"X-Forwarded-Proto": "gopher"}, "http://central:8080"),
        ({"X-Forwarded-Host": "evil/path?"}, "http://central:8080"),
        ({"X-Forwarded-Prefix": "no-slash"}, "http://central:8080"),
    ],
)
def test_base_url_honours_the_proxy(headers: dict[str, str], expected: str) -> None:
    assert base_url(_request(headers)) == expected


def test_public_url_wins_over_everything() -> None:
    request = _request({"X-Forwarded-Host": "other"}, public_url="https://abiquo.example.com/")
    assert base_url(request) == "https://abiquo.example.com"
    assert Hrefs.of(request)("admin", "datacenters", 3) == (
        "https://abiquo.example.com/api/admin/datacenters/3"
    )


def test_hrefs_quote_segments_and_links_carry_json_types() -> None:
    hrefs = Hrefs("http://h/api/")
    assert hrefs("admin", "enterprises", "a b/c") == "http://h/api/admin/enterprises/a%20b%2Fc"
    assert hrefs.link(
        "edit", "admin", "datacenters", 1, media=MediaName("datacenter", "datacenter"), title="dc"
    ) == Link(
        rel="edit",
        href="http://h/api/admin/datacenters/1",
        type="application/vnd.abiquo.datacenter+json",
        title="dc",
    )
    assert hrefs.link("racks", "x").type is None
