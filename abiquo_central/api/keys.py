"""Typed state: what build_api puts in the application, what middlewares put in a request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.api.media import Negotiated
from abiquo_central.link import DatacenterRequests
from abiquo_central.settings import CentralSettings
from abiquo_central.tenants.authentication import Principal, PrivilegeCache
from abiquo_central.tenants.passwords import Passwords
from abiquo_runtime.secrets import SecretBox

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# Application state (read it through request.config_dict, which also sees a parent's).
ENGINE = web.AppKey("abiquo.api.engine", AsyncEngine)
SETTINGS = web.AppKey("abiquo.api.settings", CentralSettings)
CLOCK: web.AppKey[Clock] = web.AppKey("abiquo.api.clock")
PASSWORDS = web.AppKey("abiquo.api.passwords", Passwords)
# Each role's privileges, as this process last read them.
PRIVILEGES = web.AppKey("abiquo.api.privileges", PrivilegeCache)
# Encrypts what must be stored but not readable (hypervisor passwords).
SECRETS = web.AppKey("abiquo.api.secrets", SecretBox)
# Called once a request queued messages in the outbox: the relay sends them at once.
ON_QUEUED: web.AppKey[Callable[[], None]] = web.AppKey("abiquo.api.on_queued")
# Requests to the datacenters (discovery, checks, monitoring).
LINK: web.AppKey[DatacenterRequests] = web.AppKey("abiquo.api.link")
# One HTTP client for what central asks over HTTP (the remote services' checks); opened
# and closed with the application.
HTTP_CLIENT = web.AppKey("abiquo.api.http_client", aiohttp.ClientSession)

# Request state, set by the middlewares.
CORRELATION_ID = web.RequestKey("abiquo.api.correlation_id", str)
PRINCIPAL = web.RequestKey("abiquo.api.principal", Principal)
NEGOTIATED = web.RequestKey("abiquo.api.negotiated", Negotiated)
