"""The parts of the tests' QEMU guests: a Debian kernel, its modules, a busybox initramfs.

- A kernel is taken out of Debian's package, fetched with `apt-get download` and unpacked
  with `dpkg-deb`, so that no kernel is installed on the host. It is cached as
  <root>/<version>/vmlinuz; the first run downloads the package, later runs reuse the file.
- With it, when asked for, the modules a guest loads: <root>/<version>/modules holds them,
  the ones they need, and a modules.dep of them in depmod's format (the package ships
  none: depmod writes it on installation), next to the package's modules.builtin.
  `load_order` reads such a directory, or any made by depmod (User-mode Linux's).
- An initramfs is busybox-static, /dev/console, an /init and the given modules, written
  by Python's stdlib as a cpio "newc" archive, so no cpio package is needed.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

# Where the fetched kernels are cached, each package in a directory of its own.
GUEST_DIR = Path(os.environ.get("ABIQUO_TEST_GUEST_DIR", "/var/tmp/abiquo-test-guest"))
BUSYBOX = Path("/bin/busybox")

# Skips or fails the test (with why), as its caller decides.
Fail = Callable[[str], NoReturn]


@dataclass(frozen=True)
class Kernel:
    vmlinuz: Path
    version: str

    @property
    def modules(self) -> Path:
        """The modules kept with it (when asked for): a tree with modules.dep."""
        return self.vmlinuz.parent / "modules"


class MissingModule(LookupError):
    """A module that is neither in a modules.dep nor built into the kernel."""


def debian_kernel(package: str, root: Path, fail: Fail, modules: Sequence[str] = ()) -> Kernel:
    """The newest kernel of `package` cached in `root`, with `modules`; else fetched."""
    root.mkdir(parents=True, exist_ok=True)
    for vmlinuz in sorted(root.glob("*/vmlinuz"), reverse=True):
        cached = Kernel(vmlinuz=vmlinuz, version=vmlinuz.parent.name)
        try:
            if modules:
                load_order(cached.modules, modules)
            return cached
        except MissingModule:
            break  # cached for another list of modules: fetched again, with these
    return download_kernel(package, root, fail, modules)


def download_kernel(package: str, root: Path, fail: Fail, modules: Sequence[str] = ()) -> Kernel:
    """Take the kernel (and `modules`) out of Debian's `package` without installing it."""
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool) is None:
            fail(f"no {tool} to fetch {package}")
    depends = subprocess.run(
        ["apt-cache", "depends", package], capture_output=True, text=True, check=False
    ).stdout
    # The metapackage depends on the versioned package that holds the files.
    versioned = next(
        (
            line.split(":", 1)[1].strip()
            for line in depends.splitlines()
            if line.strip().startswith("Depends: linux-image-")
        ),
        None,
    )
    if versioned is None:
        fail(f"apt knows no {package} (apt-get update?)")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        download = ["apt-get", "download", "-q", versioned]
        done = subprocess.run(download, cwd=scratch, capture_output=True, text=True, check=False)
        if done.returncode != 0 and os.geteuid() == 0:
            # Stale package lists name a version the mirror no longer has: refresh, retry.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            done = subprocess.run(
                download, cwd=scratch, capture_output=True, text=True, check=False
            )
        debs = list(Path(scratch).glob("*.deb"))
        if done.returncode != 0 or not debs:
            fail(f"apt-get download {versioned}: {done.stderr.strip()}")
        tree = Path(scratch) / "tree"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tree)], capture_output=True, check=True)
        found = sorted(tree.glob("boot/vmlinuz-*"))
        if not found:
            fail(f"no /boot/vmlinuz-* in {versioned}")
        version = found[0].name.removeprefix("vmlinuz-")
        target = root / version / "vmlinuz"
        if modules:
            try:
                _keep_modules(
                    tree / "lib" / "modules" / version, target.parent / "modules", modules
                )
            except MissingModule as error:
                fail(f"{versioned}: {error}")
        # Last: a cached vmlinuz is a complete entry, whoever reads the cache meanwhile.
        write_atomically(target, found[0].read_bytes())
        return Kernel(vmlinuz=target, version=version)


def module_name(path: str) -> str:
    # Module names treat "-" and "_" alike (crc-ccitt.ko is the module crc_ccitt).
    return Path(path).name.split(".ko")[0].replace("-", "_")


def _builtin(modules: Path) -> set[str]:
    listed = modules / "modules.builtin"
    return {module_name(line) for line in listed.read_text().split()} if listed.is_file() else set()


