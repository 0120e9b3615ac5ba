"""abiquo-aim's settings (see config/aim.toml for an annotated example)."""

from __future__ import annotations

import msgspec

from abiquo_runtime.settings import LogSettings, ShutdownSettings


class TlsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Both set: the AIM speaks TLS. cafile set too: clients must present a certificate
    # signed by it (the datacenter's), and others are refused.
    certfile: str = ""
    keyfile: str = ""
    cafile: str = ""


class ListenSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "0.0.0.0"
    # Abiquo's AIM has always listened here; the DC's probe looks for it on this port.
    port: int = 60084
    # A connection silent for this long is closed, in milliseconds.
    client_timeout_ms: int = 30_000
    tls: TlsSettings = msgspec.field(default_factory=TlsSettings)


class LibvirtSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    uri: str = "qemu:///system"
    # libvirt's calls are blocking: they run in a pool of this many threads of their own.
    threads: int = 8
    # A libvirt call that takes longer fails (the host is hung), in seconds.
    call_timeout: float = 60.0
    # The URI the datacenter should open for domain operations, told in getNodeInfo: this
    # host's libvirtd as reached from the datacenter, e.g. "qemu+tcp://kvm1.example.com/
    # system" or "xen+tcp://xen1.example.com/system" (libvirtd listening, with the auth
    # its own configuration asks). Empty: domain operations go through this AIM.
    remote_uri: str = ""
    # libvirtd unreachable (not started yet, or restarted): the AIM keeps running and
    # retries after retry_delay seconds, doubling up to max_retry_delay.
    retry_delay: float = 1.0
    max_retry_delay: float = 30.0


class RepositorySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The template repository, an NFS mount shared with the datacenter.
    path: str = "/opt/vm_repository"
    # The file that proves the mount is the repository and not an empty mount point.
    mark_file: str = ".abiquo_repository"


class NetworkSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Bridges the AIM creates and deletes are named with this prefix; it touches no other.
    bridge_prefix: str = "abiquo_"
    # For a host whose domains are not real (libvirt's test driver: the all-in-one's
    # demo host): VLAN requests are checked and remembered, and no interface is touched.
    simulated_vlans: bool = False


class IscsiSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    initiator_name_file: str = "/etc/iscsi/initiatorname.iscsi"
    iscsiadm: str = "iscsiadm"


class EventsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # How many lifecycle events are kept for monitors resuming from a cursor.
    history: int = 10_000


class MetricsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    interval: float = 10.0
    # Samples kept per domain (at 10 s, one hour).
    keep: int = 360


class AimSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: ListenSettings = msgspec.field(default_factory=ListenSettings)
    libvirt: LibvirtSettings = msgspec.field(default_factory=LibvirtSettings)
    repository: RepositorySettings = msgspec.field(default_factory=RepositorySettings)
    # The directories VM disks are copied into; nothing outside them is written.
    datastores: list[str] = msgspec.field(default_factory=lambda: ["/var/lib/virt"])
    network: NetworkSettings = msgspec.field(default_factory=NetworkSettings)
    iscsi: IscsiSettings = msgspec.field(default_factory=IscsiSettings)
    events: EventsSettings = msgspec.field(default_factory=EventsSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    shutdown: ShutdownSettings = msgspec.field(default_factory=ShutdownSettings)
