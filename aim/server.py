"""The AIM's thrift server: asyncio, framed transport, binary protocol.

Shutdown stages: stop accepting closes the listening socket; drain gives the calls in
progress their time; close releases what the handler holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from thriftpy2.contrib.aio.processor import TAsyncProcessor
from thriftpy2.contrib.aio.protocol.binary import TAsyncBinaryProtocolFactory
from thriftpy2.contrib.aio.server import TAsyncServer
from thriftpy2.contrib.aio.socket import TAsyncServerSocket
from thriftpy2.contrib.aio.transport.framed import TAsyncFramedTransportFactory

from abiquo_runtime.shutdown import Stage, three_stages
from aim import contract
from aim.handler import AimHandler
from aim.settings import AimSettings


class AimServer:
    def __init__(self, settings: AimSettings) -> None:
        self.settings = settings
        self.contract = contract.load()
        self.handler = AimHandler(contract=self.contract, settings=settings)
        self._server: Any = None
        self._listener: asyncio.AbstractServer | None = None

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the AIM is not listening")
        sockets = getattr(self._listener, "sockets", None) or ()
        for sock in sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("the AIM has no listening socket")

    async def start(self) -> None:
        listen = self.settings.listen
        # Built from its parts rather than with make_server, which refuses port 0 (a
        # free port, as all-in-one and the tests ask for).
        sock = TAsyncServerSocket(
            host=listen.host, port=listen.port, client_timeout=listen.client_timeout_ms
        )
        self._server = TAsyncServer(
            TAsyncProcessor(self.contract.Aim, self.handler),  # type: ignore[no-untyped-call]
            sock,
            itrans_factory=TAsyncFramedTransportFactory(),
            iprot_factory=TAsyncBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
            loop=asyncio.get_running_loop(),
        )
        self._server.trans.listen()
        self._listener = await self._server.trans.accept(self._server.handle)

    async def stop_accepting(self) -> None:
        if self._listener is not None:
            self._listener.close()

    async def drain(self) -> None:
        if self._listener is not None:
            await self._listener.wait_closed()

    async def close(self) -> None:
        self._listener = None

    def shutdown_stages(self) -> Sequence[Stage]:
        return three_stages(
            self.settings.shutdown,
            stop_accepting=[("thrift listener", self.stop_accepting)],
            drain=[("thrift calls", self.drain)],
            close=[("handler", self.close)],
        )
