"""Domain operations with libvirt-python on a host's libvirt URI (qemu+tcp://host/system).

libvirt-python blocks, and a hung host blocks it for as long as TCP lets it. So every
call runs in this channel's own small thread pool (one channel per driver, so per host),
and each is bounded by the driver's timeout: past it the caller gets HostUnreachable and
the thread is left to finish, or hang, on its own. The pool being bounded, a hung host
holds a few threads of its own and never the loop, nor another host's calls.

The connection is opened by open(), and again by the first call after it was lost (the
daemon restarted, the network broke); one thread opens while the others wait for it. A
call that finds a kept connection dead is retried once on a new one: the operations are
idempotent (a define redefines, power operations reach a goal; an undefine retried finds
no domain, which deconfigure accepts). A connection whose opening outlived its caller is
kept for the next call, or closed if the channel was closed meanwhile.

Errors: no domain → VmNotFound; malformed XML or arguments → InvalidDefinition;
"operation invalid" → WrongState, save where the goal is reached already (the AIM's
semantics, aim/domains.py: power_on of a running domain succeeds, and so on);
authentication → AuthenticationFailed; a connection lost or never made → HostUnreachable;
anything else → DriverFailure with libvirt's message.

The host's credentials (HypervisorConnection.credentials) answer libvirt's SASL prompts
(authname, passphrase); without them a daemon that asks is AuthenticationFailed, never a
prompt on a terminal. No libvirt event loop is registered here (events come from the
AIM), so libvirt's keepalive does not run: the call timeout is what notices a dead peer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import uuid as uuid_module
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt
import structlog

from abiquo_dc.hypervisors.base import (
    AuthenticationFailed,
    DriverFailure,
    HostUnreachable,
    InvalidDefinition,
    PowerState,
    VmInfo,
    VmNotFound,
    WrongState,
)
from abiquo_dc.hypervisors.domain_channel import DomainChannel, MiB
from abiquo_dc.protocol.definitions import Credentials
from abiquo_runtime.errors import AbiquoError

log = structlog.get_logger("abiquo_dc.hypervisors.libvirt")

T = TypeVar("T")

# Threads per host: enough for a monitor's listing next to a job or two.
THREADS = 4

_POWER = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.ON,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.ON,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.ON,  # shutting down: on until SHUTOFF
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.OFF,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.OFF,
}

# As the AIM's undefineDomain: what libvirt keeps beside a definition would make it refuse.
_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
)
_INVALID = frozenset(
    {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_INVALID_ARG}
)
_AUTH = frozenset(
    {libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED, libvirt.VIR_ERR_AUTH_UNAVAILABLE}
)
_LOST = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_OPERATION_TIMEOUT,
    }
)
_REMOTE = frozenset({libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE})


class _Closed(Exception):
    """The channel was closed: no connection is (re)opened any more."""


class _OpenFailed(Exception):
    """Opening the connection failed with `error`."""

    def __init__(self, error: libvirt.libvirtError) -> None:
        super().__init__(str(error))
        self.error = error


@functools.cache
def _quiet_libvirt() -> None:
    # libvirt also prints every error on stderr; each one reaches its caller translated.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def translate(err: libvirt.libvirtError, *, what: str, opening: bool = False) -> AbiquoError:
    """The taxonomy's error for a libvirt error (`opening`: raised opening the connection)."""
    code = err.get_error_code()
    message = f"{what}: {err.get_error_message() or err}"
    if code in _AUTH:
        return AuthenticationFailed(message)
    if opening or code in _LOST:
        return HostUnreachable(message)
    if code == libvirt.VIR_ERR_SYSTEM_ERROR and err.get_error_domain() in _REMOTE:
        # A broken socket or end of file under the RPC layer; a system error elsewhere
        # (a QEMU's) is the host's own failure.
        return HostUnreachable(message)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return VmNotFound(message)
    if code in _INVALID:
        return InvalidDefinition(message)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return WrongState(message)
    return DriverFailure(message)


def _canonical(uuid: str) -> str:
    try:
        return str(uuid_module.UUID(uuid))
    except (ValueError, TypeError, AttributeError):
        raise InvalidDefinition(f"not a UUID: {uuid!r}") from None


