"""The implementation of the Aim thrift service."""

from __future__ import annotations

import socket
from types import ModuleType
from typing import Any

from aim import __version__
from aim.settings import AimSettings


class AimHandler:
    def __init__(self, *, contract: ModuleType, settings: AimSettings) -> None:
        self._contract = contract
        self._settings = settings

    async def getAgentInfo(self) -> Any:
        return self._contract.AgentInfo(
            version=__version__,
            contractVersion=self._contract.CONTRACT_VERSION,
            hostname=socket.gethostname(),
            libvirtUri=self._settings.libvirt.uri,
        )