def _keep_modules(tree: Path, into: Path, names: Sequence[str]) -> None:
    """Copy `names` and what they need from a package's module tree, with a modules.dep."""
    files = {module_name(path.name): path for path in tree.glob("kernel/**/*.ko")}
    builtin = _builtin(tree)
    lines: dict[str, str] = {}

    def keep(name: str) -> None:
        if name in lines or name in builtin:
            return
        if name not in files:
            raise MissingModule(f"the module {name} is not in {tree}")
        lines[name] = ""
        data = files[name].read_bytes()
        # A module names the ones it needs in its .modinfo section: "depends=llc,stp".
        found = re.search(rb"\0depends=([^\0]*)\0", data)
        needs = [module_name(n) for n in (found[1].decode().split(",") if found else []) if n]
        for need in needs:
            keep(need)
        relative = files[name].relative_to(tree)
        write_atomically(into / relative, data)
        wanted = " ".join(str(files[n].relative_to(tree)) for n in needs if n not in builtin)
        lines[name] = f"{relative}: {wanted}".rstrip()

    for name in names:
        keep(module_name(name))
    if (tree / "modules.builtin").is_file():
        write_atomically(into / "modules.builtin", (tree / "modules.builtin").read_bytes())
    write_atomically(into / "modules.dep", ("\n".join(lines.values()) + "\n").encode())


def load_order(modules: Path, names: Sequence[str]) -> list[Path]:
    """The module files to insert for `names`, each after the modules it needs.

    modules.dep has a line per module, "kernel/net/8021q/8021q.ko: kernel/net/802/garp.ko
    ...", listing what it needs. Those built into the kernel (modules.builtin) need no
    loading. Raises MissingModule for one that is neither.
    """
    needs: dict[str, list[str]] = {}
    files: dict[str, Path] = {}
    listed = modules / "modules.dep"
    for line in listed.read_text().splitlines() if listed.is_file() else []:
        path, _, deps = line.partition(":")
        if path:
            files[module_name(path)] = modules / path
            needs[module_name(path)] = [module_name(dep) for dep in deps.split()]
    builtin = _builtin(modules)
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in files:
            raise MissingModule(f"the module {name} is not in {listed}")
        for dep in needs[name]:
            visit(dep)
        order.append(files[name])

    for name in names:
        visit(module_name(name))
    return order


def write_atomically(path: Path, data: bytes) -> None:
    # Concurrent test runs may build the same cache: each writes its own file and renames.
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    part.write_bytes(data)
    part.chmod(0o644)
    part.replace(path)


def cpio_newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks as its initramfs.

    Each entry is (name, mode with file type, data, rdev as major << 8 | minor). A header
    is "070701" and 13 eight-digit hex fields; name and data are padded to 4 bytes.
    """
    out = bytearray()

    def add(ino: int, name: str, mode: int, data: bytes, rdev: int) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(encoded), 0
        )  # fmt: skip
        out.extend(b"070701" + b"".join(b"%08x" % f for f in fields) + encoded)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        add(ino, name, mode, data, rdev)
    add(0, "TRAILER!!!", 0, b"", 0)
    return bytes(out)


def initramfs(init: str, fail: Fail, modules: Sequence[Path] = ()) -> bytes:
    """A cpio archive: static busybox, /dev/console, `init` as /init, modules in /modules."""
    if not BUSYBOX.is_file():
        fail(f"no {BUSYBOX} (apt-get install busybox-static)")
    busybox = BUSYBOX.read_bytes()
    # The guest's busybox runs with no libraries at all: a dynamic one would not start.
    if _is_dynamic(busybox):
        fail(f"{BUSYBOX} is not static (apt-get install busybox-static)")
    entries: list[tuple[str, int, bytes, int]] = [
        (d, 0o040755, b"", 0) for d in ("bin", "dev", "modules", "proc", "sys", "tmp")
    ]
    entries += [
        ("bin/busybox", 0o100755, busybox, 0),
        ("bin/sh", 0o120777, b"busybox", 0),
        # The kernel opens /dev/console for init's output before any devtmpfs exists.
        ("dev/console", 0o020600, b"", (5 << 8) | 1),
        ("init", 0o100755, init.encode(), 0),
    ]
    entries += [(f"modules/{path.name}", 0o100644, path.read_bytes(), 0) for path in modules]
    return cpio_newc(entries)


def _is_dynamic(elf: bytes) -> bool:
    # A dynamic ELF names its loader (PT_INTERP) near its start; a static one has none.
    return b"/lib64/ld-linux" in elf[:1024]
