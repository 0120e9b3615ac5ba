"""A datacenter repository's capacity and remaining space over HTTP, in JSON and XML: 0
until the datacenter's Appliance Manager reported them, its figures in MiB after."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from xml.etree import ElementTree as ET

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.templates.repository_usage import record_repository_usage
from abiquo_dc.protocol.templates import RepositoryUsage
from tests.central.conftest import ADMIN, T0, Seeded

Client = TestClient[web.Request, web.Application]

MIB = 1024**2
XML_ONE = "application/vnd.abiquo.datacenterrepository+xml"
XML_MANY = "application/vnd.abiquo.datacenterrepositories+xml"


def figures(repo: dict[str, Any]) -> tuple[int, int]:
    return repo["repositoryCapacityMb"], repo["repositoryRemainingMb"]


async def test_capacity_and_remaining_space_are_what_the_am_reported(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    reported = await ensure_datacenter(engine, uuid="dc-usage", name="A reports", location="")
    silent = await ensure_datacenter(engine, uuid="dc-silent", name="B silent", location="")
    base = f"/api/admin/enterprises/{seeded.enterprise_id}/datacenterrepositories"

    one = await api.get(f"{base}/{reported}", headers=ADMIN)
    assert one.status == 200, await one.text()
    assert figures(await one.json(content_type=None)) == (0, 0)

    # Bytes in, whole MiB out (rounded down: never more than there is).
    await record_repository_usage(
        engine,
        RepositoryUsage(
            dc_uuid="dc-usage",
            capacity_bytes=500 * 1024 * MIB + 123,
            free_bytes=321 * MIB + MIB - 1,
            at=T0 + timedelta(seconds=1),
        ),
    )
    one = await api.get(f"{base}/{reported}", headers=ADMIN)
    assert figures(await one.json(content_type=None)) == (500 * 1024, 321)

    listed = await api.get(base, headers=ADMIN)
    assert listed.status == 200, await listed.text()
    by_id = {r["id"]: figures(r) for r in (await listed.json(content_type=None))["collection"]}
    assert (by_id[reported], by_id[silent]) == ((500 * 1024, 321), (0, 0))

    xml = await api.get(f"{base}/{reported}", headers={**ADMIN, "Accept": XML_ONE})
    assert xml.status == 200, await xml.text()
    root = ET.fromstring(await xml.read())
    assert (root.findtext("repositoryCapacityMb"), root.findtext("repositoryRemainingMb")) == (
        str(500 * 1024),
        "321",
    )
    many = await api.get(base, headers={**ADMIN, "Accept": XML_MANY})
    assert many.status == 200, await many.text()
    repos = {
        r.findtext("id"): (r.findtext("repositoryCapacityMb"), r.findtext("repositoryRemainingMb"))
        for r in ET.fromstring(await many.read()).iter("datacenterRepository")
    }
    assert (repos[str(reported)], repos[str(silent)]) == ((str(500 * 1024), "321"), ("0", "0"))
