"""A datacenter's remote services: registered at their URIs, checked, and shown as up or down.

An administrator registers each service of a datacenter (one of each type) at the URI it
answers at; central checks it there (checks.py) on every registration, change and explicit
check. The VIRTUAL_FACTORY's check tells central which datacenter process it is (its UUID),
which the link sends the datacenter's messages by.

The status shown is not only what the last check found: a service is up (1) only while its
datacenter is alive too (a heartbeat within the liveness timeout) and, when the heartbeat
names the service, reports it RUNNING. So the services of a datacenter that went quiet show
0, and show 1 again by themselves when its heartbeats come back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy import ColumnElement, Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id
from abiquo_central.events import Action, Actor, Component, Severity, record_action, record_event
from abiquo_central.infrastructure.checks import MAX_CHECK_TIMEOUT, Probe, Target, check_services
from abiquo_central.link import DatacenterRequests
from abiquo_central.tasks.outbox import enqueue
from abiquo_dc.protocol.templates import AnnounceTemplates
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound, TemporaryError

DATACENTER_NOT_FOUND = "DC-0"
REMOTE_SERVICE_NOT_FOUND = "RS-0"
INVALID_TYPE = "RS-1"
INVALID_URI = "RS-2"
DUPLICATED_TYPE = "RS-3"
DUPLICATED_URI = "RS-4"
# It answered with the UUID of another datacenter than the one it is registered in.
WRONG_DATACENTER = "RS-5"
# A VIRTUAL_FACTORY answered with a UUID that another datacenter has already.
UUID_TAKEN = "RS-6"
SERVICE_DOWN = "RS-7"

RUNNING = "RUNNING"

_dc = tables.datacenter
_live = tables.datacenter_liveness
_rs = tables.remote_service


class ServiceType(StrEnum):
    """Abiquo's remote service types, in the order Abiquo lists them."""

    VIRTUAL_FACTORY = "VIRTUAL_FACTORY"
    VIRTUAL_SYSTEM_MONITOR = "VIRTUAL_SYSTEM_MONITOR"
    NODE_COLLECTOR = "NODE_COLLECTOR"
    STORAGE_SYSTEM_MONITOR = "STORAGE_SYSTEM_MONITOR"
    APPLIANCE_MANAGER = "APPLIANCE_MANAGER"
    BPM_SERVICE = "BPM_SERVICE"
    DHCP_SERVICE = "DHCP_SERVICE"

    @property
    def path_name(self) -> str:
        """How Abiquo names it in paths: virtualfactory, appliancemanager, ..."""
        return self.value.replace("_", "").lower()


_ORDER = {kind: n for n, kind in enumerate(ServiceType)}

# The datacenter serves these under these paths, and reports them by these names in its
# heartbeats and in its answer to CheckServices. DHCP is not one of its services.
DC_PATHS: Mapping[ServiceType, str] = MappingProxyType(
    {
        ServiceType.VIRTUAL_FACTORY: "virtualfactory",
        ServiceType.VIRTUAL_SYSTEM_MONITOR: "vsm",
        ServiceType.NODE_COLLECTOR: "nodecollector",
        ServiceType.STORAGE_SYSTEM_MONITOR: "ssm",
        ServiceType.APPLIANCE_MANAGER: "am",
        ServiceType.BPM_SERVICE: "bpm-async",
    }
)

# Their /check answers with the datacenter's UUID.
ANSWERS_UUID = frozenset({ServiceType.VIRTUAL_FACTORY, ServiceType.BPM_SERVICE})

# The datacenter's queue for the template repository's commands: like a conversion,
# AnnounceTemplates waits there for the DC however long it is away (the rpc queue's
# requests expire; this one's do not).
TEMPLATE_COMMANDS = "bpm"

# ISC DHCP's OMAPI port, when an omapi:// URI names none.
DHCP_DEFAULT_PORT = 7911

URI_MAX = 1024
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-]*[A-Za-z0-9])?$")


def _squash(text: str) -> str:
    return text.strip().lower().replace("_", "").replace("-", "")


# Every spelling a type is known by, squashed: VIRTUAL_FACTORY, virtualfactory, vsm, ...
_SPELLINGS: Mapping[str, ServiceType] = MappingProxyType(
    {
        **{_squash(kind.value): kind for kind in ServiceType},
        **{_squash(path): kind for kind, path in DC_PATHS.items()},
        "dhcp": ServiceType.DHCP_SERVICE,
    }
)


