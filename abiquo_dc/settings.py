"""abiquo-dc's settings (see config/dc.toml for an annotated example)."""

from __future__ import annotations

import msgspec

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
    # Every driver is the simulator: hosts in memory, for tests and benchmarks at scale.
    enabled: bool = False
    # Its knobs (hosts, faults, mayhem) on the DC's HTTP port, under /simulator.
    http_knobs: bool = False


class DCSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    datacenter: DatacenterSettings = msgspec.field(default_factory=DatacenterSettings)
    http: HttpSettings = msgspec.field(default_factory=lambda: HttpSettings(port=8009))
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    shutdown: ShutdownSettings = msgspec.field(default_factory=ShutdownSettings)
    rabbitmq: RabbitSettings = msgspec.field(default_factory=RabbitSettings)
    simulator: SimulatorSettings = msgspec.field(default_factory=SimulatorSettings)
