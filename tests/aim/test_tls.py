"""The AIM over TLS: only clients with a certificate from the datacenter's CA get in."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from thriftpy2.contrib.aio.protocol.binary import TAsyncBinaryProtocolFactory
from thriftpy2.contrib.aio.rpc import make_client
from thriftpy2.contrib.aio.transport.framed import TAsyncFramedTransportFactory

from aim.agent import AgentGroup
from aim.server import ThriftServer
from aim.settings import AimSettings, ListenSettings, TlsSettings
from tests import services


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(name: str, d: Path) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        cwd=d,
    )


def make_cert(name: str, ca: str, d: Path, *, server: bool) -> None:
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        cwd=d,
    )
    ext = d / f"{name}.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        if server
        else "extendedKeyUsage=clientAuth\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext.name,
        "-out",
        f"{name}.pem",
        cwd=d,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    services.require_tool("openssl", "openssl")
    d = tmp_path_factory.mktemp("pki")
    make_ca("dc-ca", d)
    make_ca("other-ca", d)
    make_cert("aim", "dc-ca", d, server=True)
    make_cert("dc", "dc-ca", d, server=False)
    make_cert("rogue", "other-ca", d, server=False)
    return Pki(
        d / "dc-ca.pem",
        d / "aim.pem",
        d / "aim.key",
        d / "dc.pem",
        d / "dc.key",
        d / "rogue.pem",
        d / "rogue.key",
    )


def client_context(pki: Pki, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


async def call(
    contract: ModuleType, port: int, context: ssl.SSLContext, timeout_ms: int = 10_000
) -> str:
    client = await make_client(
        contract.Aim,
        "127.0.0.1",
        port,
        trans_factory=TAsyncFramedTransportFactory(),
        proto_factory=TAsyncBinaryProtocolFactory(),
        ssl_context=context,
        timeout=timeout_ms,
    )
    try:
        info = await client.getAgentInfo()
        return str(info.contractVersion)
    finally:
        client.close()


async def test_only_the_datacenters_clients_get_in(contract: ModuleType, pki: Pki) -> None:
    listen = ListenSettings(
        host="127.0.0.1",
        port=0,
        tls=TlsSettings(
            certfile=str(pki.server_cert), keyfile=str(pki.server_key), cafile=str(pki.ca)
        ),
    )
    server = ThriftServer(
        contract=contract,
        groups=[AgentGroup(contract=contract, settings=AimSettings())],
        listen=listen,
        partial=True,
    )
    await server.start()
    try:
        good = client_context(pki, pki.client_cert, pki.client_key)
        assert await call(contract, server.port, good) == contract.CONTRACT_VERSION
        for cert, key in ((None, None), (pki.rogue_cert, pki.rogue_key)):
            with pytest.raises(Exception):  # noqa: B017 - refused in the handshake or after
                # TLS 1.3 tells a refused client only when it reads: keep the wait short.
                await call(contract, server.port, client_context(pki, cert, key), 2_000)
        # And the server goes on serving the right client.
        assert await call(contract, server.port, good) == contract.CONTRACT_VERSION
    finally:
        await server.stop_accepting()
        await server.drain()
        await server.close()
