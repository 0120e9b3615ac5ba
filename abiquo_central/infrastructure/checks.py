"""Checking a remote service: does it answer at its URI, and does its datacenter say it runs?

An HTTP service is checked as Abiquo checked it: `GET <uri>/check`, up on a 200. The
VIRTUAL_FACTORY and the BPM_SERVICE answer with their datacenter's UUID, which is how
central learns which datacenter process a URI belongs to. DHCP_SERVICE (`omapi://host:port`)
speaks no HTTP: it is up when a TCP connection to it opens.

When the datacenter's UUID is known, its own view is asked for over the link too: a service
the datacenter reports as anything but RUNNING is down, whatever its /check said.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import aiohttp

from abiquo_central.link import DatacenterRequests
from abiquo_dc.protocol.messages import CheckServices, ServicesStatus, ServiceState
from abiquo_runtime.errors import AbiquoError

# A check answers while someone waits for it: never longer than this, whatever the
# datacenters' request timeout is.
MAX_CHECK_TIMEOUT = 5.0

# A /check answer is a UUID or nothing: what is read of it is bounded.
_MAX_ANSWER = 256


@dataclass(frozen=True, slots=True)
class Target:
    """A service to check, and how (remote_services.py knows which type needs what)."""

    uri: str
    # Checked by opening a TCP connection (omapi://host:port) rather than over HTTP.
    tcp: bool = False
    # Its /check answers with the datacenter's UUID.
    answers_uuid: bool = False
    # The UUID it answers names the datacenter (the VIRTUAL_FACTORY's does).
    names_datacenter: bool = False
    # The name the datacenter reports it by over the link; None: not one of the DC's.
    dc_path: str | None = None


def check_timeout(request_timeout: float) -> float:
    """How long one check may take, given settings.datacenters.request_timeout."""
    return max(0.1, min(request_timeout, MAX_CHECK_TIMEOUT))


@dataclass(frozen=True, slots=True)
class Probe:
    """What a check found: whether the service is up, the datacenter UUID it answered
    with (VIRTUAL_FACTORY and BPM_SERVICE only), and why it is down when it is."""

    up: bool
    uuid: str | None = None
    reason: str = ""


async def _http(session: aiohttp.ClientSession, target: Target, timeout: float) -> Probe:
    url = f"{target.uri.rstrip('/')}/check"
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as response:
            answer = (await response.content.read(_MAX_ANSWER)).decode("utf-8", "replace").strip()
            if response.status != 200:
                return Probe(False, reason=f"{url} answered {response.status}")
    except TimeoutError:
        return Probe(False, reason=f"{url} did not answer within {timeout:g}s")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return Probe(False, reason=f"{url} cannot be reached: {exc or type(exc).__name__}")
    if not target.answers_uuid:
        return Probe(True)
    try:
        return Probe(True, uuid=str(uuid.UUID(answer)))
    except ValueError:
        return Probe(False, reason=f"{url} answered no datacenter UUID: {answer[:40]!r}")


async def _tcp(uri: str, timeout: float) -> Probe:
    parts = urlsplit(uri)
    host, port = parts.hostname or "", parts.port or 0
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return Probe(False, reason=f"{host}:{port} did not accept a connection within {timeout:g}s")
    except (OSError, ValueError) as exc:
        return Probe(False, reason=f"{host}:{port} cannot be reached: {exc}")
    writer.close()
    # It answered: how the connection ends does not matter.
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Probe(True)


async def probe(session: aiohttp.ClientSession, target: Target, *, timeout: float) -> Probe:
    """Whether the service answers at its URI (validated already: a host, and for TCP a port)."""
    if target.tcp:
        return await _tcp(target.uri, timeout)
    return await _http(session, target, timeout)


async def reported_states(
    link: DatacenterRequests, dc_uuid: str, *, timeout: float
) -> Mapping[str, str] | None:
    """Each service's state as the datacenter reports it, by its path name; None when it
    does not answer (what /check found then stands alone)."""
    try:
        reply = await link.request(dc_uuid, CheckServices(dc_uuid=dc_uuid), timeout=timeout)
    except AbiquoError:
        return None
    if not isinstance(reply, ServicesStatus):
        return None
    return {path: str(state.value) for path, state in reply.services.items()}


async def check_services(
    session: aiohttp.ClientSession,
    link: DatacenterRequests | None,
    targets: Sequence[Target],
    *,
    dc_uuid: str | None,
    timeout: float,
) -> list[Probe]:
    """Check every target at once; one Probe each, in the same order.

    The datacenter is asked over the link by `dc_uuid` or, when that is unknown, by the
    UUID its VIRTUAL_FACTORY answered with.
    """
    found = list(await asyncio.gather(*(probe(session, t, timeout=timeout) for t in targets)))
    if dc_uuid is None:
        learnt = (p.uuid for t, p in zip(targets, found, strict=True) if t.names_datacenter)
        dc_uuid = next((u for u in learnt if u is not None), None)
    pairs = list(zip(targets, found, strict=True))
    if link is None or dc_uuid is None or not any(p.up and t.dc_path for t, p in pairs):
        return found
    states = await reported_states(link, dc_uuid, timeout=timeout)
    if states is None:
        return found
    for i, (target, result) in enumerate(zip(targets, found, strict=True)):
        state = states.get(target.dc_path) if target.dc_path is not None else None
        if result.up and state is not None and state != ServiceState.RUNNING.value:
            found[i] = replace(result, up=False, reason=f"datacenter {dc_uuid} reports it {state}")
    return found
