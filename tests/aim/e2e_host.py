"""A real libvirtd running QEMU guests in software emulation (TCG), for end-to-end tests.

Two session fixtures (import them into a test module):

- `test_guest`: a tiny bootable guest made from Debian packages only: the kernel of
  `linux-image-cloud-amd64` (the host's /boot/vmlinuz-* when one is readable, else the
  package fetched with `apt-get download` and the file taken out with `dpkg-deb`, so no
  kernel is installed on the host) and an initramfs of busybox-static whose /init mounts
  proc and sys, prints GUEST_READY on the console and sleeps forever (both made with
  guest_kernel.py, which the VLAN tests' guest shares). The initramfs is written by
  Python's stdlib (cpio "newc" + gzip), so no cpio package is needed. Both are
  cached in /var/tmp/abiquo-test-guest/<kernel version>/ (ABIQUO_TEST_GUEST_DIR moves it):
  the first run downloads 27 MB, later runs reuse the files.

- `private_libvirtd`: a libvirtd of the test's own, not the system's, yielding its URI
  `qemu:///system?socket=<dir>/sock/libvirt-sock`. What works on Debian 12 (libvirt 9.0):
  a privileged (root) libvirtd always reads /etc/libvirt/qemu.conf and keeps its state in
  /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt; there is no
  option to move them. So it runs in a mount namespace of its own (`unshare --mount`)
  where those five directories are bind mounts of a scratch directory: its config
  (qemu.conf: QEMU as root, no DAC/SELinux/AppArmor relabelling, no cgroups, no per-VM
  mount namespace, console logs to files rather than through virtlogd), its domains,
  pid files and QEMU monitor sockets are all private and vanish with it, and the system
  libvirtd (running or not, installed or not) is never touched. Its listening socket is
  outside the bind mounts (libvirtd.conf's unix_sock_dir), so the tests reach it. It is
  the monolithic `libvirtd`: Debian 12's packages do not ship the modular virtqemud.
  A privileged libvirtd also resolves Debian's default QEMU account (libvirt-qemu, made
  by libvirt-daemon-system) before reading qemu.conf: the namespace sees copies of
  /etc/passwd and /etc/group with it added. It is stopped with SIGTERM at the end, and
  any QEMU it left running is killed by the pid files it wrote. There is one per test
  process, however many modules import the fixture. It also listens on TCP,
  127.0.0.1:`tcp_port`, without authentication, for remote URIs (qemu+tcp://,
  test+tcp://); its test driver, `test+unix:///default?socket=<socket>` or over TCP, is
  one state shared by all connections (a test driver on a file is per connection).

Needs root, `unshare` (util-linux), libvirt-daemon + libvirt-daemon-driver-qemu,
qemu-system-x86, busybox-static, and apt-get + dpkg-deb when no readable kernel is in /boot.
Missing any, the tests skip (fail with CI=true) saying what is missing.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests import services
from tests.aim import guest_kernel

# Its kernel is cached in GUEST_DIR itself; other guests' in directories of their own.
GUEST_DIR = guest_kernel.GUEST_DIR
KERNEL_PACKAGE = "linux-image-cloud-amd64"
READY = "GUEST_READY"
# Printed by /init once it runs: a test reading the serial console sees the guest booted.
INIT = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo {READY}
while :; do /bin/busybox sleep 3600; done
"""
# libvirtd's state directories that are replaced, in its mount namespace, by private ones.
LIBVIRT_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}


def unavailable(why: str) -> NoReturn:
    """Skip (fail with CI=true, like the other services) a test this host cannot run."""
    message = f"the QEMU end-to-end host is not available: {why}"
    if services.CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# -- the guest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guest:
    kernel: Path
    initrd: Path
    kernel_version: str


def _host_kernel() -> guest_kernel.Kernel | None:
    for kernel in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        if os.access(kernel, os.R_OK):
            return guest_kernel.Kernel(vmlinuz=kernel, version=kernel.name.removeprefix("vmlinuz-"))
    return None


