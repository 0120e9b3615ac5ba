"""A private libvirtd of one test's own, which it stops and starts again at will.

The session's daemon (e2e_host.private_libvirtd) is shared and must stay up; a test of
what happens when libvirtd is away, or comes back, takes this one instead. It is the
same daemon (e2e_host.start_libvirtd), not listening on TCP, and comes back at the same
socket path, so a URI made before still names it. Its test driver starts afresh each
time, as a real host's libvirtd forgets its transient domains.

`start()` and `stop()` block: call them with asyncio.to_thread from an async test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.aim.e2e_host import LIBVIRT_DIRS, start_libvirtd, stop_libvirtd, unavailable


class RestartableLibvirtd:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.scratch / "sock" / "libvirt-sock"

    @property
    def test_uri(self) -> str:
        """Its test driver, one state for every connection while it runs."""
        return f"test+unix:///default?socket={self.socket}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        # start_libvirtd makes its directories afresh.
        for name in (*LIBVIRT_DIRS, "sock"):
            shutil.rmtree(self.scratch / name, ignore_errors=True)
        self._proc, _ = start_libvirtd(self.scratch)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_libvirtd(proc, self.scratch)


@pytest.fixture
def restartable_libvirtd() -> Iterator[RestartableLibvirtd]:
    """A libvirtd not started yet; stopped, and its files removed, at the end."""
    if os.geteuid() != 0:
        unavailable("needs root")
    # Short: a unix socket path is limited to 107 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="abiquo-lvr-", dir="/var/tmp"))
    daemon = RestartableLibvirtd(scratch)
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)
