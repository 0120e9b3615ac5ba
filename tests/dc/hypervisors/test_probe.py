"""The probe against real local servers: an AIM, a libvirt port, vSphere, XAPI, WinRM."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from abiquo_dc.hypervisors.probe import ProbePorts, probe
from abiquo_dc.protocol.definitions import HypervisorType
from aim import contract as aim_contract
from aim.agent import AgentGroup
from aim.server import ThriftServer
from aim.settings import AimSettings, LibvirtSettings, ListenSettings
from tests import services

LOCAL = "127.0.0.1"

VIM_VERSIONS = (
    '<?xml version="1.0" encoding="UTF-8" ?><namespaces version="1.0">'
    "<namespace><name>urn:vim25</name><version>8.0.2.0</version></namespace></namespaces>"
)
XAPI_FAILURE = (
    "<?xml version='1.0'?><methodResponse><params><param><value><struct>"
    "<member><name>Status</name><value>Failure</value></member>"
    "<member><name>ErrorDescription</name><value><array><data>"
    "<value>SESSION_AUTHENTICATION_FAILED</value></data></array></value></member>"
    "</struct></value></param></params></methodResponse>"
)


def closed_port() -> int:
    """A port nothing listens on (free a moment ago)."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return int(sock.getsockname()[1])


def ports(**given: int) -> ProbePorts:
    """Every probe pointed at a closed port but those given: the usual ports of this
    machine may have something on them."""
    closed = closed_port()
    names = ("aim", "libvirt", "vsphere", "xapi", "winrm")
    return ProbePorts(**{name: given.get(name, closed) for name in names})


@pytest.fixture(scope="session")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server context with a self-signed certificate, as hypervisors ship."""
    services.require_tool("openssl", "openssl")
    d: Path = tmp_path_factory.mktemp("probe-tls")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", "key.pem", "-out", "cert.pem", "-subj", "/CN=esxi.local"),
        ],
        cwd=d,
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(d / "cert.pem", d / "key.pem")
    return context


@contextlib.asynccontextmanager
async def http_server(
    routes: list[web.RouteDef], context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LOCAL, 0, ssl_context=context)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def aim_server(libvirt_uri: str = "qemu:///system") -> AsyncIterator[int]:
    contract = aim_contract.load()
    listen = ListenSettings(host=LOCAL, port=0)
    settings = AimSettings(listen=listen, libvirt=LibvirtSettings(uri=libvirt_uri))
    server = ThriftServer(
        contract=contract,
        groups=[AgentGroup(contract=contract, settings=settings)],
        listen=listen,
        partial=True,
    )
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop_accepting()
        await server.drain()
        await server.close()


@contextlib.asynccontextmanager
async def tcp_listener() -> AsyncIterator[int]:
    """Accepts a connection and closes it, as libvirtd would before any RPC."""

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, LOCAL, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listener whose connections the kernel accepts and nobody ever answers."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


async def vim_versions(_: web.Request) -> web.Response:
    return web.Response(text=VIM_VERSIONS, content_type="text/xml")


async def xmlrpc(request: web.Request) -> web.Response:
    body = await request.text()
    assert "session.login_with_password" in body
    return web.Response(text=XAPI_FAILURE, content_type="text/xml")


async def wsman(_: web.Request) -> web.Response:
    return web.Response(status=401, headers={"WWW-Authenticate": "Negotiate"})


async def test_aim_is_kvm() -> None:
    async with aim_server() as port:
        assert await probe(LOCAL, timeout=3, ports=ports(aim=port)) is HypervisorType.KVM


async def test_aim_on_xen_is_xen() -> None:
    async with aim_server("xen:///system") as port:
        assert await probe(LOCAL, timeout=3, ports=ports(aim=port)) is HypervisorType.XEN_3


async def test_libvirt_port_without_aim_is_kvm() -> None:
    async with tcp_listener() as port:
        assert await probe(LOCAL, timeout=3, ports=ports(libvirt=port)) is HypervisorType.KVM


async def test_vsphere(tls_context: ssl.SSLContext) -> None:
    route = web.get("/sdk/vimServiceVersions.xml", vim_versions)
    async with http_server([route], tls_context) as port:
        found = await probe(LOCAL, timeout=3, ports=ports(vsphere=port))
    assert found is HypervisorType.VMX_04


async def test_an_https_server_without_the_sdk_is_not_vsphere(
    tls_context: ssl.SSLContext,
) -> None:
    async with http_server([], tls_context) as port:
        assert await probe(LOCAL, timeout=3, ports=ports(vsphere=port)) is None


async def test_xapi(tls_context: ssl.SSLContext) -> None:
    async with http_server([web.post("/", xmlrpc)], tls_context) as port:
        found = await probe(LOCAL, timeout=3, ports=ports(xapi=port))
    assert found is HypervisorType.XENSERVER


async def test_winrm() -> None:
    async with http_server([web.post("/wsman", wsman)]) as port:
        found = await probe(LOCAL, timeout=3, ports=ports(winrm=port))
    assert found is HypervisorType.HYPERV_301


async def test_the_best_ranked_answer_wins() -> None:
    async with (
        aim_server() as aim,
        tcp_listener() as libvirt,
        http_server([web.post("/wsman", wsman)]) as winrm,
    ):
        given = ports(aim=aim, libvirt=libvirt, winrm=winrm)
        assert await probe(LOCAL, timeout=3, ports=given) is HypervisorType.KVM


async def test_nothing_listening_is_none_within_the_timeout() -> None:
    started = time.monotonic()
    assert await probe(LOCAL, timeout=1, ports=ports()) is None
    assert time.monotonic() - started < 1.5


async def test_a_silent_listener_is_none_within_the_timeout(silent_port: int) -> None:
    silent = dict.fromkeys(("aim", "vsphere", "xapi", "winrm"), silent_port)
    started = time.monotonic()
    assert await probe(LOCAL, timeout=0.5, ports=ports(**silent)) is None
    assert 0.4 <= time.monotonic() - started < 1.5