def parse_type(text: str, *, in_path: bool = False) -> ServiceType:
    """The type `text` names, in any case, as Abiquo's type or path name.

    A type in a path that names none is a resource that does not exist (NotFound); in a
    body, a mistake (InvalidInput).
    """
    kind = _SPELLINGS.get(_squash(text))
    if kind is not None:
        return kind
    if in_path:
        raise NotFound(
            f"There is no remote service type {text[:64]!r}", code=REMOTE_SERVICE_NOT_FOUND
        )
    known = ", ".join(ServiceType)
    if not text.strip():
        raise InvalidInput(f"a remote service needs a type: one of {known}", code=INVALID_TYPE)
    raise InvalidInput(
        f"{text[:64]!r} is no remote service type; use one of {known}", code=INVALID_TYPE
    )


def _bad_uri(kind: ServiceType, why: str) -> InvalidInput:
    return InvalidInput(f"invalid URI for the {kind.value}: {why}", code=INVALID_URI)


def validate_uri(kind: ServiceType, uri: str) -> str:
    """`uri` as it is stored: trimmed, scheme and host in lower case, no trailing slash
    (so that one URI is spelt one way); InvalidInput saying what is wrong otherwise.

    HTTP services take http(s)://host[:port][/path]; the DHCP service omapi://host[:port].
    """
    text = uri.strip()
    if not text:
        raise _bad_uri(kind, "it is empty")
    if len(text) > URI_MAX:
        raise _bad_uri(kind, f"it is longer than {URI_MAX} characters")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise _bad_uri(kind, "it holds spaces or control characters")
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise _bad_uri(kind, str(exc)) from None
    try:
        port = parts.port
    except ValueError:
        raise _bad_uri(kind, "its port must be a number from 1 to 65535") from None
    schemes = ("omapi",) if kind is ServiceType.DHCP_SERVICE else ("http", "https")
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise _bad_uri(kind, f"its scheme must be {' or '.join(schemes)}, not {scheme or 'none'!r}")
    host = (parts.hostname or "").lower()
    bracketed = "[" in parts.netloc
    if not host or not (bracketed or _HOST.match(host)):
        raise _bad_uri(kind, "it needs a host name or address")
    if parts.username is not None or parts.password is not None:
        raise _bad_uri(kind, "credentials do not belong in it")
    if port == 0:
        raise _bad_uri(kind, "its port must be a number from 1 to 65535")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise _bad_uri(kind, "it takes no query nor fragment")
    path = parts.path.rstrip("/")
    if kind is ServiceType.DHCP_SERVICE:
        if path:
            raise _bad_uri(kind, "an omapi URI has no path")
        port = port or DHCP_DEFAULT_PORT
    netloc = f"[{host}]" if bracketed else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}{path}"


def target_of(kind: ServiceType, uri: str) -> Target:
    """How a service of this type is checked."""
    return Target(
        uri=uri,
        tcp=kind is ServiceType.DHCP_SERVICE,
        answers_uuid=kind in ANSWERS_UUID,
        names_datacenter=kind is ServiceType.VIRTUAL_FACTORY,
        dc_path=DC_PATHS.get(kind),
    )


@dataclass(frozen=True, slots=True)
class RemoteService:
    id: int
    datacenter_id: int
    type: ServiceType
    uri: str
    # Abiquo's convention: 1 up, 0 down (see the module's docstring for what "up" takes).
    status: int
    # When it was last checked (None: never).
    checked_at: datetime | None


class RemoteServiceDown(TemporaryError):
    """A check found the service not answering (503)."""

    code = SERVICE_DOWN


@dataclass(frozen=True, slots=True)
class Checker:
    """What checking needs: an HTTP client, the link (None: ask no datacenter over it),
    and how long a check may take (checks.check_timeout)."""

    session: aiohttp.ClientSession
    link: DatacenterRequests | None = None
    timeout: float = MAX_CHECK_TIMEOUT


def alive(last_seen: datetime | None, *, now: datetime, liveness_timeout: float) -> bool:
    """Whether a datacenter last heard at `last_seen` counts as alive at `now`."""
    return last_seen is not None and now - last_seen <= timedelta(seconds=liveness_timeout)


def shown_status(
    kind: ServiceType, checked: int, *, alive: bool, reported: Mapping[str, str] | None
) -> int:
    """1 when the last check found it up, its datacenter is alive, and the datacenter's
    last heartbeat, if it names the service, says it runs."""
    if not (checked and alive):
        return 0
    path = DC_PATHS.get(kind)
    state = (reported or {}).get(path) if path is not None else None
    return 1 if state is None or state == RUNNING else 0


