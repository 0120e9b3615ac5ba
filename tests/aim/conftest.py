"""Serving AIM groups over a real thrift server, and a real thriftpy2 client to call them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from types import ModuleType
from typing import Any

import pytest
from thriftpy2.contrib.aio.protocol.binary import TAsyncBinaryProtocolFactory
from thriftpy2.contrib.aio.rpc import make_client
from thriftpy2.contrib.aio.transport.framed import TAsyncFramedTransportFactory

from aim import contract as contract_module
from aim.server import ThriftServer
from aim.settings import ListenSettings


@pytest.fixture(scope="session")
def contract() -> ModuleType:
    return contract_module.load()


@contextlib.asynccontextmanager
async def serving(
    contract: ModuleType, groups: Sequence[Any], *, listen: ListenSettings | None = None
) -> AsyncIterator[Any]:
    """Start a thrift server for `groups` on a free port; yield a connected async client."""
    server = ThriftServer(
        contract=contract,
        groups=groups,
        listen=listen or ListenSettings(host="127.0.0.1", port=0),
        partial=True,
    )
    await server.start()
    client = await make_client(
        contract.Aim,
        "127.0.0.1",
        server.port,
        trans_factory=TAsyncFramedTransportFactory(),
        proto_factory=TAsyncBinaryProtocolFactory(),
        timeout=30_000,
    )
    try:
        yield client
    finally:
        client.close()
        await server.stop_accepting()
        await server.drain()
        await server.close()
