from __future__ import annotations

from abiquo_central.infrastructure.remote_services import RemoteService, remote_services

SERVICES = {
    "am": "RUNNING",
    "virtualfactory": "RUNNING",
    "bpm-async": "RETRYING",
    "vsm": "RUNNING",
    "nodecollector": "FAILED",
    "ssm": "STOPPED",
    "something-new": "RUNNING",
}


def test_types_uris_and_abiquo_order() -> None:
    found = remote_services("http://dc1:8009/", SERVICES, available=True)
    assert found == (
        RemoteService("VIRTUAL_FACTORY", "http://dc1:8009/virtualfactory", 1),
        RemoteService("VIRTUAL_SYSTEM_MONITOR", "http://dc1:8009/vsm", 1),
        RemoteService("NODE_COLLECTOR", "http://dc1:8009/nodecollector", 0),
        RemoteService("STORAGE_SYSTEM_MONITOR", "http://dc1:8009/ssm", 0),
        RemoteService("APPLIANCE_MANAGER", "http://dc1:8009/am", 1),
        RemoteService("BPM_SERVICE", "http://dc1:8009/bpm-async", 0),
    )


def test_nothing_is_up_when_the_datacenter_is_not_available() -> None:
    found = remote_services("http://dc1:8009", SERVICES, available=False)
    assert {rs.status for rs in found} == {0}
    assert len(found) == 6


def test_never_heard() -> None:
    assert remote_services(None, None, available=False) == ()
    assert remote_services("http://dc", {}, available=True) == ()