def _initramfs() -> bytes:
    return gzip.compress(guest_kernel.initramfs(INIT, unavailable), mtime=0)


def build_guest(root: Path = GUEST_DIR) -> Guest:
    kernel = _host_kernel() or guest_kernel.debian_kernel(KERNEL_PACKAGE, root, unavailable)
    initrd = root / kernel.version / "initramfs.cpio.gz"
    content = _initramfs()
    # Rebuilt when busybox or /init changed; otherwise the cached file is reused.
    if not initrd.is_file() or initrd.read_bytes() != content:
        guest_kernel.write_atomically(initrd, content)
    return Guest(kernel=kernel.vmlinuz, initrd=initrd, kernel_version=kernel.version)


@pytest.fixture(scope="session")
def test_guest() -> Guest:
    if os.geteuid() != 0:
        unavailable("needs root")
    return build_guest()


# -- the private libvirtd ---------------------------------------------------------------


@dataclass(frozen=True)
class Libvirtd:
    uri: str
    # The scratch directory: console logs of the guests may be written here.
    dir: Path
    pid: int
    # It also listens on 127.0.0.1:tcp_port, without authentication (0: it does not).
    tcp_port: int = 0

    @property
    def socket(self) -> Path:
        """Its unix socket, for URIs of other drivers: test+unix:///default?socket=..."""
        return self.dir / "sock" / "libvirt-sock"


QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""


def _libvirtd_conf(sock_dir: Path, log: Path, tcp_port: int = 0) -> str:
    conf = f"""\
unix_sock_dir = "{sock_dir}"
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:{log}"
"""
    if tcp_port:
        # Plain TCP without authentication, for the remote URIs (qemu+tcp://, test+tcp://)
        # the drivers use: on loopback only, and only for the test's own libvirtd.
        conf += f"""\
listen_tcp = 1
listen_tls = 0
listen_addr = "127.0.0.1"
tcp_port = "{tcp_port}"
auth_tcp = "none"
"""
    return conf


