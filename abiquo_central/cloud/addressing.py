"""Pure rules of private networks: their addresses, VLAN tags and MAC addresses.

Kept apart from the database code so that each rule can be tested on its own.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from abiquo_central.infrastructure.racks import VLAN_MAX, VLAN_MIN, normalise_avoided
from abiquo_runtime.errors import InvalidInput

INVALID_NETWORK = "VLAN-2"
NETWORK_TOO_LARGE = "VLAN-3"

# The largest network whose addresses are made when it is (1022 hosts): each address is
# a row, and a larger network would be a slow, lock-holding insert of thousands.
LARGEST_PREFIX = 22
# The smallest useful one: a gateway and at least one address for a VM.
SMALLEST_PREFIX = 30
NAME_MAX = 128
SUFIX_MAX = 255
INTERNAL = "INTERNAL"

DEFAULT_NAME = "default_private_network"
DEFAULT_ADDRESS = "192.168.0.0"
DEFAULT_PREFIX = 24
DEFAULT_GATEWAY = "192.168.0.1"

# The MAC prefix of each hypervisor type: the OUI its vendor assigns to virtual NICs, so
# that the guest and the network see a familiar address. KVM, XEN_3 and VMX_04 are
# Abiquo's; XenServer is Xen (00:16:3e, XenSource's OUI), Hyper-V uses Microsoft's
# 00:15:5d and VirtualBox Oracle's 08:00:27. The lower half is random.
MAC_PREFIXES: dict[str, str] = {
    "KVM": "52:54:00",
    "XEN_3": "00:16:3e",
    "XENSERVER": "00:16:3e",
    "VMX_04": "00:50:56",
    "HYPERV_301": "00:15:5d",
    "VBOX": "08:00:27",
}
# A type this version does not list gets a locally administered prefix: never a vendor's.
FALLBACK_MAC_PREFIX = "02:ab:10"


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """A private network as a caller describes it; mask is the prefix length."""

    name: str = DEFAULT_NAME
    address: str = DEFAULT_ADDRESS
    mask: int = DEFAULT_PREFIX
    gateway: str = DEFAULT_GATEWAY
    primary_dns: str = ""
    secondary_dns: str = ""
    sufix_dns: str = ""
    type: str = INTERNAL


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code=INVALID_NETWORK)


def _ipv4(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise _invalid(f"{what} '{value[:64]}' is not an IPv4 address") from None


def _dns(value: str, what: str) -> str:
    value = value.strip()
    if value:
        _ipv4(value, what)
    return value


def validate_network(spec: NetworkSpec) -> NetworkSpec:
    """`spec` trimmed; InvalidInput (VLAN-2, or VLAN-3 for a network larger than a /22)
    saying what is wrong otherwise."""
    name = spec.name.strip()
    if not name or len(name) > NAME_MAX:
        raise _invalid(f"a network needs a name of 1 to {NAME_MAX} characters")
    if spec.type.strip().upper() != INTERNAL:
        raise _invalid(f"a private network's type is {INTERNAL}")
    if not isinstance(spec.mask, int) or not 0 <= spec.mask <= 32:
        raise _invalid("the mask is a prefix length between 0 and 32")
    if spec.mask < LARGEST_PREFIX:
        raise InvalidInput(
            f"a private network is a /{LARGEST_PREFIX} at most, not a /{spec.mask}",
            code=NETWORK_TOO_LARGE,
        )
    if spec.mask > SMALLEST_PREFIX:
        raise _invalid(f"a private network is a /{SMALLEST_PREFIX} at least, not a /{spec.mask}")
    address = _ipv4(spec.address, "address")
    network = ipaddress.IPv4Network(f"{address}/{spec.mask}", strict=False)
    if network.network_address != address:
        raise _invalid(f"{address} is not the address of a /{spec.mask} network: {network} is")
    if not network.is_private:
        raise _invalid(f"{network} is not a private network range")
    gateway = _ipv4(spec.gateway, "gateway")
    if gateway not in network or gateway in (network.network_address, network.broadcast_address):
        raise _invalid(f"the gateway {gateway} is not a host address of {network}")
    if len(spec.sufix_dns) > SUFIX_MAX:
        raise _invalid(f"sufixDNS has at most {SUFIX_MAX} characters")
    return replace(
        spec,
        name=name,
        address=str(address),
        gateway=str(gateway),
        primary_dns=_dns(spec.primary_dns, "primaryDNS"),
        secondary_dns=_dns(spec.secondary_dns, "secondaryDNS"),
        sufix_dns=spec.sufix_dns.strip(),
        type=INTERNAL,
    )


def host_addresses(address: str, mask: int, gateway: str) -> list[str]:
    """Every host address of the network but the gateway: what VMs may be given."""
    network = ipaddress.IPv4Network(f"{address}/{mask}")
    return [str(host) for host in network.hosts() if str(host) != gateway]


def avoided_tags(text: str) -> set[int]:
    """The tags a rack's vlansIdAvoided ("5, 10-20") names."""
    found: set[int] = set()
    for item in normalise_avoided(text, VLAN_MIN, VLAN_MAX).split(","):
        item = item.strip()
        if not item:
            continue
        low, _, high = item.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found


def rack_tags(vlan_id_min: int, vlan_id_max: int, avoided: str) -> Iterator[int]:
    """The tags a rack hands out, in order."""
    skip = avoided_tags(avoided)
    return (t for t in range(vlan_id_min, vlan_id_max + 1) if t not in skip)


def free_tag(racks: Iterable[tuple[int, int, str]], used: Collection[int]) -> int | None:
    """The lowest tag some rack ((min, max, avoided)) hands out that is not `used`."""
    best: int | None = None
    for low, high, avoided in racks:
        for tag in rack_tags(low, high, avoided):
            if best is not None and tag >= best:
                break
            if tag not in used:
                best = tag
                break
    return best


def mac_prefix(hypervisor_type: str) -> str:
    return MAC_PREFIXES.get(hypervisor_type, FALLBACK_MAC_PREFIX)


def random_macs(
    prefix: str, count: int, rng: random.Random, avoid: Sequence[str] = ()
) -> list[str]:
    """`count` distinct MACs with `prefix` and a random lower half, none in `avoid`."""
    taken = set(avoid)
    made: list[str] = []
    while len(made) < count:
        low = rng.getrandbits(24)
        mac = f"{prefix}:{low >> 16:02x}:{(low >> 8) & 0xFF:02x}:{low & 0xFF:02x}"
        if mac not in taken:
            taken.add(mac)
            made.append(mac)
    return made
