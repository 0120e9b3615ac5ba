"""The privilege catalogue: Abiquo's 53, each with Abiquo's id."""

from __future__ import annotations

import pytest

from abiquo_central.tenants import privileges
from abiquo_runtime.errors import InvalidInput


def test_the_53_are_unique_and_numbered_in_abiquos_order() -> None:
    assert len(privileges.ALL) == len(set(privileges.ALL)) == 53
    assert list(privileges.BY_ID) == list(range(1, 54))
    # Ids as Abiquo's privilege table gave them.
    expected = {
        1: "ENTERPRISE_ENUMERATE",
        4: "PHYS_DC_ENUMERATE",
        12: "VDC_ENUMERATE",
        30: "USERS_VIEW",
        32: "USERS_MANAGE_USERS",
        36: "USERS_MANAGE_ROLES",
        45: "APPLIB_VM_COST_CODE",
        48: "USERS_DEFINE_AS_MANAGER",
        49: "PRICING_VIEW",
        50: "PRICING_MANAGE",
        51: "USERS_MANAGE_CHEF_ENTERPRISE",
        52: "MANAGE_HARD_DISKS",
        53: "APPLIB_MANAGE_GLOBAL_CATEGORIES",
    }
    for privilege_id, name in expected.items():
        assert privileges.BY_ID[privilege_id] == name
        assert privileges.privilege_id(name) == privilege_id


def test_seeded_roles_hold_known_privileges_only() -> None:
    for granted in privileges.SEEDED_ROLES.values():
        assert set(granted) <= set(privileges.ALL)
    assert privileges.SEEDED_ROLES[privileges.CLOUD_ADMIN] == privileges.ALL


def test_known_names_unknown_ones() -> None:
    assert privileges.known({"VDC_MANAGE"}) == frozenset({"VDC_MANAGE"})
    with pytest.raises(InvalidInput, match="NOPE"):
        privileges.known({"VDC_MANAGE", "NOPE"})
