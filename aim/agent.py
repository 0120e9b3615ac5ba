"""getAgentInfo: who answers here."""

from __future__ import annotations

import socket
from types import ModuleType
from typing import Any

from aim import __version__
from aim.settings import AimSettings


class AgentGroup:
    METHODS = ("getAgentInfo",)

    def __init__(self, *, contract: ModuleType, settings: AimSettings) -> None:
        self._contract = contract
        self._settings = settings

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def getAgentInfo(self) -> Any:
        return self._contract.AgentInfo(
            version=__version__,
            contractVersion=self._contract.CONTRACT_VERSION,
            hostname=socket.gethostname(),
            libvirtUri=self._settings.libvirt.uri,
        )
