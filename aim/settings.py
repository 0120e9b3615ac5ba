"""abiquo-aim's settings (see config/aim.toml for an annotated example)."""

from __future__ import annotations

import msgspec

from abiquo_runtime.settings import LogSettings, ShutdownSettings


class ListenSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "0.0.0.0"
    # Abiquo's AIM has always listened here; the DC's probe looks for it on this port.
    port: int = 60084
    # Client timeout for a connection that stops talking, in milliseconds.
    client_timeout_ms: int = 30_000


class LibvirtSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    uri: str = "qemu:///system"


class AimSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: ListenSettings = msgspec.field(default_factory=ListenSettings)
    libvirt: LibvirtSettings = msgspec.field(default_factory=LibvirtSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    shutdown: ShutdownSettings = msgspec.field(default_factory=ShutdownSettings)
