"""abiquo-central, abiquo-dc and abiquo-aim run as systemd runs them: settings from a file
and the environment, READY=1 on the notify socket, a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cli.test_all_in_one import free_port

pytestmark = [pytest.mark.mariadb, pytest.mark.rabbitmq]


class Program:
    def __init__(self, name: str, module: str, env: dict[str, str], tmp: Path) -> None:
        self.name = name
        self.notify_path = tmp / f"{name}.notify"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(60)
        full = {**os.environ, **env, "NOTIFY_SOCKET": str(self.notify_path)}
        full["ABIQUO_LOG__FORMAT"] = "json"
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_for(self, state: bytes) -> None:
        try:
            got = self.notify.recv(256)
        except TimeoutError:
            self.process.kill()
            _, err = self.process.communicate()
            pytest.fail(f"{self.name} never said {state!r}:\n{err[-3000:]}")
        assert got == state

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        self.wait_for(b"STOPPING=1")
        _, err = self.process.communicate(timeout=20)
        self.notify.close()
        return self.process.returncode, err


def test_central_and_dc_run_as_services(
    fresh_database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    env = {"ABIQUO_DATABASE__URL": fresh_database_url, "ABIQUO_RABBITMQ__URL": rabbitmq_url}
    upgrade = subprocess.run(
        [sys.executable, "-m", "abiquo_cli", "db", "upgrade"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert "database at revision" in upgrade.stdout

    central_port, dc_port = free_port(), free_port()
    config = tmp_path / "dc.toml"
    config.write_text(
        f'[datacenter]\nname = "prog"\nstate_dir = "{tmp_path / "dc-state"}"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {dc_port}\n'
    )
    central = Program(
        "central",
        "abiquo_central",
        {**env, "ABIQUO_HTTP__HOST": "127.0.0.1", "ABIQUO_HTTP__PORT": str(central_port)},
        tmp_path,
    )
    dc = Program("dc", "abiquo_dc", {"ABIQUO_CONFIG": str(config), **env}, tmp_path)
    try:
        central.wait_for(b"READY=1")
        dc.wait_for(b"READY=1")
        with urllib.request.urlopen(f"http://127.0.0.1:{central_port}/api/version") as r:
            assert r.status == 200
        uuid_file = tmp_path / "dc-state" / "datacenter.uuid"
        dc_uuid = uuid_file.read_text().strip()
        deadline = time.monotonic() + 20
        while True:  # its subsystems start on their own, just after READY
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{dc_port}/virtualfactory/check"
                ) as r:
                    assert r.read().decode() == dc_uuid
                    break
            except urllib.error.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        dc_code, dc_err = dc.stop()
        central_code, central_err = central.stop()
    assert dc_code == 0, dc_err[-3000:]
    assert central_code == 0, central_err[-3000:]
    for err in (dc_err, central_err):
        assert err.count('"shutdown stage done"') == 3


def test_aim_runs_and_answers_over_thrift(tmp_path: Path) -> None:
    from thriftpy2.rpc import make_client
    from thriftpy2.transport import TFramedTransportFactory

    from aim.contract import load

    port = free_port()
    aim = Program(
        "aim",
        "aim",
        {
            "ABIQUO_LISTEN__HOST": "127.0.0.1",
            "ABIQUO_LISTEN__PORT": str(port),
            "ABIQUO_LIBVIRT__URI": "test:///default",
        },
        tmp_path,
    )
    try:
        aim.wait_for(b"READY=1")
        contract = load()
        client = make_client(
            contract.Aim, "127.0.0.1", port, trans_factory=TFramedTransportFactory()
        )
        try:
            info = client.getAgentInfo()
            domains = client.getDomains()
        finally:
            client.close()
        assert info.contractVersion == contract.CONTRACT_VERSION
        assert info.libvirtUri == "test:///default"
        # libvirt's test driver starts with one running domain named "test".
        assert [d.name for d in domains] == ["test"]
    finally:
        code, err = aim.stop()
    assert code == 0, err[-3000:]


def test_a_bad_setting_is_one_clear_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "abiquo_dc"],
        env={**os.environ, "ABIQUO_HTTP__PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "abiquo-dc: settings: Expected `int`, got `str` - at `$.http.port`"
    ]