def _service(row: Row[Any], *, alive: bool, reported: Mapping[str, str] | None) -> RemoteService:
    kind = ServiceType(row.type)
    return RemoteService(
        id=row.id,
        datacenter_id=row.datacenter_id,
        type=kind,
        uri=row.uri,
        status=shown_status(kind, row.status, alive=alive, reported=reported),
        checked_at=row.checked_at,
    )


def shown_services(
    rows: Iterable[Row[Any]], *, alive: bool, reported: Mapping[str, str] | None
) -> tuple[RemoteService, ...]:
    """A datacenter's remote service rows as shown, in Abiquo's order of types."""
    found = [_service(r, alive=alive, reported=reported) for r in rows]
    return tuple(sorted(found, key=lambda rs: _ORDER[rs.type]))


async def services_of(conn: AsyncConnection, dc_ids: Sequence[int]) -> dict[int, list[Row[Any]]]:
    """The remote service rows of each of these datacenters."""
    found: dict[int, list[Row[Any]]] = {dc_id: [] for dc_id in dc_ids}
    if dc_ids:
        rows = await conn.execute(select(_rs).where(_rs.c.datacenter_id.in_(dc_ids)))
        for row in rows:
            found[row.datacenter_id].append(row)
    return found


# -- one datacenter's registered services -----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Dc:
    id: int
    uuid: str | None
    name: str
    last_seen: datetime | None
    reported: Mapping[str, str] | None


def datacenter_not_found() -> NotFound:
    return NotFound("The requested datacenter does not exist", code=DATACENTER_NOT_FOUND)


async def _datacenter(conn: AsyncConnection, dc_id: int) -> _Dc:
    query = (
        select(_dc.c.id, _dc.c.uuid, _dc.c.name, _live.c.last_seen, _live.c.services)
        .select_from(_dc.outerjoin(_live, _live.c.dc_uuid == _dc.c.uuid))
        .where(_dc.c.id == dc_id)
    )
    row = (await conn.execute(query)).one_or_none()
    if row is None:
        raise datacenter_not_found()
    return _Dc(row.id, row.uuid, row.name, row.last_seen, row.services)


def _not_registered(dc: _Dc, kind: ServiceType) -> NotFound:
    return NotFound(
        f"Datacenter {dc.name} has no {kind.value} remote service", code=REMOTE_SERVICE_NOT_FOUND
    )


async def _row(conn: AsyncConnection, dc: _Dc, kind: ServiceType) -> Row[Any]:
    query = select(_rs).where(_rs.c.datacenter_id == dc.id, _rs.c.type == kind.value)
    row = (await conn.execute(query)).one_or_none()
    if row is None:
        raise _not_registered(dc, kind)
    return row


async def _type_free(conn: AsyncConnection, dc: _Dc, kind: ServiceType) -> None:
    query = select(_rs.c.id).where(_rs.c.datacenter_id == dc.id, _rs.c.type == kind.value)
    if (await conn.execute(query)).first() is not None:
        raise Conflict(
            f"Datacenter {dc.name} has a {kind.value} already: change or delete that one",
            code=DUPLICATED_TYPE,
        )


async def uri_free(conn: AsyncConnection, uri: str, *, but: int | None = None) -> None:
    """Conflict when a remote service (other than `but`) is registered at `uri`."""
    query = (
        select(_rs.c.type, _dc.c.name)
        .select_from(_rs.join(_dc, _dc.c.id == _rs.c.datacenter_id))
        .where(_rs.c.uri == uri)
    )
    if but is not None:
        query = query.where(_rs.c.id != but)
    taken = (await conn.execute(query)).first()
    if taken is not None:
        raise Conflict(
            f"{uri} is registered already, as the {taken.type} of datacenter {taken.name}",
            code=DUPLICATED_URI,
        )


