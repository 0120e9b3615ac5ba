from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from abiquo_central.api.keys import SETTINGS
from abiquo_central.api.media import MediaName
from abiquo_central.api.paging import page_links, parse_page
from abiquo_central.db.paging import PageRequest
from abiquo_central.settings import CentralSettings
from abiquo_runtime.errors import InvalidInput

DATACENTERS = MediaName("datacenters", "datacenters")


def _request(query: str = "") -> web.Request:
    app = web.Application()
    app[SETTINGS] = CentralSettings()
    path = "/api/admin/datacenters" + (f"?{query}" if query else "")
    return make_mocked_request("GET", path, headers={"Host": "h"}, app=app)


def test_defaults() -> None:
    assert parse_page(_request()) == PageRequest(startwith=0, limit=25, by=None, asc=True, has=None)


def test_all_parameters() -> None:
    page = parse_page(_request("startwith=50&limit=10&by=name&asc=FALSE&has=bcn"))
    assert page == PageRequest(startwith=50, limit=10, by="name", asc=False, has="bcn")


@pytest.mark.parametrize(
    "query",
    ["startwith=-1", "startwith=x", "limit=0", "limit=1.5", "asc=yes", "limit=-3"],
)
def test_bad_values_are_invalid_input(query: str) -> None:
    with pytest.raises(InvalidInput):
        parse_page(_request(query))


def _rels(links: list) -> dict[str, dict[str, str]]:
    return {link.rel: dict(URL(link.href).query) for link in links}


def test_links_in_the_middle_keep_other_parameters() -> None:
    request = _request("startwith=10&limit=10&by=name&has=x")
    links = page_links(request, parse_page(request), 35, DATACENTERS)
    assert [link.rel for link in links] == ["first", "previous", "next", "last"]
    rels = _rels(links)
    assert rels["first"] == {"startwith": "0", "limit": "10", "by": "name", "has": "x"}
    assert rels["previous"]["startwith"] == "0"
    assert rels["next"]["startwith"] == "20"
    assert rels["last"]["startwith"] == "30"
    assert links[0].href.startswith("http://h/api/admin/datacenters?")
    assert links[0].type == "application/vnd.abiquo.datacenters+json"


def test_links_on_the_only_page() -> None:
    request = _request()
    links = page_links(request, parse_page(request), 3, DATACENTERS)
    assert [link.rel for link in links] == ["first", "last"]
    assert _rels(links)["last"]["startwith"] == "0"


def test_links_of_an_empty_listing() -> None:
    request = _request("limit=5")
    assert [link.rel for link in page_links(request, parse_page(request), 0, DATACENTERS)] == [
        "first",
        "last",
    ]


def test_last_page_lands_on_a_page_boundary() -> None:
    request = _request("startwith=40&limit=20")
    links = page_links(request, parse_page(request), 60, DATACENTERS)
    rels = _rels(links)
    assert [link.rel for link in links] == ["first", "previous", "last"]
    assert rels["previous"]["startwith"] == "20"
    assert rels["last"]["startwith"] == "40"
