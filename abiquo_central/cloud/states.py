"""Virtual machine states (API.md's) and the state a virtual appliance derives from them."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class VmState(StrEnum):
    NOT_ALLOCATED = "NOT_ALLOCATED"
    ALLOCATED = "ALLOCATED"
    CONFIGURED = "CONFIGURED"
    ON = "ON"
    PAUSED = "PAUSED"
    OFF = "OFF"
    LOCKED = "LOCKED"
    UNKNOWN = "UNKNOWN"


class VappState(StrEnum):
    NOT_DEPLOYED = "NOT_DEPLOYED"
    DEPLOYED = "DEPLOYED"
    LOCKED = "LOCKED"
    NEEDS_SYNC = "NEEDS_SYNC"
    UNKNOWN = "UNKNOWN"


# A VM in one of these exists on a hypervisor.
_DEPLOYED = frozenset({VmState.ON, VmState.OFF, VmState.PAUSED, VmState.CONFIGURED})
# A VM in one of these has nothing on a hypervisor yet.
_UNDEPLOYED = frozenset({VmState.NOT_ALLOCATED, VmState.ALLOCATED})


def vapp_state(vm_states: Iterable[VmState | str]) -> VappState:
    """The appliance's state from its VMs', by the first rule that applies, in order:
    no VMs → NOT_DEPLOYED; any UNKNOWN → UNKNOWN; any LOCKED → LOCKED; all deployed
    (ON, OFF, PAUSED, CONFIGURED) → DEPLOYED; all undeployed (NOT_ALLOCATED, ALLOCATED)
    → NOT_DEPLOYED; a mixture → NEEDS_SYNC. A state this version does not know (left by
    a newer one) counts as UNKNOWN rather than being guessed at."""
    states: set[VmState] = set()
    for raw in vm_states:
        try:
            states.add(VmState(raw))
        except ValueError:
            states.add(VmState.UNKNOWN)
    if not states:
        return VappState.NOT_DEPLOYED
    if VmState.UNKNOWN in states:
        return VappState.UNKNOWN
    if VmState.LOCKED in states:
        return VappState.LOCKED
    if states <= _DEPLOYED:
        return VappState.DEPLOYED
    if states <= _UNDEPLOYED:
        return VappState.NOT_DEPLOYED
    return VappState.NEEDS_SYNC
