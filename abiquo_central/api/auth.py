"""Authentication (HTTP Basic, or a session token) and authorisation (privileges).

A session token (issued by GET /api/login) is accepted as `Authorization: Token <t>`,
`Authorization: Bearer <t>` or the `auth` cookie; an Authorization header wins over the
cookie. Basic attempts are throttled per nick and per client address (see
tenants/throttle.py): a blocked one is refused with 429 and Retry-After before its
password is even checked.

Every request is authenticated unless its route is declared `public`; requests that
match no route are too, so that nobody learns what exists without credentials.
Authorisation is the route's declared privileges; a declared route that names none is
open to any authenticated user (it decides from the stored data, as "a user may read
itself" does). A route that is not declared at all gets the default of its area: under
/api/admin, PHYS_DC_ENUMERATE; elsewhere, any authenticated user.
"""

from __future__ import annotations

import base64
import binascii
import math

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from abiquo_central.api.endpoint import Endpoint, endpoint_of
from abiquo_central.api.errors import FORBIDDEN, NOT_AUTHENTICATED, ApiError
from abiquo_central.api.keys import CLOCK, ENGINE, PASSWORDS, PRINCIPAL, PRIVILEGES, SETTINGS
from abiquo_central.api.links import API_PREFIX
from abiquo_central.events import Actor
from abiquo_central.tenants import throttle
from abiquo_central.tenants.authentication import Principal, authenticate
from abiquo_central.tenants.privileges import PHYS_DC_ENUMERATE
from abiquo_central.tenants.sessions import resolve_token

ADMIN_AREA = f"{API_PREFIX}/admin/"
ADMIN_DEFAULT_PRIVILEGES = frozenset({PHYS_DC_ENUMERATE})
AUTH_COOKIE = "auth"
TOO_MANY_ATTEMPTS = "AUTH-3"

# The session token a request was authenticated with (absent for Basic).
TOKEN = web.RequestKey("abiquo.api.token", str)


def _unauthorized(request: web.Request, message: str) -> ApiError:
    realm = request.config_dict[SETTINGS].auth.realm.replace("\\", "\\\\").replace('"', '\\"')
    return ApiError(
        401,
        message,
        code=NOT_AUTHENTICATED,
        headers={hdrs.WWW_AUTHENTICATE: f'Basic realm="{realm}"'},
    )


def _credentials(request: web.Request) -> tuple[str, str] | str:
    """(nick, password) for Basic; the token alone for a session token."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if not header:
        cookie = request.cookies.get(AUTH_COOKIE)
        if cookie:
            return cookie
        raise _unauthorized(request, "Authentication is required")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() in ("token", "bearer"):
        token = encoded.strip()
        if not token:
            raise _unauthorized(request, f"Malformed {scheme} credentials")
        return token
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


async def _by_token(request: web.Request, token: str) -> Principal:
    app = request.config_dict
    settings = app[SETTINGS].auth
    found = await resolve_token(
        app[ENGINE],
        token,
        now=app[CLOCK](),
        ttl=settings.token_ttl,
        max_age=settings.token_max_age,
        privileges=app[PRIVILEGES],
    )
    if found is None:
        raise _unauthorized(request, "The session token is unknown or has expired")
    request[TOKEN] = token
    return found


async def _by_password(request: web.Request, nick: str, password: str) -> Principal:
    app = request.config_dict
    engine, settings, now = app[ENGINE], app[SETTINGS].auth, app[CLOCK]()
    keys = throttle.throttle_keys(nick, request.remote)
    verdict = await throttle.check(engine, keys, now=now)
    if verdict.retry_after is not None:
        raise ApiError(
            429,
            "Too many failed login attempts: try again later",
            code=TOO_MANY_ATTEMPTS,
            headers={hdrs.RETRY_AFTER: str(max(1, math.ceil(verdict.retry_after)))},
        )
    found = await authenticate(
        engine, app[PASSWORDS], nick=nick, password=password, privileges=app[PRIVILEGES]
    )
    if found is None:
        policy = throttle.ThrottlePolicy(
            failures=settings.throttle_failures,
            window=settings.throttle_window,
            delay=settings.throttle_delay,
            max_delay=settings.throttle_max_delay,
        )
        await throttle.record_failure(engine, keys, now=now, policy=policy)
        raise _unauthorized(request, "Bad credentials")
    if verdict.counted:
        await throttle.clear(engine, keys)
    return found


def required_privileges(request: web.Request, spec: Endpoint | None) -> frozenset[str]:
    if spec is not None:
        return spec.privileges
    if request.path.startswith(ADMIN_AREA):
        return ADMIN_DEFAULT_PRIVILEGES
    return frozenset()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    spec = endpoint_of(request)
    if spec is not None and spec.public:
        return await handler(request)
    credentials = _credentials(request)
    if isinstance(credentials, str):
        principal = await _by_token(request, credentials)
    else:
        principal = await _by_password(request, *credentials)
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


def actor(request: web.Request) -> Actor:
    """The caller as the event log names whoever makes a change."""
    return request[PRINCIPAL].as_actor()
