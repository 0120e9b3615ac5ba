"""An async client of abiquo-aim, the agent on KVM and Xen hosts (thrift, framed, binary).

The contract is loaded from aim/aim.thrift with thriftpy2: the `aim` package is another
program and never imported here (find_spec locates it without importing it).

thriftpy2's async client is one request at a time per connection, so the client keeps a
small pool: a call takes an idle connection (or opens one), and gives it back only when
the call ended cleanly; a connection that timed out or broke mid-call is closed, since
what is left unread on it is unknown. Every call is bounded by a timeout.

The AIM's errors carry stable codes and become the drivers' taxonomy here:
LIBVIRT-NOT-FOUND → VmNotFound, *-INVALID → InvalidDefinition, LIBVIRT-STATE →
WrongState, LIBVIRT-TIMEOUT, LIBVIRT-UNAVAILABLE (the AIM is up, its libvirtd is not)
and transport failures → HostUnreachable, the rest DriverFailure.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import ssl
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog
import thriftpy2
from thriftpy2.contrib.aio.protocol.binary import TAsyncBinaryProtocolFactory
from thriftpy2.contrib.aio.rpc import make_client
from thriftpy2.contrib.aio.transport.framed import TAsyncFramedTransportFactory
from thriftpy2.thrift import TApplicationException, TException
from thriftpy2.transport import TTransportException

from abiquo_dc.hypervisors.base import (
    DriverFailure,
    HostUnreachable,
    InvalidDefinition,
    VmNotFound,
    WrongState,
)
from abiquo_runtime.errors import AbiquoError

log = structlog.get_logger("abiquo_dc.hypervisors.aim_client")

AIM_PORT = 60084


@functools.cache
def load_contract() -> ModuleType:
    """The AIM's thrift contract, parsed once from the aim.thrift the AIM ships."""
    spec = importlib.util.find_spec("aim")
    if spec is None or spec.origin is None:
        raise DriverFailure("the AIM's contract (aim/aim.thrift) is not installed")
    path = Path(spec.origin).with_name("aim.thrift")
    return thriftpy2.load(str(path), module_name="aim_thrift")


class AimFailure(DriverFailure):
    """The AIM refused for a reason of its own; `aim_code` is its stable code."""

    def __init__(self, message: str, *, aim_code: str) -> None:
        super().__init__(message)
        self.aim_code = aim_code


def translate(exc: BaseException, *, what: str) -> AbiquoError:
    """The taxonomy's error for an exception of a call to the AIM."""
    if isinstance(exc, AbiquoError):
        return exc
    code = getattr(exc, "code", None)
    if isinstance(exc, TException) and isinstance(code, str):
        message = f"{what}: {getattr(exc, 'message', '') or code}"
        if code == "LIBVIRT-NOT-FOUND":
            return VmNotFound(message)
        if code.endswith("-INVALID"):
            return InvalidDefinition(message)
        if code == "LIBVIRT-STATE":
            return WrongState(message)
        if code in ("LIBVIRT-TIMEOUT", "LIBVIRT-UNAVAILABLE"):
            return HostUnreachable(message)
        return AimFailure(message, aim_code=code)
    if isinstance(exc, TApplicationException):
        # The AIM answered, but not with the contract's answer (unknown method, ...).
        return DriverFailure(f"{what}: {exc}")
    if isinstance(exc, (TTransportException, OSError, EOFError, TimeoutError)):
        return HostUnreachable(f"{what}: {type(exc).__name__}: {exc}")
    return DriverFailure(f"{what}: {type(exc).__name__}: {exc}")


def error_code(exc: BaseException) -> str:
    """The AIM's own code of a contract exception ("" for anything else)."""
    code = getattr(exc, "code", "")
    return code if isinstance(exc, TException) and isinstance(code, str) else ""


class _Broken(Exception):
    """The connection broke under a call; `error` is what the caller is told."""

    def __init__(self, error: AbiquoError) -> None:
        super().__init__(str(error))
        self.error = error


