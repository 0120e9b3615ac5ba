"""abiquo-central's settings (see config/central.toml for an annotated example)."""

from __future__ import annotations

import msgspec

from abiquo_runtime.settings import HttpSettings, LogSettings, RabbitSettings, ShutdownSettings


class DatabaseSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # mysql+aiomysql://user:password@host:3306/abiquo, or sqlite+aiosqlite:///path.db
    url: str = "sqlite+aiosqlite:///var/abiquo-central.db"
    pool_size: int = 10
    echo: bool = False


class DatacentersSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # A datacenter whose last heartbeat is older than this shows as unavailable.
    liveness_timeout: float = 15.0
    # How long central waits for a datacenter to answer a request over the link.
    request_timeout: float = 10.0


class AuthSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    realm: str = "Abiquo Api"
    # A session token (GET /api/login) expires after this many seconds without use...
    token_ttl: float = 1800.0
    # ...and, used or not, this many seconds after it was issued.
    token_max_age: float = 28800.0
    # This many failed logins for one nick, or from one client address, each less than
    # throttle_window seconds after the previous, and further attempts are refused (429)
    # for throttle_delay seconds, doubled at every failure after that (up to
    # throttle_max_delay) until a login succeeds.
    throttle_failures: int = 5
    throttle_window: float = 300.0
    throttle_delay: float = 30.0
    throttle_max_delay: float = 900.0


class SecretsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The key hypervisor passwords are encrypted with in the database; made (mode 0600)
    # when absent. Every central process of one installation must read the same file.
    key_file: str = "/var/lib/abiquo-central/secrets.key"


class TasksSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # A task that heard nothing from its datacenter for this long is asked about (a
    # REFRESH of its VM) and settled by what is seen; looked for every check_interval.
    stale_after: float = 300.0
    check_interval: float = 30.0


class CentralSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    shutdown: ShutdownSettings = msgspec.field(default_factory=ShutdownSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    rabbitmq: RabbitSettings = msgspec.field(default_factory=RabbitSettings)
    datacenters: DatacentersSettings = msgspec.field(default_factory=DatacentersSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    secrets: SecretsSettings = msgspec.field(default_factory=SecretsSettings)
    tasks: TasksSettings = msgspec.field(default_factory=TasksSettings)
