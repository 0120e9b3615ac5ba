"""Which driver talks to a hypervisor: the one factory the subsystems open drivers with."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from abiquo_dc.hypervisors.base import Driver, NotSupported
from abiquo_dc.hypervisors.simulator import SimulatedCloud, SimulatorDriver
from abiquo_dc.protocol.definitions import HypervisorConnection, HypervisorType

# The hypervisor types with a real driver: (module, class). Imported when first asked
# for, so a driver's SDK is loaded only where its type is used (and so this works before
# every driver module exists).
_DRIVERS: dict[HypervisorType, tuple[str, str]] = {
    HypervisorType.KVM: ("abiquo_dc.hypervisors.kvm", "KvmDriver"),
    HypervisorType.XEN_3: ("abiquo_dc.hypervisors.kvm", "XenDriver"),
}


def open_driver(
    connection: HypervisorConnection,
    *,
    simulator: SimulatedCloud | None = None,
    timeout: float,
    options: Mapping[HypervisorType, Mapping[str, Any]] | None = None,
) -> Driver:
    """A driver for `connection`, not yet connected (call connect()).

    With a SimulatedCloud (the settings enable the simulator) the types it simulates
    are simulated; a type without a driver here raises NotSupported. `options`: keyword
    arguments of the real drivers, by type (the settings' [kvm] for KVM and Xen).
    """
    if simulator is not None and simulator.simulates(connection.type):
        return SimulatorDriver(connection, cloud=simulator, timeout=timeout)
    where = _DRIVERS.get(connection.type)
    if where is None:
        raise NotSupported(f"no driver for hypervisor type {connection.type}")
    module_name, class_name = where
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise NotSupported(f"the {connection.type} driver is not installed") from exc
    driver_class = getattr(module, class_name, None)
    if driver_class is None:
        raise NotSupported(f"no driver for hypervisor type {connection.type}")
    extra = (options or {}).get(connection.type, {})
    driver: Driver = driver_class(connection, timeout=timeout, **extra)
    return driver
