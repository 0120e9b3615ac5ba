"""The iSCSI group: this host's initiator name, and rescans after a volume changed size.

iscsiadm is run with create_subprocess_exec (never a shell: target names come from the
network) and a timeout; target names are validated first, so that nothing that looks
like an option reaches its command line.

Error codes: ISCSI-IQN (the initiator name file is missing or malformed), ISCSI-INVALID
(a target name is not an iqn./eui. name), ISCSI-RESCAN (iscsiadm failed or timed out).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import structlog

from aim import commands
from aim.groups import raise_
from aim.settings import AimSettings

log = structlog.get_logger("aim.iscsi")

# RFC 3720 §3.2.6.3: iqn.<yyyy-mm>.<reversed domain>[:<anything unique>], at most 223
# bytes; eui.<16 hex digits>. The part after ':' is free-form but never whitespace.
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_IQN = re.compile(
    rf"iqn\.\d{{4}}-(?:0[1-9]|1[0-2])\.{_LABEL}(?:\.{_LABEL})*(?::[\x21-\x7e]+)?",
    re.IGNORECASE,
)
_EUI = re.compile(r"eui\.[0-9a-f]{16}", re.IGNORECASE)
MAX_NAME = 223

# iscsiadm's ISCSI_ERR_NO_OBJS_FOUND: no session (or node) to act on. A rescan with
# nothing logged in has nothing to do: that is not a failure.
NO_OBJECTS_FOUND = 21


def valid_name(name: str) -> bool:
    if len(name.encode()) > MAX_NAME:
        return False
    return bool(_IQN.fullmatch(name) or _EUI.fullmatch(name))


def parse_initiator_name(text: str) -> str | None:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep and key.strip() == "InitiatorName":
            value = value.strip()
            return value if valid_name(value) else None
    return None


class IscsiGroup:
    METHODS = ("getInitiatorIQN", "rescanISCSI")

    def __init__(
        self, *, contract: ModuleType, settings: AimSettings, timeout: float = 60.0
    ) -> None:
        """`timeout`: seconds one iscsiadm run may take before it is killed."""
        self._contract = contract
        self._settings = settings
        self._timeout = timeout

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _fail(self, code: str, message: str) -> NoReturn:
        raise_(self._contract.StorageException, code, message)

    async def getInitiatorIQN(self) -> str:
        path = Path(self._settings.iscsi.initiator_name_file)
        try:
            text = await asyncio.to_thread(path.read_text)
        except (OSError, UnicodeDecodeError) as exc:
            self._fail("ISCSI-IQN", f"cannot read {path}: {exc}")
        name = parse_initiator_name(text)
        if name is None:
            self._fail("ISCSI-IQN", f"{path} has no valid InitiatorName=")
        return name

    async def rescanISCSI(self, targets: list[str]) -> None:
        bad = [t for t in targets if not valid_name(t)]
        if bad:
            self._fail("ISCSI-INVALID", f"not iSCSI names: {bad!r}")
        if not targets:
            # No target named: every session this host has is rescanned.
            await self._iscsiadm("-m", "session", "--rescan")
            return
        for target in targets:
            await self._iscsiadm("-m", "node", "-T", target, "-R")

    async def _iscsiadm(self, *args: str) -> None:
        command = [self._settings.iscsi.iscsiadm, *args]
        try:
            done = await commands.run(command, timeout=self._timeout)
        except commands.CommandError as exc:
            self._fail("ISCSI-RESCAN", str(exc))
        stderr = done.stderr
        if done.returncode == 0:
            return
        if done.returncode == NO_OBJECTS_FOUND:
            log.info("nothing to rescan", command=command, stderr=stderr)
            return
        self._fail("ISCSI-RESCAN", f"{' '.join(command)} exited {done.returncode}: {stderr}")