def _alive(conn: libvirt.virConnect) -> bool:
    # Local: whether the client's socket is open; no trip to the daemon.
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _close_quietly(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


# -- what runs in the threads: one lookup and one action per trip -------------------------


def _vm_info(dom: libvirt.virDomain) -> VmInfo:
    state, max_kib, _kib, vcpus, _cpu_ns = dom.info()
    return VmInfo(
        uuid=dom.UUIDString(),
        name=dom.name(),
        power_state=_POWER.get(state, PowerState.UNKNOWN),
        cpu=vcpus,
        ram_mb=max_kib * 1024 // MiB,
    )


def _listing(conn: libvirt.virConnect) -> list[VmInfo]:
    found = []
    for dom in conn.listAllDomains(0):
        try:
            found.append(_vm_info(dom))
        except libvirt.libvirtError as err:
            # Undefined between the listing and its details: not on the host any more.
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    return found


def _exists(conn: libvirt.virConnect, uuid: str) -> bool:
    try:
        conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    return True


def _active(dom: libvirt.virDomain) -> bool:
    return bool(dom.isActive())


def _inactive(dom: libvirt.virDomain) -> bool:
    return not dom.isActive()


def _never(_dom: libvirt.virDomain) -> bool:
    return False


def _paused(dom: libvirt.virDomain) -> bool:
    return bool(dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED)


def _running(dom: libvirt.virDomain) -> bool:
    return bool(dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING)


def _needs_active(
    reached: Callable[[libvirt.virDomain], bool],
) -> Callable[[libvirt.virDomain], bool]:
    """`reached`, for an action only a running domain can take: WrongState otherwise.

    Checked here rather than left to libvirt, whose drivers disagree on the error (qemu
    says "operation invalid", the test driver "internal error").
    """

    def check(dom: libvirt.virDomain) -> bool:
        if not dom.isActive():
            raise WrongState(f"domain {dom.name()!r} is not running")
        return reached(dom)

    return check


def _ensure(
    reached: Callable[[libvirt.virDomain], bool],
    act: Callable[[libvirt.virDomain], Any],
) -> Callable[[libvirt.virDomain], None]:
    """Do `act` unless the goal is reached, before or (a race) when libvirt refuses it."""

    def run(dom: libvirt.virDomain) -> None:
        if reached(dom):
            return
        try:
            act(dom)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and reached(dom):
                return
            raise

    return run


class LibvirtDomains(DomainChannel):
    kind = "libvirt"

    def __init__(
        self,
        uri: str,
        *,
        timeout: float,
        threads: int = THREADS,
        credentials: Credentials | None = None,
    ) -> None:
        self.uri = uri
        self.timeout = timeout
        self.threads = threads
        self.credentials = credentials or Credentials()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # Guards _conn and _closed; held for no blocking call.
        self._lock = threading.Lock()
        # Held by the one thread opening a connection.
        self._open_lock = threading.Lock()
        self._conn: libvirt.virConnect | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is None:
            _quiet_libvirt()
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix="libvirt-domains"
            )
        await self._run("connect", lambda _conn: None)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if executor is None:
            return
        # Calls queued and not started are dropped; running ones end on their own.
        executor.shutdown(wait=False, cancel_futures=True)
        if conn is not None:
            # In a thread of its own: the pool's may all be stuck on a hung host.
            done = asyncio.get_running_loop().create_future()
            thread = threading.Thread(
                target=self._close_in_thread, args=(conn, done), name="libvirt-close", daemon=True
            )
            thread.start()
            try:
                async with asyncio.timeout(self.timeout):
                    await done
            except TimeoutError:
                log.warning("libvirt connection close timed out", uri=self.uri)

    @staticmethod
    def _close_in_thread(conn: libvirt.virConnect, done: asyncio.Future[None]) -> None:
        try:
            _close_quietly(conn)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                done.get_loop().call_soon_threadsafe(
                    lambda: None if done.done() else done.set_result(None)
                )

    # -- the connection, in the threads ---------------------------------------------------

    def _open_connection(self) -> libvirt.virConnect:
        user, password = self.credentials.user, self.credentials.password

        def answer(credentials: list[list[Any]], _opaque: Any) -> int:
            for credential in credentials:
                if credential[0] == libvirt.VIR_CRED_AUTHNAME and user:
                    credential[4] = user
                elif credential[0] == libvirt.VIR_CRED_PASSPHRASE and password:
                    credential[4] = password
                else:
                    return -1  # nothing to answer with: authentication fails
            return 0

        auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None]
        try:
            return libvirt.openAuth(self.uri, auth, 0)
        except libvirt.libvirtError as err:
            raise _OpenFailed(err) from err

    def _connection(self) -> tuple[libvirt.virConnect, bool]:
        """The connection, opened if need be; (it, whether it was opened just now)."""
        with self._lock:
            if self._closed:
                raise _Closed
            if self._conn is not None:
                return self._conn, False
        with self._open_lock:
            with self._lock:
                if self._closed:
                    raise _Closed
                if self._conn is not None:
                    return self._conn, False  # opened by another thread meanwhile
            conn = self._open_connection()
            with self._lock:
                if not self._closed:
                    self._conn = conn
                    return conn, True
        _close_quietly(conn)
        raise _Closed

    def _forget(self, conn: libvirt.virConnect) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        _close_quietly(conn)

    def _job(self, action: Callable[[libvirt.virConnect], T]) -> T:
        conn, fresh = self._connection()
        try:
            return action(conn)
        except libvirt.libvirtError:
            if _alive(conn):
                raise
            self._forget(conn)
            if fresh:
                raise
        log.info("libvirt connection lost, reconnecting", uri=self.uri)
        conn, _ = self._connection()
        return action(conn)

    # -- calls from the loop ------------------------------------------------------------

    async def _run(self, what: str, action: Callable[[libvirt.virConnect], T]) -> T:
        where = f"{what} on {self.uri}"
        executor = self._executor
        if executor is None:
            raise HostUnreachable(f"{where}: not connected")
        try:
            future = asyncio.get_running_loop().run_in_executor(executor, self._job, action)
        except RuntimeError:  # the pool was shut down: the channel is closed
            raise HostUnreachable(f"{where}: the connection is closed") from None
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                # Not our caller's cancellation: close() dropped the queued call.
                raise HostUnreachable(f"{where}: the connection is closed") from None
            raise
        except TimeoutError:
            raise HostUnreachable(f"{where}: no answer within {self.timeout} s") from None
        except _Closed:
            raise HostUnreachable(f"{where}: the connection is closed") from None
        except _OpenFailed as exc:
            raise translate(exc.error, what=where, opening=True) from None
        except libvirt.libvirtError as err:
            raise translate(err, what=where) from None

    async def _on_domain(self, what: str, uuid: str, action: Callable[[libvirt.virDomain], T]) -> T:
        canonical = _canonical(uuid)
        return await self._run(what, lambda conn: action(conn.lookupByUUIDString(canonical)))

    # -- the operations -----------------------------------------------------------------

    async def define(self, xml: str) -> None:
        await self._run("define", lambda conn: conn.defineXML(xml))

    async def undefine(self, uuid: str) -> None:
        await self._on_domain(f"undefine {uuid}", uuid, lambda d: d.undefineFlags(_UNDEFINE_FLAGS))

    async def exists(self, uuid: str) -> bool:
        canonical = _canonical(uuid)
        return await self._run(f"look up {uuid}", lambda conn: _exists(conn, canonical))

    async def get(self, uuid: str) -> VmInfo:
        return await self._on_domain(f"get {uuid}", uuid, _vm_info)

    async def list(self) -> list[VmInfo]:
        return await self._run("list domains", _listing)

    async def power_on(self, uuid: str) -> None:
        # A paused domain is on: it stays paused (resume is another request).
        await self._on_domain(f"power on {uuid}", uuid, _ensure(_active, lambda d: d.create()))

    async def power_off(self, uuid: str) -> None:
        await self._on_domain(f"power off {uuid}", uuid, _ensure(_inactive, lambda d: d.destroy()))

    async def shutdown(self, uuid: str) -> None:
        await self._on_domain(f"shut down {uuid}", uuid, _ensure(_inactive, lambda d: d.shutdown()))

    async def reset(self, uuid: str) -> None:
        # No goal state to reach: a domain that is not running is WrongState.
        await self._on_domain(
            f"reset {uuid}", uuid, _ensure(_needs_active(_never), lambda d: d.reset(0))
        )

    async def pause(self, uuid: str) -> None:
        await self._on_domain(
            f"pause {uuid}", uuid, _ensure(_needs_active(_paused), lambda d: d.suspend())
        )

    async def resume(self, uuid: str) -> None:
        await self._on_domain(
            f"resume {uuid}", uuid, _ensure(_needs_active(_running), lambda d: d.resume())
        )
