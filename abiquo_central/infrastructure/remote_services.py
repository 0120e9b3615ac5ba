"""A datacenter's remote services, as Abiquo names them, derived from its heartbeat."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# Each remote service by the path the datacenter serves it under (and reports it by in
# its heartbeat), with its Abiquo type, in the order Abiquo lists them.
SERVICE_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "virtualfactory": "VIRTUAL_FACTORY",
        "vsm": "VIRTUAL_SYSTEM_MONITOR",
        "nodecollector": "NODE_COLLECTOR",
        "ssm": "STORAGE_SYSTEM_MONITOR",
        "am": "APPLIANCE_MANAGER",
        "bpm-async": "BPM_SERVICE",
    }
)

RUNNING = "RUNNING"


@dataclass(frozen=True, slots=True)
class RemoteService:
    type: str
    uri: str
    # Abiquo's convention: 1 when the service answers, 0 when it does not.
    status: int


def remote_services(
    http_url: str | None, services: Mapping[str, str] | None, *, available: bool
) -> tuple[RemoteService, ...]:
    """The services the last heartbeat named; up only when the DC is alive and they run."""
    if http_url is None or not services:
        return ()
    base = http_url.rstrip("/")
    return tuple(
        RemoteService(
            type=kind,
            uri=f"{base}/{path}",
            status=1 if available and services[path] == RUNNING else 0,
        )
        for path, kind in SERVICE_TYPES.items()
        if path in services
    )