async def admit(
    conn: AsyncConnection,
    *,
    dc_id: int,
    dc_name: str,
    dc_uuid: str | None,
    kind: ServiceType,
    uri: str,
    found: Probe,
    now: datetime,
) -> str | None:
    """The datacenter's UUID once this service's answer is taken into account.

    A VIRTUAL_FACTORY's answer names the datacenter when its UUID is still unknown (it is
    stored); any answer with another UUID than the known one is a service of another
    datacenter, as is a UUID that another datacenter has already (Conflict, both).

    Once the UUID is stored, the datacenter is asked (through the outbox, in `conn`'s
    transaction) to announce its templates again: what its Appliance Manager announced
    before, central could not place and dropped.
    """
    answered = found.uuid if found.up else None
    if answered is None:
        return dc_uuid
    if dc_uuid is not None:
        if answered != dc_uuid:
            raise Conflict(
                f"The {kind.value} at {uri} belongs to the datacenter process {answered}, "
                f"not to {dc_name}'s ({dc_uuid})",
                code=WRONG_DATACENTER,
            )
        return dc_uuid
    if kind is not ServiceType.VIRTUAL_FACTORY:
        return None
    other = (
        await conn.execute(select(_dc.c.name).where(_dc.c.uuid == answered, _dc.c.id != dc_id))
    ).scalar_one_or_none()
    if other is not None:
        raise Conflict(
            f"The VIRTUAL_FACTORY at {uri} is datacenter {other}'s ({answered})", code=UUID_TAKEN
        )
    await conn.execute(_dc.update().where(_dc.c.id == dc_id).values(uuid=answered))
    await enqueue(conn, answered, TEMPLATE_COMMANDS, AnnounceTemplates(dc_uuid=answered), now=now)
    return answered


async def record(
    conn: AsyncConnection,
    actor: Actor | None,
    action: Action,
    *,
    dc_id: int,
    target: str,
    message: str,
    severity: Severity = Severity.INFO,
) -> None:
    """An event of the datacenter component; without an actor, the system's own."""
    if actor is not None:
        await record_action(
            conn,
            actor,
            component=Component.DATACENTER,
            action=action,
            target=target,
            message=message,
            severity=severity,
            datacenter_id=dc_id,
        )
        return
    await record_event(
        conn,
        severity=severity,
        component=Component.DATACENTER,
        action=action,
        target=target,
        message=message,
        datacenter_id=dc_id,
    )


def service_path(dc_id: int, kind: ServiceType) -> str:
    return f"/admin/datacenters/{dc_id}/remoteservices/{kind.path_name}"


def _how(found: Probe) -> str:
    return "up" if found.up else f"down ({found.reason})"


async def insert_service(
    conn: AsyncConnection,
    actor: Actor | None,
    *,
    dc_id: int,
    dc_name: str,
    kind: ServiceType,
    uri: str,
    found: Probe,
    now: datetime,
) -> int:
    """Insert a checked service and record its REMOTE_SERVICES_CREATE (admit it first)."""
    service_id = inserted_id(
        await conn.execute(
            _rs.insert().values(
                datacenter_id=dc_id,
                type=kind.value,
                uri=uri,
                status=1 if found.up else 0,
                checked_at=now,
            )
        )
    )
    await record(
        conn,
        actor,
        Action.REMOTE_SERVICES_CREATE,
        dc_id=dc_id,
        target=service_path(dc_id, kind),
        message=f"Remote service {kind.value} of datacenter {dc_name} created at {uri}: "
        f"{_how(found)}",
    )
    return service_id


def _raced(exc: IntegrityError) -> Conflict:
    return Conflict(f"A concurrent change conflicts with this one ({exc.orig}); try again")


def _stored(row: Row[Any]) -> RemoteService:
    return RemoteService(
        id=row.id,
        datacenter_id=row.datacenter_id,
        type=ServiceType(row.type),
        uri=row.uri,
        status=int(row.status),
        checked_at=row.checked_at,
    )


async def _reread(engine: AsyncEngine, dc_id: int, kind: ServiceType) -> RemoteService:
    async with engine.connect() as conn:
        dc = await _datacenter(conn, dc_id)
        return _stored(await _row(conn, dc, kind))


# -- what the API and the all-in-one call ------------------------------------------------

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _rs.c.id, "type": _rs.c.type, "uri": _rs.c.uri, "status": _rs.c.status}
)


async def list_remote_services(
    engine: AsyncEngine,
    dc_id: int,
    *,
    page: PageRequest,
    now: datetime,
    liveness_timeout: float,
) -> Page[RemoteService]:
    """A page of the datacenter's remote services, as shown (`has` filters on the type)."""
    async with engine.connect() as conn:
        dc = await _datacenter(conn, dc_id)
        rows, total = await fetch_page(
            conn,
            select(_rs).where(_rs.c.datacenter_id == dc_id),
            page,
            sortable=SORTABLE,
            default_sort="id",
            tiebreaker=_rs.c.id,
            name=_rs.c.type,
        )
    up = alive(dc.last_seen, now=now, liveness_timeout=liveness_timeout)
    return Page(items=[_service(r, alive=up, reported=dc.reported) for r in rows], total=total)


