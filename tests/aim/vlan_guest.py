"""A kernel that makes 802.1Q interfaces, for the VLAN tests on a host whose kernel cannot.

Some hosts run a kernel with neither 8021q built in nor loadable modules (a Firecracker
guest's, for one): `ip link add ... type vlan` fails there, whatever is installed. The
tests that need 802.1Q then run under User-mode Linux: Debian's `user-mode-linux` package
is a Linux kernel built as an ordinary program (`linux.uml`), with 8021q, bridge, dummy
and veth among its modules. It needs no virtualisation support and boots in about a
second, where a QEMU guest in software emulation takes tens of seconds to boot and runs
Python several times slower.

One run of the guest, for a list of pytest test ids:

- A scratch directory /var/tmp/abiquo-vlan-XXXX holds the ids (request.json) and the
  guest's first process, `init`, a shell script written here.
- The guest's root file system is the host's own `/` through hostfs, read-only: it runs the
  host's Python, the project's virtualenv and this checkout as they are, with nothing
  built or copied. Nothing of the host is written: /run is a tmpfs in the guest (`ip
  netns` keeps its namespaces there, and TMPDIR and HOME point into it), and only the
  scratch directory is mounted writable (over itself, so its path is the same inside).
- `init` mounts proc and sysfs, loads the modules with busybox's insmod in the order
  modules.dep gives (the host has no kmod, and the guest's kernel finds no module tree
  of its own to load from on demand), brings `lo` up (the tests' thrift client reaches
  its server on 127.0.0.1), runs `python -m tests.aim.vlan_guest <scratch>`, then powers
  the guest off.
- That runs pytest on the ids with ABIQUO_VLAN_GUEST=1 in the environment (so a test
  knows it is inside and never starts another guest) and writes each test's outcome, with
  pytest's report of it, to results.json; pytest's own output goes to pytest.log and the
  kernel's console to console.log. The host reads the three and removes the directory.

Needs `linux.uml` and its modules (apt-get install user-mode-linux) and busybox
(busybox-static). Missing either, the tests skip, or fail with CI=true, saying so.
"""

from __future__ import annotations

import contextlib
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

from tests import services

INSIDE = "ABIQUO_VLAN_GUEST"
UML = "linux.uml"
UML_MODULES = Path("/usr/lib/uml/modules")
# What the VLAN tests make: 802.1Q interfaces, bridges, and dummy or veth parents.
MODULES = ("8021q", "bridge", "dummy", "veth")
# The guest's memory is a sparse file on the host: only what it touches is used.
MEMORY = "512M"
# A run takes about 10 s on an idle 2-core host. The bound stays under pytest-timeout's
# 300 s for the test whose set-up starts the guest, so a hung guest is reported as such.
RUN_TIMEOUT = 240.0


def inside() -> bool:
    """Whether this process is the test run inside the guest."""
    return os.environ.get(INSIDE) == "1"


def missing(why: str) -> NoReturn:
    """Skip (fail with CI=true, like the services) a test that this host cannot run."""
    message = f"no kernel that makes 802.1Q interfaces is available: {why}"
    if services.CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# -- the kernel -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Uml:
    binary: str
    version: str
    # /usr/lib/uml/modules/<version>, with modules.dep.
    modules: Path
    busybox: str


def find_uml() -> Uml:
    binary = shutil.which(UML)
    if binary is None:
        missing(f"no {UML} (apt-get install user-mode-linux)")
    busybox = shutil.which("busybox")
    if busybox is None:
        missing("no busybox (apt-get install busybox-static)")
    done = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    version = done.stdout.strip()
    modules = UML_MODULES / version
    if done.returncode != 0 or not version or not (modules / "modules.dep").is_file():
        missing(f"`{UML} --version` says {version!r}, and {modules}/modules.dep is not there")
    return Uml(binary=binary, version=version, modules=modules, busybox=busybox)


