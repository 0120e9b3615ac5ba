"""Metrics sampled from libvirt's test driver, read through thrift.

The test driver's getAllDomainStats reports the state group only: its counters (cpu,
balloon, block, net) read as zeros; their parsing is checked on libvirt's own keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from types import ModuleType
from typing import Any

import pytest

from aim.domains import DomainGroup
from aim.libvirt_host import LibvirtHost
from aim.metrics import MetricsGroup, _memory_used, _summed
from tests.aim.test_domains import aim, domain_xml, node_uri

__all__ = ["node_uri"]  # the fixture, imported to be used here


def metrics(interval: float) -> Any:
    def make(contract: ModuleType, host: LibvirtHost) -> MetricsGroup:
        return MetricsGroup(contract=contract, host=host, interval=interval, keep=3)

    return make


async def test_samples_kept_and_read(contract: ModuleType, node_uri: str) -> None:
    make = [lambda c, h: DomainGroup(contract=c, host=h), metrics(0.05)]
    async with aim(contract, node_uri, make) as (client, host):
        uid = await client.defineDomain(domain_xml())
        await client.powerOn(uid)
        # Sampled at start (no domain yet), then every 50 ms: the domain comes soon.
        deadline = time.monotonic() + 5
        points: list[Any] = []
        while len(points) < 3 and time.monotonic() < deadline:
            with contextlib.suppress(contract.MetricsException):  # not sampled yet
                points = await client.getDatapoints(uid, 0)
            await asyncio.sleep(0.05)
        assert len(points) == 3  # keep=3: older ones dropped
        stamps = [p.timestamp for p in points]
        assert stamps == sorted(stamps) and abs(stamps[-1] - time.time() * 1000) < 60_000
        assert all(p.cpuTimeNs >= 0 and p.netRxBytes >= 0 for p in points)
        newer = await client.getDatapoints(uid, stamps[0])
        # The sampler goes on meanwhile: one more may have come, none older.
        assert all(p.timestamp > stamps[0] for p in newer) and len(newer) >= 2
        assert await client.getDatapoints(uid, 2**62) == []
        with pytest.raises(contract.MetricsException) as missing:
            await client.getDatapoints(str(uuid.uuid4()), 0)
        assert missing.value.code == "METRICS-NOT-FOUND"
        with pytest.raises(contract.MetricsException) as bad:
            await client.getDatapoints("nope", 0)
        assert bad.value.code == "METRICS-INVALID"
        assert host.conn is not None


async def test_sampled_at_start(contract: ModuleType, node_uri: str) -> None:
    host_xml = domain_xml()
    async with aim(contract, node_uri, []) as (_, host):
        dom = await host.call(host.conn.defineXML, host_xml)
        group = MetricsGroup(contract=contract, host=host, interval=3600, keep=10)
        await group.start()
        try:
            [point] = await group.getDatapoints(dom.UUIDString(), 0)
            assert point.cpuTimeNs == 0  # shut off
        finally:
            await group.close()


def test_counters_parsed_from_libvirt_keys() -> None:
    stats = {
        "block.count": 2,
        "block.0.rd.bytes": 10,
        "block.0.wr.bytes": 1,
        "block.1.rd.bytes": 5,
        "net.count": 1,
        "net.0.rx.bytes": 7,
        "balloon.current": 1024,
        "balloon.unused": 256,
    }
    assert (_summed(stats, "block", "rd.bytes"), _summed(stats, "block", "wr.bytes")) == (15, 1)
    assert (_summed(stats, "net", "rx.bytes"), _summed(stats, "net", "tx.bytes")) == (7, 0)
    assert _memory_used(stats) == 768 * 1024
    assert _memory_used({"balloon.current": 100, "balloon.rss": 40}) == 40 * 1024
    assert _memory_used({}) == 0
