"""The pure rules of private networks: validation, host addresses, tags and MACs."""

from __future__ import annotations

import random
import re

import pytest

from abiquo_central.cloud.addressing import (
    FALLBACK_MAC_PREFIX,
    INVALID_NETWORK,
    NETWORK_TOO_LARGE,
    NetworkSpec,
    avoided_tags,
    free_tag,
    host_addresses,
    mac_prefix,
    random_macs,
    validate_network,
)
from abiquo_runtime.errors import InvalidInput


def test_the_default_is_valid() -> None:
    spec = validate_network(NetworkSpec())
    assert (spec.address, spec.mask, spec.gateway) == ("192.168.0.0", 24, "192.168.0.1")


def test_a_22_is_the_largest() -> None:
    validate_network(NetworkSpec(address="10.0.0.0", mask=22, gateway="10.0.0.1"))
    with pytest.raises(InvalidInput) as err:
        validate_network(NetworkSpec(address="10.0.0.0", mask=21, gateway="10.0.0.1"))
    assert err.value.code == NETWORK_TOO_LARGE


@pytest.mark.parametrize(
    "spec",
    [
        NetworkSpec(name=" "),
        NetworkSpec(address="192.168.0.1"),  # not the network's address
        NetworkSpec(address="8.8.8.0", gateway="8.8.8.1"),  # not private
        NetworkSpec(address="nonsense"),
        NetworkSpec(gateway="192.168.1.1"),  # outside
        NetworkSpec(gateway="192.168.0.255"),  # broadcast
        NetworkSpec(gateway="192.168.0.0"),  # the network itself
        NetworkSpec(mask=31),
        NetworkSpec(mask=40),
        NetworkSpec(primary_dns="dns"),
        NetworkSpec(type="PUBLIC"),
        NetworkSpec(sufix_dns="x" * 256),
    ],
)
def test_invalid_networks(spec: NetworkSpec) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_network(spec)
    assert err.value.code == INVALID_NETWORK


def test_host_addresses_skip_the_gateway() -> None:
    hosts = host_addresses("192.168.0.0", 24, "192.168.0.1")
    assert len(hosts) == 253
    assert hosts[0] == "192.168.0.2" and hosts[-1] == "192.168.0.254"
    assert len(host_addresses("10.0.0.0", 22, "10.0.3.254")) == 1021
    assert host_addresses("10.0.0.0", 30, "10.0.0.2") == ["10.0.0.1"]


def test_avoided_tags() -> None:
    assert avoided_tags("") == set()
    assert avoided_tags("5, 10-12") == {5, 10, 11, 12}


def test_free_tag_is_the_lowest_any_rack_hands_out() -> None:
    assert free_tag([(2, 10, "")], set()) == 2
    assert free_tag([(2, 10, "2-4")], {5}) == 6
    assert free_tag([(2, 3, ""), (100, 200, "")], {2, 3}) == 100
    assert free_tag([(2, 3, ""), (5, 5, "")], {2, 3, 5}) is None
    assert free_tag([], set()) is None


def test_macs_have_the_hypervisors_prefix_and_are_distinct() -> None:
    assert mac_prefix("KVM") == "52:54:00"
    assert mac_prefix("XEN_3") == "00:16:3e"
    assert mac_prefix("VMX_04") == "00:50:56"
    assert mac_prefix("SOMETHING_NEW") == FALLBACK_MAC_PREFIX
    macs = random_macs("52:54:00", 2000, random.Random(1))
    assert len(set(macs)) == 2000
    assert all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) for m in macs)


def test_macs_avoid_the_given_ones() -> None:
    # A generator that repeats itself: the second draw must be skipped.
    class Repeating(random.Random):
        def __init__(self) -> None:
            super().__init__()
            self.values = iter([1, 1, 2])

        def getrandbits(self, k: int) -> int:
            return next(self.values)

    assert random_macs("52:54:00", 2, Repeating()) == ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    assert random_macs("52:54:00", 1, Repeating(), avoid=["52:54:00:00:00:01"]) == [
        "52:54:00:00:00:02"
    ]
