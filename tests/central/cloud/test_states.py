"""The appliance's state derived from its VMs', rule by rule."""

from __future__ import annotations

import pytest

from abiquo_central.cloud.states import VappState, VmState, vapp_state

S = VmState
A = VappState


@pytest.mark.parametrize(
    ("vms", "expected"),
    [
        ([], A.NOT_DEPLOYED),
        ([S.NOT_ALLOCATED], A.NOT_DEPLOYED),
        ([S.ALLOCATED], A.NOT_DEPLOYED),
        ([S.NOT_ALLOCATED, S.ALLOCATED], A.NOT_DEPLOYED),
        ([S.ON], A.DEPLOYED),
        ([S.OFF], A.DEPLOYED),
        ([S.PAUSED], A.DEPLOYED),
        ([S.CONFIGURED], A.DEPLOYED),
        ([S.ON, S.OFF, S.PAUSED, S.CONFIGURED], A.DEPLOYED),
        ([S.LOCKED], A.LOCKED),
        ([S.ON, S.LOCKED], A.LOCKED),
        ([S.NOT_ALLOCATED, S.LOCKED], A.LOCKED),
        ([S.UNKNOWN], A.UNKNOWN),
        # UNKNOWN comes before LOCKED.
        ([S.LOCKED, S.UNKNOWN], A.UNKNOWN),
        ([S.ON, S.UNKNOWN], A.UNKNOWN),
        ([S.NOT_ALLOCATED, S.UNKNOWN], A.UNKNOWN),
        # A mixture of deployed and undeployed.
        ([S.ON, S.NOT_ALLOCATED], A.NEEDS_SYNC),
        ([S.OFF, S.ALLOCATED], A.NEEDS_SYNC),
        ([S.CONFIGURED, S.NOT_ALLOCATED, S.ON], A.NEEDS_SYNC),
        # Repeats do not matter.
        ([S.ON, S.ON, S.ON], A.DEPLOYED),
        # Plain strings, as the database holds them.
        (["ON", "OFF"], A.DEPLOYED),
        # A state this version does not know is UNKNOWN.
        (["HIBERNATED", "ON"], A.UNKNOWN),
    ],
)
def test_vapp_state(vms: list[VmState | str], expected: VappState) -> None:
    assert vapp_state(vms) is expected


def test_every_single_state_maps() -> None:
    expected = {
        S.NOT_ALLOCATED: A.NOT_DEPLOYED,
        S.ALLOCATED: A.NOT_DEPLOYED,
        S.CONFIGURED: A.DEPLOYED,
        S.ON: A.DEPLOYED,
        S.PAUSED: A.DEPLOYED,
        S.OFF: A.DEPLOYED,
        S.LOCKED: A.LOCKED,
        S.UNKNOWN: A.UNKNOWN,
    }
    assert {s: vapp_state([s]) for s in S} == expected


def test_every_pair_follows_the_order() -> None:
    deployed = {S.ON, S.OFF, S.PAUSED, S.CONFIGURED}
    undeployed = {S.NOT_ALLOCATED, S.ALLOCATED}
    for a in S:
        for b in S:
            pair = {a, b}
            if S.UNKNOWN in pair:
                want = A.UNKNOWN
            elif S.LOCKED in pair:
                want = A.LOCKED
            elif pair <= deployed:
                want = A.DEPLOYED
            elif pair <= undeployed:
                want = A.NOT_DEPLOYED
            else:
                want = A.NEEDS_SYNC
            assert vapp_state([a, b]) is want, (a, b)
