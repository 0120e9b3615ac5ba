"""systemd notification over a real datagram socket."""

from __future__ import annotations

import socket
from pathlib import Path

from abiquo_runtime.sdnotify import notify


def test_nothing_is_sent_without_notify_socket() -> None:
    assert notify("READY=1", env={}) is False


def test_ready_reaches_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        assert notify("READY=1", env={"NOTIFY_SOCKET": str(path)}) is True
        assert server.recv(64) == b"READY=1"


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"abiquo-test-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        assert notify("STOPPING=1", env={"NOTIFY_SOCKET": "@" + name}) is True
        assert server.recv(64) == b"STOPPING=1"
