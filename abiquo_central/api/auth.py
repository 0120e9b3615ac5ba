"""Authentication (HTTP Basic against the user table) and authorisation (privileges).

Every request is authenticated unless its route is declared `public`; requests that
match no route are too, so that nobody learns what exists without credentials.
Authorisation is the route's declared privileges. A route that declares none gets the
default of its area: under /api/admin, PHYS_DC_ENUMERATE (until every route declares
its own); elsewhere, any authenticated user.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from abiquo_central.api.endpoint import Endpoint, endpoint_of
from abiquo_central.api.errors import FORBIDDEN, NOT_AUTHENTICATED, ApiError
from abiquo_central.api.keys import ENGINE, PASSWORDS, PRINCIPAL, SETTINGS
from abiquo_central.api.links import API_PREFIX
from abiquo_central.tenants.authentication import Principal, authenticate
from abiquo_central.tenants.privileges import PHYS_DC_ENUMERATE

ADMIN_AREA = f"{API_PREFIX}/admin/"
ADMIN_DEFAULT_PRIVILEGES = frozenset({PHYS_DC_ENUMERATE})


def _unauthorized(request: web.Request, message: str) -> ApiError:
    realm = request.config_dict[SETTINGS].auth.realm.replace("\\", "\\\\").replace('"', '\\"')
    return ApiError(
        401,
        message,
        code=NOT_AUTHENTICATED,
        headers={hdrs.WWW_AUTHENTICATE: f'Basic realm="{realm}"'},
    )


def _basic_credentials(request: web.Request) -> tuple[str, str]:
    header = request.headers.get(hdrs.AUTHORIZATION)
    if not header:
        raise _unauthorized(request, "Authentication is required")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _unauthorized(request, f"Unsupported authentication scheme {scheme}")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _unauthorized(request, "Malformed Basic credentials") from None
    nick, sep, password = decoded.partition(":")
    if not sep or not nick:
        raise _unauthorized(request, "Malformed Basic credentials")
    return nick, password


def required_privileges(request: web.Request, spec: Endpoint | None) -> frozenset[str]:
    if spec is not None and spec.privileges:
        return spec.privileges
    if request.path.startswith(ADMIN_AREA):
        return ADMIN_DEFAULT_PRIVILEGES
    return frozenset()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    spec = endpoint_of(request)
    if spec is not None and spec.public:
        return await handler(request)
    nick, password = _basic_credentials(request)
    principal = await authenticate(
        request.config_dict[ENGINE],
        request.config_dict[PASSWORDS],
        nick=nick,
        password=password,
    )
    if principal is None:
        raise _unauthorized(request, "Bad credentials")
    request[PRINCIPAL] = principal
    missing = required_privileges(request, spec) - principal.privileges
    if missing:
        raise ApiError(
            403,
            f"Access is denied: it needs the privilege {', '.join(sorted(missing))}",
            code=FORBIDDEN,
        )
    return await handler(request)


def principal(request: web.Request) -> Principal:
    """The authenticated caller (routes that are not public always have one)."""
    return request[PRINCIPAL]
