"""A kernel that makes 802.1Q interfaces, for the VLAN tests on a host whose kernel cannot.

Some hosts run a kernel with neither 8021q built in nor loadable modules (a Firecracker
guest's, for one): `ip link add ... type vlan` fails there, whatever is installed. The
tests that need 802.1Q then run in a guest whose kernel has 8021q, bridge, dummy and veth
among its modules, booting the host's own `/` read-only as its root file system: it runs
the host's Python, the project's virtualenv and this checkout as they are, with nothing
built or copied. Two such guests, the first that works:

- User-mode Linux: Debian's `user-mode-linux` package is a Linux kernel built as an
  ordinary program (`linux.uml`) that reaches the host's files through hostfs. It needs
  no virtualisation support and boots in about a second. But its 6.1 kernel (bookworm's;
  trixie's needs a newer glibc) panics when it starts its first process on a CPU whose
  XSAVE state is larger than it handles (one with AMX: "ptrace set fp regs failed").
  So a tiny boot is tried first, once per session, and its verdict kept.
- QEMU in software emulation (TCG: a host that is itself a VM often has no working
  KVM), with Debian's generic kernel (`linux-image-amd64`: the cloud flavour has no 9p),
  fetched once into /var/tmp/abiquo-test-guest/linux-image-amd64 with the modules the
  guest loads (guest_kernel.py). The host's `/` is a read-only virtio-9p share; an initramfs of
  busybox loads the modules, mounts that share and the scratch directory (a second,
  writable share) and switches to it. The kernel boots in a couple of seconds, but
  Python runs an order of magnitude slower: the one run for all the tests takes about
  25 s, where UML takes 10.

One run of the guest, for a list of pytest test ids:

- A scratch directory /var/tmp/abiquo-vlan-XXXX holds the ids (request.json) and the
  guest's first process on the host's root, `init`, a shell script written here.
- Nothing of the host is written: /run is a tmpfs in the guest (`ip netns` keeps its
  namespaces there, and TMPDIR and HOME point into it), and only the scratch directory
  is mounted writable (over itself, so its path is the same inside).
- `init` mounts proc and sysfs, loads the modules with busybox's insmod in the order
  modules.dep gives (under UML: the host has no kmod, and the guest's kernel finds no
  module tree of its own to load from on demand; under QEMU the initramfs did), brings
  `lo` up (the tests' thrift client reaches its server on 127.0.0.1), runs `python -m
  tests.aim.vlan_guest <scratch>`, then powers the guest off.
- That runs pytest on the ids with ABIQUO_VLAN_GUEST=1 in the environment (so a test
  knows it is inside and never starts another guest) and writes each test's outcome, with
  pytest's report of it, to results.json; pytest's own output goes to pytest.log and the
  kernel's console to console.log. The host reads the three and removes the directory.

Needs busybox, and `linux.uml` with its modules (apt-get install user-mode-linux) or
qemu-system-x86_64 (qemu-system-x86), busybox-static and apt-get + dpkg-deb to fetch the
kernel. Missing them, the tests skip, or fail with CI=true, saying so.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests import loopguard, services
from tests.aim import guest_kernel

INSIDE = "ABIQUO_VLAN_GUEST"
# How many times slower than the host the guest runs: the tests' loop guard (100 ms for
# one callback) is scaled by it, so that it still catches a blocking call rather than the
# emulator. Under QEMU's TCG here, pure Python ran 15 times slower, spawning a process 30.
SLOWDOWN = "ABIQUO_VLAN_GUEST_SLOWDOWN"
TCG_SLOWDOWN = 20
UML = "linux.uml"
UML_MODULES = Path("/usr/lib/uml/modules")
QEMU = "qemu-system-x86_64"
KERNEL_PACKAGE = "linux-image-amd64"
KERNEL_DIR = guest_kernel.GUEST_DIR / KERNEL_PACKAGE
# What the VLAN tests make: 802.1Q interfaces, bridges, and dummy or veth parents.
MODULES = ("8021q", "bridge", "dummy", "veth")
# And what the QEMU guest needs first to reach its root over virtio-9p.
QEMU_MODULES = ("virtio_pci", "9pnet_virtio", "9p", *MODULES)
NINE_P = "trans=virtio,version=9p2000.L,msize=262144"
# QEMU's side of a share: files are opened as QEMU's own user (root), and inode numbers
# are remapped, as the host's `/` spans several file systems whose numbers would collide.
SHARE = "security_model=none,multidevs=remap"
# The guest's memory is a sparse file on the host: only what it touches is used.
MEMORY = "512M"
# The run takes about 10 s under UML on an idle 2-core host, and about 25 s under QEMU
# (its first run also fetches the kernel: 70 MB). The bound stays under pytest-timeout's
# 300 s for the test whose set-up starts the guest, so a hung guest is reported as such.
RUN_TIMEOUT = 270.0


def inside() -> bool:
    """Whether this process is the test run inside the guest."""
    return os.environ.get(INSIDE) == "1"


def missing(why: str) -> NoReturn:
    """Skip (fail with CI=true, like the services) a test that this host cannot run."""
    message = f"no kernel that makes 802.1Q interfaces is available: {why}"
    if services.CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _order(modules: Path, names: tuple[str, ...]) -> list[Path]:
    try:
        return guest_kernel.load_order(modules, names)
    except guest_kernel.MissingModule as error:
        missing(str(error))


def session_script(
    busybox: str, scratch: Path, rootdir: Path, prepare: list[str], slowdown: int = 1
) -> str:
    """The guest's `init` on the host's root: `prepare` (shell lines), then the tests."""
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/run/home",
        "TMPDIR": "/run/tmp",
        "LANG": "C.UTF-8",
        # The checkout is read-only in the guest: no bytecode caches to write.
        "PYTHONDONTWRITEBYTECODE": "1",
        INSIDE: "1",
        SLOWDOWN: str(slowdown),
        # The run inside fails rather than skips exactly when the one outside would.
        "CI": os.environ.get("CI", ""),
    }
    bb = shlex.quote(busybox)
    s = shlex.quote(str(scratch))
    lines = [
        f"#!{busybox} sh",
        *(f"export {key}={shlex.quote(value)}" for key, value in env.items()),
        f"{bb} mount -t proc proc /proc",
        f"{bb} mount -t sysfs sysfs /sys",
        f"{bb} mount -t tmpfs -o mode=0755 tmpfs /run",
        f"{bb} mkdir -p /run/home /run/tmp",
        f"{bb} chmod 1777 /run/tmp",
        *prepare,
        "ip link set lo up",
        f"cd {shlex.quote(str(rootdir))}",
        f"{shlex.quote(sys.executable)} -m tests.aim.vlan_guest {s} > {s}/pytest.log 2>&1",
        # Reached whatever happened above: init must not exit, or the kernel panics.
        f"{bb} poweroff -f",
        "",
    ]
    return "\n".join(lines)


def _write_init(scratch: Path, text: str) -> Path:
    init = scratch / "init"
    init.write_text(text)
    init.chmod(0o755)
    return init


# -- User-mode Linux ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Uml:
    binary: str
    version: str
    # /usr/lib/uml/modules/<version>, with modules.dep.
    modules: Path
    busybox: str

    @property
    def name(self) -> str:
        return f"User-mode Linux {self.version}"

    def argv(self, scratch: Path, rootdir: Path) -> list[str]:
        bb = shlex.quote(self.busybox)
        s = shlex.quote(str(scratch))
        prepare = [
            f"{bb} mount -t hostfs -o {s} none {s}",
            *(
                f"{bb} insmod {shlex.quote(str(path))} || echo 'insmod {path.name} failed'"
                for path in _order(self.modules, MODULES)
            ),
        ]
        init = _write_init(scratch, session_script(self.busybox, scratch, rootdir, prepare))
        return uml_argv(self.binary, init)


def uml_argv(binary: str, init: Path) -> list[str]:
    return [
        binary,
        f"mem={MEMORY}",
        "rootfstype=hostfs",
        "rootflags=/",
        "ro",
        f"init={init}",
        # The console is written to a file; no other console or serial line is made.
        "con=null",
        "con0=null,fd:1",
        "ssl=null",
        "quiet",
    ]


def find_uml() -> Uml | str:
    """User-mode Linux when it is installed and boots here; else why it cannot be used."""
    binary = shutil.which(UML)
    busybox = shutil.which("busybox")
    if binary is None or busybox is None:
        return f"no {UML} or busybox (apt-get install user-mode-linux busybox-static)"
    done = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    version = done.stdout.strip()
    modules = UML_MODULES / version
    if done.returncode != 0 or not version or not (modules / "modules.dep").is_file():
        return f"`{UML} --version` says {version!r}, and {modules}/modules.dep is not there"
    fails = _uml_fails(binary, busybox)
    if fails:
        return f"{UML} {version} does not boot here: {fails}"
    return Uml(binary=binary, version=version, modules=modules, busybox=busybox)


@functools.cache
def _uml_fails(binary: str, busybox: str) -> str:
    """Why UML cannot run a process here ("" when it can): a boot to a one-line init."""
    booted = "ABIQUO_UML_BOOTED"
    scratch = Path(tempfile.mkdtemp(prefix="abiquo-uml-", dir="/var/tmp"))
    try:
        init = _write_init(scratch, f"#!{busybox} sh\necho {booted}\n{busybox} poweroff -f\n")
        if not boot(uml_argv(binary, init), scratch / "console.log", timeout=60):
            return "a boot to a one-line init did not end in 60 s"
        console = _read(scratch / "console.log")
        if booted in console:
            return ""
        # The lines before the panic's backtrace say what happened.
        lines = [line for line in console.splitlines() if line.strip()]
        panic = next((i for i, line in enumerate(lines) if "Kernel panic" in line), len(lines))
        return " / ".join(lines[max(0, panic - 3) : panic + 1]) or "(no output)"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- QEMU ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Qemu:
    binary: str
    kernel: guest_kernel.Kernel
    busybox: str

    @property
    def name(self) -> str:
        return f"QEMU (TCG) with Debian's kernel {self.kernel.version}"

    def argv(self, scratch: Path, rootdir: Path) -> list[str]:
        init = _write_init(
            scratch, session_script(self.busybox, scratch, rootdir, [], TCG_SLOWDOWN)
        )
        modules = _order(self.kernel.modules, QEMU_MODULES)
        initrd = scratch / "initramfs.cpio"
        initrd.write_bytes(
            guest_kernel.initramfs(qemu_init(scratch, init, modules), missing, modules)
        )
        cpus = min(2, os.cpu_count() or 1)
        return [
            self.binary,
            "-accel", "tcg",
            "-cpu", "max",
            "-smp", str(cpus),
            "-m", MEMORY,
            "-nodefaults", "-display", "none", "-nic", "none", "-no-reboot",
            "-serial", "stdio",
            "-kernel", str(self.kernel.vmlinuz),
            "-initrd", str(initrd),
            # mitigations=off: the guest runs nothing untrusted, and page-table isolation
            # would add to the cost of every system call, already high under emulation.
            "-append", "console=ttyS0 panic=-1 quiet mitigations=off",
            "-virtfs", f"local,path=/,mount_tag=root,readonly=on,{SHARE}",
            "-virtfs", f"local,path={scratch},mount_tag=scratch,{SHARE}",
        ]  # fmt: skip


def qemu_init(scratch: Path, init: Path, modules: list[Path]) -> str:
    """The initramfs's /init: load the modules, mount the shares, switch to the host's `/`."""
    s = shlex.quote(str(scratch))
    lines = [
        "#!/bin/sh",
        "bb=/bin/busybox",
        *(
            f"$bb insmod /modules/{path.name} || echo 'insmod {path.name} failed'"
            for path in modules
        ),
        "$bb mkdir /newroot",
        # cache=loose: the root is read-only, so what the guest reads once stays true, and
        # Python's many stat() and open() calls need not each cross to the host.
        f"$bb mount -t 9p -o {NINE_P},ro,cache=loose root /newroot",
        f"$bb mount -t 9p -o {NINE_P} scratch /newroot{s}",
        "$bb mount -t devtmpfs devtmpfs /newroot/dev",
        # Should any of this fail, init exits and the kernel panics: the guest stops.
        f"exec $bb switch_root /newroot {shlex.quote(str(init))}",
        "",
    ]
    return "\n".join(lines)


def find_qemu(why_not_uml: str) -> Qemu:
    binary = shutil.which(QEMU)
    busybox = shutil.which("busybox")
    if binary is None or busybox is None:
        install = "apt-get install qemu-system-x86 busybox-static"
        missing(f"{why_not_uml}; and no {QEMU} or busybox ({install})")

    def fail(why: str) -> NoReturn:
        missing(f"{why_not_uml}; and {why}")

    kernel = guest_kernel.debian_kernel(KERNEL_PACKAGE, KERNEL_DIR, fail, QEMU_MODULES)
    return Qemu(binary=binary, kernel=kernel, busybox=busybox)


def find_machine() -> Uml | Qemu:
    uml = find_uml()
    return uml if isinstance(uml, Uml) else find_qemu(uml)


# -- a run, seen from the host -------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    # "passed", "failed" or "skipped".
    outcome: str
    # pytest's report of the failure or the skip's reason; empty when passed.
    report: str


@dataclass(frozen=True)
class GuestRun:
    # Which guest ran the tests: "User-mode Linux 6.1.176", ...
    machine: str
    results: dict[str, Outcome]
    log: str
    console: str
    seconds: float

    def check(self, nodeid: str) -> None:
        """Fail as `nodeid` failed in the guest (skip as it skipped); pass as it passed."""
        found = self.results.get(nodeid)
        where = f"under {self.machine}"
        if found is None:
            pytest.fail(
                f"{nodeid} did not report from its run {where} ({self.seconds:.0f} s).\n"
                f"pytest's output there:\n{self.log[-4000:] or '(none)'}\n"
                f"the guest's console:\n{self.console[-3000:] or '(none)'}",
                pytrace=False,
            )
        if found.outcome == "skipped":
            missing(f"{nodeid} skipped {where}: {found.report}")
        if found.outcome != "passed":
            pytest.fail(f"{nodeid} {found.outcome} {where}:\n{found.report}", pytrace=False)


def run_tests(nodeids: list[str], rootdir: Path, *, timeout: float = RUN_TIMEOUT) -> GuestRun:
    """Run the tests `nodeids` (relative to `rootdir`) in a guest; blocks until it is off."""
    machine = find_machine()
    started = time.monotonic()
    # Not under /tmp: the guest sees the host's files, and should a test there ever mount
    # over /tmp, this directory would be hidden.
    scratch = Path(tempfile.mkdtemp(prefix="abiquo-vlan-", dir="/var/tmp"))
    try:
        (scratch / "request.json").write_text(json.dumps({"nodeids": nodeids}))
        ended = boot(machine.argv(scratch, rootdir), scratch / "console.log", timeout)
        seconds = time.monotonic() - started
        results: dict[str, Outcome] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            raw = json.loads((scratch / "results.json").read_text())
            results = {nodeid: Outcome(**found) for nodeid, found in raw.items()}
        console_text = _read(scratch / "console.log")
        if not ended:
            console_text += f"\n(killed after {timeout:.0f} s)"
        return GuestRun(
            machine=machine.name,
            results=results,
            log=_read(scratch / "pytest.log"),
            console=console_text,
            seconds=seconds,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def boot(argv: list[str], console: Path, timeout: float) -> bool:
    """Run a guest until it is off, its console to `console`; False if killed at `timeout`."""
    with console.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own process group: UML's helper processes go with it.
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


# -- a run, seen from the guest -------------------------------------------------------------


class Recorder:
    """A pytest plugin keeping each test's outcome over its set-up, call and tear-down."""

    def __init__(self, into: Path) -> None:
        self.into = into
        self.results: dict[str, dict[str, str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        known = self.results.get(report.nodeid)
        if known is not None and known["outcome"] != "passed":
            return  # the first failure or skip is the one that tells
        if report.failed:
            outcome = "failed" if report.when == "call" else f"failed in {report.when}"
            self.results[report.nodeid] = {"outcome": outcome, "report": report.longreprtext}
        elif report.skipped:
            reason: Any = report.longrepr
            text = reason[2] if isinstance(reason, tuple) else report.longreprtext
            self.results[report.nodeid] = {"outcome": "skipped", "report": str(text)}
        elif report.when == "call":
            self.results[report.nodeid] = {"outcome": "passed", "report": ""}

    def pytest_sessionfinish(self) -> None:
        self.into.write_text(json.dumps(self.results))


def main(scratch: Path) -> int:
    nodeids = json.loads((scratch / "request.json").read_text())["nodeids"]
    loopguard.LIMIT *= int(os.environ.get(SLOWDOWN, "1"))
    recorder = Recorder(scratch / "results.json")
    # No cache: the checkout is read-only here. Nor the plugins that the VLAN tests do not
    # use and whose imports are most of pytest's start, a dozen seconds under emulation.
    unused = ["-p", "no:cacheprovider", "-p", "no:schemathesis", "-p", "no:hypothesispytest"]
    code = pytest.main([*nodeids, *unused], plugins=[recorder])
    return int(code)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
