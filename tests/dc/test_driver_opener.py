"""The DC's settings reach the drivers it opens: [kvm] for KVM and Xen, the simulator
for every type when it is enabled."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from abiquo_dc.app import driver_opener
from abiquo_dc.hypervisors.kvm import KvmDriver, XenDriver
from abiquo_dc.hypervisors.simulator import SimulatedCloud, SimulatorDriver
from abiquo_dc.protocol.definitions import HypervisorConnection, HypervisorType
from abiquo_dc.settings import DCSettings, KvmSettings, VirtualFactorySettings


def host(kind: HypervisorType, address: str = "10.0.0.7") -> HypervisorConnection:
    return HypervisorConnection(type=kind, address=address)


def test_kvm_settings_reach_the_kvm_and_xen_drivers() -> None:
    settings = DCSettings(
        kvm=KvmSettings(
            domain_type="qemu",
            vlan_interface="bond0",
            bridge_prefix="br",
            libvirt_uri="qemu+tls://{address}/system",
        ),
        vfactory=VirtualFactorySettings(driver_timeout=12.0),
    )
    open_ = driver_opener(settings, None)
    kvm = open_(host(HypervisorType.KVM))
    assert isinstance(kvm, KvmDriver)
    assert (kvm.domain_type, kvm.vlan_interface, kvm.bridge_prefix) == ("qemu", "bond0", "br")
    assert kvm.libvirt_uri == "qemu+tls://10.0.0.7/system"
    assert kvm.timeout == 12.0 and kvm.ssl_context is None
    xen = open_(host(HypervisorType.XEN_3, "10.0.0.8"))
    assert isinstance(xen, XenDriver)
    assert xen.libvirt_uri == "qemu+tls://10.0.0.8/system"


def test_by_default_each_host_says_where_its_libvirt_is() -> None:
    kvm = driver_opener(DCSettings(), None)(host(HypervisorType.KVM))
    assert isinstance(kvm, KvmDriver)
    assert kvm.libvirt_uri is None  # the URI the host's AIM reports
    assert kvm.domain_type == "kvm"


def test_with_the_simulator_every_type_is_simulated() -> None:
    cloud = SimulatedCloud()
    driver = driver_opener(DCSettings(), cloud)(host(HypervisorType.KVM))
    assert isinstance(driver, SimulatorDriver)


def test_tls_toward_the_aims_is_made_from_the_settings(tmp_path: Path) -> None:
    if subprocess.run(["which", "openssl"], capture_output=True).returncode:
        pytest.fail("openssl is missing (apt-get install openssl)")
    for name in ("ca", "dc"):
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                "-subj", f"/CN={name}", "-keyout", str(tmp_path / f"{name}.key"),
                "-out", str(tmp_path / f"{name}.pem"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    settings = DCSettings(
        kvm=KvmSettings(
            aim_tls_ca=str(tmp_path / "ca.pem"),
            aim_tls_cert=str(tmp_path / "dc.pem"),
            aim_tls_key=str(tmp_path / "dc.key"),
        )
    )
    kvm = driver_opener(settings, None)(host(HypervisorType.KVM))
    assert isinstance(kvm, KvmDriver)
    assert isinstance(kvm.ssl_context, ssl.SSLContext)
    assert kvm.ssl_context.verify_mode is ssl.CERT_REQUIRED
