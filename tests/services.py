"""How tests reach the real MariaDB, RabbitMQ and Redis on this machine.

Each test run gets its own MariaDB database, RabbitMQ vhost and Redis key prefix, made at
the start and removed at the end. A service that cannot be reached skips the tests that
need it, except with CI=true, where it fails them saying how to get it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import uuid

import pytest

CI = os.environ.get("CI", "").lower() == "true"
RUN_ID = uuid.uuid4().hex[:10]

MARIADB_HOST = os.environ.get("ABIQUO_TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("ABIQUO_TEST_MARIADB_PORT", "3306"))
MARIADB_USER = os.environ.get("ABIQUO_TEST_MARIADB_USER", "root")
MARIADB_PASSWORD = os.environ.get("ABIQUO_TEST_MARIADB_PASSWORD", "")
RABBITMQ_HOST = os.environ.get("ABIQUO_TEST_RABBITMQ_HOST", "127.0.0.1")
RABBITMQ_PORT = int(os.environ.get("ABIQUO_TEST_RABBITMQ_PORT", "5672"))
REDIS_HOST = os.environ.get("ABIQUO_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("ABIQUO_TEST_REDIS_PORT", "6379"))

HOW_TO_START = {
    "MariaDB": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd "
    "(apt-get install mariadb-server)",
    "RabbitMQ": "rabbitmq-server -detached (apt-get install rabbitmq-server)",
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' "
    "(apt-get install redis-server)",
}


def unavailable(service: str, why: str) -> None:
    """Skip, or with CI=true fail, a test whose service is missing."""
    message = f"{service} is not available ({why}); start it with: {HOW_TO_START[service]}"
    if CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_tool(tool: str, package: str) -> str:
    """The path of a command a test needs: without it the test is skipped or, with
    CI=true, fails saying which Debian package brings it."""
    found = shutil.which(tool)
    if found is None:
        message = f"{tool} is not installed; install it with: apt-get install {package}"
        if CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run rabbitmqctl (root or the rabbitmq user can); return its standard output."""
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    done = subprocess.run(
        [exe, "-q", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def close_rabbitmq_connections(connection_name: str, vhost: str) -> int:
    """Close, from the server side, every connection that named itself `connection_name`.

    `rabbitmqctl list_connections pid client_properties` prints one connection a line: the
    pid, a tab, then the properties as an Erlang term, where the name shows as
    `{"connection_name","<name>"}` (older releases: `{<<"connection_name">>,longstr,
    <<"<name>">>}`). Only that pair is matched, so another property that happens to hold
    the same string does not count. Returns how many connections were closed.

    rabbitmqctl boots an Erlang VM that takes both cores for a second; it runs at the
    lowest priority here, so the test process (whose event loop is watched for stalls
    while this runs in a thread) keeps the CPU.
    """

    def ctl(*args: str) -> str:
        exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        nice = shutil.which("nice")
        command = [exe, "-q", *args] if nice is None else [nice, "-n", "19", exe, "-q", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    quoted = re.escape(connection_name)
    pattern = re.compile(
        r'\{\s*"connection_name"\s*,\s*"' + quoted + r'"\s*\}'
        r'|\{\s*<<"connection_name">>\s*,\s*longstr\s*,\s*<<"' + quoted + r'">>\s*\}'
    )
    out = ctl("list_connections", "--no-table-headers", "-p", vhost, "pid", "client_properties")
    closed = 0
    for line in out.splitlines():
        pid, _, properties = line.partition("\t")
        if pid.strip() and pattern.search(properties):
            ctl("close_connection", pid.strip(), "closed by a test")
            closed += 1
    return closed
