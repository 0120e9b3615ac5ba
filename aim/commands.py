"""Running the host's tools (ip, iscsiadm) without blocking the loop or leaving them behind.

A command that outlives its timeout, or whose caller is cancelled, is killed and reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


class CommandError(Exception):
    """The command could not be run, or did not finish in time."""


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


async def run(argv: list[str], *, timeout: float) -> Completed:
    """Run `argv` (no shell) with no input; its exit status is the caller's to judge."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise CommandError(f"cannot run {argv[0]}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        if isinstance(exc, TimeoutError):
            raise CommandError(f"{' '.join(argv)} took over {timeout:g} s") from None
        raise
    return Completed(
        process.returncode if process.returncode is not None else -1,
        out.decode(errors="replace"),
        err.decode(errors="replace").strip(),
    )
