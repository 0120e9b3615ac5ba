"""/api/login, session tokens and the throttling of failed logins, on SQLite and MariaDB."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from tests.central.conftest import USER, USER_NICK, USER_PASSWORD, FakeClock, Seeded, basic

Client = TestClient[web.Request, web.Application]

JSON = "application/vnd.abiquo.user+json"
XML = "application/vnd.abiquo.user+xml"


async def _login(api: Client) -> str:
    response = await api.get("/api/login", headers={**USER, "Accept": JSON})
    assert response.status == 200
    return response.headers["X-Abiquo-Token"]


async def _logins(engine: AsyncEngine) -> int:
    ev = tables.event
    async with engine.connect() as conn:
        return (
            await conn.execute(
                select(func.count())
                .select_from(ev)
                .where(ev.c.action == "USER_LOGIN", ev.c.severity == "INFO")
            )
        ).scalar_one()


async def test_login_as_json_sets_the_cookie_and_the_header(api: Client, seeded: Seeded) -> None:
    response = await api.get("/api/login", headers={**USER, "Accept": JSON})
    assert response.status == 200
    assert response.headers["Content-Type"] == JSON
    body = await response.json(content_type=None)
    assert (body["id"], body["nick"], body["name"]) == (seeded.user_id, USER_NICK, "Jane")
    base = str(api.make_url(""))
    ent = f"{base}/api/admin/enterprises/{seeded.enterprise_id}"
    links = {link["rel"]: link["href"] for link in body["links"]}
    assert links["self"] == f"{ent}/users/{seeded.user_id}"
    assert links["enterprise"] == ent
    assert links["role"].startswith(f"{base}/api/admin/roles/")
    token = response.headers["X-Abiquo-Token"]
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"auth={token};")
    assert "HttpOnly" in cookie and "Path=/api" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie
    over_https = await api.get("/api/login", headers={**USER, "X-Forwarded-Proto": "https"})
    assert "Secure" in over_https.headers["Set-Cookie"]


async def test_login_as_xml(api: Client, seeded: Seeded) -> None:
    response = await api.get("/api/login", headers={**USER, "Accept": XML})
    assert response.status == 200
    assert response.headers["Content-Type"] == XML
    root = ET.fromstring(await response.text())
    assert root.tag == "user"
    assert root.findtext("nick") == USER_NICK
    assert {link.get("rel") for link in root.iter("link")} >= {"self", "enterprise", "role"}


async def test_the_token_works_as_token_bearer_and_cookie(api: Client) -> None:
    token = await _login(api)
    api.session.cookie_jar.clear()
    for header in (f"Token {token}", f"Bearer {token}"):
        response = await api.get("/api/events", headers={"Authorization": header})
        assert response.status == 200, header
    response = await api.get("/api/events", cookies={"auth": token})
    assert response.status == 200
    response = await api.get("/api/events", headers={"Authorization": "Bearer nope"})
    assert response.status == 401


async def test_a_login_is_recorded_once_per_login_not_per_request(
    api: Client, engine: AsyncEngine
) -> None:
    token = await _login(api)
    for _ in range(3):
        await api.get("/api/events", headers=USER)
        await api.get("/api/events", headers={"Authorization": f"Token {token}"})
    assert await _logins(engine) == 1
    await _login(api)
    assert await _logins(engine) == 2


async def test_tokens_expire_when_idle_and_at_their_maximum_age(
    api: Client, clock: FakeClock
) -> None:
    token = await _login(api)
    auth = {"Authorization": f"Token {token}"}
    # Each use moves the idle expiry on (30 minutes by default)...
    for _ in range(10):
        clock.advance(25 * 60)
        assert (await api.get("/api/events", headers=auth)).status == 200
    clock.advance(31 * 60)
    assert (await api.get("/api/events", headers=auth)).status == 401
    # ...but never past the absolute one (8 hours).
    token = await _login(api)
    auth = {"Authorization": f"Token {token}"}
    for _ in range(19):
        clock.advance(25 * 60)
        assert (await api.get("/api/events", headers=auth)).status == 200
    clock.advance(25 * 60)
    assert (await api.get("/api/events", headers=auth)).status == 401


async def test_logout_revokes_the_token(api: Client) -> None:
    token = await _login(api)
    auth = {"Authorization": f"Bearer {token}"}
    response = await api.get("/api/logout", headers=auth)
    assert response.status == 204
    assert (await api.get("/api/events", headers=auth)).status == 401
    token = await _login(api)
    auth = {"Authorization": f"Token {token}"}
    assert (await api.delete("/api/login", headers=auth)).status == 204
    assert (await api.get("/api/events", headers=auth)).status == 401


async def test_a_deactivated_or_deleted_user_loses_its_tokens(
    api: Client, engine: AsyncEngine, seeded: Seeded
) -> None:
    token = await _login(api)
    auth = {"Authorization": f"Token {token}"}
    user = tables.user
    async with engine.begin() as conn:
        await conn.execute(user.update().where(user.c.id == seeded.user_id).values(active=False))
    assert (await api.get("/api/events", headers=auth)).status == 401
    async with engine.begin() as conn:
        await conn.execute(user.update().where(user.c.id == seeded.user_id).values(active=True))
    assert (await api.get("/api/events", headers=auth)).status == 200
    async with engine.begin() as conn:
        await conn.execute(tables.session_token.delete())
        await conn.execute(user.delete().where(user.c.id == seeded.user_id))
    assert (await api.get("/api/events", headers=auth)).status == 401


async def test_failed_logins_are_throttled_until_a_success(api: Client, clock: FakeClock) -> None:
    wrong = basic(USER_NICK, "wrong")
    for _ in range(5):
        assert (await api.get("/api/login", headers=wrong)).status == 401
    # Blocked now, even with the right password.
    response = await api.get("/api/login", headers=USER)
    assert response.status == 429
    assert response.headers["Retry-After"] == "30"
    clock.advance(31)
    # One more failure after the block doubles it.
    assert (await api.get("/api/login", headers=wrong)).status == 401
    response = await api.get("/api/login", headers=USER)
    assert (response.status, response.headers["Retry-After"]) == (429, "60")
    clock.advance(61)
    assert (await api.get("/api/login", headers=USER)).status == 200
    # The success cleared the counters: failures start again from nothing.
    for _ in range(4):
        assert (await api.get("/api/login", headers=wrong)).status == 401
    assert (await api.get("/api/login", headers=USER)).status == 200


async def test_failures_are_also_counted_per_client_address(api: Client) -> None:
    for n in range(5):
        assert (await api.get("/api/login", headers=basic(f"ghost{n}", "x"))).status == 401
    response = await api.get("/api/login", headers=basic("someone", USER_PASSWORD))
    assert response.status == 429
    assert int(response.headers["Retry-After"]) > 0


async def test_failures_far_apart_are_forgotten(api: Client, clock: FakeClock) -> None:
    wrong = basic(USER_NICK, "wrong")
    for _ in range(8):
        assert (await api.get("/api/login", headers=wrong)).status == 401
        clock.advance(301)
    assert (await api.get("/api/login", headers=USER)).status == 200