def load_order(modules: Path, names: tuple[str, ...]) -> list[Path]:
    """The module files to insert for `names`, each after the modules it needs.

    modules.dep has a line per module, "kernel/net/8021q/8021q.ko: kernel/net/802/garp.ko
    ...", listing everything it needs. Those built into the kernel (modules.builtin) need
    no loading.
    """

    def name_of(path: str) -> str:
        # Module names treat "-" and "_" alike (crc-ccitt.ko is the module crc_ccitt).
        return Path(path).name.split(".ko")[0].replace("-", "_")

    needs: dict[str, list[str]] = {}
    files: dict[str, Path] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        path, _, deps = line.partition(":")
        if path:
            files[name_of(path)] = modules / path
            needs[name_of(path)] = [name_of(dep) for dep in deps.split()]
    builtin_list = modules / "modules.builtin"
    builtin = (
        {name_of(line) for line in builtin_list.read_text().split()}
        if builtin_list.is_file()
        else set()
    )
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in files:
            missing(f"the module {name} is not in {modules}/modules.dep")
        for dep in needs[name]:
            visit(dep)
        order.append(files[name])

    for name in names:
        visit(name.replace("-", "_"))
    return order


def init_script(uml: Uml, scratch: Path, rootdir: Path) -> str:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/run/home",
        "TMPDIR": "/run/tmp",
        "LANG": "C.UTF-8",
        # The checkout is read-only in the guest: no bytecode caches to write.
        "PYTHONDONTWRITEBYTECODE": "1",
        INSIDE: "1",
        # The run inside fails rather than skips exactly when the one outside would.
        "CI": os.environ.get("CI", ""),
    }
    bb = shlex.quote(uml.busybox)
    s = shlex.quote(str(scratch))
    lines = [
        f"#!{uml.busybox} sh",
        *(f"export {key}={shlex.quote(value)}" for key, value in env.items()),
        f"{bb} mount -t proc proc /proc",
        f"{bb} mount -t sysfs sysfs /sys",
        f"{bb} mount -t tmpfs -o mode=0755 tmpfs /run",
        f"{bb} mkdir -p /run/home /run/tmp",
        f"{bb} chmod 1777 /run/tmp",
        f"{bb} mount -t hostfs -o {s} none {s}",
        *(
            f"{bb} insmod {shlex.quote(str(path))} || echo 'insmod {path.name} failed'"
            for path in load_order(uml.modules, MODULES)
        ),
        "ip link set lo up",
        f"cd {shlex.quote(str(rootdir))}",
        f"{shlex.quote(sys.executable)} -m tests.aim.vlan_guest {s} > {s}/pytest.log 2>&1",
        # Reached whatever happened above: init must not exit, or the kernel panics.
        f"{bb} poweroff -f",
        "",
    ]
    return "\n".join(lines)


# -- a run, seen from the host -------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    # "passed", "failed" or "skipped".
    outcome: str
    # pytest's report of the failure or the skip's reason; empty when passed.
    report: str


@dataclass(frozen=True)
class GuestRun:
    version: str
    results: dict[str, Outcome]
    log: str
    console: str
    seconds: float

    def check(self, nodeid: str) -> None:
        """Fail as `nodeid` failed in the guest (skip as it skipped); pass as it passed."""
        found = self.results.get(nodeid)
        where = f"under User-mode Linux {self.version}"
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
    uml = find_uml()
    started = time.monotonic()
    # Not under /tmp: the guest sees the host's files, and should a test there ever mount
    # over /tmp, this directory would be hidden.
    scratch = Path(tempfile.mkdtemp(prefix="abiquo-vlan-", dir="/var/tmp"))
    try:
        (scratch / "request.json").write_text(json.dumps({"nodeids": nodeids}))
        init = scratch / "init"
        init.write_text(init_script(uml, scratch, rootdir))
        init.chmod(0o755)
        argv = [
            uml.binary,
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
        with (scratch / "console.log").open("wb") as console:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                # Its own process group: the kernel's helper processes go with it.
                start_new_session=True,
            )
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            finally:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        seconds = time.monotonic() - started
        results: dict[str, Outcome] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            raw = json.loads((scratch / "results.json").read_text())
            results = {nodeid: Outcome(**found) for nodeid, found in raw.items()}
        console_text = _read(scratch / "console.log")
        if seconds >= timeout:
            console_text += f"\n(killed after {timeout:.0f} s)"
        return GuestRun(
            version=uml.version,
            results=results,
            log=_read(scratch / "pytest.log"),
            console=console_text,
            seconds=seconds,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
    recorder = Recorder(scratch / "results.json")
    # No cache: the checkout is read-only here.
    code = pytest.main([*nodeids, "-p", "no:cacheprovider"], plugins=[recorder])
    return int(code)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
