"""The unit files: valid for systemd, Type=notify, restarted on failure, not root."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import services

UNITS = sorted((Path(__file__).parents[1] / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_is_what_the_services_need(unit: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert service["User"] not in ("", "root")
    program = unit.stem
    assert f"--config /etc/abiquo/{program}.toml" in service["ExecStart"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_accepts_the_unit(unit: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        message = "systemd-analyze is missing (apt-get install systemd)"
        if services.CI:
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # The programs are not installed in /opt/abiquo here: that complaint alone is expected.
    complaints = [
        line for line in done.stderr.splitlines() if line.strip() and "/opt/abiquo/bin/" not in line
    ]
    assert complaints == []
