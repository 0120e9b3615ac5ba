"""The simulator's knobs over a running DC's HTTP port, and their absence by default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from abiquo_dc.app import Datacenter, build_datacenter
from abiquo_dc.settings import (
    DatacenterSettings,
    DCSettings,
    RepositorySettings,
    SimulatorSettings,
)
from abiquo_runtime.messaging.memory import MemoryBroker
from abiquo_runtime.settings import HttpSettings
from abiquo_runtime.shutdown import run_stages


async def running(tmp_path: Path, simulator: SimulatorSettings) -> Datacenter:
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / ".abiquo_repository").touch()
    settings = DCSettings(
        datacenter=DatacenterSettings(state_dir=str(tmp_path)),
        http=HttpSettings(host="127.0.0.1", port=0),
        simulator=simulator,
        repository=RepositorySettings(path=str(repository)),
    )
    dc = build_datacenter(settings, transport=MemoryBroker().connection("dc"))
    await dc.start()
    try:
        for subsystem in dc.subsystems:
            await subsystem.wait_running(5)
    except BaseException:
        await run_stages(dc.shutdown_stages())
        raise
    return dc


@pytest.fixture
async def dc(tmp_path: Path) -> AsyncIterator[Datacenter]:
    dc = await running(tmp_path, SimulatorSettings(enabled=True, http_knobs=True))
    try:
        yield dc
    finally:
        await run_stages(dc.shutdown_stages())


async def test_hosts_made_and_broken_over_http_are_what_discovery_sees(dc: Datacenter) -> None:
    base = dc.server.url
    async with aiohttp.ClientSession() as http:
        new = {"address": "10.0.0.7", "name": "h7", "cpuCores": 8, "ramBytes": 2**34}
        async with http.post(f"{base}/simulator/hosts", json=new) as r:
            assert r.status == 201
        async with http.post(f"{base}/simulator/hosts", json=new) as r:
            assert r.status == 409
        async with http.get(f"{base}/simulator/hosts") as r:
            [host] = await r.json()
        assert (host["address"], host["name"], host["vms"]) == ("10.0.0.7", "h7", 0)

        found = f"{base}/nodecollector/10.0.0.7/host?hypervisor=KVM"
        async with http.get(found) as r:
            assert r.status == 200
            assert (await r.json())["cpu_cores"] == 8

        # One failure of host_info, scripted over HTTP: discovery answers 503, then 200.
        fault = {"operation": "host_info", "kind": "fail", "times": 1}
        async with http.post(f"{base}/simulator/hosts/10.0.0.7/faults", json=fault) as r:
            assert r.status == 204
        async with http.get(found) as r:
            assert r.status == 503
        async with http.get(found) as r:
            assert r.status == 200

        async with http.post(
            f"{base}/simulator/hosts/10.0.0.7/disconnect", json={"seconds": 60}
        ) as r:
            assert r.status == 204
        async with http.get(found) as r:
            assert r.status == 503
        async with http.post(f"{base}/simulator/hosts/10.0.0.7/heal") as r:
            assert r.status == 204
        async with http.get(found) as r:
            assert r.status == 200

        async with http.delete(f"{base}/simulator/hosts/10.0.0.7") as r:
            assert r.status == 204
        async with http.get(f"{base}/simulator/hosts") as r:
            assert await r.json() == []


async def test_bad_knob_requests_are_refused(dc: Datacenter) -> None:
    base = dc.server.url
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/simulator/hosts", json={"address": "10.0.0.8"}) as r:
            assert r.status == 201
        for path, body in [
            ("/simulator/hosts", {"name": "no address"}),
            ("/simulator/hosts", {"address": "10.0.0.9", "cpuCores": 0}),
            ("/simulator/hosts/10.0.0.8/faults", {"operation": "nope", "kind": "hang"}),
            ("/simulator/hosts/10.0.0.8/faults", {"operation": "host_info", "kind": "boom"}),
            ("/simulator/hosts/10.0.0.8/mayhem", {"rate": "fast"}),
        ]:
            async with http.post(base + path, json=body) as r:
                assert r.status == 400, (path, body, await r.text())
        async with http.post(
            f"{base}/simulator/hosts/10.9.9.9/disconnect", json={"seconds": 1}
        ) as r:
            assert r.status == 404


async def test_the_knobs_are_off_unless_enabled(tmp_path: Path) -> None:
    dc = await running(tmp_path, SimulatorSettings(enabled=True, http_knobs=False))
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{dc.server.url}/simulator/hosts") as r,
        ):
            assert r.status == 404
    finally:
        await run_stages(dc.shutdown_stages())