class AimClient:
    """Calls to one AIM: `await client.call("powerOn", uuid)`."""

    def __init__(
        self,
        host: str,
        port: int = AIM_PORT,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        pool_size: int = 4,
        max_idle: float = 15.0,
    ) -> None:
        """`max_idle`: seconds a connection is kept unused; below the AIM's own limit
        (listen.client_timeout_ms, 30 s by default), after which it closes it."""
        self.host = host
        self.port = port or AIM_PORT
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.contract = load_contract()
        self.max_idle = max_idle
        # Connections at rest, with when they were last used.
        self._idle: list[tuple[Any, float]] = []
        # Bounds the connections open at once to one host.
        self._slots = asyncio.Semaphore(pool_size)
        self._closed = False

    async def _open(self, timeout: float) -> Any:
        ms = int(timeout * 1000)
        return await make_client(
            self.contract.Aim,
            self.host,
            self.port,
            trans_factory=TAsyncFramedTransportFactory(),
            proto_factory=TAsyncBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
            # thriftpy2 bounds reads with connect_timeout, the handshake with timeout.
            timeout=ms,
            connect_timeout=ms,
            # The caller's context decides everything TLS (CA, client certificate,
            # hostname checking): thriftpy2 uses it as given.
            ssl_context=self.ssl_context,
        )

    async def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call `method`; its errors come out translated. `timeout` defaults to the
        client's and covers connecting too."""
        if self._closed:
            raise HostUnreachable(f"the client of {self.host} is closed")
        limit = self.timeout if timeout is None else timeout
        what = f"{method} on {self.host}:{self.port}"
        try:
            return await self._call(method, args, limit, what)
        except TimeoutError as exc:
            raise HostUnreachable(f"{what}: no answer within {limit} s") from exc

    async def _call(self, method: str, args: tuple[Any, ...], limit: float, what: str) -> Any:
        async with self._slots, asyncio.timeout(limit):
            client = self._take_idle()
            if client is not None:
                try:
                    return await self._call_on(client, method, args, what)
                except _Broken as broken:
                    # Most likely a kept connection the AIM closed meanwhile (it drops
                    # silent ones), so the request was not served: one retry on a new
                    # connection. The AIM's methods are idempotent (power ops reach a
                    # goal, define redefines, copies to datastores overwrite) save the
                    # copy to the repository, which answers RIMP-EXISTS if it was served.
                    log.info(
                        "kept connection broken, reconnecting", host=self.host, error=str(broken)
                    )
            try:
                client = await self._open(limit)
            except Exception as exc:
                raise translate(exc, what=what) from exc
            try:
                return await self._call_on(client, method, args, what)
            except _Broken as broken:
                raise broken.error from broken.__cause__

    async def _call_on(self, client: Any, method: str, args: tuple[Any, ...], what: str) -> Any:
        try:
            result = await getattr(client, method)(*args)
        except TException as exc:
            if error_code(exc):
                # A declared exception is a complete answer: the connection is fine.
                self._give_back(client)
                raise translate(exc, what=what) from exc
            client.close()
            if isinstance(exc, TTransportException):
                raise _Broken(translate(exc, what=what)) from exc
            raise translate(exc, what=what) from exc
        except BaseException as exc:
            # Timed out, cancelled or broken mid-call: what is left unread is unknown.
            client.close()
            if isinstance(exc, (OSError, EOFError, asyncio.IncompleteReadError)):
                raise _Broken(translate(exc, what=what)) from exc
            if isinstance(exc, Exception) and not isinstance(exc, TimeoutError):
                raise translate(exc, what=what) from exc
            raise
        self._give_back(client)
        return result

    def _take_idle(self) -> Any:
        now = time.monotonic()
        while self._idle:
            client, since = self._idle.pop()
            if now - since < self.max_idle:
                return client
            client.close()
        return None

    def _give_back(self, client: Any) -> None:
        if self._closed:
            client.close()
        else:
            self._idle.append((client, time.monotonic()))

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for client, _ in idle:
            client.close()