async def get_remote_service(
    engine: AsyncEngine,
    dc_id: int,
    kind: ServiceType,
    *,
    now: datetime,
    liveness_timeout: float,
) -> RemoteService:
    """One of the datacenter's remote services, as shown."""
    async with engine.connect() as conn:
        dc = await _datacenter(conn, dc_id)
        row = await _row(conn, dc, kind)
    up = alive(dc.last_seen, now=now, liveness_timeout=liveness_timeout)
    return _service(row, alive=up, reported=dc.reported)


async def create_remote_service(
    engine: AsyncEngine,
    dc_id: int,
    kind: ServiceType,
    uri: str,
    *,
    checker: Checker,
    actor: Actor | None,
    now: datetime | None = None,
) -> RemoteService:
    """Register a service of a type the datacenter has none of, checked at once.

    One that does not answer is registered all the same, down: its datacenter may not
    have started yet. Conflict when the URI is registered already or the service turns
    out to be another datacenter's. The status returned is the check's alone.
    """
    uri = validate_uri(kind, uri)
    now = now if now is not None else datetime.now(UTC)
    # Refuse what is refused anyway before waiting for a check.
    async with engine.connect() as conn:
        dc = await _datacenter(conn, dc_id)
        await _type_free(conn, dc, kind)
        await uri_free(conn, uri)
    [found] = await check_services(
        checker.session,
        checker.link,
        [target_of(kind, uri)],
        dc_uuid=dc.uuid,
        timeout=checker.timeout,
    )
    try:
        async with engine.begin() as conn:
            dc = await _datacenter(conn, dc_id)
            await _type_free(conn, dc, kind)
            await uri_free(conn, uri)
            await admit(
                conn,
                dc_id=dc.id,
                dc_name=dc.name,
                dc_uuid=dc.uuid,
                kind=kind,
                uri=uri,
                found=found,
                now=now,
            )
            await insert_service(
                conn, actor, dc_id=dc.id, dc_name=dc.name, kind=kind, uri=uri, found=found, now=now
            )
    except IntegrityError as exc:
        raise _raced(exc) from None
    return await _reread(engine, dc_id, kind)


async def update_remote_service(
    engine: AsyncEngine,
    dc_id: int,
    kind: ServiceType,
    uri: str,
    *,
    checker: Checker,
    actor: Actor | None,
    now: datetime | None = None,
) -> RemoteService:
    """Move a registered service to another URI, checked there (as create_remote_service)."""
    uri = validate_uri(kind, uri)
    now = now if now is not None else datetime.now(UTC)
    async with engine.connect() as conn:
        dc = await _datacenter(conn, dc_id)
        row = await _row(conn, dc, kind)
        await uri_free(conn, uri, but=row.id)
    [found] = await check_services(
        checker.session,
        checker.link,
        [target_of(kind, uri)],
        dc_uuid=dc.uuid,
        timeout=checker.timeout,
    )
    try:
        async with engine.begin() as conn:
            dc = await _datacenter(conn, dc_id)
            row = await _row(conn, dc, kind)
            await uri_free(conn, uri, but=row.id)
            await admit(
                conn,
                dc_id=dc.id,
                dc_name=dc.name,
                dc_uuid=dc.uuid,
                kind=kind,
                uri=uri,
                found=found,
                now=now,
            )
            await conn.execute(
                _rs.update()
                .where(_rs.c.id == row.id)
                .values(uri=uri, status=1 if found.up else 0, checked_at=now)
            )
            await record(
                conn,
                actor,
                Action.REMOTE_SERVICE_UPDATE,
                dc_id=dc.id,
                target=service_path(dc.id, kind),
                message=f"Remote service {kind.value} of datacenter {dc.name} moved from "
                f"{row.uri} to {uri}: {_how(found)}",
            )
    except IntegrityError as exc:
        raise _raced(exc) from None
    return await _reread(engine, dc_id, kind)


