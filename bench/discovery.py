"""Hosts per second discovered through discover_range, over simulated hosts.

Measured in one run as a ratio to the baseline of calling the simulator driver directly
(open_driver, connect, host_info, close for each host) with the same concurrency bound
(an asyncio.Semaphore and one gather), since these machines are shared and noisy. The
ratio is what discovery adds on top of the driver: its per-host timeout, the error
capture and the conversion to the protocol's DiscoveredHost. A sequential direct loop is
printed too, for reference.

    .venv/bin/python bench/discovery.py [--hosts N] [--concurrency C] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abiquo_dc.discovery.discover import address_range, discover_range
from abiquo_dc.hypervisors.registry import open_driver
from abiquo_dc.hypervisors.simulator import SimulatedCloud
from abiquo_dc.protocol.definitions import HypervisorConnection, HypervisorType
from abiquo_dc.protocol.messages import DiscoveredHost

TIMEOUT = 10.0


async def direct_one(cloud: SimulatedCloud, address: str) -> None:
    connection = HypervisorConnection(type=HypervisorType.KVM, address=address)
    driver = open_driver(connection, simulator=cloud, timeout=TIMEOUT)
    try:
        await driver.connect()
        await driver.host_info()
    finally:
        await driver.close()


async def direct_sequential(cloud: SimulatedCloud, addresses: list[str]) -> float:
    started = time.perf_counter()
    for address in addresses:
        await direct_one(cloud, address)
    return len(addresses) / (time.perf_counter() - started)


async def direct_bounded(cloud: SimulatedCloud, addresses: list[str], concurrency: int) -> float:
    bound = asyncio.Semaphore(concurrency)

    async def one(address: str) -> None:
        async with bound:
            await direct_one(cloud, address)

    started = time.perf_counter()
    await asyncio.gather(*(one(a) for a in addresses))
    return len(addresses) / (time.perf_counter() - started)


async def discovery(cloud: SimulatedCloud, addresses: list[str], concurrency: int) -> float:
    started = time.perf_counter()
    results = await discover_range(
        addresses,
        HypervisorType.KVM,
        concurrency=concurrency,
        timeout=TIMEOUT,
        simulator=cloud,
    )
    elapsed = time.perf_counter() - started
    found = sum(isinstance(r, DiscoveredHost) for r in results)
    if found != len(addresses):
        raise SystemExit(f"discovered {found} of {len(addresses)} hosts")
    return len(addresses) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    cloud = SimulatedCloud()
    # 1,000 hosts need a /22: discover_range itself takes any list; address_range caps.
    addresses: list[str] = []
    for block in range(0, args.hosts, 250):
        count = min(250, args.hosts - block)
        third = block // 250
        addresses += address_range(f"10.{third}.0.1", f"10.{third}.0.{count}")
    for address in addresses:
        cloud.add_host(address)

    # The best of several rounds of each, interleaved, to damp the noise of a shared box.
    best = {"sequential": 0.0, "bounded": 0.0, "discovery": 0.0}
    for _ in range(args.rounds):
        best["sequential"] = max(best["sequential"], await direct_sequential(cloud, addresses))
        rate = await direct_bounded(cloud, addresses, args.concurrency)
        best["bounded"] = max(best["bounded"], rate)
        rate = await discovery(cloud, addresses, args.concurrency)
        best["discovery"] = max(best["discovery"], rate)
    await cloud.close()

    baseline = best["bounded"]
    print(f"{args.hosts} simulated hosts, concurrency {args.concurrency}, best of {args.rounds}")
    rows = [
        ("driver directly, sequential (reference)", best["sequential"]),
        (f"driver directly, concurrency {args.concurrency} (baseline)", baseline),
        (f"discover_range, concurrency {args.concurrency}", best["discovery"]),
    ]
    for name, rate in rows:
        print(f"{name:<50} {rate:>12,.0f} hosts/s   ratio {rate / baseline:8.4f}")


if __name__ == "__main__":
    asyncio.run(main())
