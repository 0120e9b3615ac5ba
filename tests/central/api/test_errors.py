"""The API's edges without a database: errors, correlation ids, negotiation, bodies."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.api import build_api
from abiquo_central.api.body import read_entity
from abiquo_central.api.endpoint import endpoint
from abiquo_central.api.render import render
from abiquo_central.api.resources.datacenters import Datacenter
from abiquo_central.settings import CentralSettings
from abiquo_runtime.errors import (
    Conflict,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PermanentError,
    TemporaryError,
)
from abiquo_runtime.secrets import SecretBox
from tests.central.conftest import mount

FAILURES: dict[str, tuple[Exception, int, str]] = {
    "invalid": (InvalidInput("bad name"), 400, "GEN-1"),
    "missing": (NotFound("no such rack", code="RACK-0"), 404, "RACK-0"),
    "conflict": (Conflict("VM is ON"), 409, "GEN-3"),
    "limit": (LimitExceeded("too many CPUs"), 409, "LIMIT-1"),
    "temporary": (TemporaryError("datacenter unreachable"), 503, "GEN-4"),
    "permanent": (PermanentError("cannot convert"), 500, "GEN-5"),
}


def _failing(error: Exception) -> web.Handler:
    @endpoint(public=True)
    async def handler(request: web.Request) -> web.Response:
        raise error

    return handler


@endpoint(public=True)
async def _crash(request: web.Request) -> web.Response:
    raise RuntimeError("secret internals")


@endpoint(public=True, produces=Datacenter.media.one)
async def _echo(request: web.Request) -> web.Response:
    return render(request, await read_entity(request, Datacenter), status=201)


@pytest.fixture
async def client(
    lone_engine: AsyncEngine,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    api = build_api(
        engine=lone_engine, settings=CentralSettings(), secrets=SecretBox(Fernet.generate_key())
    )
    for name, (error, _, _) in FAILURES.items():
        api.router.add_get(f"/fail/{name}", _failing(error))
    api.router.add_get("/crash", _crash)
    api.router.add_post("/echo", _echo)
    async with TestClient(TestServer(mount(api))) as client:
        yield client


@pytest.mark.parametrize("name", sorted(FAILURES))
async def test_domain_errors_map_to_status_and_code(
    client: TestClient[web.Request, web.Application], name: str
) -> None:
    error, status, code = FAILURES[name]
    response = await client.get(f"/api/fail/{name}")
    assert response.status == status
    assert response.headers["Content-Type"] == "application/vnd.abiquo.errors+json"
    assert await response.json(content_type=None) == {
        "collection": [{"code": code, "message": str(error)}]
    }


async def test_errors_in_xml_when_the_client_prefers_xml(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get(
        "/api/fail/missing", headers={"Accept": "application/vnd.abiquo.rack+xml; version=4.0"}
    )
    assert response.status == 404
    assert response.headers["Content-Type"] == "application/vnd.abiquo.errors+xml; version=4.0"
    root = ET.fromstring(await response.read())
    assert root.tag == "errors"
    assert root.findtext("error/code") == "RACK-0"
    assert root.findtext("error/message") == "no such rack"


async def test_unexpected_error_is_500_with_correlation_id_and_no_traceback(
    client: TestClient[web.Request, web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="abiquo.central.api"):
        response = await client.get("/api/crash", headers={"X-Correlation-ID": "req-42"})
    assert response.status == 500
    assert response.headers["X-Correlation-ID"] == "req-42"
    body = await response.json(content_type=None)
    message = body["collection"][0]["message"]
    assert body["collection"][0]["code"] == "GEN-0"
    assert "req-42" in message
    assert "secret internals" not in message and "Traceback" not in message
    logged = [r for r in caplog.records if r.name == "abiquo.central.api"]
    assert logged and logged[0].exc_info is not None


async def test_correlation_id_is_made_when_absent_or_unusable(
    client: TestClient[web.Request, web.Application],
) -> None:
    made = (await client.get("/api/version")).headers["X-Correlation-ID"]
    assert len(made) >= 16
    other = (await client.get("/api/version")).headers["X-Correlation-ID"]
    assert other != made
    unusable = await client.get("/api/version", headers={"X-Correlation-ID": "a b;<script>"})
    assert unusable.headers["X-Correlation-ID"] not in ("a b;<script>", "")
    kept = await client.get("/api/fail/invalid", headers={"X-Correlation-ID": "abc-123"})
    assert kept.headers["X-Correlation-ID"] == "abc-123"


async def test_version_is_public_text(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/api/version")
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert await response.text() == "0.1.0"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/vnd.abiquo.datacenter+json", b'{"name": "bcn", "location": "Barcelona"}'),
        ("application/json", b'{"name": "bcn", "location": "Barcelona"}'),
        (
            "application/vnd.abiquo.datacenter+xml; version=4.0",
            b"<datacenter><name>bcn</name><location>Barcelona</location></datacenter>",
        ),
    ],
)
async def test_bodies_parse_into_the_model(
    client: TestClient[web.Request, web.Application], content_type: str, body: bytes
) -> None:
    response = await client.post(
        "/api/echo",
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/vnd.abiquo.datacenter+json"},
    )
    assert response.status == 201
    echoed = await response.json(content_type=None)
    assert (echoed["name"], echoed["location"], echoed["id"]) == ("bcn", "Barcelona", None)


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b"name=bcn", 415),
        ("application/vnd.abiquo.rack+json", b'{"name": "bcn"}', 415),
        ("application/json", b"{broken", 400),
        ("application/json", b'{"location": "no name"}', 400),
        ("application/json", b"", 400),
        ("application/xml", b"<rack><name>x</name></rack>", 400),
    ],
)
async def test_unreadable_bodies(
    client: TestClient[web.Request, web.Application], content_type: str, body: bytes, status: int
) -> None:
    response = await client.post("/api/echo", data=body, headers={"Content-Type": content_type})
    assert response.status == status
    error = (await response.json(content_type=None))["collection"][0]
    assert error["code"] == ("GEN-9" if status == 415 else "GEN-1")
    assert error["message"]


async def test_406_comes_before_the_handler_runs(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.post(
        "/api/echo",
        data=b"{broken",
        headers={"Content-Type": "application/json", "Accept": "text/html"},
    )
    # Not 400: the unreadable body was never read, since the answer could not be sent.
    assert response.status == 406
    assert (await response.json(content_type=None))["collection"][0]["code"] == "GEN-7"


async def test_too_large_a_body_is_413(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.post(
        "/api/echo",
        data=b"x" * (5 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 413
    assert response.headers["Content-Type"] == "application/vnd.abiquo.errors+json"
