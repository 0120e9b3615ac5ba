"""Which hypervisor answers at an address: every probe at once, all within one timeout.

Discovery calls this when a host is added without its type. The answers are ranked:
an AIM (KVM, or Xen when its libvirt URI says so), a bare libvirt daemon (KVM), vSphere
(VMX_04), XAPI (XENSERVER), WinRM (HYPERV_301). The first in that order to answer wins
as soon as every probe ranked above it has said no, so a host that answers early is not
kept waiting for a firewall that drops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import thriftpy2
from thriftpy2.contrib.aio.protocol.binary import TAsyncBinaryProtocolFactory
from thriftpy2.contrib.aio.rpc import make_client
from thriftpy2.contrib.aio.transport.framed import TAsyncFramedTransportFactory

from abiquo_dc.protocol.definitions import HypervisorType

_XAPI_LOGIN = (
    "<?xml version='1.0'?><methodCall><methodName>session.login_with_password</methodName>"
    "<params><param><value><string></string></value></param>"
    "<param><value><string></string></value></param></params></methodCall>"
)


@dataclass(frozen=True)
class ProbePorts:
    """Where each kind of hypervisor listens; tests move them to free ports."""

    aim: int = 60084
    libvirt: int = 16509
    vsphere: int = 443
    xapi: int = 443
    winrm: int = 5985
    # vSphere and XAPI speak HTTPS; WinRM's 5985 is plain HTTP (with its own encryption).
    https: bool = True


@functools.cache
def _aim_contract() -> ModuleType:
    # The AIM's contract file travels in the aim package; abiquo_dc may not import that
    # package (import-linter), but it may find where it is.
    spec = importlib.util.find_spec("aim")
    if spec is None or spec.origin is None:
        raise RuntimeError("the aim package (and its aim.thrift) is not installed")
    thrift_file = Path(spec.origin).with_name("aim.thrift")
    return thriftpy2.load(str(thrift_file), module_name="aim_probe_thrift")


async def _aim(address: str, port: int, timeout: float) -> HypervisorType | None:
    # Parsing the contract takes tens of milliseconds the first time: not on the loop.
    contract = await asyncio.to_thread(_aim_contract)
    millis = max(1, int(timeout * 1000))
    client = await make_client(
        contract.Aim,
        address,
        port,
        trans_factory=TAsyncFramedTransportFactory(),
        proto_factory=TAsyncBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
        timeout=millis,
        connect_timeout=millis,
    )
    try:
        info = await client.getAgentInfo()
    finally:
        client.close()  # type: ignore[no-untyped-call]
    return HypervisorType.XEN_3 if info.libvirtUri.startswith("xen") else HypervisorType.KVM


async def _libvirt(address: str, port: int) -> HypervisorType | None:
    _, writer = await asyncio.open_connection(address, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return HypervisorType.KVM


async def _vsphere(http: aiohttp.ClientSession, base: str) -> HypervisorType | None:
    async with http.get(f"{base}/sdk/vimServiceVersions.xml") as resp:
        body = await resp.text(errors="replace")
    return HypervisorType.VMX_04 if resp.status == 200 and "<namespace" in body else None


async def _xapi(http: aiohttp.ClientSession, base: str) -> HypervisorType | None:
    # An unauthenticated login: XAPI answers with a methodResponse (a failure, which is
    # enough to know it is XAPI) without our needing credentials.
    headers = {"Content-Type": "text/xml"}
    async with http.post(f"{base}/", data=_XAPI_LOGIN, headers=headers) as resp:
        body = await resp.text(errors="replace")
    return HypervisorType.XENSERVER if "<methodResponse" in body else None


async def _winrm(http: aiohttp.ClientSession, base: str) -> HypervisorType | None:
    # Without credentials WinRM answers 401; any answer but "no such path" is WinRM.
    headers = {"Content-Type": "application/soap+xml;charset=UTF-8"}
    async with http.post(f"{base}/wsman", data=b"", headers=headers) as resp:
        await resp.read()
    return HypervisorType.HYPERV_301 if resp.status not in (404, 405) else None


async def _quietly(probe: Awaitable[HypervisorType | None]) -> HypervisorType | None:
    """A probe's answer; None for whatever went wrong (refused, garbage, timeout)."""
    try:
        return await probe
    except asyncio.CancelledError:
        raise
    except Exception:
        return None


async def probe(
    address: str, *, timeout: float, ports: ProbePorts = ProbePorts()
) -> HypervisorType | None:
    """The type of the hypervisor answering at `address`, None when none does in time."""
    scheme = "https" if ports.https else "http"
    host = f"[{address}]" if ":" in address else address
    # Probing asks "who is there", before any credentials or certificates are known:
    # hypervisors ship self-signed certificates, so verification would refuse them all.
    # Nothing secret is sent; the real drivers verify as configured.
    connector = aiohttp.TCPConnector(ssl=False)
    http_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=http_timeout) as http:
        # In rank order: the best answer first.
        probes = [
            _aim(address, ports.aim, timeout),
            _libvirt(address, ports.libvirt),
            _vsphere(http, f"{scheme}://{host}:{ports.vsphere}"),
            _xapi(http, f"{scheme}://{host}:{ports.xapi}"),
            _winrm(http, f"http://{host}:{ports.winrm}"),
        ]
        return await _first_by_rank([_quietly(p) for p in probes], timeout)


async def _first_by_rank(
    probes: list[Awaitable[HypervisorType | None]], timeout: float
) -> HypervisorType | None:
    # Tasks scoped to this call (all ended before it returns), as a TaskGroup's are.
    tasks: list[asyncio.Task[Any]] = [asyncio.ensure_future(p) for p in probes]
    try:
        async with asyncio.timeout(timeout):
            for task in tasks:
                # Waiting in rank order: a lower-ranked answer counts only once every
                # probe above it said no, and then it is already there (or soon).
                answer = await task
                if answer is not None:
                    return answer  # type: ignore[no-any-return]
    except TimeoutError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # Out of time: the best of what did answer.
    for task in tasks:
        if task.done() and not task.cancelled() and task.result() is not None:
            return task.result()  # type: ignore[no-any-return]
    return None
