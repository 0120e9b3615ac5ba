"""/api/login and /api/logout: the current user, and the session token that stands in
for its password.

GET /api/login, authenticated by Basic or by a token, answers the caller as a `user`
and hands out a session token, in the `auth` cookie and in the X-Abiquo-Token header.
Called with a token, it hands back that same token (its expiry moved on), so that a
client that re-reads its user does not pile up tokens. It is also where a successful
login enters the event log: Basic authenticates every request, and recording each of
those would bury the log.

GET /api/logout (or DELETE /api/login) revokes the token the request came with and
clears the cookie.
"""

from __future__ import annotations

from aiohttp import web

from abiquo_central.api.auth import AUTH_COOKIE, TOKEN, principal
from abiquo_central.api.endpoint import endpoint
from abiquo_central.api.errors import NOT_AUTHENTICATED, ApiError
from abiquo_central.api.keys import CLOCK, ENGINE, SETTINGS
from abiquo_central.api.links import API_PREFIX, Hrefs, base_url
from abiquo_central.api.render import render
from abiquo_central.api.resources.users import User, to_model
from abiquo_central.events import record_login
from abiquo_central.tenants import users
from abiquo_central.tenants.sessions import issue_token, revoke_token
from abiquo_runtime.errors import NotFound

TOKEN_HEADER = "X-Abiquo-Token"


def _secure(request: web.Request) -> bool:
    # The cookie is marked Secure when the client's side of the connection is https,
    # directly or as the reverse proxy reports it.
    return base_url(request).startswith("https://")


@endpoint(produces=User.media.one)
async def login(request: web.Request) -> web.Response:
    caller = principal(request)
    app = request.config_dict
    engine, settings = app[ENGINE], app[SETTINGS].auth
    try:
        user = await users.get_user(engine, caller, caller.enterprise_id, caller.user_id)
    except NotFound:
        # Deleted between authentication and now.
        raise ApiError(401, "Bad credentials", code=NOT_AUTHENTICATED) from None
    token = request.get(TOKEN)
    if token is None:
        token = await issue_token(
            engine,
            user_id=caller.user_id,
            now=app[CLOCK](),
            ttl=settings.token_ttl,
            max_age=settings.token_max_age,
        )
    await record_login(
        engine,
        nick=caller.nick,
        user_id=caller.user_id,
        enterprise_id=caller.enterprise_id,
        succeeded=True,
    )
    response = render(request, to_model(user, Hrefs.of(request)), headers={TOKEN_HEADER: token})
    response.set_cookie(
        AUTH_COOKIE,
        token,
        path=API_PREFIX,
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    return response


@endpoint()
async def logout(request: web.Request) -> web.Response:
    token = request.get(TOKEN)
    if token is not None:
        await revoke_token(request.config_dict[ENGINE], token)
    response = web.Response(status=204)
    response.del_cookie(AUTH_COOKIE, path=API_PREFIX)
    return response


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/login", login, name="login")
    router.add_delete("/login", logout, name="login-delete")
    router.add_get("/logout", logout, name="logout")
