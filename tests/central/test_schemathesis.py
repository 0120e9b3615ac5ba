"""Schemathesis against the live API, from the OpenAPI document the API serves.

Every operation of GET /api/openapi.json is fuzzed (valid and invalid inputs) as the
seeded cloud administrator, on MariaDB, and each answer must be no server error, have a
documented status code and content type, and a body that fits the documented schema.

The API runs in a thread with an event loop of its own, served over TCP on a free port
of 127.0.0.1, because schemathesis is a blocking HTTP client. Runs are reproducible: a
fixed seed, derandomized generation, no example database, a bounded number of examples
per operation. Request bodies are generated as JSON only (the XML bodies are described
loosely, and XML parsing has its own tests).
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import requests
import schemathesis
from aiohttp import web
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, reject, settings
from schemathesis import Case

from abiquo_central.api import build_api
from abiquo_central.api.openapi import build_document
from abiquo_central.db.engine import create_engine
from abiquo_central.settings import CentralSettings
from abiquo_central.tenants.passwords import Passwords
from abiquo_runtime.secrets import SecretBox
from tests.central.conftest import ADMIN, Seeded, mount

MARIADB_ONLY = pytest.mark.parametrize(
    "database", [pytest.param("mariadb", marks=pytest.mark.mariadb)], indirect=True
)
# Per operation: enough to reach the interesting inputs, few enough for ~2 minutes on
# two cores with every route of the API.
MAX_EXAMPLES = 15
# aiohttp's limit on the request line (its max_line_size).
MAX_REQUEST_LINE = 8190
SEED = 20250301


class LiveApi:
    """The API on 127.0.0.1:<free port>, served by a loop in a thread of its own."""

    def __init__(self, db_url: str, passwords: Passwords, secrets: SecretBox) -> None:
        self._db_url, self._passwords, self._secrets = db_url, passwords, secrets
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="live-api", daemon=True)
        self._ready: queue.Queue[int | BaseException] = queue.Queue()
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        engine = create_engine(self._db_url, pool_size=5, echo=False)
        app = build_api(
            engine=engine,
            settings=CentralSettings(),
            passwords=self._passwords,
            secrets=self._secrets,
        )
        runner = web.AppRunner(mount(app), access_log=None)

        async def start() -> int:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.Server)
            return int(server.sockets[0].getsockname()[1])

        try:
            self._ready.put(self._loop.run_until_complete(start()))
            self._loop.run_forever()
        except BaseException as exc:
            self._ready.put(exc)
        finally:
            self._loop.run_until_complete(runner.cleanup())
            self._loop.run_until_complete(engine.dispose())
            self._loop.close()

    def __enter__(self) -> LiveApi:
        self._thread.start()
        port = self._ready.get(timeout=30)
        if isinstance(port, BaseException):
            raise port
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)


@pytest.fixture
def live_api(
    db_url: str, seeded: Seeded, fast_passwords: Passwords, secrets: SecretBox
) -> Iterator[str]:
    with LiveApi(db_url, fast_passwords, secrets) as live:
        yield live.url


def json_bodies_only(document: dict[str, Any]) -> dict[str, Any]:
    """The document with request bodies offered as JSON alone."""
    for operations in document["paths"].values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            for kind in [k for k in content if not k.endswith("+json")]:
                del content[kind]
    return document


def fuzzing_config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": dict(ADMIN),
            "request-timeout": 30,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                # The credentials are the administrator's, never generated ones.
                "with-security-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
            },
        }
    )


def the_document() -> dict[str, Any]:
    """What GET /api/openapi.json serves, made the same way (pytest needs the operations
    when it collects the tests, before any server runs; the test compares the two)."""
    engine = create_engine("sqlite+aiosqlite://", pool_size=1, echo=False)  # never connects
    app = build_api(
        engine=engine, settings=CentralSettings(), secrets=SecretBox(Fernet.generate_key())
    )
    mount(app)
    document: dict[str, Any] = json.loads(msgspec.json.encode(build_document(app.router)))
    return document


DOCUMENT = the_document()
schema = schemathesis.openapi.from_dict(json_bodies_only(the_document()), config=fuzzing_config())


@MARIADB_ONLY
def test_the_fuzzed_document_is_the_served_one(live_api: str) -> None:
    served = requests.get(f"{live_api}/api/openapi.json", timeout=30)
    assert served.json() == DOCUMENT


@MARIADB_ONLY
@schema.parametrize()
# The fixture's server and database are shared by an operation's examples on purpose:
# whatever state one example leaves, the next must still be answered correctly.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_keeps_its_documented_contract(case: Case, live_api: str) -> None:
    base_url = f"{live_api}/api"
    if len(_request_line(case, base_url)) > MAX_REQUEST_LINE:
        # aiohttp's parser answers such a request itself, with a text/plain 400, before
        # the application sees it: that is the HTTP server's contract, not the API's.
        reject()
    case.call_and_validate(base_url=base_url)


def _request_line(case: Case, base_url: str) -> str:
    prepared = requests.Request(
        case.method, f"{base_url}{case.formatted_path}", params=case.query
    ).prepare()
    return f"{case.method} {prepared.path_url} HTTP/1.1"
