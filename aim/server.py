"""The AIM's thrift server: asyncio, framed transport, binary protocol, optional TLS.

Shutdown stages: stop accepting closes the listening socket; drain gives the calls in
progress their time; close releases what the groups hold (libvirt, tasks), in reverse.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from thriftpy2.contrib.aio.processor import TAsyncProcessor
from thriftpy2.contrib.aio.protocol.binary import TAsyncBinaryProtocolFactory
from thriftpy2.contrib.aio.server import TAsyncServer
from thriftpy2.contrib.aio.socket import TAsyncServerSocket
from thriftpy2.contrib.aio.transport.framed import TAsyncFramedTransportFactory

from abiquo_runtime.shutdown import Stage, three_stages
from aim import contract as contract_module
from aim.agent import AgentGroup
from aim.domains import DomainGroup
from aim.events import EventGroup
from aim.groups import Handler
from aim.iscsi import IscsiGroup
from aim.libvirt_host import LibvirtHost
from aim.metrics import MetricsGroup
from aim.pools import PoolGroup
from aim.rimp import RimpGroup
from aim.settings import AimSettings, ListenSettings
from aim.vlan import SimulatedVlanGroup, VlanGroup


def server_ssl_context(listen: ListenSettings) -> ssl.SSLContext | None:
    """TLS when a certificate is configured; client certificates required with a CA."""
    tls = listen.tls
    if not tls.certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.certfile, tls.keyfile or None)
    if tls.cafile:
        context.load_verify_locations(tls.cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class ThriftServer:
    """Serves `groups` as the Aim service on the configured address."""

    def __init__(
        self,
        *,
        contract: ModuleType,
        groups: Sequence[Any],
        listen: ListenSettings,
        partial: bool = False,
    ) -> None:
        self.contract = contract
        self.groups = list(groups)
        self.listen = listen
        self.handler = Handler(contract.Aim, self.groups, partial=partial)
        self._listener: asyncio.AbstractServer | None = None
        self._started: list[Any] = []

    @property
    def port(self) -> int:
        for sock in getattr(self._listener, "sockets", None) or ():
            return int(sock.getsockname()[1])
        raise RuntimeError("the AIM is not listening")

    async def start(self) -> None:
        for group in self.groups:
            await group.start()
            self._started.append(group)
        listen = self.listen
        # Built from its parts rather than with make_server, which refuses port 0 (a
        # free port, as all-in-one and the tests ask for).
        sock = TAsyncServerSocket(
            host=listen.host,
            port=listen.port,
            client_timeout=listen.client_timeout_ms,
            ssl_context=server_ssl_context(listen),
        )
        server = TAsyncServer(
            TAsyncProcessor(self.contract.Aim, self.handler),  # type: ignore[no-untyped-call]
            sock,
            itrans_factory=TAsyncFramedTransportFactory(),
            iprot_factory=TAsyncBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
            loop=asyncio.get_running_loop(),
        )
        sock.listen()  # type: ignore[no-untyped-call]
        self._listener = await sock.accept(server.handle)  # type: ignore[no-untyped-call]

    async def stop_accepting(self) -> None:
        if self._listener is not None:
            self._listener.close()

    async def drain(self) -> None:
        if self._listener is not None:
            await self._listener.wait_closed()

    async def close(self) -> None:
        self._listener = None
        while self._started:
            await self._started.pop().close()


class AimServer(ThriftServer):
    """The whole agent, as abiquo-aim runs it."""

    def __init__(self, settings: AimSettings) -> None:
        contract = contract_module.load()
        self.settings = settings
        libvirt = settings.libvirt
        # The libvirt host starts before the groups that use it and closes after them.
        host = LibvirtHost(
            libvirt.uri,
            threads=libvirt.threads,
            call_timeout=libvirt.call_timeout,
            remote_uri=libvirt.remote_uri,
            retry_delay=libvirt.retry_delay,
            max_retry_delay=libvirt.max_retry_delay,
        )
        super().__init__(
            contract=contract,
            groups=[
                AgentGroup(contract=contract, settings=settings),
                RimpGroup(contract=contract, settings=settings),
                IscsiGroup(contract=contract, settings=settings),
                (SimulatedVlanGroup if settings.network.simulated_vlans else VlanGroup)(
                    contract=contract, settings=settings
                ),
                host,
                DomainGroup(contract=contract, host=host),
                PoolGroup(contract=contract, host=host),
                MetricsGroup(
                    contract=contract,
                    host=host,
                    interval=settings.metrics.interval,
                    keep=settings.metrics.keep,
                ),
                EventGroup(contract=contract, host=host, history=settings.events.history),
            ],
            listen=settings.listen,
        )

    def shutdown_stages(self) -> Sequence[Stage]:
        return three_stages(
            self.settings.shutdown,
            stop_accepting=[("thrift listener", self.stop_accepting)],
            drain=[("thrift calls", self.drain)],
            close=[("groups", self.close)],
        )
