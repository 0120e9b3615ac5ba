"""`abiquo all-in-one` as an operator runs it: a real process, HTTP, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from thriftpy2.rpc import make_client
from thriftpy2.transport import TFramedTransportFactory

from aim.contract import load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    def __init__(
        self, process: subprocess.Popen[str], port: int, dc_port: int, banner: list[str]
    ) -> None:
        self.process = process
        self.port = port
        self.dc_port = dc_port
        self.banner = banner

    def get(self, path: str, *, auth: tuple[str, str] | None = None, accept: str = "") -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if auth:
            token = b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        if accept:
            request.add_header("Accept", accept)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()

    def send(self, method: str, path: str, body: Any, *, auth: tuple[str, str], media: str) -> Any:
        """`body` as JSON of the vendor type `media`; the answer's status and JSON."""
        url = path if path.startswith("http") else f"http://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(
            url, data=json.dumps(body).encode() if body is not None else None, method=method
        )
        token = b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        kind = f"application/vnd.abiquo.{media}+json"
        request.add_header("Accept", kind)
        if body is not None:
            request.add_header("Content-Type", kind)
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")

    def stop(self) -> tuple[int, float, list[dict[str, Any]]]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=30)
        took = time.monotonic() - started
        lines = []
        for line in err.splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return self.process.returncode, took, lines


