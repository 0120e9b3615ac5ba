"""getDomainState calls per second through a real AIM thrift server.

Measured in one run, as a ratio to the same libvirt call made directly in-process
(dom.state() in a loop) measured in the same run, since these machines are shared and
noisy:

- direct: virDomainGetState on the test driver, in the calling thread (the baseline);
- through LibvirtHost.call: the same, a hop to the libvirt thread pool and back;
- through the AIM: a thriftpy2 client → framed binary thrift over TCP → the DomainGroup →
  the pool → libvirt, calls made one after the other.

    .venv/bin/python bench/aim_rpc.py [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thriftpy2.contrib.aio.protocol.binary import TAsyncBinaryProtocolFactory
from thriftpy2.contrib.aio.rpc import make_client
from thriftpy2.contrib.aio.transport.framed import TAsyncFramedTransportFactory

from aim import contract as contract_module
from aim.domains import DomainGroup
from aim.libvirt_host import LibvirtHost
from aim.server import ThriftServer
from aim.settings import ListenSettings

DOMAIN = (
    "<domain type='test'><name>bench</name><memory>1048576</memory><vcpu>1</vcpu>"
    "<os><type>hvm</type></os></domain>"
)


def direct_rate(dom: libvirt.virDomain, n: int) -> float:
    state = dom.state
    started = time.perf_counter()
    for _ in range(n):
        state()
    return n / (time.perf_counter() - started)


async def pool_rate(host: LibvirtHost, dom: libvirt.virDomain, n: int) -> float:
    state = dom.state
    started = time.perf_counter()
    for _ in range(n):
        await host.call(state)
    return n / (time.perf_counter() - started)


async def rpc_rate(client: Any, uuid: str, n: int) -> float:
    call = client.getDomainState
    started = time.perf_counter()
    for _ in range(n):
        await call(uuid)
    return n / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    contract = contract_module.load()
    host = LibvirtHost("test:///default", threads=4, call_timeout=60)
    server = ThriftServer(
        contract=contract,
        groups=[host, DomainGroup(contract=contract, host=host)],
        listen=ListenSettings(host="127.0.0.1", port=0),
        partial=True,
    )
    await server.start()
    client = await make_client(
        contract.Aim,
        "127.0.0.1",
        server.port,
        trans_factory=TAsyncFramedTransportFactory(),
        proto_factory=TAsyncBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
        timeout=60_000,
    )
    try:
        uuid = await client.defineDomain(DOMAIN)
        await client.powerOn(uuid)
        dom = await host.call(host.conn.lookupByUUIDString, uuid)
        await rpc_rate(client, uuid, min(args.calls, 200))  # warm up the connection
        baseline = direct_rate(dom, args.calls)
        rows = [
            ("dom.state() in-process (baseline)", baseline),
            ("through LibvirtHost.call (thread pool)", await pool_rate(host, dom, args.calls)),
            ("getDomainState through the AIM (thrift)", await rpc_rate(client, uuid, args.calls)),
            ("dom.state() in-process (again)", direct_rate(dom, args.calls)),
        ]
        await client.powerOff(uuid)
        await client.undefineDomain(uuid)
    finally:
        client.close()  # type: ignore[no-untyped-call]
        await server.stop_accepting()
        await server.drain()
        await server.close()

    for name, rate in rows:
        print(f"{name:<50} {rate:>12,.0f} calls/s   ratio {rate / baseline:8.4f}")


if __name__ == "__main__":
    asyncio.run(main())