async def check_remote_service(
    engine: AsyncEngine,
    dc_id: int,
    kind: ServiceType,
    *,
    checker: Checker,
    actor: Actor | None,
    now: datetime | None = None,
) -> RemoteService:
    """Check a registered service again and remember what was found.

    RemoteServiceDown (503) when it does not answer, Conflict when it answers as another
    datacenter's (it is then down too); either way the status is stored first. A
    VIRTUAL_FACTORY found up names its datacenter, if that was still unknown.
    """
    now = now if now is not None else datetime.now(UTC)
    async with engine.connect() as conn:
        dc = await _datacenter(conn, dc_id)
        row = await _row(conn, dc, kind)
    [found] = await check_services(
        checker.session,
        checker.link,
        [target_of(kind, row.uri)],
        dc_uuid=dc.uuid,
        timeout=checker.timeout,
    )
    refused: Conflict | None = None
    async with engine.begin() as conn:
        dc = await _datacenter(conn, dc_id)
        row = await _row(conn, dc, kind)
        try:
            await admit(
                conn,
                dc_id=dc.id,
                dc_name=dc.name,
                dc_uuid=dc.uuid,
                kind=kind,
                uri=row.uri,
                found=found,
                now=now,
            )
        except Conflict as exc:
            refused = exc
            found = Probe(False, reason=exc.message)
        except IntegrityError:
            # Another datacenter took the UUID meanwhile (the failed statement alone is
            # undone: the status is stored all the same).
            refused = Conflict(
                f"The {kind.value} at {row.uri} is another datacenter's", code=UUID_TAKEN
            )
            found = Probe(False, reason=refused.message)
        await conn.execute(
            _rs.update()
            .where(_rs.c.id == row.id)
            .values(status=1 if found.up else 0, checked_at=now)
        )
        await record(
            conn,
            actor,
            Action.REMOTE_SERVICES_CHECK,
            dc_id=dc.id,
            target=service_path(dc.id, kind),
            message=f"Remote service {kind.value} of datacenter {dc.name} checked: {_how(found)}",
            severity=Severity.INFO if found.up else Severity.WARNING,
        )
    if refused is not None:
        raise refused
    if not found.up:
        raise RemoteServiceDown(f"The {kind.value} of datacenter {dc.name} is down: {found.reason}")
    return await _reread(engine, dc_id, kind)


async def delete_remote_service(
    engine: AsyncEngine, dc_id: int, kind: ServiceType, *, actor: Actor | None
) -> None:
    """Unregister a service. The datacenter keeps the UUID a VIRTUAL_FACTORY taught central:
    its racks and machines are still that datacenter process's."""
    async with engine.begin() as conn:
        dc = await _datacenter(conn, dc_id)
        row = await _row(conn, dc, kind)
        await conn.execute(_rs.delete().where(_rs.c.id == row.id))
        await record(
            conn,
            actor,
            Action.REMOTE_SERVICES_DELETE,
            dc_id=dc.id,
            target=service_path(dc.id, kind),
            message=f"Remote service {kind.value} of datacenter {dc.name} at {row.uri} deleted",
        )


async def register_remote_service(
    engine: AsyncEngine,
    session: aiohttp.ClientSession,
    dc_id: int,
    kind: ServiceType | str,
    uri: str,
    *,
    link: DatacenterRequests | None = None,
    actor: Actor | None = None,
    timeout: float = MAX_CHECK_TIMEOUT,
    now: datetime | None = None,
) -> RemoteService:
    """Make sure the datacenter has this service at this URI, checked now: registered
    when it has none of this type, moved when it is elsewhere, checked again when it is
    there already (for a program that registers its own services at every start).

    Without `actor` the events are the system's. The status returned is the check's; a
    service that does not answer is registered all the same, down.
    """
    kind = parse_type(kind) if not isinstance(kind, ServiceType) else kind
    checker = Checker(session=session, link=link, timeout=timeout)
    async with engine.connect() as conn:
        dc = await _datacenter(conn, dc_id)
        query = select(_rs.c.uri).where(_rs.c.datacenter_id == dc.id, _rs.c.type == kind.value)
        current = (await conn.execute(query)).scalar_one_or_none()
    if current is None:
        return await create_remote_service(
            engine, dc_id, kind, uri, checker=checker, actor=actor, now=now
        )
    if current != validate_uri(kind, uri):
        return await update_remote_service(
            engine, dc_id, kind, uri, checker=checker, actor=actor, now=now
        )
    try:
        return await check_remote_service(
            engine, dc_id, kind, checker=checker, actor=actor, now=now
        )
    except RemoteServiceDown:
        return await _reread(engine, dc_id, kind)
