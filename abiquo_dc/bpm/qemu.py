"""qemu-img, run as asyncio subprocesses: the loop never waits on it.

Each run is the leader of a process group of its own, so that a kill (a cancellation, a
timeout, the BPM stopping) reaches whatever it started too, a wrapper script's qemu-img
included. `convert` and `compare` run with -p: their progress lines ("    (42.00/100%)"
ended by a carriage return) are parsed as they come and handed to a callback; the rest
of their output is kept (its end) for the error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abiquo_dc.bpm.errors import (
    Cancelled,
    ConversionTimeout,
    QemuImgFailed,
    QemuImgMissing,
    Unreadable,
    VerificationFailed,
)
from abiquo_dc.bpm.formats import Target

Progress = Callable[[float], Awaitable[None]]

_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_LINE_END = re.compile(rb"[\r\n]")
# The end of a run's output kept for its error message.
_KEPT = 4096
# `info` and `check` read headers and metadata, not the whole disk: past this, the
# repository (NFS) is hanging.
METADATA_TIMEOUT = 300.0
# qemu-img check: no errors; "this format has no check".
_CHECK_OK, _CHECK_UNSUPPORTED = 0, 63
# qemu-img compare: identical; different (2 and more: it could not compare).
_SAME, _DIFFERENT = 0, 1


class Cancellation:
    """Asked for by whoever cancels a conversion; kills the qemu-img running for it."""

    def __init__(self) -> None:
        self.requested = False
        self._process: asyncio.subprocess.Process | None = None

    def cancel(self) -> None:
        self.requested = True
        if self._process is not None:
            _kill(self._process)

    def check(self) -> None:
        """Between steps: raise Cancelled once a cancellation was asked for."""
        if self.requested:
            raise Cancelled("the conversion was cancelled")

    def running(self, process: asyncio.subprocess.Process | None) -> None:
        """The qemu-img a cancellation kills from now on (None: none is running); killed
        at once when the cancellation came while it was being started."""
        self._process = process
        if process is not None and self.requested:
            _kill(process)


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str


class QemuImg:
    def __init__(self, executable: str = "qemu-img") -> None:
        self.executable = executable

    # -- the commands ------------------------------------------------------------------

    async def info(self, path: Path, *, driver: str | None = None) -> dict[str, Any]:
        """`qemu-img info --output=json`; without `driver`, qemu-img probes the format
        (for reading only: what is written or converted is always named with -f)."""
        args = ["info", "--output=json", *(["-f", driver] if driver else []), str(path)]
        async with _bounded("info", METADATA_TIMEOUT):
            done = await self._run(args, merge_output=False)
        if done.returncode != 0:
            raise Unreadable(f"qemu-img cannot read {path.name}: {_last_line(done.output)}")
        try:
            found = json.loads(done.output)
        except ValueError:
            raise Unreadable(f"qemu-img info {path.name} answered no JSON") from None
        if not isinstance(found, dict):
            raise Unreadable(f"qemu-img info {path.name} answered no JSON object")
        return found

    async def convert(
        self,
        source: Path,
        source_driver: str,
        target_path: Path,
        target: Target,
        *,
        progress: Progress | None = None,
        cancellation: Cancellation | None = None,
    ) -> None:
        args = ["convert", "-p", "-f", source_driver, "-O", target.driver]
        if target.options:
            args += ["-o", ",".join(target.options)]
        args += [str(source), str(target_path)]
        done = await self._run(args, progress=progress, cancellation=cancellation)
        if done.returncode != 0:
            raise QemuImgFailed(
                f"qemu-img convert to {target.format.value} failed "
                f"(exit {done.returncode}): {_last_line(done.output)}"
            )

    async def check(
        self, path: Path, driver: str, *, cancellation: Cancellation | None = None
    ) -> bool:
        """`qemu-img check`: False when the format has no check; raises on any finding."""
        async with _bounded("check", METADATA_TIMEOUT):
            done = await self._run(["check", "-f", driver, str(path)], cancellation=cancellation)
        if done.returncode == _CHECK_UNSUPPORTED:
            return False
        if done.returncode != _CHECK_OK:
            raise VerificationFailed(
                f"qemu-img check of the {driver} image found problems "
                f"(exit {done.returncode}): {_last_line(done.output)}"
            )
        return True

    async def compare(
        self,
        first: Path,
        first_driver: str,
        second: Path,
        second_driver: str,
        *,
        progress: Progress | None = None,
        cancellation: Cancellation | None = None,
    ) -> None:
        """`qemu-img compare`: raises VerificationFailed unless the guest sees the same
        bytes in both (not strict: allocation may differ between formats)."""
        args = ["compare", "-p", "-f", first_driver, "-F", second_driver, str(first), str(second)]
        done = await self._run(args, progress=progress, cancellation=cancellation)
        if done.returncode == _SAME:
            return
        if done.returncode == _DIFFERENT:
            raise VerificationFailed(
                f"the converted disk differs from its source: {_last_line(done.output)}"
            )
        raise VerificationFailed(
            f"qemu-img compare could not compare (exit {done.returncode}): "
            f"{_last_line(done.output)}"
        )

    # -- running it ----------------------------------------------------------------------

    async def _run(
        self,
        args: list[str],
        *,
        merge_output: bool = True,
        progress: Progress | None = None,
        cancellation: Cancellation | None = None,
    ) -> Result:
        if cancellation is not None:
            cancellation.check()
        try:
            process = await asyncio.create_subprocess_exec(
                self.executable,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT if merge_output else asyncio.subprocess.PIPE,
                start_new_session=True,
                # Messages in one language, whatever the machine's locale.
                env={**os.environ, "LC_ALL": "C"},
            )
        except FileNotFoundError:
            raise QemuImgMissing(
                f"{self.executable} is not installed (apt-get install qemu-utils)"
            ) from None
        if cancellation is not None:
            cancellation.running(process)
        try:
            if merge_output:
                output = await _read_progress(process, progress)
                returncode = await process.wait()
            else:
                out, err = await process.communicate()
                returncode = process.returncode if process.returncode is not None else -1
                output = (
                    out.decode(errors="replace")
                    if returncode == 0
                    else err.decode(errors="replace")
                )
        finally:
            if cancellation is not None:
                cancellation.running(None)
            if process.returncode is None:
                # Cancelled or timed out while it ran: it must not write on behind our back.
                _kill(process)
                await process.wait()
        if cancellation is not None:
            cancellation.check()
        return Result(returncode, output)


async def _read_progress(process: asyncio.subprocess.Process, progress: Progress | None) -> str:
    assert process.stdout is not None
    pending = b""
    kept = bytearray()
    while True:
        chunk = await process.stdout.read(65536)
        if not chunk:
            break
        *lines, pending = _LINE_END.split(pending + chunk)
        for line in lines:
            found = _PROGRESS.search(line)
            if found is not None:
                if progress is not None:
                    await progress(min(100.0, float(found[1])))
            elif line.strip():
                kept += line.strip() + b"\n"
                del kept[:-_KEPT]
    if pending.strip() and _PROGRESS.search(pending) is None:
        kept += pending.strip()
    return kept.decode(errors="replace")


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


@contextlib.asynccontextmanager
async def _bounded(what: str, timeout: float) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError:
        raise ConversionTimeout(
            f"qemu-img {what} did not finish in {timeout:.0f}s (is the repository hanging?)"
        ) from None
