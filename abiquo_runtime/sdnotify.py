"""systemd's readiness protocol: one datagram to $NOTIFY_SOCKET, nothing when it is unset.

Written here rather than taken from a library: it is one sendto() on a Unix socket, and
the packaged alternatives need libsystemd headers to build.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(state: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; False when not run under Type=notify."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True
