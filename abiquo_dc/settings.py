"""abiquo-dc's settings (see config/dc.toml for an annotated example)."""

from __future__ import annotations

import msgspec

from abiquo_dc.protocol.definitions import HypervisorType
from abiquo_runtime.settings import HttpSettings, LogSettings, RabbitSettings, ShutdownSettings


class DatacenterSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The datacenter's identity toward central; empty: made once and kept in state_dir.
    uuid: str = ""
    name: str = "datacenter"
    location: str = ""
    # Where the DC keeps what must survive a restart (its UUID, the job journal).
    state_dir: str = "/var/lib/abiquo-dc"
    heartbeat_interval: float = 5.0
    # How long one request from central may take in its handler before it is requeued.
    handler_timeout: float = 30.0


class SimulatorSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Drivers are the simulator: hosts in memory, for tests and benchmarks at scale.
    enabled: bool = False
    # The hypervisor types it stands in for (KVM, VMX_04, ...); empty: every type. The
    # others keep their real drivers.
    types: list[HypervisorType] = msgspec.field(default_factory=list)
    # Its knobs (hosts, faults, mayhem) on the DC's HTTP port, under /simulator.
    http_knobs: bool = False


class VirtualFactorySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Tasks taken from the queue at once. They wait in memory for their VM's turn and
    # for a slot; unacknowledged, they come back after a crash, and the journal knows them.
    prefetch: int = 256
    # Hypervisor operations at once: in the whole datacenter, and on one host.
    max_jobs: int = 64
    max_jobs_per_host: int = 4
    # A job failing for now (host away) is tried this many times, with backoff between.
    attempts: int = 5
    retry_initial: float = 1.0
    retry_max: float = 30.0
    # One call to a hypervisor (a disk copy excepted: it takes as long as the disk is big).
    driver_timeout: float = 60.0
    # How long a disk conversion by the BPM may take.
    conversion_timeout: float = 3600.0
    # A finished task is remembered this long (days), so a late repeat is not run again.
    retention_days: float = 7.0


class KvmSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How the KVM and Xen drivers reach their hosts."""

    # The domain type written in the XML: "kvm" on real hosts; "qemu" where there is no
    # KVM (software emulation), "test" for libvirt's test driver. Empty: the type's own.
    domain_type: str = ""
    # The hosts' NIC that carries the VLANs when a VM's NIC names none (central names
    # its machine's virtualSwitch), and how their bridges are named.
    vlan_interface: str = "eth0"
    bridge_prefix: str = "abiquo_"
    # Domain operations over libvirt at this URI, "{address}" replaced by the host's
    # (e.g. "qemu+tls://{address}/system"). Empty: the URI each host's AIM reports, and
    # through the AIM itself when it reports none.
    libvirt_uri: str = ""
    # TLS toward the AIMs: the CA their certificates are signed by, and the DC's own
    # certificate and key (the AIMs verify clients). Empty: plain TCP.
    aim_tls_ca: str = ""
    aim_tls_cert: str = ""
    aim_tls_key: str = ""


class RedisSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Where the VSM keeps its hosts, subscriptions and VM states. Empty: in this process
    # (the all-in-one: nothing survives a restart).
    url: str = "redis://127.0.0.1:6379/0"
    # Every key starts with it (several DCs, or tests, may share one Redis).
    prefix: str = "abiquo:"


class VsmSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Hosts without an event stream are listed this often (seconds).
    poll_interval: float = 30.0
    # Every host is listed in full this often anyway, events or not.
    resync_interval: float = 300.0
    # A host unreachable this long has its VMs reported UNKNOWN.
    grace: float = 60.0
    reconnect_initial: float = 1.0
    reconnect_max: float = 30.0
    # A VM gone from its host is reported DESTROYED after this long unless seen elsewhere.
    move_window: float = 2.0
    # Events waiting for RabbitMQ; past this, VMs are resent as they are once it is back.
    buffer: int = 10_000
    # How often Redis is checked for having been emptied.
    check_interval: float = 5.0
    driver_timeout: float = 30.0


class RepositorySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The template repository the DC's hosts share (an NFS mount in production)."""

    path: str = "/opt/vm_repository"
    # A file at its root that says the mount is there (an unmounted NFS point is an
    # empty directory that must not be written to).
    mark_file: str = ".abiquo_repository"


class AmSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The largest upload taken (bytes).
    max_upload_bytes: int = 64 * 1024**3
    # The largest OVF envelope or catalogue read (bytes).
    max_document_bytes: int = 4 * 1024**2
    # Downloads at once, and how often one cut off is resumed before it is an ERROR.
    max_downloads: int = 4
    download_attempts: int = 5
    download_timeout: float = 60.0
    # Catalogues (ovfindex.xml) listed by GET /am/erepos/{ent}/templates?catalogue=URL
    # must be under one of these URL prefixes; empty: any.
    allowed_catalogues: list[str] = msgspec.field(default_factory=list)
    # Central is told how full the repository's file system is at start, this often
    # (seconds), and after templates come or go: at most once per usage_debounce.
    usage_interval: float = 60.0
    usage_debounce: float = 5.0


class BpmSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # qemu-img, and how long one conversion may take (seconds).
    qemu_img: str = "qemu-img"
    conversion_timeout: float = 6 * 3600.0


class DCSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    datacenter: DatacenterSettings = msgspec.field(default_factory=DatacenterSettings)
    http: HttpSettings = msgspec.field(default_factory=lambda: HttpSettings(port=8009))
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    shutdown: ShutdownSettings = msgspec.field(default_factory=ShutdownSettings)
    rabbitmq: RabbitSettings = msgspec.field(default_factory=RabbitSettings)
    simulator: SimulatorSettings = msgspec.field(default_factory=SimulatorSettings)
    vfactory: VirtualFactorySettings = msgspec.field(default_factory=VirtualFactorySettings)
    kvm: KvmSettings = msgspec.field(default_factory=KvmSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    vsm: VsmSettings = msgspec.field(default_factory=VsmSettings)
    repository: RepositorySettings = msgspec.field(default_factory=RepositorySettings)
    am: AmSettings = msgspec.field(default_factory=AmSettings)
    bpm: BpmSettings = msgspec.field(default_factory=BpmSettings)
