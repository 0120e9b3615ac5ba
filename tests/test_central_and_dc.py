"""Central and a datacenter, each composed as its program composes it, over the real
RabbitMQ and MariaDB: its remote services registered and checked, the DC's heartbeats
make it (and them) available in the API, central's request reaches it, and when its
heartbeats stop it shows unavailable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from abiquo_central.app import Central
from abiquo_central.db.migrate import upgrade
from abiquo_central.infrastructure.datacenters import ensure_datacenter
from abiquo_central.infrastructure.remote_services import DC_PATHS, register_remote_service
from abiquo_central.settings import (
    CentralSettings,
    DatabaseSettings,
    DatacentersSettings,
    SecretsSettings,
)
from abiquo_central.tenants.seed import ensure_admin
from abiquo_dc.app import build_datacenter
from abiquo_dc.protocol.messages import CheckServices, ServicesStatus
from abiquo_dc.settings import DatacenterSettings, DCSettings, RepositorySettings
from abiquo_runtime.messaging.amqp import AmqpTransport
from abiquo_runtime.settings import HttpSettings, RabbitSettings
from abiquo_runtime.shutdown import run_stages

pytestmark = [pytest.mark.mariadb, pytest.mark.rabbitmq]

ACCEPT = {"Accept": "application/vnd.abiquo.datacenters+json"}


def repository(tmp_path: Path) -> RepositorySettings:
    """A template repository with its mark file: the AM runs only with one mounted."""
    path = tmp_path / "repository"
    path.mkdir(exist_ok=True)
    (path / ".abiquo_repository").touch()
    return RepositorySettings(path=str(path))


@pytest.fixture
def database_url(fresh_database_url: str) -> str:
    upgrade(fresh_database_url)
    return fresh_database_url


@pytest.fixture
async def central(database_url: str, rabbitmq_url: str, tmp_path: Path) -> AsyncIterator[Central]:
    settings = CentralSettings(
        secrets=SecretsSettings(key_file=str(tmp_path / "secrets.key")),
        http=HttpSettings(host="127.0.0.1", port=0),
        database=DatabaseSettings(url=database_url, pool_size=2),
        rabbitmq=RabbitSettings(url=rabbitmq_url),
        datacenters=DatacentersSettings(liveness_timeout=1.5),
    )
    central = Central(
        settings,
        transport=AmqpTransport(rabbitmq_url, connection_name=f"e2e central {uuid.uuid4()}"),
    )
    await ensure_admin(central.engine, password="admin-pw")
    await central.start()
    try:
        yield central
    finally:
        await run_stages(central.shutdown_stages())


async def datacenters(central: Central, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    async with http.get(
        f"{central.url}/api/admin/datacenters",
        headers={**ACCEPT, "Authorization": aiohttp.encode_basic_auth("admin", "admin-pw")},
    ) as response:
        assert response.status == 200
        body = await response.json(content_type=None)
    return list(body["collection"])


async def wait_until(check: Any, timeout: float = 20) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.1)


async def test_a_datacenter_comes_alive_answers_and_goes_away(
    central: Central, rabbitmq_url: str, tmp_path: Path
) -> None:
    dc_settings = DCSettings(
        datacenter=DatacenterSettings(
            name="madrid", state_dir=str(tmp_path), heartbeat_interval=0.2
        ),
        http=HttpSettings(host="127.0.0.1", port=0),
        repository=repository(tmp_path),
        rabbitmq=RabbitSettings(url=rabbitmq_url),
    )
    dc = build_datacenter(
        dc_settings,
        transport=AmqpTransport(rabbitmq_url, connection_name=f"e2e dc {uuid.uuid4()}"),
    )
    dc_id = await ensure_datacenter(central.engine, uuid=dc.uuid, name="madrid", location="Madrid")
    await dc.start()
    try:
        async with aiohttp.ClientSession() as http:
            # Registered as the all-in-one does: each checked over HTTP and over the link.
            for kind, path in DC_PATHS.items():
                await register_remote_service(
                    central.engine,
                    http,
                    dc_id,
                    kind,
                    f"{dc.server.url}/{path}",
                    link=central.link,
                    timeout=5,
                )

            async def all_up() -> dict[str, Any] | None:
                [found] = await datacenters(central, http)
                services_up = [rs["status"] for rs in found["remoteServices"]["collection"]]
                ok = found["available"] and len(services_up) == 6 and all(services_up)
                return found if ok else None

            found = await wait_until(all_up)
            assert found["uuid"] == dc.uuid
            uris = {rs["uri"] for rs in found["remoteServices"]["collection"]}
            assert f"{dc.server.url}/virtualfactory" in uris

            reply = await central.link.request(dc.uuid, CheckServices(dc_uuid=dc.uuid), timeout=10)
            assert isinstance(reply, ServicesStatus)
            assert len(reply.services) == 6
    finally:
        await run_stages(dc.shutdown_stages())

    async with aiohttp.ClientSession() as http:

        async def gone() -> bool:
            [found] = await datacenters(central, http)
            return not found["available"]

        assert await wait_until(gone)
