"""/api/config/diskformattypes over HTTP."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.central.conftest import USER

Client = TestClient[web.Request, web.Application]

JSON_ONE = "application/vnd.abiquo.diskformattype+json"
JSON_MANY = "application/vnd.abiquo.diskformattypes+json"


async def _json(response: Any) -> Any:
    return await response.json(content_type=None)


async def test_any_user_reads_every_format(api: Client) -> None:
    listed = await api.get("/api/config/diskformattypes", headers=USER)
    assert listed.headers["Content-Type"] == JSON_MANY
    page = await _json(listed)
    assert page["totalSize"] == 13
    assert [f["id"] for f in page["collection"]] == list(range(13))
    flat = page["collection"][4]
    href = f"{api.make_url('')}/api/config/diskformattypes/4"
    assert flat == {
        "id": 4,
        "name": "VMDK_FLAT",
        "description": "VMWare Fixed Disk",
        "uri": "http://www.vmware.com/technical-resources/interfaces/vmdk_access.html#monolithic_flat",
        "links": [{"rel": "edit", "href": href, "type": JSON_ONE}],
    }
    for key in ("4", "VMDK_FLAT"):
        one = await api.get(f"/api/config/diskformattypes/{key}", headers=USER)
        assert one.headers["Content-Type"] == JSON_ONE
        assert await _json(one) == flat


async def test_in_xml(api: Client) -> None:
    one = await api.get(
        "/api/config/diskformattypes/QCOW2_SPARSE",
        headers={**USER, "Accept": "application/vnd.abiquo.diskformattype+xml"},
    )
    root = ET.fromstring(await one.read())
    assert (root.tag, root.findtext("id"), root.findtext("description")) == (
        "diskFormatType",
        "11",
        "QCOW2 Sparse disk",
    )
    listed = await api.get(
        "/api/config/diskformattypes",
        headers={**USER, "Accept": "application/vnd.abiquo.diskformattypes+xml"},
    )
    page = ET.fromstring(await listed.read())
    assert (page.tag, len(page.findall("diskFormatType"))) == ("diskFormatTypes", 13)


async def test_unknown_format_is_404(api: Client) -> None:
    missing = await api.get("/api/config/diskformattypes/VMDK", headers=USER)
    assert missing.status == 404
    assert (await _json(missing))["collection"][0]["code"] == "DISKFORMAT-0"
