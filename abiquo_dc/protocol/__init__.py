"""The datacenter's published contract: message types, queue names and their versions.

Central imports this package and nothing else of abiquo_dc; it depends on msgspec only.
"""

from abiquo_dc.protocol.codec import DecodeError, decode, encode
from abiquo_dc.protocol.messages import (
    CheckServices,
    DetectHypervisor,
    DiscoveredDatastore,
    DiscoveredHost,
    DiscoveredNic,
    DiscoverHosts,
    DiscoveryFailure,
    Heartbeat,
    HostsDiscovered,
    HypervisorDetected,
    Inbound,
    Message,
    Outbound,
    Reply,
    RequestFailed,
    ServicesStatus,
    ServiceState,
    SubsystemStateChanged,
)
from abiquo_dc.protocol.queues import (
    EVENTS,
    HEARTBEAT_TTL_MS,
    HEARTBEATS,
    NOTIFICATIONS,
    RPC_TTL_MS,
    SERVICES,
    requests_queue,
)

__all__ = [
    "EVENTS",
    "HEARTBEATS",
    "HEARTBEAT_TTL_MS",
    "NOTIFICATIONS",
    "RPC_TTL_MS",
    "SERVICES",
    "CheckServices",
    "DecodeError",
    "DetectHypervisor",
    "DiscoverHosts",
    "DiscoveredDatastore",
    "DiscoveredHost",
    "DiscoveredNic",
    "DiscoveryFailure",
    "Heartbeat",
    "HostsDiscovered",
    "HypervisorDetected",
    "Inbound",
    "Message",
    "Outbound",
    "Reply",
    "RequestFailed",
    "ServiceState",
    "ServicesStatus",
    "SubsystemStateChanged",
    "decode",
    "encode",
    "requests_queue",
]
