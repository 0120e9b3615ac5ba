"""build_api: the Abiquo API as an aiohttp application, mounted by the caller at /api."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.api import openapi, version
from abiquo_central.api.auth import auth_middleware
from abiquo_central.api.correlation import correlation_middleware, echo_correlation_id
from abiquo_central.api.errors import error_middleware
from abiquo_central.api.keys import (
    CLOCK,
    ENGINE,
    HTTP_CLIENT,
    LINK,
    ON_QUEUED,
    PASSWORDS,
    PRIVILEGES,
    SECRETS,
    SETTINGS,
    Clock,
    utc_now,
)
from abiquo_central.api.negotiation import negotiation_middleware
from abiquo_central.api.resources import (
    categories,
    datacenters,
    datastores,
    discovery,
    disk_formats,
    enterprises,
    events,
    hypervisor_types,
    limits,
    locations,
    login,
    machines,
    networks,
    privileges,
    properties,
    racks,
    remote_services,
    repositories,
    reserved_machines,
    roles,
    templates,
    users,
    vapps,
    vdcs,
    vm_tasks,
    vms,
)
from abiquo_central.link import DatacenterRequests, NoLink
from abiquo_central.settings import CentralSettings
from abiquo_central.tenants.authentication import PrivilegeCache
from abiquo_central.tenants.passwords import Passwords
from abiquo_runtime.secrets import SecretBox

# Bodies larger than this are refused with 413 before they are read.
MAX_BODY_BYTES = 4 * 1024 * 1024


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    # Checks of remote services reuse its connections; it closes with the application.
    async with aiohttp.ClientSession() as session:
        app[HTTP_CLIENT] = session
        yield


def _nothing() -> None:
    pass


def build_api(
    *,
    engine: AsyncEngine,
    settings: CentralSettings,
    secrets: SecretBox,
    link: DatacenterRequests | None = None,
    on_queued: Callable[[], None] | None = None,
    clock: Clock | None = None,
    passwords: Passwords | None = None,
) -> web.Application:
    """The API application; the caller mounts it with `root.add_subapp("/api", api)`.

    The caller owns `engine` and `link` (opens nothing here, closes nothing either).
    `secrets` encrypts hypervisor passwords; without `link` every datacenter is
    unavailable. `clock` is what "now" means to liveness (tests move it); `passwords`
    hashes and verifies (argon2-cffi's default parameters unless another is given).
    """
    app = web.Application(
        middlewares=[
            # Outermost first: the id is bound before anything can fail or log, errors
            # are rendered for everything inside, negotiation runs for the authorised.
            correlation_middleware,
            error_middleware,
            auth_middleware,
            negotiation_middleware,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[ENGINE] = engine
    app[SETTINGS] = settings
    app[CLOCK] = clock if clock is not None else utc_now
    app[PASSWORDS] = passwords if passwords is not None else Passwords()
    app[SECRETS] = secrets
    app[PRIVILEGES] = PrivilegeCache()
    app[LINK] = link if link is not None else NoLink()
    # Without a relay to wake, queued messages wait for whichever relay polls next.
    app[ON_QUEUED] = on_queued if on_queued is not None else _nothing
    app.on_response_prepare.append(echo_correlation_id)
    app.cleanup_ctx.append(_http_client)
    version.add_routes(app.router)
    openapi.setup(app)
    datacenters.add_routes(app.router)
    remote_services.add_routes(app.router)
    enterprises.add_routes(app.router)
    events.add_routes(app.router)
    login.add_routes(app.router)
    limits.add_routes(app.router)
    locations.add_routes(app.router)
    hypervisor_types.add_routes(app.router)
    disk_formats.add_routes(app.router)
    categories.add_routes(app.router)
    properties.add_routes(app.router)
    privileges.add_routes(app.router)
    roles.add_routes(app.router)
    users.add_routes(app.router)
    racks.add_routes(app.router)
    machines.add_routes(app.router)
    datastores.add_routes(app.router)
    discovery.add_routes(app.router)
    reserved_machines.add_routes(app.router)
    vdcs.add_routes(app.router)
    networks.add_routes(app.router)
    vapps.add_routes(app.router)
    vms.add_routes(app.router)
    repositories.add_routes(app.router)
    templates.add_routes(app.router)
    vm_tasks.add_routes(app.router)
    return app