def start_libvirtd(
    scratch: Path, *, timeout: float = 30.0, tcp_port: int = 0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a private libvirtd in `scratch`; (its process, its qemu:///system URI).

    `tcp_port`: it also listens on 127.0.0.1:`tcp_port` without authentication."""
    libvirtd = shutil.which("libvirtd") or "/usr/sbin/libvirtd"
    if not os.access(libvirtd, os.X_OK):
        unavailable("no libvirtd (apt-get install libvirt-daemon libvirt-daemon-driver-qemu)")
    if shutil.which("unshare") is None:
        unavailable("no unshare (apt-get install util-linux)")
    if shutil.which("qemu-system-x86_64") is None:
        unavailable("no qemu-system-x86_64 (apt-get install qemu-system-x86)")
    for name in LIBVIRT_DIRS:
        (scratch / name).mkdir()
    sock_dir = scratch / "sock"
    sock_dir.mkdir()
    (scratch / "etc" / "qemu.conf").write_text(QEMU_CONF)
    conf = scratch / "etc" / "libvirtd.conf"
    conf.write_text(_libvirtd_conf(sock_dir, scratch / "libvirtd.log", tcp_port))
    # The mount points must exist on the host for the bind mounts (empty, harmless).
    for target in LIBVIRT_DIRS.values():
        Path(target).mkdir(parents=True, exist_ok=True)
    binds = {str(scratch / name): target for name, target in LIBVIRT_DIRS.items()}
    binds.update(_accounts(scratch))
    mounts = " && ".join(f"mount --bind {source} {target}" for source, target in binds.items())
    # `--propagation private` keeps these mounts from leaking back to the host; the shell
    # then execs libvirtd, so the process started here is libvirtd itself.
    # --listen: the TCP listener is opened only with it (without socket activation).
    listen = " --listen" if tcp_port else ""
    script = f"{mounts} && exec {libvirtd}{listen} -f {conf} -p {scratch / 'libvirtd.pid'}"
    with (scratch / "libvirtd.stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    sock = sock_dir / "libvirt-sock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if sock.exists():
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(sock))
                    return proc, f"qemu:///system?socket={sock}"
                except OSError:
                    pass
        time.sleep(0.1)
    stop_libvirtd(proc, scratch)
    unavailable(f"libvirtd did not come up: {_tail(scratch)}")


def _accounts(scratch: Path) -> dict[str, str]:
    """/etc/passwd and /etc/group for libvirtd's namespace, with Debian's QEMU account.

    A privileged libvirtd resolves its built-in default QEMU user and group (Debian's
    `libvirt-qemu`, made by libvirt-daemon-system) before it reads qemu.conf, and will not
    start without them, even though qemu.conf then says root. Rather than adding a user to
    the host, the namespace sees copies of the two files with the account added.
    """
    binds: dict[str, str] = {}
    texts = {name: (Path("/etc") / name).read_text() for name in ("passwd", "group")}
    used = {
        int(row.split(":")[2])
        for text in texts.values()
        for row in text.splitlines()
        if row.count(":") >= 3 and row.split(":")[2].isdigit()
    }
    # One id free as both a uid and a gid (64055 is Debian's own for this account).
    free = next(i for i in range(64055, 65534) if i not in used)
    for name, line in (
        ("passwd", f"libvirt-qemu:x:{free}:{free}:libvirt qemu:/var/lib/libvirt:/bin/false"),
        ("group", f"libvirt-qemu:x:{free}:"),
    ):
        text = texts[name]
        if not any(row.startswith("libvirt-qemu:") for row in text.splitlines()):
            copy = scratch / name
            copy.write_text(text.rstrip("\n") + "\n" + line + "\n")
            binds[str(copy)] = f"/etc/{name}"
    return binds


def stop_libvirtd(proc: subprocess.Popen[bytes], scratch: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # QEMU outlives libvirtd by design; a guest a test left running would keep going.
    for pidfile in (scratch / "run" / "qemu").glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


def _tail(scratch: Path) -> str:
    text = ""
    for name in ("libvirtd.stderr", "libvirtd.log"):
        path = scratch / name
        if path.is_file():
            text += path.read_text(errors="replace")[-2000:]
    return text.strip() or "(no output)"


@dataclass
class _Shared:
    daemon: Libvirtd | None = None
    proc: subprocess.Popen[bytes] | None = None
    users: int = 0


# One libvirtd per test process: pytest makes a session fixture imported into several test
# modules (as this one is) one fixture per module, each started on its own.
_shared = _Shared()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    unavailable(f"libvirtd does not listen on TCP port {port}")


def _acquire_libvirtd() -> Libvirtd:
    if _shared.daemon is None:
        # Short: a unix socket path is limited to 107 bytes.
        scratch = Path(tempfile.mkdtemp(prefix="abiquo-lv-", dir="/var/tmp"))
        try:
            port = _free_port()
            proc, uri = start_libvirtd(scratch, tcp_port=port)
            try:
                _wait_for_port(port)
            except BaseException:
                stop_libvirtd(proc, scratch)
                raise
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        _shared.proc = proc
        _shared.daemon = Libvirtd(uri=uri, dir=scratch, pid=proc.pid, tcp_port=port)
    _shared.users += 1
    return _shared.daemon


def _release_libvirtd() -> None:
    _shared.users -= 1
    daemon, proc = _shared.daemon, _shared.proc
    if _shared.users == 0 and daemon is not None and proc is not None:
        _shared.daemon = _shared.proc = None
        try:
            stop_libvirtd(proc, daemon.dir)
        finally:
            shutil.rmtree(daemon.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def private_libvirtd() -> Iterator[Libvirtd]:
    """The process's private libvirtd (shared by every module that imports this)."""
    if os.geteuid() != 0:
        unavailable("needs root")
    daemon = _acquire_libvirtd()
    try:
        yield daemon
    finally:
        _release_libvirtd()