def start(state_dir: Path, *, password: str | None) -> Running:
    port, dc_port = free_port(), free_port()
    env = dict(os.environ)
    env.pop("ABIQUO_ADMIN_PASSWORD", None)
    env.update(
        ABIQUO_STATE_DIR=str(state_dir),
        ABIQUO_DC_PORT=str(dc_port),
        ABIQUO_AIM_PORT=str(free_port()),
        ABIQUO_HEARTBEAT_INTERVAL="0.2",
        ABIQUO_LOG__FORMAT="json",
    )
    if password is not None:
        env["ABIQUO_ADMIN_PASSWORD"] = password
    process = subprocess.Popen(
        [sys.executable, "-m", "abiquo_cli", "all-in-one", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    banner: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            _, err = process.communicate(timeout=10)
            pytest.fail(f"all-in-one ended before it was ready:\n{err[-3000:]}")
        banner.append(line.rstrip())
        if "the API is at" in line:
            return Running(process, port, dc_port, banner)
    process.kill()
    pytest.fail("all-in-one did not say it was ready within 60 s")


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"


def test_all_in_one_serves_and_stops_cleanly(state_dir: Path) -> None:
    aio = start(state_dir, password="s3cret-pass")
    try:
        assert aio.banner[-1] == f"Abiquo all-in-one: the API is at http://127.0.0.1:{aio.port}/api"
        status, _, body = aio.get("/api/version")
        assert status == 200 and body.strip()

        # Its own datacenter is there and, once its heartbeat arrived, available.
        deadline = time.monotonic() + 20
        while True:
            _, _, body = aio.get(
                "/api/admin/datacenters",
                auth=("admin", "s3cret-pass"),
                accept="application/vnd.abiquo.datacenters+json",
            )
            [dc] = json.loads(body)["collection"]
            statuses = {rs["type"]: rs["status"] for rs in dc["remoteServices"]["collection"]}
            if dc["available"] and statuses.get("VIRTUAL_FACTORY") == 1:
                break
            assert time.monotonic() < deadline, f"not available in time: {dc}"
            time.sleep(0.2)
        assert dc["name"] == "all-in-one"
        assert len(statuses) == 6

        # The demo KVM host: a real AIM over libvirt's test driver.
        [aim_line] = [line for line in aio.banner if line.startswith("Demo KVM host")]
        aim_port = int(aim_line.split(" is at ", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])
        contract = load()
        client = make_client(
            contract.Aim, "127.0.0.1", aim_port, trans_factory=TFramedTransportFactory()
        )
        try:
            node = client.getNodeInfo()
            names = [d.name for d in client.getDomains()]
        finally:
            client.close()
        assert (node.cpus, node.memoryBytes) == (8, 16 * 1024**3)
        assert names == ["demo-existing"]

        # And the datacenter's Discovery Manager sees it, ready to be added as a machine.
        host = json.loads(
            urllib.request.urlopen(
                f"http://127.0.0.1:{aio.dc_port}/nodecollector/127.0.0.1/host"
                f"?hypervisor=KVM&port={aim_port}",
                timeout=20,
            ).read()
        )
        assert host["hypervisor_type"] == "KVM"
        assert host["cpu_cores"] * host["cpu_sockets"] >= 4
        assert host["datastores"]

        # It came up registered: a rack, and the demo host as a machine of it.
        _, _, body = aio.get(
            f"/api/admin/datacenters/{dc['id']}/racks",
            auth=("admin", "s3cret-pass"),
            accept="application/vnd.abiquo.racks+json",
        )
        [rack] = json.loads(body)["collection"]
        _, _, body = aio.get(
            f"/api/admin/datacenters/{dc['id']}/racks/{rack['id']}/machines",
            auth=("admin", "s3cret-pass"),
            accept="application/vnd.abiquo.machines+json",
        )
        [machine] = json.loads(body)["collection"]
        assert (machine["type"], machine["port"], machine["state"]) == ("KVM", aim_port, "MANAGED")
        assert machine["available"]
        assert all(ds["enabled"] for ds in machine["datastores"]["collection"])

        # The administrator's enterprise may use the datacenter, and the demo template
        # is in its repository there, as the Appliance Manager reported it.
        _, _, body = aio.get(
            "/api/cloud/locations",
            auth=("admin", "s3cret-pass"),
            accept="application/vnd.abiquo.datacenters+json",
        )
        assert [loc["id"] for loc in json.loads(body)["collection"]] == [dc["id"]]
        templates = (
            f"/api/admin/enterprises/1/datacenterrepositories/{dc['id']}/virtualmachinetemplates"
        )
        deadline = time.monotonic() + 20
        while True:
            _, _, body = aio.get(
                templates,
                auth=("admin", "s3cret-pass"),
                accept="application/vnd.abiquo.virtualmachinetemplates+json",
            )
            found = json.loads(body)["collection"]
            if found:
                break
            assert time.monotonic() < deadline, "the demo template did not appear"
            time.sleep(0.2)
        [demo] = found
        assert (demo["name"], demo["state"]) == ("Demo (tiny)", "DOWNLOAD")

        # And with nothing else set up, a VM made from it deploys.
        admin = ("admin", "s3cret-pass")
        _, vdc = aio.send(
            "POST",
            "/api/cloud/virtualdatacenters",
            {
                "name": "demo",
                "hypervisorType": "KVM",
                "links": [
                    {"rel": "location", "href": dc["links"][0]["href"]},
                    {
                        "rel": "enterprise",
                        "href": f"http://127.0.0.1:{aio.port}/api/admin/enterprises/1",
                    },
                ],
            },
            auth=admin,
            media="virtualdatacenter",
        )
        vapps = next(link["href"] for link in vdc["links"] if link["rel"] == "virtualappliances")
        _, vapp = aio.send("POST", vapps, {"name": "demo"}, auth=admin, media="virtualappliance")
        vms = next(link["href"] for link in vapp["links"] if link["rel"] == "virtualmachines")
        template = next(link["href"] for link in demo["links"] if link["rel"] == "edit")
        _, vm = aio.send(
            "POST",
            vms,
            {"label": "first", "links": [{"rel": "virtualmachinetemplate", "href": template}]},
            auth=admin,
            media="virtualmachine",
        )
        here = next(link["href"] for link in vm["links"] if link["rel"] == "edit")
        status, _ = aio.send(
            "POST", f"{here}/action/deploy", None, auth=admin, media="acceptedrequest"
        )
        assert status == 202
        deadline = time.monotonic() + 30
        while True:
            _, now = aio.send("GET", here, None, auth=admin, media="virtualmachine")
            if now["state"] == "ON":
                break
            assert now["state"] == "LOCKED", now
            assert time.monotonic() < deadline, "the demo VM did not come up"
            time.sleep(0.2)
    finally:
        code, took, lines = aio.stop()
    assert code == 0
    assert took < 10
    stages = [line["stage"] for line in lines if line.get("event") == "shutdown stage done"]
    assert stages == ["stop accepting", "drain", "close"]


def test_the_admin_password_is_generated_and_shown_once(state_dir: Path) -> None:
    first = start(state_dir, password=None)
    try:
        shown = [line for line in first.banner if line.startswith("Cloud administrator: admin / ")]
        assert len(shown) == 1
        password = shown[0].split(" / ", 1)[1].split(" ", 1)[0]
        status, _, _ = first.get("/api/admin/datacenters", auth=("admin", password))
        assert status == 200
    finally:
        assert first.stop()[0] == 0
    second = start(state_dir, password=None)
    try:
        assert not any("Cloud administrator" in line for line in second.banner)
        # What the first start registered is found, not made again.
        status, _, body = second.get(
            "/api/admin/datacenters",
            auth=("admin", password),
            accept="application/vnd.abiquo.datacenters+json",
        )
        [dc] = json.loads(body)["collection"]
        assert len(dc["remoteServices"]["collection"]) == 6
    finally:
        assert second.stop()[0] == 0
